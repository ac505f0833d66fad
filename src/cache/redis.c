/*
 * The Redis client of the shared cache (include/agora/cache.h): a pool of
 * synchronous hiredis connections with connect and command timeouts, behind a
 * circuit breaker.
 *
 * Why synchronous: every caller is a worker thread (a service handler on the
 * libuv threadpool, a projection's runner, the view-counter flusher), never an
 * event loop, and a loopback round trip is tens of microseconds; the timeout
 * bounds how long a caller can be held (50 ms by default). A connection is used
 * by one thread at a time (taken from the pool, given back); a connection that
 * failed is closed and made again on next use.
 *
 * Outage: any I/O error or timeout counts against the breaker (3 in a row open
 * it for open_ms, then one probe). While it is open every call answers
 * AG_EUNAVAILABLE at once and the callers use the database. A delete or a
 * write that could not be made is remembered (up to DIRTY_MAX keys, beyond that
 * every agora:c: key) and done first by the next call that reaches Redis, so an
 * invalidation lost in an outage cannot leave an old value to be served after it.
 */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "agora/cache.h"
#include "agora/obs.h"
#include "agora/resil.h"

#define DIRTY_MAX 1024
#define POOL_MAX  64

struct ag_redis {
    char host[256];
    uint16_t port;
    int db;
    struct timeval tv;
    struct ag_cb *breaker;
    pthread_mutex_t lock; /* the pool and the dirty keys */
    pthread_cond_t freed;
    redisContext *conns[POOL_MAX];
    bool busy[POOL_MAX];
    uint32_t npool;
    char *dirty[DIRTY_MAX];
    size_t ndirty;
    bool dirty_all; /* more keys than DIRTY_MAX: delete every agora:c: key */
    _Atomic bool has_dirty;
    struct ag_obs_series *m_errors;
};

static int parse_uri(struct ag_redis *r, const char *uri, struct ag_err *err)
{
    if (!uri || strncmp(uri, "redis://", 8) != 0)
        return ag_err_set(err, AG_EINVAL, "a Redis cache is redis://HOST:PORT[/DB], not '%s'",
                          uri ? uri : "");
    char hp[300];
    snprintf(hp, sizeof hp, "%s", uri + 8);
    char *slash = strchr(hp, '/');
    r->db = 0;
    if (slash) {
        *slash = '\0';
        r->db = slash[1] ? (int)strtol(slash + 1, NULL, 10) : 0;
    }
    return ag_hostport_parse(hp, 0, r->host, sizeof r->host, &r->port, err);
}

int ag_redis_new(const struct ag_redis_config *cfg, struct ag_redis **out, struct ag_err *err)
{
    struct ag_redis *r = ag_calloc(1, sizeof *r);
    if (!r) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = parse_uri(r, cfg->uri, err);
    if (rc) {
        ag_free(r);
        return rc;
    }
    uint32_t ms = cfg->timeout_ms ? cfg->timeout_ms : 50;
    r->tv.tv_sec = ms / 1000;
    r->tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    r->npool = cfg->pool ? (cfg->pool < POOL_MAX ? cfg->pool : POOL_MAX) : 16;
    uint64_t open_ms = cfg->open_ms ? cfg->open_ms : 1000;
    struct ag_cb_config cb = {.name = "redis",
                              .failure_threshold = 3,
                              .open_ns = open_ms * 1000000ull,
                              .half_open_permits = 1};
    rc = ag_cb_new(&cb, &r->breaker, err);
    if (rc) {
        ag_free(r);
        return rc;
    }
    pthread_mutex_init(&r->lock, NULL);
    ag_cond_init_mono(&r->freed);
    if (cfg->metrics) {
        struct ag_obs_family *f;
        if (!ag_obs_family_define(cfg->metrics,
                                  &(struct ag_obs_family_spec){
                                      AG_OBS_COUNTER, "agora_cache_redis_errors_total",
                                      "Redis calls that failed or timed out (answered from the "
                                      "database instead).",
                                      0, NULL, NULL, 0},
                                  &f))
            ag_obs_series_get(f, NULL, &r->m_errors);
    }
    *out = r;
    return 0;
}

