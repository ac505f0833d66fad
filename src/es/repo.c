/*
 * The aggregate repository.
 *
 * Cache. Loaded aggregates live in a hash table of `struct centry` (stream name →
 * state + version), each with its own mutex, so commands on one aggregate run one
 * at a time while different aggregates proceed in parallel. Before every use the
 * entry is caught up with the store (an in-memory version check, then the events
 * after the cached version), so another process writing the same store is seen.
 * Entries nobody holds are evicted in LRU order while the cache is over its byte
 * budget (`cache_bytes`: each entry counts its struct, name and state as malloc
 * sizes those blocks, plus what the type's `bytes` hook reports of the state's
 * heap, measured by the leader after each batch; every domain type that holds
 * heap reports it) or over `cache_capacity` entries (a safety net: a type without
 * the hook counts only its struct).
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
 * Synchronous commands may bring extra parts too (ag_es_execute_extra: an
 * Idempotency-Key's record committed with the command's events).
 *
 * Commands over several aggregates (ag_es_execute_multi, _multi_async) take the
 * lead of each entry in stream name order; a busy entry is waited for through
 * its queue (a placeholder that the leader hands the lead to, see the section
 * at the end), so sync, async and multi commands on the same aggregates share
 * one order and never wait in a cycle. They are not batched.
 *
 * Snapshots. After an append that crosses a multiple of `snapshot_every`, the
 * state is snapshotted. A cold load starts from the latest snapshot; a snapshot
 * that fails to restore is ignored (the events are the truth).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agora/es.h"
#include "es/internal.h"

struct cmd;
struct multi;

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

/* What malloc uses for a block of n bytes (glibc: n + 8 rounded up to 16). */
static size_t heap_block(size_t n)
{
    size_t b = (n + 8 + 15) & ~(size_t)15;
    return b < 32 ? 32 : b;
}

/* An entry's estimated bytes (its leader, or nobody, touches the state): its two
 * blocks (entry + name, state) as malloc sizes them, plus the state's heap. */
