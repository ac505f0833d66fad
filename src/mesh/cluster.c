/*
 * Upstream clusters: endpoints, subsets, load balancing and passive outlier
 * detection.
 *
 * Health of an endpoint is two independent facts: ejected (passive: recent
 * answers were bad; expires by itself at ejected_until) and down (active health
 * checks failed). An endpoint is healthy when neither holds. Both are atomics
 * read without a lock on every pick; ejecting takes the cluster lock so the
 * max-ejection-percent rule is decided on a consistent count.
 *
 * Picking works on 64-bit masks (at most 64 endpoints): the subset's members,
 * minus the unhealthy ones unless that leaves fewer than the panic threshold,
 * minus the endpoints the call already tried when any other is left. Round robin
 * and random choose the k-th set bit; least request compares two random
 * members' in-flight counts; the hash policy walks a ring of virtual nodes from
 * the key's position to the first allowed endpoint, so removing one endpoint
 * only moves the keys that were on it.
 *
 * Dynamic endpoints (service discovery). The array of 64 slots stays; a mask of
 * live slots says which are in use. ag_mesh_cluster_set_endpoints (one writer at
 * a time, under the lock) initialises a free slot before setting its bit
 * (release; picks load the mask with acquire), and removes an endpoint by
 * clearing its bit: no pick chooses it any more, while a try already on it keeps
 * its index and finishes (its slot, address and counters stay as they are). A
 * slot is reinitialised for another address only when its bit has been clear for
 * 30 s and it has no try in flight, so a pick that read the old mask has long
 * since begun its try. The hash ring is rebuilt over the live slots and swapped;
 * old rings are freed with the cluster.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/internal.h"

#define RING_VNODES 128

/* ---- masks ---- */

static unsigned popcount64(uint64_t m)
{
    return (unsigned)__builtin_popcountll(m);
}

/* Index of the k-th (0-based) set bit of m; m must have more than k bits set. */
static size_t nth_bit(uint64_t m, unsigned k)
{
    while (k--) m &= m - 1;
    return (size_t)__builtin_ctzll(m);
}

static bool ep_healthy(const struct ag__mesh_ep *e, uint64_t now)
{
    return !atomic_load_explicit(&e->hc_down, memory_order_relaxed) &&
           atomic_load_explicit(&e->ejected_until, memory_order_relaxed) <= now;
}

/* ---- creation ---- */

static int copy_labels(char **dst, const char **view, const char *const *src, size_t n,
                       struct ag_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!src[i] || !strchr(src[i], '='))
            return ag_err_set(err, AG_EINVAL, "label '%s' is not key=value",
                              src[i] ? src[i] : "(null)");
        if (!(dst[i] = ag_strdup(src[i]))) return ag_err_set(err, AG_ENOMEM, "out of memory");
        view[i] = dst[i];
    }
    return 0;
}

static bool has_label(const struct ag__mesh_ep *e, const char *label)
{
    for (size_t i = 0; i < e->cfg.nlabels; i++)
        if (strcmp(e->cfg.labels[i], label) == 0) return true;
    return false;
}

static void resolve_defaults(struct ag_mesh_cluster_config *c)
{
    struct ag_mesh_outlier_config *o = &c->outlier;
    if (!o->interval_ns) o->interval_ns = 10000000000ull;
    if (!o->base_ejection_ns) o->base_ejection_ns = 30000000000ull;
    if (!o->max_ejection_ns) o->max_ejection_ns = 300000000000ull;
    if (!o->max_ejection_pct) o->max_ejection_pct = 10;
    if (o->max_ejection_pct > 100) o->max_ejection_pct = 100;
    struct ag_mesh_health_config *h = &c->health;
    if (!h->interval_ns) h->interval_ns = 5000000000ull;
    if (!h->timeout_ns) h->timeout_ns = 1000000000ull;
    if (!h->healthy_threshold) h->healthy_threshold = 1;
    if (!h->unhealthy_threshold) h->unhealthy_threshold = 2;
    if (!c->cb_open_ns) c->cb_open_ns = 30000000000ull;
    if (c->retry_budget_ratio <= 0) c->retry_budget_ratio = 0.2;
    if (!c->retry_budget_min) c->retry_budget_min = 10;
}

