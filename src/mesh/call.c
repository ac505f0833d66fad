/*
 * Calls against a cluster: per-loop connection pools, retries, per-try timeouts.
 *
 * Pools. An open-addressing table maps an endpoint's pool key (cluster name,
 * address and pool limits hashed) to an ag_http_upstream on this loop, created
 * on first use. Pools outlive configuration reloads: a new cluster with the same
 * endpoint and limits finds the same warm connections.
 *
 * A call. One circuit-breaker permit for the whole call (recorded with the
 * final outcome), one retry-budget deposit, then tries: pick an endpoint
 * (avoiding those tried), send with the per-try deadline, report the outcome to
 * outlier detection, and either deliver the answer or retry after a jittered
 * exponential backoff on a timer. A 5xx marked `X-Agora-Error: service` is the
 * service's own answer: it counts as a success for the breaker and the outlier
 * detector (it is still retried when retryOn says 5xx). The answer is delivered from inside the
 * client's completion, so the response is borrowed, never copied.
 *
 * Lifetime. The pools are reference-counted by their live calls; closing them
 * cancels calls waiting on a backoff timer, closes every upstream (which fails
 * in-flight tries with AG_ECANCELED) and frees once the last call is gone.
 */
#include <string.h>
#include <strings.h>

#include "mesh/internal.h"

struct pool_slot {
    uint64_t key;               /* endpoint pool key; 0 = free */
    struct ag_http_upstream *u; /* the pool */
};

struct ag_mesh_pools {
    uv_loop_t *loop;         /* borrowed */
    struct pool_slot *slots; /* open addressing, power-of-two size */
    size_t cap;              /* slots */
    size_t used;             /* occupied slots */
    struct mcall *calls;     /* live calls */
    int refs;                /* 1 (owner) + live calls */
    bool closing;            /* ag_mesh_pools_close ran */
};

struct mcall {
    struct ag_mesh_pools *p;    /* owner (holds a reference) */
    struct mcall *prev, *next;  /* p->calls */
    struct ag_mesh_call call;   /* copy; request fields borrowed */
    ag_mesh_cb cb;              /* completion */
    void *ud;                   /* borrowed */
    uint64_t deadline_ms;       /* loop time when the route timeout ends */
    uint64_t avoid;             /* endpoints already tried */
    unsigned tries;             /* tries made */
    int ep;                     /* endpoint of the current/last try, -1 none */
    struct ag_cb_permit permit; /* breaker admission */
    bool has_permit;            /* permit to record */
    uv_timer_t timer;           /* backoff */
    bool timer_init;            /* timer initialised (close before free) */
    bool in_backoff;            /* waiting on the timer */
};

/* ---- pools ---- */

int ag_mesh_pools_new(uv_loop_t *loop, struct ag_mesh_pools **out)
{
    struct ag_mesh_pools *p = ag_calloc(1, sizeof *p);
    if (!p) return AG_ENOMEM;
    p->cap = 16;
    p->slots = ag_calloc(p->cap, sizeof *p->slots);
    if (!p->slots) {
        ag_free(p);
        return AG_ENOMEM;
    }
    p->loop = loop;
    p->refs = 1;
    *out = p;
    return 0;
}

static void pools_unref(struct ag_mesh_pools *p)
{
    if (--p->refs) return;
    ag_free(p->slots);
    ag_free(p);
}

static int pools_grow(struct ag_mesh_pools *p)
{
    size_t ncap = p->cap * 2;
    struct pool_slot *ns = ag_calloc(ncap, sizeof *ns);
    if (!ns) return AG_ENOMEM;
    for (size_t i = 0; i < p->cap; i++) {
        if (!p->slots[i].key) continue;
        size_t j = p->slots[i].key & (ncap - 1);
        while (ns[j].key) j = (j + 1) & (ncap - 1);
        ns[j] = p->slots[i];
    }
    ag_free(p->slots);
    p->slots = ns;
    p->cap = ncap;
    return 0;
}

struct ag_http_upstream *ag__mesh_pools_get(struct ag_mesh_pools *p, struct ag_mesh_cluster *c,
                                            size_t idx)
{
    const struct ag__mesh_ep *e = &c->eps[idx];
    size_t j = e->pool_key & (p->cap - 1);
    for (; p->slots[j].key; j = (j + 1) & (p->cap - 1))
        if (p->slots[j].key == e->pool_key) return p->slots[j].u;
    if ((p->used + 1) * 2 > p->cap) {
        if (pools_grow(p)) return NULL;
        return ag__mesh_pools_get(p, c, idx);
    }
    struct ag_http_upstream_config uc = c->cfg.pool;
    uc.host = e->host;
    uc.port = e->cfg.port;
    struct ag_http_upstream *u;
    if (ag_http_upstream_new(p->loop, &uc, &u)) return NULL;
    p->slots[j] = (struct pool_slot){e->pool_key, u};
    p->used++;
    return u;
}