static size_t entry_bytes(const struct centry *e)
{
    size_t n = heap_block(sizeof *e + strlen(e->stream) + 1) + heap_block(e->type->state_size);
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
        struct ag_err ue;
        json_t *data = ag_es_event_data(ev, &ue); /* upcast to the current shape */
        char type[AG_STORE_TYPE_MAX + 1];
        memcpy(type, ev->type, ev->type_len);
        type[ev->type_len] = 0;
        int rc = data ? e->type->evolve(e->state, type, data) : ue.code;
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
    /* a command over several aggregates waiting for this entry's lead (no decide:
     * the leader that reaches it hands the lead over, see hand_over) */
    struct multi *multi;
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

/* A command over several aggregates (see ag_es_execute_multi below). */
struct mpart {
    struct centry *e;
    size_t idx;   /* index in the command's parts */
    int64_t base; /* the version the decision saw */
};

struct multi {
    struct ag_es_repo *r;
    struct ag_es_multi_cmd cmd;      /* parts, ud and metadata borrowed */
    size_t n, held;                  /* parts; leads taken so far, in `p` order */
    struct mpart p[AG_ES_MULTI_MAX]; /* in stream name order */
    struct mpart *by_idx[AG_ES_MULTI_MAX];
    struct cmd nodes[AG_ES_MULTI_MAX]; /* its place in p[i].e's queue */
    bool async;
    struct ag_es_async as;
    uint32_t attempt;
    struct ag_es_batch outs[AG_ES_MULTI_MAX];
    size_t total; /* events over all aggregates */
    struct ag_event_data *ev;
    char **texts;
    struct ag_append_part parts[AG_STORE_MULTI_MAX];
    struct ag_append_result ar[AG_STORE_MULTI_MAX];
    size_t np, nagg; /* parts to append, of which the aggregates' come first */
    struct ag_append_multi_req mreq;
    struct ag_es_result res;
    int rc;
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
    for (size_t i = 0; b->texts && i < 2 * b->all.n; i++) free(b->texts[i]); /* jansson's */
    ag_free(b->texts);
    ag_free(b->ev);
    ag_es_batch_free(&b->all);
    b->texts = NULL, b->ev = NULL, b->nparts = 0, b->agg = false;
}

/* Point *meta at the metadata for a new event of `type`: the command's, or a
 * copy with its schema version (kept in *owned). Nonzero on out of memory. */
static int versioned_meta(const char *type, const char **meta, char **owned)
{
    if (ag_es_schema_version(type, strlen(type)) <= 1) return 0;
    if (!(*owned = ag__es_meta_for(*meta, type))) return AG_ENOMEM;
    *meta = *owned;
    return 0;
}

/* Encode the batch's events and gather the parts to append: the aggregate's
 * (exact expected version `base`), then the extras of every command that
 * succeeded. */
static int encode(struct batch *b)
{
    struct ag_es_batch *all = &b->all;
    b->ev = ag_calloc(all->n + 1, sizeof *b->ev);
    b->texts = ag_calloc(2 * all->n + 1, sizeof *b->texts); /* payloads, then metadata */
    if (!b->ev || !b->texts) return ag_err_set(&b->err, AG_ENOMEM, "out of memory");
    for (struct cmd *c = b->list; c; c = c->next)
        for (size_t i = c->first; i < c->first + c->n; i++) {
            const char *meta = c->metadata;
            if (!(b->texts[i] = json_dumps(all->v[i].data, JSON_COMPACT | JSON_ENCODE_ANY)) ||
                versioned_meta(all->v[i].type, &meta, &b->texts[all->n + i]))
                return ag_err_set(&b->err, AG_ENOMEM, "out of memory");
            b->ev[i] = (struct ag_event_data){.type = all->v[i].type,
                                              .type_len = strlen(all->v[i].type),
                                              .data = b->texts[i],
                                              .data_len = strlen(b->texts[i]),
                                              .metadata = meta,
                                              .metadata_len = meta ? strlen(meta) : 0};
        }
    if (all->n) {
        ag__es_meta_share(b->ev, all->n);
        b->parts[b->nparts++] =
            (struct ag_append_part){b->e->stream, strlen(b->e->stream),
                                    b->base < 0 ? AG_STORE_NO_STREAM : b->base, b->ev, all->n};
        b->agg = true;
    }
    for (struct cmd *c = b->list; c; c = c->next)
        for (size_t i = 0; c->rc == 0 && i < c->as.nextra; i++)
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
        for (size_t i = 0; !c->lost && i < c->as.nextra; i++) {
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
    size_t extras = last->as.nextra;
    for (int n = 1; last->next && n < BATCH_MAX_CMDS; n++) {
        if (last->next->multi) break; /* it waits for the lead, not for a batch */
        size_t x = last->next->as.nextra;
        if (extras + x >= AG_STORE_MULTI_MAX) break;
        extras += x;
        last = last->next;
    }
    e->qhead = last->next;
    if (!e->qhead) e->qtail = NULL;
    last->next = NULL;
    return list;
}

static void multi_granted(struct multi *m);

/* The queue's head is a multi command (e->lock held, the caller leads): it leads
 * now. A synchronous one is woken; an asynchronous one is returned, to go on
 * (multi_granted) once the lock is let go. */
static struct multi *hand_over(struct centry *e)
{
    struct cmd *c = e->qhead;
    e->qhead = c->next;
    if (!e->qhead) e->qtail = NULL;
    c->next = NULL;
    if (c->multi->async) return c->multi;
    c->done = true;
    pthread_cond_broadcast(&e->done);
    return NULL;
}

/* Become the leader if nobody is, and run batches until the queue is empty or a
 * multi command takes the lead over (the caller then waits as any other). */
static void lead(struct ag_es_repo *r, struct centry *e)
{
    e->leader = true;
    while (e->qhead) {
        if (e->qhead->multi) {
            struct multi *m = hand_over(e);
            if (m) {
                pthread_mutex_unlock(&e->lock);
                multi_granted(m);
                pthread_mutex_lock(&e->lock);
            }
            return; /* e->leader stays: it is the multi command's now */
        }
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

int ag_es_execute_extra(struct ag_es_repo *r, const struct ag_es_cmd *cmd,
                        const struct ag_append_part *extra, size_t nextra, struct ag_es_result *res,
                        struct ag_err *err)
{
    if (nextra >= AG_STORE_MULTI_MAX)
        return ag_err_set(err, AG_EINVAL, "at most %d extra parts", AG_STORE_MULTI_MAX - 1);
    struct cmd c = {.decide = cmd->decide,
                    .ud = cmd->ud,
                    .metadata = cmd->metadata,
                    .view = cmd->view,
                    .view_ud = cmd->view_ud,
                    .as = {.extra = extra, .nextra = nextra}};
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
    if (e->qhead && !e->qhead->multi) {
        b->list = take_batch(e);
        b->attempt = 0;
        pthread_mutex_unlock(&e->lock);
        return true;
    }
    struct multi *m = NULL;
    if (e->qhead) {
        m = hand_over(e); /* e->leader stays: the multi command's now */
    } else {
        e->leader = false;
        pthread_cond_broadcast(&e->done); /* a synchronous waiter may have to lead now */
    }
    pthread_mutex_unlock(&e->lock);
    release(b->r, e); /* the batch's own hold on the entry */
    ag_free(b);
    if (m) multi_granted(m);
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
    /* The head is no multi placeholder: those queue only behind a leader, and a
     * leader hands the lead to one at the head instead of letting go. */
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

/* ---- commands over several aggregates (ag_es_execute_multi[_async]) ----
 *
 * A multi command takes the lead of every entry it touches, one at a time in
 * stream name order (so two of them never wait for each other in a cycle, and a
 * single aggregate's leader never waits for another entry). An entry nobody
 * leads is taken at once; otherwise the command queues a placeholder (struct
 * cmd with `multi`) behind the entry's commands, and the leader that reaches it
 * (synchronous, asynchronous batch or another multi command letting go) hands
 * the lead over instead of batching it: a synchronous multi command's thread is
 * woken, an asynchronous one goes on in the thread that handed over, without
 * blocking. With every lead held it catches the states up, decides, and appends
 * in one multi-stream append at the exact versions (the asynchronous form adds
 * its extra parts to that append); a conflict re-decides on fresh states. States
 * are evolved only after the append succeeded. Then it lets each entry go: the
 * next placeholder gets it, or queued asynchronous commands get an asynchronous
 * batch, or a queued synchronous caller is woken to lead. */

static int mpart_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mpart *)a)->e->stream, ((const struct mpart *)b)->e->stream);
}

static void multi_free(struct multi *m)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->p[i].e) release(m->r, m->p[i].e);
    ag_free(m);
}