static int endpoint_init(struct ag_mesh_cluster *c, size_t i,
                         const struct ag_mesh_endpoint_config *src, struct ag_err *err)
{
    struct ag__mesh_ep *e = &c->eps[i];
    bool is_unix = src->host && strncmp(src->host, "unix:/", 6) == 0;
    if (!src->host || !*src->host || strlen(src->host) >= sizeof e->host ||
        (!src->port && !is_unix))
        return ag_err_set(err, AG_EINVAL,
                          "cluster %s: endpoint %zu needs a numeric host and a port, or "
                          "unix:/path",
                          c->name, i);
    if (src->nlabels > AG_MESH_MAX_LABELS)
        return ag_err_set(err, AG_EINVAL, "cluster %s: too many labels", c->name);
    snprintf(e->host, sizeof e->host, "%s", src->host);
    e->cfg.host = e->host;
    e->cfg.port = src->port;
    e->cfg.nlabels = src->nlabels;
    int rc = copy_labels(e->labels_mem, e->cfg.labels, src->labels, src->nlabels, err);
    if (rc) return rc;
    char key[256];
    const struct ag_http_upstream_config *p = &c->cfg.pool;
    /* the TLS context too: a reload with other TLS settings gets new pools */
    int n = snprintf(key, sizeof key, "%s|%s|%u|%u|%u|%u|%u|%u|%p", c->name, e->host, e->cfg.port,
                     p->max_connections, p->max_pending, p->max_requests_per_conn,
                     p->connect_timeout_ms, p->idle_timeout_ms, (void *)p->tls);
    e->pool_key = ag_xxh3(key, (size_t)n) | 1; /* never 0: 0 marks a free slot */
    return 0;
}

static int subset_init(struct ag_mesh_cluster *c, size_t s, struct ag_err *err)
{
    const struct ag_mesh_subset_config *sc = &c->cfg.subsets[s];
    if (!sc->name || !*sc->name)
        return ag_err_set(err, AG_EINVAL, "cluster %s: subset %zu has no name", c->name, s);
    for (size_t j = 0; j < s; j++)
        if (strcmp(c->subset_names[j], sc->name) == 0)
            return ag_err_set(err, AG_EINVAL, "cluster %s: subset %s defined twice", c->name,
                              sc->name);
    if (!(c->subset_names[s] = ag_strdup(sc->name)))
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    uint64_t m = 0;
    for (size_t i = 0; i < c->neps; i++) {
        bool all = true;
        for (size_t l = 0; l < sc->nlabels && all; l++) all = has_label(&c->eps[i], sc->labels[l]);
        if (all) m |= 1ull << i;
    }
    c->subset_mask[s] = m;
    /* the config's pointers are the caller's: drop them, keep only names and masks */
    c->cfg.subsets[s].name = c->subset_names[s];
    c->cfg.subsets[s].nlabels = 0;
    return 0;
}

static int ring_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct ag__mesh_ring_node *)a)->hash,
             y = ((const struct ag__mesh_ring_node *)b)->hash;
    return x < y ? -1 : x > y;
}

/* Build the ring over the live endpoints and swap it in (the old one retired). */
static int ring_build(struct ag_mesh_cluster *c)
{
    uint64_t live = atomic_load(&c->live);
    size_t n = (size_t)popcount64(live) * RING_VNODES, k = 0;
    struct ag__mesh_ring *r = ag_calloc(1, sizeof *r + (n ? n : 1) * sizeof r->nodes[0]);
    if (!r) return AG_ENOMEM;
    for (uint64_t m = live; m; m &= m - 1) {
        size_t i = (size_t)__builtin_ctzll(m);
        for (uint32_t v = 0; v < RING_VNODES; v++) {
            char key[AG_HTTP_HOST_MAX + 32];
            int len = snprintf(key, sizeof key, "%s:%u#%u", c->eps[i].host, c->eps[i].cfg.port, v);
            r->nodes[k++] = (struct ag__mesh_ring_node){ag_xxh3(key, (size_t)len), (uint32_t)i};
        }
    }
    r->n = k;
    qsort(r->nodes, r->n, sizeof r->nodes[0], ring_cmp);
    r->older = atomic_exchange(&c->ring, r);
    return 0;
}

