/*
 * The services' read caches: cache-aside for catalog and customer reads,
 * write-through of stock levels and write-behind of product view counts (the
 * last two with Redis).
 *
 * Where the answers come from. `--cache local` (the default): one in-process LRU
 * + TTL per kind (src/cache/lru.c) for products, product pages and customers.
 * `--cache redis://...`: the catalog (products, pages, stock) is cached in Redis,
 * shared by every instance, and customers stay in-process (personal data never
 * leaves the process in clear). `--cache off`: every read goes to the read model.
 *
 * Never older than claimed. An answer says which projection position it
 * reflects (X-Projection-Position). The projections invalidate after their
 * transaction committed and before they publish the new checkpoint (the
 * projector calls `committed` first), and a read:
 *   1. takes the position P, then the cache's generation G (Redis: the kind's
 *      local generation, or the list epoch from Redis itself);
 *   2. on a hit answers with P (local) or the position stored with the value
 *      (Redis: another instance may have written it);
 *   3. on a miss reads the read model past its last commit (the fresh handle)
 *      and stores what it read only if no invalidation ran since G.
 * Every change at or below P was invalidated before P was published, so a hit
 * has no change the answer lacks at or below P; a fill that raced a change is
 * refused (local: ag_lru_put's generation check; Redis: the filler deletes its
 * own value when the generation moved after its SET). An invalidation that could
 * not reach Redis is done when Redis answers again (src/cache/redis.c).
 *
 * Outage. A Redis call that fails or times out, or a breaker that is open,
 * makes the read a miss served by the read model (from the shared handle, with
 * no fill): answers continue, slower, never as errors.
 *
 * Write-through (stock). The stock projection writes the level it committed to
 * Redis right after its commit (re-read from the read model, so a rolled-back
 * page never leaks), so GET /inventory/{id} is answered by Redis while every
 * instance's projection keeps it current; a read that misses fills with SET NX,
 * which never overwrites a newer written-through value.
 *
 * Write-behind (product views). Each GET /products/{id} counts a view in a
 * process-local table; the flusher thread adds the table to the Redis hash
 * agora:views (shared) every flush interval, then takes that hash atomically
 * and appends one ProductViewsCounted event to the stream catalog-views; the
 * products projection adds the counts to the `views` column. A view costs no
 * write on the read path; a crash loses at most one interval of counts.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "agora/cache.h"
#include "agora/obs.h"
#include "services/internal.h"

#define PEND_MAX    4096 /* ids touched in one transaction before "everything" */
#define VIEWS_SLOTS 4096

static const char *const kind_name[SVC_CACHE_KINDS] = {"products", "product_pages", "customers",
                                                       "stock"};

/* The ids a projection's transaction touched (its runner thread only). */
struct pend {
    struct svc_cache *c;
    enum svc_cache_kind kind;
    char (*ids)[64];
    size_t n, cap;
    bool all;
};

struct view_slot {
    char id[40];
    uint64_t n;
};

struct svc_cache {
    struct svc_env *env;                 /* the platform's: projector, read models, store */
    struct ag_obs_registry *metrics;     /* the process's registry */
    struct ag_lru *lru[SVC_CACHE_KINDS]; /* in-process caches (NULL: not for this kind) */
    struct ag_redis *redis;              /* NULL: no Redis */
    bool via_redis[SVC_CACHE_KINDS];     /* the kind is cached in Redis */
    _Atomic uint64_t rgen[SVC_CACHE_KINDS];
    uint64_t ttl_ms;
    struct pend pend[SVC_CACHE_KINDS];
    struct ag_obs_series *m_hit[SVC_CACHE_KINDS], *m_miss[SVC_CACHE_KINDS];
    /* write-behind views */
    pthread_mutex_t views_lock;
    struct view_slot *views; /* VIEWS_SLOTS, open addressing */
    size_t nviews;
    uint64_t flush_ms;
    pthread_t flusher;
    bool flusher_started, stop;
    _Atomic bool ready; /* the read models are open (svc_cache_ready) */
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
};

/* ---- answering ---- */