void ag_redis_free(struct ag_redis *r)
{
    if (!r) return;
    for (uint32_t i = 0; i < r->npool; i++)
        if (r->conns[i]) redisFree(r->conns[i]);
    for (size_t i = 0; i < r->ndirty; i++) ag_free(r->dirty[i]);
    ag_cb_free(r->breaker);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->freed);
    ag_free(r);
}

bool ag_redis_up(struct ag_redis *r)
{
    enum ag_cb_state s = ag_cb_state(r->breaker);
    return s != AG_CB_OPEN && s != AG_CB_FORCED_OPEN;
}

int ag_redis_state(struct ag_redis *r)
{
    return (int)ag_cb_state(r->breaker);
}

/* A call in progress: its pool slot and breaker permit. */
struct call {
    struct ag_redis *r;
    int slot;
    bool admitted; /* the breaker gave a permit, not recorded yet */
    struct ag_cb_permit permit;
};

/* Take a connection (made now when the slot has none); AG_EUNAVAILABLE when the
 * breaker is open, the pool stays busy for the timeout, or connecting fails. */
static int call_begin(struct ag_redis *r, struct call *c)
{
    c->r = r;
    c->slot = -1;
    c->admitted = false;
    if (ag_cb_allow(r->breaker, &c->permit, NULL, NULL)) return AG_EUNAVAILABLE;
    c->admitted = true;
    struct timespec until;
    ag_deadline_mono_in_ms(&until, (int)(r->tv.tv_sec * 1000 + r->tv.tv_usec / 1000));
    pthread_mutex_lock(&r->lock);
    for (;;) {
        for (uint32_t i = 0; i < r->npool && c->slot < 0; i++)
            if (!r->busy[i]) c->slot = (int)i;
        if (c->slot >= 0 || pthread_cond_timedwait(&r->freed, &r->lock, &until)) break;
    }
    if (c->slot >= 0) r->busy[c->slot] = true;
    pthread_mutex_unlock(&r->lock);
    if (c->slot < 0) { /* our own pool is the bottleneck, not Redis: no failure */
        ag_cb_record(r->breaker, &c->permit, 0);
        c->admitted = false;
        return AG_EUNAVAILABLE;
    }
    if (r->conns[c->slot]) return 0;
    redisContext *ctx = redisConnectWithTimeout(r->host, r->port, r->tv);
    if (ctx && !ctx->err && redisSetTimeout(ctx, r->tv) == REDIS_OK) {
        if (r->db) {
            redisReply *rep = redisCommand(ctx, "SELECT %d", r->db);
            if (!rep || rep->type == REDIS_REPLY_ERROR) {
                if (rep) freeReplyObject(rep);
                redisFree(ctx);
                ctx = NULL;
            } else {
                freeReplyObject(rep);
            }
        }
        if (ctx) {
            r->conns[c->slot] = ctx;
            return 0;
        }
    }
    if (ctx) redisFree(ctx);
    return AG_EUNAVAILABLE; /* call_end records the failure */
}

/* Give the connection back; a failed one (rc AG_EUNAVAILABLE) is closed. */
static void call_end(struct call *c, int rc)
{
    struct ag_redis *r = c->r;
    if (!c->admitted) return; /* refused by the breaker or the pool: nothing was tried */
    if (rc == AG_EUNAVAILABLE && r->m_errors) ag_obs_counter_inc(r->m_errors);
    ag_cb_record(r->breaker, &c->permit, rc == AG_EUNAVAILABLE ? AG_EIO : 0);
    c->admitted = false;
    if (c->slot < 0) return;
    pthread_mutex_lock(&r->lock);
    if (rc == AG_EUNAVAILABLE && r->conns[c->slot]) {
        redisFree(r->conns[c->slot]);
        r->conns[c->slot] = NULL;
    }
    r->busy[c->slot] = false;
    pthread_cond_signal(&r->freed);
    pthread_mutex_unlock(&r->lock);
}