static int policies_init(struct ag_mesh_cluster *c, struct ag_err *err)
{
    if (c->cfg.cb_failures) {
        struct ag_cb_config cb = {.name = c->name,
                                  .failure_threshold = c->cfg.cb_failures,
                                  .open_ns = c->cfg.cb_open_ns,
                                  .half_open_permits = 1,
                                  .clock = c->cfg.clock};
        int rc = ag_cb_new(&cb, &c->breaker, err);
        if (rc) return rc;
    }
    struct ag_retry_budget_config b = {.ratio = c->cfg.retry_budget_ratio,
                                       .min_per_sec = c->cfg.retry_budget_min,
                                       .ttl_ns = 10000000000ull,
                                       .clock = c->cfg.clock};
    if (ag_retry_budget_new(&b, &c->budget)) return ag_err_set(err, AG_ENOMEM, "out of memory");
    return c->cfg.lb == AG_MESH_LB_HASH ? ring_build(c) : 0;
}

int ag_mesh_cluster_new(const struct ag_mesh_cluster_config *cfg, struct ag_mesh_cluster **out,
                        struct ag_err *err)
{
    if (!cfg || !cfg->name || !*cfg->name)
        return ag_err_set(err, AG_EINVAL, "a cluster needs a name");
    if ((cfg->nendpoints < 1 && !cfg->dynamic) || cfg->nendpoints > AG_MESH_MAX_ENDPOINTS)
        return ag_err_set(err, AG_EINVAL, "cluster %s: 1..%d endpoints", cfg->name,
                          AG_MESH_MAX_ENDPOINTS);
    if (cfg->dynamic && cfg->nsubsets)
        return ag_err_set(err, AG_EINVAL,
                          "cluster %s: discovered endpoints have no labels: no subsets", cfg->name);
    if (cfg->nsubsets > AG_MESH_MAX_SUBSETS)
        return ag_err_set(err, AG_EINVAL, "cluster %s: too many subsets", cfg->name);
    struct ag_mesh_cluster *c = ag_calloc(1, sizeof *c);
    if (!c) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = AG_ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->cfg = *cfg;
    resolve_defaults(&c->cfg);
    c->clock = cfg->clock ? cfg->clock : ag_clock_system();
    c->rng = cfg->rng ? cfg->rng : ag_rng_system();
    c->cfg.clock = c->clock;
    if (!(c->name = ag_strdup(cfg->name))) goto out_free;
    c->cfg.name = c->name;
    c->cfg.health.path = NULL;
    if (cfg->health.path && !(c->cfg.health.path = ag_strdup(cfg->health.path))) goto out_free;
    c->neps = cfg->nendpoints;
    uint64_t live = 0;
    for (size_t i = 0; i < c->neps; i++) {
        if ((rc = endpoint_init(c, i, &cfg->endpoints[i], err)) != 0) goto out_free;
        live |= 1ull << i;
    }
    atomic_store(&c->live, live);
    /* the caller's endpoint pointers are not kept: the slots hold copies */
    memset(c->cfg.endpoints, 0, sizeof c->cfg.endpoints);
    c->nsubsets = cfg->nsubsets;
    for (size_t s = 0; s < c->nsubsets; s++)
        if ((rc = subset_init(c, s, err)) != 0) goto out_free;
    if ((rc = policies_init(c, err)) != 0) goto out_free;
    *out = c;
    return 0;
out_free:
    if (rc == AG_ENOMEM) ag_err_set(err, AG_ENOMEM, "out of memory");
    ag_mesh_cluster_free(c);
    return rc;
}

void ag_mesh_cluster_free(struct ag_mesh_cluster *c)
{
    if (!c) return;
    for (size_t i = 0; i < AG_MESH_MAX_ENDPOINTS; i++)
        for (size_t l = 0; l < AG_MESH_MAX_LABELS; l++) ag_free(c->eps[i].labels_mem[l]);
    for (size_t s = 0; s < AG_MESH_MAX_SUBSETS; s++) ag_free(c->subset_names[s]);
    ag_free((char *)c->cfg.health.path);
    for (struct ag__mesh_ring *r = atomic_load(&c->ring), *o; r; r = o) {
        o = r->older;
        ag_free(r);
    }
    if (c->breaker) ag_cb_free(c->breaker);
    if (c->budget) ag_retry_budget_free(c->budget);
    pthread_mutex_destroy(&c->lock);
    ag_free(c->name);
    ag_free(c);
}