uint32_t ag_mesh_pools_open(const struct ag_mesh_pools *p)
{
    uint32_t n = 0;
    for (size_t i = 0; i < p->cap; i++) {
        if (!p->slots[i].key) continue;
        struct ag_http_upstream_stats st;
        ag_http_upstream_stats(p->slots[i].u, &st);
        n += st.open;
    }
    return n;
}

/* ---- retry-on ---- */

int ag_mesh_retry_on_parse(const char *s, unsigned *bits, struct ag_err *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"5xx", AG_MESH_RETRY_5XX},
        {"gateway-error", AG_MESH_RETRY_GATEWAY_ERROR},
        {"connect-failure", AG_MESH_RETRY_CONNECT_FAILURE},
        {"reset", AG_MESH_RETRY_RESET},
        {"retriable-4xx", AG_MESH_RETRY_RETRIABLE_4XX},
        {"refused-stream", AG_MESH_RETRY_CONNECT_FAILURE},
    };
    *bits = 0;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        const char *tok = s;
        while (n && (*tok == ' ')) tok++, n--;
        size_t k = n;
        while (k && tok[k - 1] == ' ') k--;
        bool found = false;
        for (size_t i = 0; i < AG_ARRAY_SIZE(names) && !found; i++)
            if (strlen(names[i].name) == k && strncmp(names[i].name, tok, k) == 0)
                *bits |= names[i].bit, found = true;
        if (!found && k)
            return ag_err_set(err, AG_EINVAL, "unknown retryOn condition '%.*s'", (int)k, tok);
        s = tok + n;
        if (*s == ',') s++;
    }
    return 0;
}

static bool retryable(unsigned on, int rc, int status)
{
    if (rc == 0) {
        bool gw = status == 502 || status == 503 || status == 504;
        return (status >= 500 && (on & AG_MESH_RETRY_5XX)) ||
               (gw && (on & AG_MESH_RETRY_GATEWAY_ERROR)) ||
               (status == 409 && (on & AG_MESH_RETRY_RETRIABLE_4XX));
    }
    switch (rc) {
    case AG_ECONNECT:
    case AG_EPOOL_TIMEOUT:
        return on &
               (AG_MESH_RETRY_CONNECT_FAILURE | AG_MESH_RETRY_5XX | AG_MESH_RETRY_GATEWAY_ERROR);
    case AG_ERESET:
        return on & (AG_MESH_RETRY_RESET | AG_MESH_RETRY_5XX | AG_MESH_RETRY_GATEWAY_ERROR);
    case AG_ETIMEDOUT: /* the per-try timeout */
        return on & (AG_MESH_RETRY_5XX | AG_MESH_RETRY_GATEWAY_ERROR);
    default:
        return false;
    }
}

/* ---- calls ---- */

bool ag_mesh_service_error(const struct ag_http_client_resp *resp)
{
    if (!resp || resp->status < 500) return false;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (!strcasecmp(resp->headers[i].name, AG_MESH_SERVICE_ERROR_HEADER))
            return !strcasecmp(resp->headers[i].value, AG_MESH_SERVICE_ERROR_VALUE);
    return false;
}

static void call_free(struct mcall *m)
{
    struct ag_mesh_pools *p = m->p;
    ag_free(m);
    pools_unref(p);
}

static void timer_closed(uv_handle_t *h)
{
    call_free(h->data);
}

/* Deliver the result, record the breaker and release the call. */
static void call_finish(struct mcall *m, int rc, const struct ag_http_client_resp *resp)
{
    struct ag_mesh_pools *p = m->p;
    if (m->prev)
        m->prev->next = m->next;
    else
        p->calls = m->next;
    if (m->next) m->next->prev = m->prev;
    if (m->has_permit) {
        int outcome = rc                            ? rc
                      : ag_mesh_service_error(resp) ? 0
                      : resp->status >= 500         ? AG_EUPSTREAM
                                                    : 0;
        ag_cb_record(m->call.cluster->breaker, &m->permit, outcome);
    }
    struct ag_mesh_result res = {rc, rc ? NULL : resp, m->tries, m->ep};
    m->cb(&res, m->ud);
    if (m->timer_init)
        uv_close((uv_handle_t *)&m->timer, timer_closed);
    else
        call_free(m);
}

static int try_start(struct mcall *m);

static void on_backoff(uv_timer_t *t)
{
    struct mcall *m = t->data;
    m->in_backoff = false;
    int rc = try_start(m);
    if (rc) call_finish(m, rc, NULL);
}