/* Check the command, hold its entries and order them. */
static int multi_new(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd, struct multi **out,
                     struct ag_err *err)
{
    size_t n = cmd->nparts;
    if (n == 0 || n > AG_ES_MULTI_MAX || !cmd->decide)
        return ag_err_set(err, AG_EINVAL, "a command over aggregates has 1..%d parts and a decide",
                          AG_ES_MULTI_MAX);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(cmd->parts[i].stream, cmd->parts[j].stream) == 0)
                return ag_err_set(err, AG_EINVAL, "stream %s appears twice in one command",
                                  cmd->parts[i].stream);
    struct multi *m = ag_calloc(1, sizeof *m);
    if (!m) return ag_err_set(err, AG_ENOMEM, "out of memory");
    m->r = r;
    m->cmd = *cmd;
    m->n = n;
    for (size_t i = 0; i < n; i++) {
        m->p[i].idx = i;
        if (!(m->p[i].e = acquire(r, cmd->parts[i].type, cmd->parts[i].stream))) {
            multi_free(m);
            return ag_err_set(err, AG_ENOMEM, "out of memory");
        }
    }
    qsort(m->p, n, sizeof *m->p, mpart_cmp);
    for (size_t i = 0; i < n; i++) m->by_idx[m->p[i].idx] = &m->p[i];
    *out = m;
    return 0;
}

/* Take the leads not held yet, in order. A synchronous command waits for each;
 * an asynchronous one queues its placeholder and returns false (it goes on in
 * multi_granted, maybe on another thread: `m` is not to be touched after). */
static bool multi_take_leads(struct multi *m)
{
    while (m->held < m->n) {
        struct centry *e = m->p[m->held].e;
        struct cmd *node = &m->nodes[m->held];
        pthread_mutex_lock(&e->lock);
        if (!e->leader) {
            e->leader = true;
        } else {
            *node = (struct cmd){.multi = m};
            enqueue_cmd(e, node);
            if (m->async) {
                pthread_mutex_unlock(&e->lock);
                return false;
            }
            while (!node->done) pthread_cond_wait(&e->done, &e->lock);
        }
        pthread_mutex_unlock(&e->lock);
        m->held++;
    }
    return true;
}

/* Give up the lead of `e`: to the multi command queued first, to an
 * asynchronous batch of the queued commands when one of them is asynchronous,
 * else to a waiting synchronous caller (or nobody). */