const char *ag_mesh_cluster_name(const struct ag_mesh_cluster *c)
{
    return c->name;
}
size_t ag_mesh_cluster_size(const struct ag_mesh_cluster *c)
{
    return popcount64(
        atomic_load_explicit(&((struct ag_mesh_cluster *)c)->live, memory_order_relaxed));
}
struct ag_cb *ag_mesh_cluster_breaker(struct ag_mesh_cluster *c)
{
    return c->breaker;
}
struct ag_retry_budget *ag_mesh_cluster_budget(struct ag_mesh_cluster *c)
{
    return c->budget;
}

int ag_mesh_cluster_subset(const struct ag_mesh_cluster *c, const char *name)
{
    for (size_t s = 0; s < c->nsubsets; s++)
        if (strcmp(c->subset_names[s], name) == 0) return (int)s;
    return -1;
}

const struct ag_mesh_endpoint_config *ag_mesh_cluster_endpoint(const struct ag_mesh_cluster *c,
                                                               size_t idx)
{
    return idx < c->neps ? &c->eps[idx].cfg : NULL;
}

/* ---- picking ---- */

/* The endpoints a pick may choose from: healthy members, or every member in panic. */
static uint64_t candidates(struct ag_mesh_cluster *c, uint64_t members, uint64_t now)
{
    uint64_t healthy = 0;
    for (uint64_t m = members; m; m &= m - 1) {
        size_t i = (size_t)__builtin_ctzll(m);
        if (ep_healthy(&c->eps[i], now)) healthy |= 1ull << i;
    }
    uint32_t panic = c->cfg.outlier.panic_threshold_pct;
    if (panic && (uint64_t)popcount64(healthy) * 100 < (uint64_t)panic * popcount64(members))
        return members;
    return healthy;
}

static size_t pick_hash(struct ag_mesh_cluster *c, uint64_t allowed, uint64_t hash)
{
    const struct ag__mesh_ring *r = atomic_load_explicit(&c->ring, memory_order_acquire);
    size_t lo = 0, hi = r ? r->n : 0;
    while (lo < hi) { /* first node with ring hash >= key */
        size_t mid = lo + (hi - lo) / 2;
        if (r->nodes[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; r && k < r->n; k++) {
        const struct ag__mesh_ring_node *n = &r->nodes[(lo + k) % r->n];
        if (allowed & (1ull << n->ep)) return n->ep;
    }
    return nth_bit(allowed, 0);
}

static size_t pick_p2c(struct ag_mesh_cluster *c, uint64_t allowed)
{
    unsigned n = popcount64(allowed);
    size_t a = nth_bit(allowed, (unsigned)ag_rng_below(c->rng, n));
    if (n == 1) return a;
    size_t b = nth_bit(allowed, (unsigned)ag_rng_below(c->rng, n));
    uint32_t la = atomic_load_explicit(&c->eps[a].active, memory_order_relaxed);
    uint32_t lb = atomic_load_explicit(&c->eps[b].active, memory_order_relaxed);
    return lb < la ? b : a;
}

int ag_mesh_cluster_pick(struct ag_mesh_cluster *c, int subset, uint64_t hash, uint64_t avoid,
                         size_t *idx)
{
    if (subset >= (int)c->nsubsets) return AG_EINVAL;
    uint64_t live = ag__mesh_live(c);
    uint64_t members = live & (subset < 0 ? UINT64_MAX : c->subset_mask[subset]);
    if (!members) return AG_EUPSTREAM;
    uint64_t allowed = candidates(c, members, ag_clock_mono(c->clock));
    if (!allowed) return AG_EUPSTREAM;
    if (allowed & ~avoid) allowed &= ~avoid;
    switch (c->cfg.lb) {
    case AG_MESH_LB_HASH:
        *idx = pick_hash(c, allowed, hash);
        break;
    case AG_MESH_LB_LEAST_REQUEST:
        *idx = pick_p2c(c, allowed);
        break;
    case AG_MESH_LB_RANDOM:
        *idx = nth_bit(allowed, (unsigned)ag_rng_below(c->rng, popcount64(allowed)));
        break;
    default:
        *idx =
            nth_bit(allowed, (unsigned)(atomic_fetch_add_explicit(&c->rr, 1, memory_order_relaxed) %
                                        popcount64(allowed)));
    }
    return 0;
}

/* ---- outcomes and ejection ---- */

bool ag_mesh_cluster_ejected(struct ag_mesh_cluster *c, size_t idx)
{
    return idx < c->neps && !ep_healthy(&c->eps[idx], ag_clock_mono(c->clock));
}

static void eject(struct ag_mesh_cluster *c, size_t idx, uint64_t now)
{
    struct ag__mesh_ep *e = &c->eps[idx];
    const struct ag_mesh_outlier_config *o = &c->cfg.outlier;
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&e->ejected_until) > now) goto out_unlock;
    size_t ejected = 0;
    uint64_t live = atomic_load(&c->live);
    for (uint64_t m = live; m; m &= m - 1)
        ejected += atomic_load(&c->eps[__builtin_ctzll(m)].ejected_until) > now;
    size_t max = popcount64(live) * o->max_ejection_pct / 100;
    if (max == 0) max = 1; /* like Envoy: at least one endpoint may be ejected */
    if (ejected >= max) goto out_unlock;
    if (e->ejections && now > e->last_eject_end) { /* the multiplier decays while healthy */
        uint64_t decay = (now - e->last_eject_end) / o->interval_ns;
        e->ejections = decay >= e->ejections ? 0 : e->ejections - (uint32_t)decay;
    }
    e->ejections++;
    e->total_ejections++;
    uint64_t len = o->base_ejection_ns * e->ejections;
    if (len > o->max_ejection_ns || len / e->ejections != o->base_ejection_ns)
        len = o->max_ejection_ns;
    e->last_eject_end = now + len;
    atomic_store(&e->ejected_until, now + len);
    atomic_store(&e->cons_5xx, 0);
    atomic_store(&e->cons_gw, 0);
    ag_log_write(AG_LOG_WARN, "mesh: endpoint ejected",
                 (struct ag_log_field[]){AG_LS("cluster", c->name), AG_LS("host", e->host),
                                         AG_LU("port", e->cfg.port),
                                         AG_LU("ejection_ms", len / 1000000)},
                 4);
out_unlock:
    pthread_mutex_unlock(&c->lock);
}