static void set_etag(struct svc_job *j)
{
    snprintf(j->etag, sizeof j->etag, "\"%016llx\"",
             (unsigned long long)ag_xxh3(j->raw, j->raw_len));
}

/* Answer 200 with a copy of `body`, reflecting `pos`. */
static void answer(struct svc_job *j, const char *body, size_t len, uint64_t pos)
{
    ag_free(j->raw);
    j->raw = ag_malloc(len + 1);
    if (!j->raw) {
        svc_problem(j, 503, NULL, "out of memory");
        return;
    }
    memcpy(j->raw, body, len);
    j->raw[len] = '\0';
    j->raw_len = len;
    j->status = 200;
    j->rm_position = pos;
    j->rm_read = true;
    set_etag(j);
}

static void redis_key(char *out, size_t n, const char *key)
{
    snprintf(out, n, "agora:c:%s", key);
}

/* "<pos>\n[<epoch>\n]<body>": the body, its position and epoch; false when malformed. */
static bool parse_value(char *v, size_t len, bool with_epoch, uint64_t *pos, long long *epoch,
                        const char **body, size_t *blen)
{
    char *nl = memchr(v, '\n', len);
    if (!nl) return false;
    *pos = strtoull(v, NULL, 10);
    char *rest = nl + 1;
    if (with_epoch) {
        char *nl2 = memchr(rest, '\n', len - (size_t)(rest - v));
        if (!nl2) return false;
        *epoch = strtoll(rest, NULL, 10);
        rest = nl2 + 1;
    }
    *body = rest;
    *blen = len - (size_t)(rest - v);
    return true;
}

static void count(struct ag_obs_series *s)
{
    if (s) ag_obs_counter_inc(s);
}

static int lookup_redis(struct svc_job *j, struct svc_cache_read *r)
{
    struct svc_cache *c = r->c;
    char key[224], *v = NULL, *ep = NULL;
    size_t len = 0;
    redis_key(key, sizeof key, r->key);
    r->gen = atomic_load(&c->rgen[r->kind]);
    int rc = r->kind == SVC_CACHE_LIST
                 ? ag_redis_get2(c->redis, "agora:c:lepoch", key, &ep, &v, &len)
                 : ag_redis_get(c->redis, key, &v, &len);
    if (rc == AG_EUNAVAILABLE) { /* Redis away: the read model answers, nothing is stored */
        r->on = r->fresh = false;
        count(c->m_miss[r->kind]);
        return 0;
    }
    r->epoch = ep ? strtoll(ep, NULL, 10) : 0;
    ag_free(ep);
    uint64_t pos = 0;
    long long epoch = 0;
    const char *body;
    size_t blen;
    bool hit = v && parse_value(v, len, r->kind == SVC_CACHE_LIST, &pos, &epoch, &body, &blen) &&
               (r->kind != SVC_CACHE_LIST || epoch == r->epoch);
    if (hit) answer(j, body, blen, pos);
    ag_free(v);
    count(hit ? c->m_hit[r->kind] : c->m_miss[r->kind]);
    return hit;
}

int svc_cache_lookup(struct svc_job *j, enum svc_cache_kind kind, const char *key,
                     struct svc_cache_read *r)
{
    struct svc_cache *c = j->env->cache;
    memset(r, 0, sizeof *r);
    r->c = c;
    r->kind = kind;
    snprintf(r->key, sizeof r->key, "%s", key);
    /* an MCP tool's job (no request) wants the JSON value, not bytes */
    r->on = c && j->req && (c->lru[kind] || c->via_redis[kind]);
    if (!r->on) return 0;
    r->fresh = true;
    r->pos = ag_projector_position(j->env->projector);
    if (c->via_redis[kind]) return lookup_redis(j, r);
    r->gen = ag_lru_gen(c->lru[kind]);
    char *v;
    size_t len;
    uint64_t meta;
    if (ag_lru_get(c->lru[kind], key, strlen(key), &v, &len, &meta)) return 0;
    answer(j, v, len, r->pos);
    ag_free(v);
    return 1;
}