/* Schedule another try; false when it may not happen (attempts, budget, deadline). */
static bool schedule_retry(struct mcall *m)
{
    struct ag_mesh_cluster *c = m->call.cluster;
    uint64_t now = uv_now(m->p->loop);
    if (m->p->closing || m->tries > m->call.retry.attempts || now >= m->deadline_ms) return false;
    if (!ag_retry_budget_withdraw(c->budget)) return false;
    uint64_t base = m->call.retry.backoff_ms ? m->call.retry.backoff_ms : 25;
    uint64_t cap = base << AG_MIN(m->tries - 1, 4u);
    uint64_t delay = ag_rng_below(c->rng, cap + 1); /* full jitter */
    if (now + delay >= m->deadline_ms) delay = 0;
    if (!m->timer_init) {
        uv_timer_init(m->p->loop, &m->timer);
        m->timer.data = m;
        m->timer_init = true;
    }
    m->in_backoff = true;
    uv_timer_start(&m->timer, on_backoff, delay, 0);
    return true;
}

static void on_response(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct mcall *m = ud;
    int status = rc ? 0 : resp->status;
    /* the service's own error: the endpoint answered, as far as health goes */
    ag_mesh_cluster_end(m->call.cluster, (size_t)m->ep, rc,
                        ag_mesh_service_error(resp) ? 200 : status);
    if (retryable(m->call.retry.retry_on, rc, status) && schedule_retry(m)) return;
    call_finish(m, rc, resp);
}

static int try_start(struct mcall *m)
{
    struct ag_mesh_cluster *c = m->call.cluster;
    uint64_t now = uv_now(m->p->loop);
    if (now >= m->deadline_ms) return AG_ETIMEDOUT;
    size_t idx;
    int rc = ag_mesh_cluster_pick(c, m->call.subset, m->call.hash, m->avoid, &idx);
    if (rc) return rc;
    struct ag_http_upstream *u = ag__mesh_pools_get(m->p, c, idx);
    if (!u) return AG_ENOMEM;
    struct ag_http_client_req req = m->call.req;
    uint64_t left = m->deadline_ms - now;
    uint32_t per_try = m->call.retry.per_try_timeout_ms;
    req.timeout_ms = (uint32_t)(per_try && per_try < left ? per_try : left);
    m->ep = (int)idx;
    m->avoid |= 1ull << idx;
    m->tries++;
    ag_mesh_cluster_begin(c, idx);
    rc = ag_http_upstream_request(u, &req, on_response, m);
    if (rc) {
        ag_mesh_cluster_end(c, idx, AG_EAGAIN, 0);
        return rc == AG_EAGAIN ? AG_EBULKHEAD_FULL : rc;
    }
    return 0;
}

int ag_mesh_call_start(struct ag_mesh_pools *p, const struct ag_mesh_call *call, ag_mesh_cb cb,
                       void *ud)
{
    if (!p || !call || !call->cluster || !cb) return AG_EINVAL;
    if (p->closing) return AG_ECLOSED;
    struct mcall *m = ag_calloc(1, sizeof *m);
    if (!m) return AG_ENOMEM;
    m->p = p;
    m->call = *call;
    m->cb = cb;
    m->ud = ud;
    m->ep = -1;
    m->deadline_ms = uv_now(p->loop) + (call->req.timeout_ms ? call->req.timeout_ms : 15000);
    struct ag_mesh_cluster *c = call->cluster;
    if (c->breaker) {
        int rc = ag_cb_allow(c->breaker, &m->permit, NULL, NULL);
        if (rc) {
            ag_free(m);
            return rc;
        }
        m->has_permit = true;
    }
    ag_retry_budget_deposit(c->budget);
    int rc = try_start(m);
    if (rc) {
        if (m->has_permit)
            ag_cb_record(c->breaker, &m->permit, rc == AG_EUPSTREAM ? rc : AG_ECANCELED);
        ag_free(m);
        return rc;
    }
    p->refs++;
    m->next = p->calls;
    if (p->calls) p->calls->prev = m;
    p->calls = m;
    return 0;
}

void ag_mesh_pools_close(struct ag_mesh_pools *p)
{
    if (!p || p->closing) return;
    p->closing = true;
    for (struct mcall *m = p->calls, *n; m; m = n) {
        n = m->next;
        if (m->in_backoff) {
            uv_timer_stop(&m->timer);
            m->in_backoff = false;
            call_finish(m, AG_ECANCELED, NULL);
        }
    }
    for (size_t i = 0; i < p->cap; i++)
        if (p->slots[i].key) ag_http_upstream_close(p->slots[i].u);
    p->used = 0;
    memset(p->slots, 0, p->cap * sizeof *p->slots);
    pools_unref(p);
}