void ag_mesh_cluster_begin(struct ag_mesh_cluster *c, size_t idx)
{
    atomic_fetch_add_explicit(&c->eps[idx].active, 1, memory_order_relaxed);
}

void ag_mesh_cluster_end(struct ag_mesh_cluster *c, size_t idx, int rc, int status)
{
    struct ag__mesh_ep *e = &c->eps[idx];
    atomic_fetch_sub_explicit(&e->active, 1, memory_order_relaxed);
    if (rc == AG_ECANCELED || rc == AG_EAGAIN) return; /* says nothing about the endpoint */
    atomic_fetch_add_explicit(&e->requests, 1, memory_order_relaxed);
    bool gateway = rc != 0 || status == 502 || status == 503 || status == 504;
    bool five = gateway || status >= 500;
    if (!five) {
        if (atomic_load_explicit(&e->cons_5xx, memory_order_relaxed)) atomic_store(&e->cons_5xx, 0);
        if (atomic_load_explicit(&e->cons_gw, memory_order_relaxed)) atomic_store(&e->cons_gw, 0);
        return;
    }
    atomic_fetch_add_explicit(&e->failures, 1, memory_order_relaxed);
    const struct ag_mesh_outlier_config *o = &c->cfg.outlier;
    uint32_t n5 = atomic_fetch_add(&e->cons_5xx, 1) + 1;
    uint32_t ng =
        gateway ? atomic_fetch_add(&e->cons_gw, 1) + 1 : (atomic_store(&e->cons_gw, 0), 0);
    if ((o->consecutive_5xx && n5 >= o->consecutive_5xx) ||
        (o->consecutive_gateway && ng >= o->consecutive_gateway))
        eject(c, idx, ag_clock_mono(c->clock));
}