json_t *svc_cache_query(struct svc_job *j, const struct svc_cache_read *r, enum rm_id rm,
                        const char *sql, const char *const *args, size_t nargs, svc_row_fn row)
{
    return r->fresh ? svc_rm_query_fresh(j->env, rm, sql, args, nargs, row)
                    : svc_rm_query(j->env, rm, sql, args, nargs, row);
}

int svc_cache_get_one(struct svc_job *j, enum svc_cache_kind kind, const struct svc_one *one,
                      const char *id, const char *owner)
{
    static const char *const pfx[SVC_CACHE_KINDS] = {"p:", "l:", "c:", "s:"};
    if (owner && strcmp(owner, id) != 0) return svc_get_one(j, one, id, owner); /* 404 anyway */
    char key[192];
    snprintf(key, sizeof key, "%s%.160s", pfx[kind], id);
    struct svc_cache_read r;
    if (svc_cache_lookup(j, kind, key, &r)) return 0;
    j->rm_fresh = r.fresh;
    int rc = svc_get_one(j, one, id, owner);
    j->rm_fresh = false;
    if (!rc && r.on) r.pos = j->rm_position;
    if (!rc) svc_cache_fill(j, &r);
    return rc;
}

static void fill_redis(struct svc_cache_read *r, const char *body, size_t len)
{
    struct svc_cache *c = r->c;
    struct ag_buf v;
    ag_buf_init(&v);
    ag_buf_printf(&v, "%llu\n", (unsigned long long)r->pos);
    if (r->kind == SVC_CACHE_LIST) ag_buf_printf(&v, "%lld\n", r->epoch);
    if (ag_buf_append(&v, body, len) == 0) {
        char key[224];
        redis_key(key, sizeof key, r->key);
        bool nx = r->kind == SVC_CACHE_STOCK; /* never over a written-through level */
        if (ag_redis_set(c->redis, key, v.data, v.len, nx ? 0 : c->ttl_ms, nx) == 0 &&
            atomic_load(&c->rgen[r->kind]) != r->gen && r->kind != SVC_CACHE_LIST)
            ag_redis_del(c->redis, key); /* a change raced the read: drop what we stored */
    }
    ag_buf_free(&v);
}

void svc_cache_fill(struct svc_job *j, struct svc_cache_read *r)
{
    if (!j->req || j->status != 200 || j->problem || !j->resp) return;
    char *text = json_dumps(j->resp, JSON_COMPACT);
    if (!text) return;
    answer(j, text, strlen(text), r->on ? r->pos : j->rm_position);
    json_decref(j->resp);
    j->resp = NULL;
    if (r->on && r->c->via_redis[r->kind]) {
        fill_redis(r, text, strlen(text));
    } else if (r->on) {
        struct ag_lru_item it = {r->key, strlen(r->key), text, strlen(text), r->pos};
        ag_lru_put(r->c->lru[r->kind], &it, r->gen);
    }
    free(text);
}

void svc_cache_finish(struct svc_job *j, struct ag_http_req *req)
{
    AG_UNUSED(req);
    char *inm = j->ext;
    j->ext = NULL;
    if (inm && j->status == 200 && !j->problem && j->etag[0] && svc_inm_matches(inm, j->etag)) {
        j->status = 304; /* the client's copy is current: headers only */
        ag_free(j->raw);
        j->raw = NULL;
        json_decref(j->resp);
        j->resp = NULL;
    }
    ag_free(inm);
}

/* A hit of the in-process cache answered on the loop thread, before any
 * threadpool hop: the lookup takes two short mutexes and copies the bytes, cheaper
 * than queueing the job. Redis is never called here (it may block): those reads,
 * and every miss, run on the threadpool. 1 when answered. */
