/*
 * The aggregate repository.
 *
 * Cache. Loaded aggregates live in a hash table of `struct centry` (stream name →
 * state + version), each with its own mutex, so commands on one aggregate run one
 * at a time while different aggregates proceed in parallel. Before every use the
 * entry is caught up with the store (an in-memory version check, then the events
 * after the cached version), so another process writing the same store is seen.
 * Entries nobody holds are evicted in LRU order while the cache is over its byte
 * budget (`cache_bytes`: each entry counts its struct, name and state, plus what
 * the type's `bytes` hook reports of the state's heap, measured by the leader
 * after each batch) or over `cache_capacity` entries (a safety net while the
 * domain's types do not report their heap: without the hook a state counts only
 * its struct).
 *
 * Batching. Commands on one aggregate are combined: the first caller becomes the
 * aggregate's leader and runs every command queued meanwhile as one batch —
 * decide each against the state the previous ones left, then append all their
 * events in one atomic append with the exact expected version. A hot aggregate
 * (a product's stock, under many orders) thus costs one group commit per batch,
 * not per command. If the append fails the whole batch is re-decided on fresh
 * state (conflict) or fails together.
 *
 * Asynchronous commands (ag_es_execute_async) join the same queue. A caller that
 * finds no leader leads without blocking: it decides the batch and submits it
 * with ag_store_append_async (or _multi_async when commands bring extra parts,
 * e.g. a saga's step record), and the completion, on the store loop's thread,
 * finishes the batch (a conflict: re-decide and resubmit, bounded) and leads the
 * next one from the queue, synchronous commands included (their callers wait as
 * usual). A synchronous leader runs asynchronous commands too and calls their
 * `done` itself. So leadership of an entry passes between threads, always under
 * its lock; only the leader touches the state. A conflict on an extra part is
 * not the aggregate's: that command fails, the rest of its batch is retried.
 *
 * Snapshots. After an append that crosses a multiple of `snapshot_every`, the
 * state is snapshotted. A cold load starts from the latest snapshot; a snapshot
 * that fails to restore is ignored (the events are the truth).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agora/es.h"

struct cmd;

struct centry {
    struct centry *hnext;       /* hash chain */
    struct centry *prev, *next; /* LRU list (most recent at head) */
    pthread_mutex_t lock;       /* guards the queue and `leader` */
    pthread_cond_t done;        /* a batch finished */
    struct cmd *qhead, *qtail;  /* commands waiting for the leader */
    bool leader;                /* a thread is running batches (only it touches the state) */
    const struct ag_es_type *type;
    uint64_t hash;
    unsigned refs;   /* users holding it (not evictable while > 0) */
    bool loaded;     /* state initialised */
    size_t bytes;    /* what it counts in the repo's total (r->lock) */
    size_t measured; /* its size as the leader last measured it (atomic) */
    int64_t version; /* version the state includes (-1: none) */
    void *state;
    char stream[]; /* NUL-terminated */
};

struct ag_es_repo {
    struct ag_es_repo_config cfg;
    pthread_mutex_t lock; /* guards the table, LRU and refs */
    struct centry **buckets;
    size_t nbuckets, count;
    size_t bytes;       /* sum of the entries' `bytes` */
    uint64_t evictions; /* entries evicted */
    struct centry *lru_head, *lru_tail;
};

int ag_es_batch_push(struct ag_es_batch *b, const char *type, json_t *data)
{
    if (!data) return AG_ENOMEM;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        struct ag_es_new *v = ag_realloc(b->v, cap * sizeof *v);
        if (!v) {
            json_decref(data);
            return AG_ENOMEM;
        }
        b->v = v, b->cap = cap;
    }
    b->v[b->n++] = (struct ag_es_new){type, data};
    return 0;
}

void ag_es_batch_free(struct ag_es_batch *b)
{
    for (size_t i = 0; i < b->n; i++) json_decref(b->v[i].data);
    ag_free(b->v);
    memset(b, 0, sizeof *b);
}