void ag_mesh_cluster_health_result(struct ag_mesh_cluster *c, size_t idx, bool ok)
{
    struct ag__mesh_ep *e = &c->eps[idx];
    const struct ag_mesh_health_config *h = &c->cfg.health;
    if (ok) {
        e->hc_fail_streak = 0;
        if (++e->hc_ok_streak >= h->healthy_threshold && atomic_exchange(&e->hc_down, false))
            ag_log_write(AG_LOG_INFO, "mesh: endpoint healthy again",
                         (struct ag_log_field[]){AG_LS("cluster", c->name), AG_LS("host", e->host),
                                                 AG_LU("port", e->cfg.port)},
                         3);
    } else {
        e->hc_ok_streak = 0;
        if (++e->hc_fail_streak >= h->unhealthy_threshold && !atomic_exchange(&e->hc_down, true))
            ag_log_write(AG_LOG_WARN, "mesh: endpoint failed health checks",
                         (struct ag_log_field[]){AG_LS("cluster", c->name), AG_LS("host", e->host),
                                                 AG_LU("port", e->cfg.port)},
                         3);
    }
}

/* ---- admin ---- */

static json_t *endpoint_json(struct ag_mesh_cluster *c, size_t i, uint64_t now)
{
    struct ag__mesh_ep *e = &c->eps[i];
    char addr[AG_HTTP_HOST_MAX + 16];
    if (strncmp(e->host, "unix:", 5) == 0)
        snprintf(addr, sizeof addr, "%s", e->host);
    else
        snprintf(addr, sizeof addr, strchr(e->host, ':') ? "[%s]:%u" : "%s:%u", e->host,
                 e->cfg.port);
    json_t *labels = json_array();
    for (size_t l = 0; l < e->cfg.nlabels; l++)
        json_array_append_new(labels, json_string(e->cfg.labels[l]));
    uint64_t until = atomic_load(&e->ejected_until);
    pthread_mutex_lock(&c->lock);
    uint64_t total = e->total_ejections;
    pthread_mutex_unlock(&c->lock);
    return json_pack(
        "{s:s, s:o, s:b, s:b, s:I, s:s, s:I, s:I, s:I, s:I}", "address", addr, "labels", labels,
        "healthy", ep_healthy(e, now), "ejected", until > now, "ejectedForMs",
        (json_int_t)(until > now ? (until - now) / 1000000 : 0), "activeHealth",
        !c->cfg.health.path        ? "off"
        : atomic_load(&e->hc_down) ? "down"
                                   : "up",
        "ejections", (json_int_t)total, "inFlight", (json_int_t)atomic_load(&e->active), "requests",
        (json_int_t)atomic_load(&e->requests), "failures", (json_int_t)atomic_load(&e->failures));
}

json_t *ag_mesh_cluster_json(struct ag_mesh_cluster *c)
{
    static const char *const lbs[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "CONSISTENT_HASH"};
    uint64_t now = ag_clock_mono(c->clock);
    json_t *eps = json_array();
    uint64_t live = ag__mesh_live(c);
    for (size_t i = 0; i < c->neps; i++) {
        bool on = live & (1ull << i);
        if (!on && !atomic_load(&c->eps[i].active)) continue; /* removed and drained */
        json_t *e = endpoint_json(c, i, now);
        if (!on) json_object_set_new(e, "draining", json_true());
        json_array_append_new(eps, e);
    }
    json_t *subs = json_object();
    for (size_t s = 0; s < c->nsubsets; s++) {
        json_t *m = json_array();
        for (size_t i = 0; i < c->neps; i++)
            if (c->subset_mask[s] & live & (1ull << i))
                json_array_append_new(m, json_integer((json_int_t)i));
        json_object_set_new(subs, c->subset_names[s], m);
    }
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:I, s:o, s:o}", "name", c->name, "loadBalancer", lbs[c->cfg.lb],
        "breaker", c->breaker ? ag_cb_state_name(ag_cb_state(c->breaker)) : "off", "retryBudget",
        (json_int_t)ag_retry_budget_balance(c->budget), "subsets", subs, "endpoints", eps);
    if (j && c->cfg.dynamic) json_object_set_new(j, "discovered", json_true());
    return j;
}

/* ---- dynamic endpoints ---- */

static int find_live(struct ag_mesh_cluster *c, uint64_t live, const char *host, uint16_t port)
{
    for (uint64_t m = live; m; m &= m - 1) {
        int i = __builtin_ctzll(m);
        if (c->eps[i].cfg.port == port && strcmp(c->eps[i].host, host) == 0) return i;
    }
    return -1;
}