static void let_go(struct ag_es_repo *r, struct centry *e)
{
    struct multi *next = NULL;
    struct batch *b = NULL;
    struct ag_store_loop *loop = NULL;
    pthread_mutex_lock(&e->lock);
    for (struct cmd *c = e->qhead; c && !loop && !c->multi; c = c->next)
        if (c->async) loop = c->as.loop;
    if (e->qhead && e->qhead->multi) {
        next = hand_over(e);
    } else if (loop && (b = ag_calloc(1, sizeof *b))) {
        *b = (struct batch){.r = r, .e = e, .loop = loop, .list = take_batch(e)};
    } else if (loop) {
        lead(r, e); /* no memory for an asynchronous batch: run the queue here */
    } else {
        e->leader = false;
        pthread_cond_broadcast(&e->done); /* a queued synchronous caller leads */
    }
    pthread_mutex_unlock(&e->lock);
    if (b) {
        hold(r, e); /* the batch's own, released when it lets go */
        async_run(b);
    }
    if (next) multi_granted(next);
}

static void multi_clear(struct multi *m)
{
    for (size_t i = 0; m->texts && i < 2 * m->total; i++) free(m->texts[i]); /* jansson's */
    ag_free(m->texts);
    ag_free(m->ev);
    for (size_t i = 0; i < m->n; i++) ag_es_batch_free(&m->outs[i]);
    m->texts = NULL, m->ev = NULL, m->total = 0, m->np = 0, m->nagg = 0;
}

/* Encode the decided events: one part per aggregate that got events (at its
 * exact decided version), then the extra parts. */
static int multi_encode(struct multi *m)
{
    for (size_t i = 0; i < m->n; i++) m->total += m->outs[i].n;
    if (m->total) {
        m->ev = ag_calloc(m->total, sizeof *m->ev);
        m->texts = ag_calloc(2 * m->total, sizeof *m->texts); /* payloads, then metadata */
        if (!m->ev || !m->texts) return ag_err_set(&m->err, AG_ENOMEM, "out of memory");
    }
    size_t mlen = m->cmd.metadata ? strlen(m->cmd.metadata) : 0, k = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct ag_es_batch *o = &m->outs[i];
        if (!o->n) continue;
        const struct mpart *p = m->by_idx[i];
        m->parts[m->np++] =
            (struct ag_append_part){p->e->stream, strlen(p->e->stream),
                                    p->base < 0 ? AG_STORE_NO_STREAM : p->base, m->ev + k, o->n};
        for (size_t j = 0; j < o->n; j++, k++) {
            const char *meta = m->cmd.metadata;
            if (!(m->texts[k] = json_dumps(o->v[j].data, JSON_COMPACT | JSON_ENCODE_ANY)) ||
                versioned_meta(o->v[j].type, &meta, &m->texts[m->total + k]))
                return ag_err_set(&m->err, AG_ENOMEM, "out of memory");
            m->ev[k] = (struct ag_event_data){.type = o->v[j].type,
                                              .type_len = strlen(o->v[j].type),
                                              .data = m->texts[k],
                                              .data_len = strlen(m->texts[k]),
                                              .metadata = meta,
                                              .metadata_len =
                                                  meta == m->cmd.metadata ? mlen : strlen(meta)};
        }
        ag__es_meta_share(m->ev + k - o->n, o->n);
    }
    m->nagg = m->np;
    for (size_t i = 0; i < m->as.nextra; i++) m->parts[m->np++] = m->as.extra[i];
    return 0;
}

/* Catch every state up, decide and encode one attempt (every lead held). */
static int multi_prepare(struct multi *m)
{
    void *states[AG_ES_MULTI_MAX];
    int64_t versions[AG_ES_MULTI_MAX];
    ag_err_clear(&m->err);
    int rc = 0;
    for (size_t i = 0; i < m->n && !rc; i++) rc = catch_up(m->r, m->p[i].e, &m->err);
    if (rc) return rc;
    for (size_t i = 0; i < m->n; i++) {
        states[m->p[i].idx] = m->p[i].e->state;
        versions[m->p[i].idx] = m->p[i].base = m->p[i].e->version;
    }
    rc = m->cmd.decide(states, versions, m->cmd.ud, m->outs, &m->err);
    return rc ? rc : multi_encode(m);
}

/* An extra part that conflicted is not the aggregates': no retry. */
static bool extra_lost(struct multi *m)
{
    for (size_t i = m->nagg; i < m->np; i++) {
        const struct ag_append_part *p = &m->parts[i];
        int64_t v;
        if (p->expected_version == AG_STORE_ANY ||
            ag_store_stream_version(m->r->cfg.store, p->stream, p->stream_len, &v))
            continue;
        if (p->expected_version == AG_STORE_STREAM_EXISTS ? v >= 0 : v == p->expected_version)
            continue;
        ag_err_set(&m->err, AG_ECONFLICT, "%.*s is at version %lld, not %lld", (int)p->stream_len,
                   p->stream, (long long)v, (long long)p->expected_version);
        m->err.aux = v;
        return true;
    }
    return false;
}