int ag_es_repo_new(const struct ag_es_repo_config *cfg, struct ag_es_repo **out)
{
    struct ag_es_repo *r = ag_calloc(1, sizeof *r);
    if (!r) return AG_ENOMEM;
    r->cfg = *cfg;
    if (!r->cfg.snapshot_every) r->cfg.snapshot_every = 100;
    if (!r->cfg.max_retries) r->cfg.max_retries = 5;
    if (!r->cfg.cache_bytes) r->cfg.cache_bytes = 64u << 20;
    /* a safety net while not every type reports its state's heap (ag_es_type.bytes) */
    if (!r->cfg.cache_capacity) r->cfg.cache_capacity = 100000;
    r->nbuckets = 1024;
    while (r->nbuckets < r->cfg.cache_capacity) r->nbuckets *= 2;
    r->buckets = ag_calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
        ag_free(r);
        return AG_ENOMEM;
    }
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
}

static void entry_free(struct centry *e)
{
    if (e->loaded) e->type->free(e->state);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->done);
    ag_free(e->state);
    ag_free(e);
}

void ag_es_repo_free(struct ag_es_repo *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nbuckets; i++)
        for (struct centry *e = r->buckets[i], *n; e; e = n) {
            n = e->hnext;
            entry_free(e);
        }
    ag_free(r->buckets);
    pthread_mutex_destroy(&r->lock);
    ag_free(r);
}

/* ---- cache (r->lock held) ---- */

static void lru_unlink(struct ag_es_repo *r, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        r->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        r->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct ag_es_repo *r, struct centry *e)
{
    e->next = r->lru_head;
    e->prev = NULL;
    if (r->lru_head) r->lru_head->prev = e;
    r->lru_head = e;
    if (!r->lru_tail) r->lru_tail = e;
}

static bool over_budget(const struct ag_es_repo *r)
{
    return r->bytes > r->cfg.cache_bytes || r->count > r->cfg.cache_capacity;
}

/* An entry's estimated bytes (its leader, or nobody, touches the state). */
static size_t entry_bytes(const struct centry *e)
{
    size_t n = sizeof *e + strlen(e->stream) + 1 + e->type->state_size;
    if (e->loaded && e->type->bytes) n += e->type->bytes(e->state);
    return n;
}

/* The leader, after a batch: the state's size for the next accounting. */
static void note_size(struct centry *e)
{
    __atomic_store_n(&e->measured, entry_bytes(e), __ATOMIC_RELAXED);
}

/* Bring the repo's total up to date with what the leader measured. */
static void account(struct ag_es_repo *r, struct centry *e)
{
    size_t m = __atomic_load_n(&e->measured, __ATOMIC_RELAXED);
    if (!m || m == e->bytes) return;
    r->bytes += m - e->bytes; /* unsigned wrap-around cancels out */
    e->bytes = m;
}

static void evict(struct ag_es_repo *r)
{
    for (struct centry *e = r->lru_tail; e && over_budget(r);) {
        struct centry *prev = e->prev;
        if (e->refs == 0) {
            struct centry **pp = &r->buckets[e->hash & (r->nbuckets - 1)];
            while (*pp != e) pp = &(*pp)->hnext;
            *pp = e->hnext;
            lru_unlink(r, e);
            r->count--;
            r->bytes -= e->bytes;
            r->evictions++;
            entry_free(e);
        }
        e = prev;
    }
}