/* A slot for a new endpoint: one never used, else one removed long enough ago
 * with nothing in flight; -1 when none (lock held). */
static int free_slot(struct ag_mesh_cluster *c, uint64_t live, uint64_t now)
{
    for (size_t i = 0; i < c->neps; i++)
        if (!(live & (1ull << i)) && !atomic_load(&c->eps[i].active) &&
            now - c->removed_at[i] >= AG__MESH_SLOT_GRACE_NS)
            return (int)i;
    return c->neps < AG_MESH_MAX_ENDPOINTS ? (int)c->neps : -1;
}

static void slot_reset(struct ag__mesh_ep *e)
{
    for (size_t l = 0; l < AG_MESH_MAX_LABELS; l++) ag_free(e->labels_mem[l]);
    memset(e->labels_mem, 0, sizeof e->labels_mem);
    atomic_store(&e->cons_5xx, 0);
    atomic_store(&e->cons_gw, 0);
    atomic_store(&e->ejected_until, 0);
    atomic_store(&e->hc_down, false);
    atomic_store(&e->requests, 0);
    atomic_store(&e->failures, 0);
    e->ejections = 0;
    e->last_eject_end = e->total_ejections = 0;
    e->hc_next_ns = 0;
    e->hc_ok_streak = e->hc_fail_streak = 0;
}

static void log_endpoint(const struct ag_mesh_cluster *c, const char *what,
                         const struct ag__mesh_ep *e)
{
    ag_log_write(AG_LOG_INFO, what,
                 (struct ag_log_field[]){AG_LS("cluster", c->name), AG_LS("host", e->host),
                                         AG_LU("port", e->cfg.port)},
                 3);
}

/* Remove the live endpoints that are not in eps[] (lock held). */
static bool remove_missing(struct ag_mesh_cluster *c, const struct ag_mesh_endpoint_config *eps,
                           size_t n, uint64_t now)
{
    bool changed = false;
    for (uint64_t m = atomic_load(&c->live); m; m &= m - 1) {
        int i = __builtin_ctzll(m);
        bool keep = false;
        for (size_t k = 0; k < n && !keep; k++)
            keep = eps[k].host && eps[k].port == c->eps[i].cfg.port &&
                   strcmp(eps[k].host, c->eps[i].host) == 0;
        if (keep) continue;
        atomic_fetch_and(&c->live, ~(1ull << i));
        c->removed_at[i] = now;
        changed = true;
        log_endpoint(c, "mesh: endpoint removed (draining)", &c->eps[i]);
    }
    return changed;
}

int ag_mesh_cluster_set_endpoints(struct ag_mesh_cluster *c,
                                  const struct ag_mesh_endpoint_config *eps, size_t n,
                                  bool *changed, struct ag_err *err)
{
    if (changed) *changed = false;
    if (!c->cfg.dynamic)
        return ag_err_set(err, AG_EINVAL, "cluster %s has a static endpoint list", c->name);
    int rc = 0;
    uint64_t now = ag_clock_mono(c->clock);
    pthread_mutex_lock(&c->lock);
    bool any = remove_missing(c, eps, n, now);
    for (size_t k = 0; k < n; k++) {
        uint64_t live = atomic_load(&c->live);
        if (!eps[k].host || find_live(c, live, eps[k].host, eps[k].port) >= 0) continue;
        int i = free_slot(c, live, now);
        if (i < 0) {
            rc = ag_err_set(err, AG_ETOOBIG, "cluster %s: more than %d endpoints", c->name,
                            AG_MESH_MAX_ENDPOINTS);
            continue;
        }
        slot_reset(&c->eps[i]);
        struct ag_mesh_endpoint_config one = eps[k];
        one.nlabels = 0; /* discovered endpoints carry no labels */
        int r = endpoint_init(c, (size_t)i, &one, err);
        if (r) {
            rc = r;
            continue;
        }
        if ((size_t)i == c->neps) c->neps = (size_t)i + 1;
        atomic_fetch_or_explicit(&c->live, 1ull << i, memory_order_release);
        any = true;
        log_endpoint(c, "mesh: endpoint added", &c->eps[i]);
    }
    if (any && c->cfg.lb == AG_MESH_LB_HASH && ring_build(c))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_unlock(&c->lock);
    if (changed) *changed = any;
    return rc;
}