/* Remember `key` to delete when Redis answers again. */
static void dirty_add(struct ag_redis *r, const char *key)
{
    pthread_mutex_lock(&r->lock);
    bool known = false;
    for (size_t i = 0; i < r->ndirty && !known; i++) known = strcmp(r->dirty[i], key) == 0;
    char *k = known || r->dirty_all ? NULL : ag_strdup(key);
    if (k && r->ndirty < DIRTY_MAX)
        r->dirty[r->ndirty++] = k;
    else if (!known) {
        ag_free(k);
        r->dirty_all = true;
    }
    atomic_store(&r->has_dirty, true);
    pthread_mutex_unlock(&r->lock);
}

static void dirty_mark_all(struct ag_redis *r)
{
    pthread_mutex_lock(&r->lock);
    r->dirty_all = true;
    atomic_store(&r->has_dirty, true);
    pthread_mutex_unlock(&r->lock);
}

void ag_redis_forget_all(struct ag_redis *r)
{
    dirty_mark_all(r);
}

static const char del_all_script[] =
    "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do"
    " redis.call('UNLINK', k) n = n + 1 end return n";

/* On a working connection: delete what outages left behind. AG_EUNAVAILABLE when
 * Redis failed meanwhile (the keys stay remembered). */
static int dirty_flush(struct call *c)
{
    struct ag_redis *r = c->r;
    if (!atomic_load(&r->has_dirty)) return 0;
    pthread_mutex_lock(&r->lock);
    char *keys[DIRTY_MAX];
    size_t n = r->ndirty;
    bool all = r->dirty_all;
    memcpy(keys, r->dirty, n * sizeof *keys);
    r->ndirty = 0;
    r->dirty_all = false;
    atomic_store(&r->has_dirty, false);
    pthread_mutex_unlock(&r->lock);
    redisContext *ctx = r->conns[c->slot];
    int rc = 0;
    redisReply *rep = all ? redisCommand(ctx, "EVAL %s 0 %s", del_all_script, "agora:c:*") : NULL;
    if (all && (!rep || rep->type == REDIS_REPLY_ERROR)) rc = AG_EUNAVAILABLE;
    if (rep) freeReplyObject(rep);
    for (size_t i = 0; i < n && !rc; i++) {
        rep = redisCommand(ctx, "DEL %s", keys[i]);
        if (!rep || rep->type == REDIS_REPLY_ERROR) rc = AG_EUNAVAILABLE;
        if (rep) freeReplyObject(rep);
    }
    for (size_t i = 0; i < n; i++) {
        if (rc) dirty_add(r, keys[i]);
        ag_free(keys[i]);
    }
    if (rc && all) dirty_mark_all(r);
    return rc;
}

/* Run one command (argv form) after the pending deletes. The reply (to free) or
 * NULL with AG_EUNAVAILABLE. */
static int command(struct ag_redis *r, int argc, const char **argv, const size_t *lens,
                   redisReply **out)
{
    struct call c;
    *out = NULL;
    int rc = call_begin(r, &c);
    if (!rc) rc = dirty_flush(&c);
    if (!rc) {
        redisReply *rep = redisCommandArgv(r->conns[c.slot], argc, argv, lens);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            if (rep) freeReplyObject(rep);
            rc = AG_EUNAVAILABLE;
        } else {
            *out = rep;
        }
    }
    call_end(&c, rc);
    return rc;
}

int ag_redis_get(struct ag_redis *r, const char *key, char **val, size_t *vlen)
{
    redisReply *rep;
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    int rc = command(r, 2, argv, lens, &rep);
    if (rc) return rc;
    if (rep->type != REDIS_REPLY_STRING)
        rc = AG_ENOTFOUND;
    else if (!(*val = ag_malloc(rep->len + 1)))
        rc = AG_ENOMEM;
    else {
        memcpy(*val, rep->str, rep->len);
        (*val)[rep->len] = '\0';
        *vlen = rep->len;
    }
    freeReplyObject(rep);
    return rc;
}

int ag_redis_set(struct ag_redis *r, const char *key, const char *val, size_t vlen, uint64_t ttl_ms,
                 bool nx)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%llu", (unsigned long long)ttl_ms);
    const char *argv[] = {"SET", key, val, "PX", ms, "NX"};
    size_t lens[] = {3, strlen(key), vlen, 2, strlen(ms), 2};
    int argc = ttl_ms ? 5 : 3;
    if (nx) argv[argc] = "NX", lens[argc] = 2, argc++;
    redisReply *rep;
    int rc = command(r, argc, argv, lens, &rep);
    if (rc) {
        if (!nx) dirty_add(r, key); /* a write-through that did not land: drop the old one */
        return rc;
    }
    freeReplyObject(rep);
    return 0;
}