static struct centry *acquire(struct ag_es_repo *r, const struct ag_es_type *t, const char *stream)
{
    size_t len = strlen(stream);
    uint64_t h = ag_xxh3(stream, len);
    pthread_mutex_lock(&r->lock);
    struct centry *e = r->buckets[h & (r->nbuckets - 1)];
    while (e && !(e->hash == h && e->type == t && strcmp(e->stream, stream) == 0)) e = e->hnext;
    if (e) {
        lru_unlink(r, e);
    } else if ((e = ag_calloc(1, sizeof *e + len + 1)) &&
               (e->state = ag_calloc(1, t->state_size))) {
        memcpy(e->stream, stream, len + 1);
        e->hash = h;
        e->type = t;
        e->version = -1;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->done, NULL);
        e->hnext = r->buckets[h & (r->nbuckets - 1)];
        r->buckets[h & (r->nbuckets - 1)] = e;
        r->count++;
        e->bytes = entry_bytes(e);
        r->bytes += e->bytes;
    } else {
        ag_free(e);
        e = NULL;
    }
    if (e) {
        e->refs++;
        lru_push(r, e);
        evict(r);
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

static void release(struct ag_es_repo *r, struct centry *e)
{
    pthread_mutex_lock(&r->lock);
    e->refs--;
    account(r, e);
    evict(r);
    pthread_mutex_unlock(&r->lock);
}

/* One more user of `e` (it is held already, so it cannot be evicted meanwhile). */
static void hold(struct ag_es_repo *r, struct centry *e)
{
    pthread_mutex_lock(&r->lock);
    e->refs++;
    pthread_mutex_unlock(&r->lock);
}

void ag_es_repo_stats(struct ag_es_repo *r, struct ag_es_repo_stats *out)
{
    pthread_mutex_lock(&r->lock);
    *out = (struct ag_es_repo_stats){.entries = r->count,
                                     .bytes = r->bytes,
                                     .budget = r->cfg.cache_bytes,
                                     .evictions = r->evictions};
    pthread_mutex_unlock(&r->lock);
}

/* ---- loading (e->lock held) ---- */

static void reset_state(struct centry *e)
{
    if (e->loaded) e->type->free(e->state);
    memset(e->state, 0, e->type->state_size);
    e->type->init(e->state);
    e->loaded = true;
    e->version = -1;
}

static void try_snapshot(struct ag_es_repo *r, struct centry *e)
{
    struct ag_snapshot snap;
    if (ag_store_load_snapshot(r->cfg.store, e->stream, strlen(e->stream), &snap, NULL)) return;
    json_t *j = json_loadb(snap.state, snap.state_len, 0, NULL);
    if (j && e->type->restore(e->state, j) == 0) {
        e->version = snap.version;
    } else {
        AG_WARN("es.snapshot_ignored", AG_LS("stream", e->stream));
        reset_state(e);
    }
    json_decref(j);
    ag_snapshot_free(&snap);
}

static int apply_page(struct centry *e, const struct ag_event_page *p, struct ag_err *err)
{
    for (size_t i = 0; i < p->count; i++) {
        const struct ag_event *ev = &p->events[i];
        json_error_t je;
        json_t *data = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, &je);
        char type[AG_STORE_TYPE_MAX + 1];
        memcpy(type, ev->type, ev->type_len);
        type[ev->type_len] = 0;
        int rc = data ? e->type->evolve(e->state, type, data) : AG_EJSON;
        json_decref(data);
        if (rc)
            return ag_err_set(err, rc, "%s v%lld (%s): cannot apply: %s", e->stream,
                              (long long)ev->version, type, ag_strerror(rc));
        e->version = ev->version;
    }
    return 0;
}

/* Bring the cached state up to the store's version of the stream. */
static int catch_up(struct ag_es_repo *r, struct centry *e, struct ag_err *err)
{
    size_t len = strlen(e->stream);
    int64_t head;
    ag_store_stream_version(r->cfg.store, e->stream, len, &head);
    if (e->loaded && head == e->version) return 0;
    if (!e->loaded || head < e->version) {
        reset_state(e);
        if (head >= 0) try_snapshot(r, e);
    }
    while (e->version < head) {
        struct ag_event_page p;
        int rc = ag_store_read_stream(r->cfg.store, e->stream, len, e->version + 1, AG_READ_FORWARD,
                                      512, &p, err);
        if (rc) return rc;
        rc = apply_page(e, &p, err);
        size_t got = p.count;
        ag_event_page_free(&p);
        if (rc) {
            e->loaded = false; /* half-applied: rebuild next time */
            e->type->free(e->state);
            return rc;
        }
        if (got == 0) break;
    }
    return 0;
}

static void maybe_snapshot(struct ag_es_repo *r, struct centry *e, int64_t before)
{
    uint32_t n = r->cfg.snapshot_every;
    if (!e->loaded || (before + 1) / n == (e->version + 1) / n) return;
    json_t *j = e->type->snapshot(e->state);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) {
        struct ag_err err;
        if (ag_store_save_snapshot(r->cfg.store, e->stream, strlen(e->stream), e->version, text,
                                   strlen(text), &err))
            AG_WARN("es.snapshot_failed", AG_LS("stream", e->stream), AG_LS("error", err.msg));
    }
    free(text);
    json_decref(j);
}

/* ---- commands ---- */