static int answer_on_loop(struct svc_job *j, struct ag_http_req *req, enum svc_cache_kind kind,
                          const char *key)
{
    struct svc_cache *c = j->env->cache;
    if (!c || !c->lru[kind]) return 0;
    uint64_t pos = ag_projector_position(j->env->projector);
    char *v;
    size_t len;
    if (ag_lru_get(c->lru[kind], key, strlen(key), &v, &len, NULL)) return 0;
    char etag[24], position[24];
    snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)ag_xxh3(v, len));
    snprintf(position, sizeof position, "%llu", (unsigned long long)pos);
    const char *inm = ag_http_req_header(req, "If-None-Match");
    bool same = inm && svc_inm_matches(inm, etag);
    ag_http_resp_header(req, "ETag", etag);
    ag_http_resp_header(req, "X-Projection-Position", position);
    ag_http_respond(req, same ? 304 : 200, same ? NULL : "application/json", same ? NULL : v,
                    same ? 0 : len);
    ag_free(v);
    if (kind == SVC_CACHE_PRODUCT) svc_cache_view(c, j->param);
    return 1;
}

/* Keep If-None-Match for svc_cache_finish (the answer from the threadpool). */
static int keep_inm(struct svc_job *j, struct ag_http_req *req)
{
    const char *inm = ag_http_req_header(req, "If-None-Match");
    if (inm && !(j->ext = ag_strdup(inm))) return AG_ENOMEM;
    return 0;
}

int svc_cache_prepare_product(struct svc_job *j, struct ag_http_req *req)
{
    char key[192];
    snprintf(key, sizeof key, "p:%s", j->param);
    return answer_on_loop(j, req, SVC_CACHE_PRODUCT, key) ? 1 : keep_inm(j, req);
}

int svc_cache_prepare_list(struct svc_job *j, struct ag_http_req *req)
{
    int64_t limit = 20;
    char key[192];
    if (!j->q[0] || (ag_parse_i64(j->q[0], &limit) == 0 && limit >= 1 && limit <= 100)) {
        snprintf(key, sizeof key, "l:%d:%.160s", (int)limit, j->q[1] ? j->q[1] : "");
        if (answer_on_loop(j, req, SVC_CACHE_LIST, key)) return 1;
    }
    return keep_inm(j, req);
}

/* ---- invalidation (the projections' runner threads) ---- */

void svc_cache_touch(void *ud, const char *id)
{
    struct pend *p = ud;
    if (!p || p->all) return;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->ids[i], id) == 0) return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        void *ids = cap <= PEND_MAX ? ag_realloc(p->ids, cap * sizeof *p->ids) : NULL;
        if (!ids) {
            p->all = true;
            return;
        }
        p->ids = ids;
        p->cap = cap;
    }
    snprintf(p->ids[p->n++], sizeof p->ids[0], "%s", id);
}

static const char *const prefix[SVC_CACHE_KINDS] = {"p:", "l:", "c:", "s:"};

/* Drop the touched entries of `kind` (and, for products, every page). */
static void invalidate(struct svc_cache *c, struct pend *p)
{
    enum svc_cache_kind k = p->kind;
    char key[128], rkey[160];
    atomic_fetch_add(&c->rgen[k], 1);
    if (c->lru[k] && p->all) ag_lru_clear(c->lru[k]);
    for (size_t i = 0; i < p->n && !p->all; i++) {
        snprintf(key, sizeof key, "%s%s", prefix[k], p->ids[i]);
        if (c->lru[k]) ag_lru_del(c->lru[k], key, strlen(key));
        redis_key(rkey, sizeof rkey, key);
        if (c->via_redis[k]) ag_redis_del(c->redis, rkey);
    }
    if (c->via_redis[k] && p->all) ag_redis_forget_all(c->redis);
    if (k == SVC_CACHE_PRODUCT) { /* any product change changes the pages */
        atomic_fetch_add(&c->rgen[SVC_CACHE_LIST], 1);
        if (c->lru[SVC_CACHE_LIST]) ag_lru_clear(c->lru[SVC_CACHE_LIST]);
        if (c->via_redis[SVC_CACHE_LIST]) ag_redis_incr(c->redis, "agora:c:lepoch");
    }
}

static json_t *stock_row(const struct ag_rm_row *st)
{
    json_int_t on = ag_rm_int64(st, 1), res = ag_rm_int64(st, 2);
    return json_pack("{s:s, s:I, s:I, s:I}", "productId", ag_rm_text(st, 0), "onHand", on,
                     "reserved", res, "available", on - res);
}