/* The outcome `rc` of an attempt. True when it is to be decided again. */
static bool multi_conclude(struct multi *m, int rc)
{
    if (!rc) {
        for (size_t i = 0; i < m->nagg; i++) {
            m->res.appended += m->parts[i].count;
            if (i == 0 || m->ar[i].last_position > m->res.position)
                m->res.position = m->ar[i].last_position;
        }
        for (size_t i = 0; m->np && i < m->n; i++) {
            struct mpart *p = &m->p[i];
            evolve_events(p->e, m->outs[p->idx].v, m->outs[p->idx].n);
            maybe_snapshot(m->r, p->e, p->base);
        }
        m->res.version = m->by_idx[0]->e->version;
    }
    bool appended = m->np > 0;
    bool again =
        rc == AG_ECONFLICT && appended && !extra_lost(m) && m->attempt++ < m->r->cfg.max_retries;
    multi_clear(m);
    if (again) memset(&m->res, 0, sizeof m->res);
    m->rc = rc;
    return again;
}

int ag_es_execute_multi(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                        struct ag_es_result *res, struct ag_err *err)
{
    return ag_es_execute_multi_extra(r, cmd, NULL, 0, res, err);
}

int ag_es_execute_multi_extra(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                              const struct ag_append_part *extra, size_t nextra,
                              struct ag_es_result *res, struct ag_err *err)
{
    struct ag_err local;
    if (!err) err = &local;
    if (res) memset(res, 0, sizeof *res);
    if (cmd->nparts + nextra > AG_STORE_MULTI_MAX)
        return ag_err_set(err, AG_EINVAL, "at most %d parts in all", AG_STORE_MULTI_MAX);
    struct multi *m = NULL;
    int rc = multi_new(r, cmd, &m, err);
    if (rc || !m) return rc ? rc : AG_ENOMEM;
    m->as.extra = extra;
    m->as.nextra = nextra;
    multi_take_leads(m);
    do {
        rc = multi_prepare(m);
        if (!rc && m->np) rc = ag_store_append_multi(r->cfg.store, m->parts, m->np, m->ar, &m->err);
    } while (multi_conclude(m, rc));
    for (size_t i = m->n; i-- > 0;) let_go(r, m->p[i].e);
    if (res) *res = m->res;
    if (rc) *err = m->err;
    multi_free(m);
    return rc;
}

/* ---- asynchronous ---- */

/* Let every entry go, then report (so `done` may use the aggregates again). */
static void multi_end(struct multi *m)
{
    for (size_t i = m->n; i-- > 0;) let_go(m->r, m->p[i].e);
    m->as.done(m->as.ud, m->rc, &m->res, &m->err);
    multi_free(m);
}

static void multi_run_async(struct multi *m);

static void multi_appended(void *ud, int status, const struct ag_append_result *res,
                           const struct ag_err *err)
{
    AG_UNUSED(res);
    struct multi *m = ud;
    if (status) m->err = *err;
    if (multi_conclude(m, status))
        multi_run_async(m);
    else
        multi_end(m);
}

/* Every lead held: decide and submit, until the store has it or it is over. */
static void multi_run_async(struct multi *m)
{
    for (;;) {
        int rc = multi_prepare(m);
        if (!rc && m->np) {
            m->mreq = (struct ag_append_multi_req){.parts = m->parts,
                                                   .nparts = m->np,
                                                   .results = m->ar,
                                                   .cb = multi_appended,
                                                   .ud = m};
            rc = ag_store_append_multi_async(m->as.loop, &m->mreq);
            if (!rc) return; /* multi_appended goes on */
            rc = ag_err_set(&m->err, rc, "cannot queue the append: %s", ag_strerror(rc));
        }
        if (!multi_conclude(m, rc)) break;
    }
    multi_end(m);
}

/* A leader handed `m` the lead of its next entry. */
static void multi_granted(struct multi *m)
{
    m->held++;
    if (multi_take_leads(m)) multi_run_async(m);
}

int ag_es_execute_multi_async(struct ag_es_repo *r, const struct ag_es_multi_cmd *cmd,
                              const struct ag_es_async *a)
{
    if (!a->done || !a->loop || cmd->nparts + a->nextra > AG_STORE_MULTI_MAX) return AG_EINVAL;
    struct multi *m = NULL;
    struct ag_err err;
    int rc = multi_new(r, cmd, &m, &err);
    if (rc || !m) return rc ? rc : AG_ENOMEM;
    m->async = true;
    m->as = *a;
    if (multi_take_leads(m)) multi_run_async(m);
    return 0;
}