#define BATCH_MAX_CMDS 256

struct cmd {
    struct cmd *next;
    ag_es_decide_fn decide; /* NULL: a read (view only) */
    void *ud;
    const char *metadata;
    ag_es_view_fn view;
    void *view_ud;
    size_t first, n; /* its events in the combined batch */
    int rc;
    struct ag_es_result res;
    struct ag_err *err;
    struct ag_err local_err;
    bool done;
    /* asynchronous commands (heap-allocated, freed after `as.done`) */
    bool async;
    bool lost; /* one of its extra parts conflicted: out of the batch for good */
    struct ag_es_async as;
};

/* One batch of commands on one aggregate, from load to durable (or failed). */
struct batch {
    struct ag_es_repo *r;
    struct centry *e;
    struct cmd *list;
    struct ag_store_loop *loop; /* NULL: appended synchronously */
    uint32_t attempt;
    int64_t base; /* the version the batch was decided on */
    struct ag_es_batch all;
    struct ag_event_data *ev;
    char **texts;
    struct ag_append_part parts[AG_STORE_MULTI_MAX];
    struct ag_append_result results[AG_STORE_MULTI_MAX];
    size_t nparts;
    bool agg; /* parts[0] holds the aggregate's events */
    struct ag_append_req req;
    struct ag_append_multi_req mreq;
    struct ag_err err;
};

static void evolve_events(struct centry *e, const struct ag_es_new *v, size_t n)
{
    for (size_t i = 0; i < n && e->loaded; i++) {
        if (e->type->evolve(e->state, v[i].type, v[i].data)) {
            AG_ERROR("es.evolve_rejected_own_event", AG_LS("stream", e->stream),
                     AG_LS("type", v[i].type));
            e->loaded = false; /* reload from the store next time */
            e->type->free(e->state);
        }
        e->version++;
    }
}

/* Decide every command against the state the previous ones left (tentatively
 * evolving the cached state), gathering their events into `all`. */
static void decide_all(struct centry *e, struct cmd *list, struct ag_es_batch *all)
{
    for (struct cmd *c = list; c; c = c->next) {
        c->first = all->n;
        c->n = 0;
        if (c->lost) continue; /* keeps its AG_ECONFLICT */
        ag_err_clear(c->err);
        if (!e->loaded) {
            c->rc = ag_err_set(c->err, AG_ECONFLICT, "%s: state lost in this batch", e->stream);
            continue;
        }
        if (!c->decide) {
            c->rc =
                e->version < 0 ? ag_err_set(c->err, AG_ENOTFOUND, "%s not found", e->stream) : 0;
            if (!c->rc) c->view(e->state, e->version, c->view_ud);
            continue;
        }
        struct ag_es_batch b = {0};
        c->rc = c->decide(e->state, e->version, c->ud, &b, c->err);
        for (size_t i = 0; i < b.n && !c->rc; i++) {
            c->rc = ag_es_batch_push(all, b.v[i].type, b.v[i].data);
            b.v[i].data = NULL;
        }
        if (!c->rc) {
            c->n = all->n - c->first;
            evolve_events(e, all->v + c->first, c->n);
            c->res.version = e->version;
            if (c->view && e->loaded) c->view(e->state, e->version, c->view_ud);
        } else {
            all->n = c->first; /* drop what this command pushed (its data was moved) */
        }
        ag_es_batch_free(&b);
    }
}

static void batch_clear(struct batch *b)
{
    for (size_t i = 0; b->texts && i < b->all.n; i++) free(b->texts[i]); /* jansson's allocator */
    ag_free(b->texts);
    ag_free(b->ev);
    ag_es_batch_free(&b->all);
    b->texts = NULL, b->ev = NULL, b->nparts = 0, b->agg = false;
}

/* Encode the batch's events and gather the parts to append: the aggregate's
 * (exact expected version `base`), then the extras of every command that
 * succeeded. */