int ag_redis_del(struct ag_redis *r, const char *key)
{
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *rep;
    int rc = command(r, 2, argv, lens, &rep);
    if (rc) {
        dirty_add(r, key);
        return rc;
    }
    freeReplyObject(rep);
    return 0;
}

int ag_redis_incr(struct ag_redis *r, const char *key)
{
    const char *argv[] = {"INCR", key};
    size_t lens[] = {4, strlen(key)};
    redisReply *rep;
    int rc = command(r, 2, argv, lens, &rep);
    if (rc) {
        dirty_mark_all(r);
        return rc;
    }
    freeReplyObject(rep);
    return 0;
}

static char *reply_copy(const redisReply *e, size_t *len)
{
    if (!e || e->type != REDIS_REPLY_STRING) return NULL;
    char *v = ag_malloc(e->len + 1);
    if (!v) return NULL;
    memcpy(v, e->str, e->len);
    v[e->len] = '\0';
    if (len) *len = e->len;
    return v;
}

int ag_redis_get2(struct ag_redis *r, const char *k1, const char *k2, char **v1, char **v2,
                  size_t *len2)
{
    const char *argv[] = {"MGET", k1, k2};
    size_t lens[] = {4, strlen(k1), strlen(k2)};
    redisReply *rep;
    *v1 = *v2 = NULL;
    int rc = command(r, 3, argv, lens, &rep);
    if (rc) return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        *v1 = reply_copy(rep->element[0], NULL);
        *v2 = reply_copy(rep->element[1], len2);
    }
    freeReplyObject(rep);
    return 0;
}

int ag_redis_hincr(struct ag_redis *r, const char *hash, const char *field, int64_t n)
{
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)n);
    const char *argv[] = {"HINCRBY", hash, field, num};
    size_t lens[] = {7, strlen(hash), strlen(field), strlen(num)};
    redisReply *rep;
    int rc = command(r, 4, argv, lens, &rep);
    if (!rc) freeReplyObject(rep);
    return rc;
}

int ag_redis_take_hash(struct ag_redis *r, const char *hash,
                       void (*fn)(void *ud, const char *field, int64_t value), void *ud)
{
    char tmp[300];
    struct ag_uuid u;
    char id[AG_UUID_STRLEN + 1];
    ag_uuid_v7(&u, NULL, NULL);
    ag_uuid_format(&u, id);
    snprintf(tmp, sizeof tmp, "%s:taking:%s", hash, id);
    const char *ren[] = {"RENAME", hash, tmp};
    size_t rlen[] = {6, strlen(hash), strlen(tmp)};
    redisReply *rep;
    struct call c;
    int rc = call_begin(r, &c);
    if (rc) return call_end(&c, rc), rc;
    rep = redisCommandArgv(r->conns[c.slot], 3, ren, rlen);
    if (!rep) rc = AG_EUNAVAILABLE;
    bool absent = rep && rep->type == REDIS_REPLY_ERROR; /* ERR no such key */
    if (rep) freeReplyObject(rep);
    if (!rc && !absent) {
        rep = redisCommand(r->conns[c.slot], "HGETALL %s", tmp);
        if (!rep || rep->type != REDIS_REPLY_ARRAY) rc = AG_EUNAVAILABLE;
        for (size_t i = 0; !rc && i + 1 < rep->elements; i += 2)
            if (rep->element[i]->type == REDIS_REPLY_STRING &&
                rep->element[i + 1]->type == REDIS_REPLY_STRING)
                fn(ud, rep->element[i]->str, strtoll(rep->element[i + 1]->str, NULL, 10));
        if (rep) freeReplyObject(rep);
        if (!rc) {
            rep = redisCommand(r->conns[c.slot], "DEL %s", tmp);
            if (rep) freeReplyObject(rep);
        }
    }
    call_end(&c, rc);
    return rc;
}