/* Write-through: the committed level of each touched product into Redis. */
static void write_through(struct svc_cache *c, struct pend *p)
{
    atomic_fetch_add(&c->rgen[SVC_CACHE_STOCK], 1);
    if (!atomic_load(&c->ready)) { /* starting: the read models are not open yet */
        for (size_t i = 0; i < p->n && !p->all; i++) {
            char key[160];
            snprintf(key, sizeof key, "agora:c:s:%s", p->ids[i]);
            ag_redis_del(c->redis, key);
        }
        if (p->all) ag_redis_forget_all(c->redis);
        return;
    }
    uint64_t pos = ag_projector_position(c->env->projector);
    for (size_t i = 0; i < p->n && !p->all; i++) {
        const char *args[] = {p->ids[i]};
        json_t *rows = svc_rm_query_fresh(
            c->env, RM_STOCK, "SELECT product_id, on_hand, reserved FROM stock WHERE product_id=?1",
            args, 1, stock_row);
        char key[160];
        snprintf(key, sizeof key, "agora:c:s:%s", p->ids[i]);
        char *text =
            json_array_size(rows) ? json_dumps(json_array_get(rows, 0), JSON_COMPACT) : NULL;
        struct ag_buf v;
        ag_buf_init(&v);
        if (text) ag_buf_printf(&v, "%llu\n%s", (unsigned long long)pos, text);
        if (text && v.data)
            ag_redis_set(c->redis, key, v.data, v.len, 0, false);
        else
            ag_redis_del(c->redis, key);
        ag_buf_free(&v);
        free(text);
        json_decref(rows);
    }
    if (p->all) ag_redis_forget_all(c->redis);
}

static void committed(void *ud)
{
    struct pend *p = ud;
    if (!p->n && !p->all) return;
    if (p->kind == SVC_CACHE_STOCK)
        write_through(p->c, p);
    else
        invalidate(p->c, p);
    p->n = 0;
    p->all = false;
}

void svc_cache_forget(struct svc_cache *c, enum svc_cache_kind kind, const char *id)
{
    if (!c) return;
    struct pend one = {.c = c, .kind = kind};
    char ids[1][64];
    snprintf(ids[0], sizeof ids[0], "%s", id);
    one.ids = ids;
    one.n = 1;
    invalidate(c, &one);
}

/* ---- write-behind: product views ---- */

void svc_cache_view(struct svc_cache *c, const char *id)
{
    if (!c || strlen(id) >= sizeof c->views[0].id) return;
    uint64_t h = ag_xxh3(id, strlen(id));
    pthread_mutex_lock(&c->views_lock);
    for (size_t i = 0; i < VIEWS_SLOTS / 2; i++) { /* probe at most half the table */
        struct view_slot *s = &c->views[(h + i) & (VIEWS_SLOTS - 1)];
        if (!s->id[0]) {
            if (c->nviews >= VIEWS_SLOTS / 2) break; /* full until the next flush */
            snprintf(s->id, sizeof s->id, "%s", id);
            c->nviews++;
        }
        if (strcmp(s->id, id) == 0) {
            s->n++;
            break;
        }
    }
    pthread_mutex_unlock(&c->views_lock);
}

static void add_count(void *ud, const char *field, int64_t n)
{
    json_t *counts = ud;
    json_int_t have = json_integer_value(json_object_get(counts, field));
    json_object_set_new(counts, field, json_integer(have + n));
}