static int encode(struct batch *b)
{
    struct ag_es_batch *all = &b->all;
    b->ev = ag_calloc(all->n + 1, sizeof *b->ev);
    b->texts = ag_calloc(all->n + 1, sizeof *b->texts);
    if (!b->ev || !b->texts) return ag_err_set(&b->err, AG_ENOMEM, "out of memory");
    for (struct cmd *c = b->list; c; c = c->next)
        for (size_t i = c->first; i < c->first + c->n; i++) {
            if (!(b->texts[i] = json_dumps(all->v[i].data, JSON_COMPACT | JSON_ENCODE_ANY)))
                return ag_err_set(&b->err, AG_ENOMEM, "out of memory");
            b->ev[i] =
                (struct ag_event_data){.type = all->v[i].type,
                                       .type_len = strlen(all->v[i].type),
                                       .data = b->texts[i],
                                       .data_len = strlen(b->texts[i]),
                                       .metadata = c->metadata,
                                       .metadata_len = c->metadata ? strlen(c->metadata) : 0};
        }
    if (all->n) {
        b->parts[b->nparts++] =
            (struct ag_append_part){b->e->stream, strlen(b->e->stream),
                                    b->base < 0 ? AG_STORE_NO_STREAM : b->base, b->ev, all->n};
        b->agg = true;
    }
    for (struct cmd *c = b->list; c; c = c->next)
        for (size_t i = 0; c->async && c->rc == 0 && i < c->as.nextra; i++)
            b->parts[b->nparts++] = c->as.extra[i];
    return 0;
}

/* Load, decide and encode one attempt of the batch. */
static int prepare(struct batch *b)
{
    ag_err_clear(&b->err);
    int rc = catch_up(b->r, b->e, &b->err);
    if (rc) {
        for (struct cmd *c = b->list; c; c = c->next)
            if (!c->lost) c->rc = rc, *c->err = b->err;
        return rc;
    }
    b->base = b->e->version;
    decide_all(b->e, b->list, &b->all);
    return encode(b);
}

static int append_sync(struct batch *b)
{
    struct ag_store *s = b->r->cfg.store;
    if (b->nparts == 1 && b->agg)
        return ag_store_append(s, b->parts[0].stream, b->parts[0].stream_len,
                               b->parts[0].expected_version, b->ev, b->all.n, &b->results[0],
                               &b->err);
    return ag_store_append_multi(s, b->parts, b->nparts, b->results, &b->err);
}

/* A conflict on one of a command's extra parts is not the aggregate's: that
 * command fails, the others may be retried. */
static void drop_lost(struct batch *b)
{
    for (struct cmd *c = b->list; c; c = c->next)
        for (size_t i = 0; c->async && !c->lost && i < c->as.nextra; i++) {
            const struct ag_append_part *p = &c->as.extra[i];
            int64_t v;
            if (p->expected_version == AG_STORE_ANY ||
                ag_store_stream_version(b->r->cfg.store, p->stream, p->stream_len, &v))
                continue;
            bool ok =
                p->expected_version == AG_STORE_STREAM_EXISTS ? v >= 0 : v == p->expected_version;
            if (ok) continue;
            c->lost = true;
            c->n = 0;
            c->rc = ag_err_set(c->err, AG_ECONFLICT, "%.*s is at version %lld, not %lld",
                               (int)p->stream_len, p->stream, (long long)v,
                               (long long)p->expected_version);
            c->err->aux = v;
        }
}

/* The outcome `rc` of an attempt: results or errors into the commands. True when
 * the batch is to be decided again (a conflict, within the retries). */
static bool conclude(struct batch *b, int rc)
{
    struct ag_es_repo *r = b->r;
    struct centry *e = b->e;
    if (!rc) {
        for (struct cmd *c = b->list; c; c = c->next)
            if (c->n) {
                c->res.appended = c->n;
                c->res.position = b->results[0].first_position + (c->first + c->n - 1);
            }
        if (b->agg) maybe_snapshot(r, e, b->base);
        note_size(e);
        batch_clear(b);
        return false;
    }
    bool appended = b->nparts > 0;
    batch_clear(b);
    if (e->loaded) { /* the tentative state is not in the store: rebuild */
        e->loaded = false;
        e->type->free(e->state);
    }
    if (appended && rc == AG_ECONFLICT) drop_lost(b);
    bool any = false;
    for (struct cmd *c = b->list; c; c = c->next) any |= !c->lost;
    if (appended && rc == AG_ECONFLICT && any && b->attempt++ < r->cfg.max_retries) return true;
    for (struct cmd *c = b->list; c; c = c->next)
        if (!c->lost && (c->n || c->rc == 0)) c->rc = rc, *c->err = b->err;
    return false;
}

/* Run one batch to its end (a synchronous leader, without the entry lock). */
static void run_batch(struct batch *b)
{
    for (;;) {
        int rc = prepare(b);
        if (!rc && b->nparts) rc = append_sync(b);
        if (!conclude(b, rc)) return;
    }
}

/* The batch is over: asynchronous commands get their `done` (no lock held),
 * synchronous ones are marked done. */
static void finish_cmds(struct ag_es_repo *r, struct centry *e, struct cmd *list)
{
    struct cmd *sync = NULL;
    for (struct cmd *c = list, *n; c; c = n) {
        n = c->next;
        if (!c->async) {
            c->next = sync;
            sync = c;
            continue;
        }
        c->as.done(c->as.ud, c->rc, &c->res, c->err);
        release(r, e);
        ag_free(c);
    }
    pthread_mutex_lock(&e->lock);
    for (struct cmd *c = sync; c; c = c->next) c->done = true;
    pthread_cond_broadcast(&e->done);
    pthread_mutex_unlock(&e->lock);
}

/* Take the next batch off the queue (e->lock held): at most BATCH_MAX_CMDS
 * commands and AG_STORE_MULTI_MAX - 1 extra parts. */
static struct cmd *take_batch(struct centry *e)
{
    struct cmd *list = e->qhead, *last = list;
    size_t extras = last->async ? last->as.nextra : 0;
    for (int n = 1; last->next && n < BATCH_MAX_CMDS; n++) {
        size_t x = last->next->async ? last->next->as.nextra : 0;
        if (extras + x >= AG_STORE_MULTI_MAX) break;
        extras += x;
        last = last->next;
    }
    e->qhead = last->next;
    if (!e->qhead) e->qtail = NULL;
    last->next = NULL;
    return list;
}

/* Become the leader if nobody is, and run batches until the queue is empty. */
static void lead(struct ag_es_repo *r, struct centry *e)
{
    e->leader = true;
    while (e->qhead) {
        struct batch b = {.r = r, .e = e, .list = take_batch(e)};
        pthread_mutex_unlock(&e->lock);
        run_batch(&b);
        finish_cmds(r, e, b.list);
        pthread_mutex_lock(&e->lock);
    }
    e->leader = false;
    pthread_cond_broadcast(&e->done); /* a waiter may have to lead now */
}

/* Queue `c` on `e` (e->lock held). */
static void enqueue_cmd(struct centry *e, struct cmd *c)
{
    if (e->qtail)
        e->qtail->next = c;
    else
        e->qhead = c;
    e->qtail = c;
}