/* One flush: the local table to Redis (when there), the shared counts to the log. */
static void views_flush(struct svc_cache *c)
{
    struct view_slot *mine = ag_calloc(VIEWS_SLOTS, sizeof *mine);
    if (!mine) return;
    pthread_mutex_lock(&c->views_lock);
    struct view_slot *taken = c->views;
    c->views = mine;
    c->nviews = 0;
    pthread_mutex_unlock(&c->views_lock);
    json_t *counts = json_object();
    for (size_t i = 0; i < VIEWS_SLOTS; i++) {
        if (!taken[i].id[0]) continue;
        if (!c->redis || ag_redis_hincr(c->redis, "agora:views", taken[i].id, (int64_t)taken[i].n))
            add_count(counts, taken[i].id, (int64_t)taken[i].n); /* no Redis: straight on */
    }
    ag_free(taken);
    if (c->redis) ag_redis_take_hash(c->redis, "agora:views", add_count, counts);
    if (json_object_size(counts)) {
        json_t *d = json_pack("{s:o}", "counts", counts);
        char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
        struct ag_event_data ev = {.type = SVC_EV_PRODUCT_VIEWS,
                                   .type_len = strlen(SVC_EV_PRODUCT_VIEWS),
                                   .data = text,
                                   .data_len = text ? strlen(text) : 0};
        struct ag_err err;
        if (text &&
            ag_store_append(c->env->store, "catalog-views", 13, AG_STORE_ANY, &ev, 1, NULL, &err))
            AG_WARN("cache.views_flush_failed", AG_LS("error", err.msg));
        free(text);
        json_decref(d);
    } else {
        json_decref(counts);
    }
}

static void *flusher_main(void *arg)
{
    struct svc_cache *c = arg;
    ag_thread_name("ag-cache-flush");
    pthread_mutex_lock(&c->stop_lock);
    while (!c->stop) {
        struct timespec ts;
        ag_deadline_mono_in_ms(&ts, (long)c->flush_ms);
        pthread_cond_timedwait(&c->stop_cond, &c->stop_lock, &ts);
        bool last = c->stop;
        pthread_mutex_unlock(&c->stop_lock);
        views_flush(c); /* the last one at stop too */
        pthread_mutex_lock(&c->stop_lock);
        if (last) break;
    }
    pthread_mutex_unlock(&c->stop_lock);
    return NULL;
}

/* ---- setup ---- */

static void kind_metrics(struct svc_cache *c, struct ag_obs_registry *m)
{
    static const char *const labels[] = {"cache"};
    struct ag_obs_family *fh, *fm;
    if (!m ||
        ag_obs_family_define(m,
                             &(struct ag_obs_family_spec){AG_OBS_COUNTER, "agora_cache_hits_total",
                                                          "Cache lookups answered.", 1, labels,
                                                          NULL, 0},
                             &fh) ||
        ag_obs_family_define(m,
                             &(struct ag_obs_family_spec){
                                 AG_OBS_COUNTER, "agora_cache_misses_total",
                                 "Cache lookups that went to the source.", 1, labels, NULL, 0},
                             &fm))
        return;
    for (int k = 0; k < SVC_CACHE_KINDS; k++) {
        if (!c->via_redis[k]) continue;
        char name[48];
        snprintf(name, sizeof name, "redis_%s", kind_name[k]);
        ag_obs_series_get(fh, (const char *const[]){name}, &c->m_hit[k]);
        ag_obs_series_get(fm, (const char *const[]){name}, &c->m_miss[k]);
    }
}

static void collect(void *ud)
{
    struct svc_cache *c = ud;
    for (int k = 0; k < SVC_CACHE_KINDS; k++)
        if (c->lru[k]) ag_lru_publish(c->lru[k]);
    if (c->redis) ag_obs_breaker_state(c->metrics, "cache", "redis", ag_redis_state(c->redis));
}

static int make_lrus(struct ag_platform *p, struct svc_cache *c)
{
    size_t bytes = p->cfg.read_cache_bytes ? p->cfg.read_cache_bytes : 16u << 20;
    for (int k = 0; k < SVC_CACHE_KINDS; k++) {
        if (c->via_redis[k] || k == SVC_CACHE_STOCK) continue; /* stock changes with every order */
        struct ag_lru_config lc = {kind_name[k], bytes, c->ttl_ms, NULL, p->metrics};
        if (ag_lru_new(&lc, &c->lru[k])) return AG_ENOMEM;
    }
    return 0;
}

static void hook(struct ag_platform *p, struct svc_cache *c, enum rm_id rm, enum svc_cache_kind k)
{
    c->pend[k] = (struct pend){.c = c, .kind = k};
    if (!c->lru[k] && !c->via_redis[k]) return;
    p->projs[rm].ud = &c->pend[k];
    p->projs[rm].committed = committed;
}