static int submit(struct ag_es_repo *r, const struct ag_es_type *t, const char *stream,
                  struct cmd *c, struct ag_err *err)
{
    struct centry *e = acquire(r, t, stream);
    if (!e) return ag_err_set(err, AG_ENOMEM, "out of memory");
    c->err = err ? err : &c->local_err;
    pthread_mutex_lock(&e->lock);
    enqueue_cmd(e, c);
    while (!c->done) {
        if (!e->leader)
            lead(r, e);
        else
            pthread_cond_wait(&e->done, &e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    release(r, e);
    return c->rc;
}

int ag_es_execute(struct ag_es_repo *r, const struct ag_es_cmd *cmd, struct ag_es_result *res,
                  struct ag_err *err)
{
    struct cmd c = {.decide = cmd->decide,
                    .ud = cmd->ud,
                    .metadata = cmd->metadata,
                    .view = cmd->view,
                    .view_ud = cmd->view_ud};
    int rc = submit(r, cmd->type, cmd->stream, &c, err);
    if (res) *res = c.res;
    return rc;
}

/* ---- asynchronous commands ---- */

static void async_run(struct batch *b);

/* After a batch: finish its commands, then lead the next one or let go (and
 * free `b`). True when there is a next batch to run. */
static bool next_batch(struct batch *b)
{
    struct centry *e = b->e;
    finish_cmds(b->r, e, b->list);
    pthread_mutex_lock(&e->lock);
    if (e->qhead) {
        b->list = take_batch(e);
        b->attempt = 0;
        pthread_mutex_unlock(&e->lock);
        return true;
    }
    e->leader = false;
    pthread_cond_broadcast(&e->done); /* a synchronous waiter may have to lead now */
    pthread_mutex_unlock(&e->lock);
    release(b->r, e); /* the batch's own hold on the entry */
    ag_free(b);
    return false;
}

static void async_appended(void *ud, int status, const struct ag_append_result *res,
                           const struct ag_err *err)
{
    AG_UNUSED(res);
    struct batch *b = ud;
    if (status) b->err = *err;
    if (conclude(b, status) || next_batch(b)) async_run(b);
}

static int append_async(struct batch *b)
{
    if (b->nparts == 1 && b->agg) {
        b->req = (struct ag_append_req){.stream = b->parts[0].stream,
                                        .stream_len = b->parts[0].stream_len,
                                        .expected_version = b->parts[0].expected_version,
                                        .events = b->ev,
                                        .count = b->all.n,
                                        .cb = async_appended,
                                        .ud = b};
        int rc = ag_store_append_async(b->loop, &b->req);
        return rc ? ag_err_set(&b->err, rc, "cannot queue the append: %s", ag_strerror(rc)) : 0;
    }
    b->mreq = (struct ag_append_multi_req){.parts = b->parts,
                                           .nparts = b->nparts,
                                           .results = b->results,
                                           .cb = async_appended,
                                           .ud = b};
    int rc = ag_store_append_multi_async(b->loop, &b->mreq);
    return rc ? ag_err_set(&b->err, rc, "cannot queue the append: %s", ag_strerror(rc)) : 0;
}

/* Drive batches until one is in the store's hands or the queue is empty. */
static void async_run(struct batch *b)
{
    for (;;) {
        int rc = prepare(b);
        if (!rc && b->nparts) {
            if ((rc = append_async(b)) == 0) return; /* async_appended goes on (b may be gone) */
        }
        if (conclude(b, rc)) continue;
        if (!next_batch(b)) return;
    }
}

int ag_es_execute_async(struct ag_es_repo *r, const struct ag_es_cmd *cmd,
                        const struct ag_es_async *a)
{
    if (!a->done || !a->loop || a->nextra >= AG_STORE_MULTI_MAX) return AG_EINVAL;
    struct cmd *c = ag_calloc(1, sizeof *c);
    struct batch *b = ag_calloc(1, sizeof *b);
    struct centry *e = c && b ? acquire(r, cmd->type, cmd->stream) : NULL;
    if (!e) {
        ag_free(c), ag_free(b);
        return AG_ENOMEM;
    }
    *c = (struct cmd){.decide = cmd->decide,
                      .ud = cmd->ud,
                      .metadata = cmd->metadata,
                      .view = cmd->view,
                      .view_ud = cmd->view_ud,
                      .async = true,
                      .as = *a};
    c->err = &c->local_err;
    pthread_mutex_lock(&e->lock);
    enqueue_cmd(e, c);
    if (e->leader) { /* the leader's next batch takes it */
        pthread_mutex_unlock(&e->lock);
        ag_free(b);
        return 0;
    }
    e->leader = true;
    *b = (struct batch){.r = r, .e = e, .loop = a->loop, .list = take_batch(e)};
    pthread_mutex_unlock(&e->lock);
    hold(r, e); /* the batch's own, released when it lets go */
    async_run(b);
    return 0;
}

int ag_es_stream(const struct ag_es_type *t, const char *id, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s-%s", t->name, id);
    return n < 0 || (size_t)n >= cap ? AG_ETOOBIG : 0;
}

int ag_es_stream_id(const struct ag_es_type *t, const char *stream, size_t len, char *out,
                    size_t cap)
{
    size_t n = strlen(t->name);
    if (len <= n + 1 || memcmp(stream, t->name, n) != 0 || stream[n] != '-' || len - n - 1 >= cap)
        return AG_EINVAL;
    memcpy(out, stream + n + 1, len - n - 1);
    out[len - n - 1] = '\0';
    return 0;
}

int ag_es_read(struct ag_es_repo *r, const struct ag_es_type *t, const char *stream,
               ag_es_view_fn view, void *ud, struct ag_err *err)
{
    struct cmd c = {.view = view, .view_ud = ud};
    return submit(r, t, stream, &c, err);
}