static void cache_free(struct svc_cache *c)
{
    for (int k = 0; k < SVC_CACHE_KINDS; k++) {
        ag_lru_free(c->lru[k]);
        ag_free(c->pend[k].ids);
    }
    ag_redis_free(c->redis);
    ag_free(c->views);
    pthread_mutex_destroy(&c->views_lock);
    pthread_mutex_destroy(&c->stop_lock);
    pthread_cond_destroy(&c->stop_cond);
    ag_free(c);
}

static int cache_new(struct ag_platform *p, struct svc_cache **out, struct ag_err *err)
{
    const char *mode = p->cfg.read_cache ? p->cfg.read_cache : "local";
    bool redis = strncmp(mode, "redis://", 8) == 0;
    if (!redis && strcmp(mode, "local") != 0)
        return ag_err_set(err, AG_EINVAL, "--cache takes local, off or redis://HOST:PORT, not '%s'",
                          mode);
    struct svc_cache *c = ag_calloc(1, sizeof *c);
    if (!c) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_init(&c->views_lock, NULL);
    pthread_mutex_init(&c->stop_lock, NULL);
    ag_cond_init_mono(&c->stop_cond);
    c->env = &p->env;
    c->metrics = p->metrics;
    c->ttl_ms = p->cfg.read_cache_ttl_ms ? p->cfg.read_cache_ttl_ms : 60000;
    c->flush_ms = p->cfg.views_flush_ms ? p->cfg.views_flush_ms : 5000;
    c->views = ag_calloc(VIEWS_SLOTS, sizeof *c->views);
    int rc = c->views ? 0 : ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc && redis) {
        struct ag_redis_config rcfg = {.uri = mode, .metrics = p->metrics};
        rc = ag_redis_new(&rcfg, &c->redis, err);
        c->via_redis[SVC_CACHE_PRODUCT] = c->via_redis[SVC_CACHE_LIST] =
            c->via_redis[SVC_CACHE_STOCK] = true;
    }
    if (!rc && make_lrus(p, c)) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (rc) {
        cache_free(c);
        return rc;
    }
    kind_metrics(c, p->metrics);
    *out = c;
    return 0;
}

int svc_cache_start(struct ag_platform *p, struct ag_err *err)
{
    if (p->cfg.read_cache && strcmp(p->cfg.read_cache, "off") == 0) return 0;
    struct svc_cache *c = NULL;
    int rc = cache_new(p, &c, err);
    if (rc) return rc;
    p->cache = p->env.cache = c;
    for (size_t i = 0; i < SVC_MAX_CONTEXTS; i++) p->envs[i].cache = c;
    hook(p, c, RM_PRODUCTS, SVC_CACHE_PRODUCT);
    hook(p, c, RM_CUSTOMERS, SVC_CACHE_CUSTOMER);
    hook(p, c, RM_STOCK, SVC_CACHE_STOCK);
    ag_obs_registry_collector(p->metrics, collect, c);
    if (pthread_create(&c->flusher, NULL, flusher_main, c) == 0) c->flusher_started = true;
    if (c->redis) AG_INFO("cache.redis", AG_LS("uri", p->cfg.read_cache));
    return 0;
}

void svc_cache_ready(struct ag_platform *p)
{
    if (p->cache) atomic_store(&p->cache->ready, true);
}

void svc_cache_stop(struct ag_platform *p)
{
    struct svc_cache *c = p->cache;
    if (!c) return;
    if (c->flusher_started) {
        pthread_mutex_lock(&c->stop_lock);
        c->stop = true;
        pthread_cond_signal(&c->stop_cond);
        pthread_mutex_unlock(&c->stop_lock);
        pthread_join(c->flusher, NULL);
    }
    ag_obs_registry_collector_remove(p->metrics, collect, c);
    cache_free(c);
    p->cache = p->env.cache = NULL;
    for (size_t i = 0; i < SVC_MAX_CONTEXTS; i++) p->envs[i].cache = NULL;
}
