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

/* Append the combined events of `list` with the exact expected version `base`. */
static int append_all(struct ag_es_repo *r, struct centry *e, struct cmd *list,
                      const struct ag_es_batch *all, int64_t base, struct ag_err *err)
{
    struct ag_event_data *ev = ag_calloc(all->n, sizeof *ev);
    char **texts = ag_calloc(all->n, sizeof *texts);
    int rc = ev && texts ? 0 : ag_err_set(err, AG_ENOMEM, "out of memory");
    for (struct cmd *c = list; c && !rc; c = c->next)
        for (size_t i = c->first; i < c->first + c->n && !rc; i++) {
            texts[i] = json_dumps(all->v[i].data, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!texts[i])
                rc = ag_err_set(err, AG_ENOMEM, "out of memory");
            else
                ev[i] =
                    (struct ag_event_data){.type = all->v[i].type,
                                           .type_len = strlen(all->v[i].type),
                                           .data = texts[i],
                                           .data_len = strlen(texts[i]),
                                           .metadata = c->metadata,
                                           .metadata_len = c->metadata ? strlen(c->metadata) : 0};
        }
    struct ag_append_result ar;
    if (!rc)
        rc = ag_store_append(r->cfg.store, e->stream, strlen(e->stream),
                             base < 0 ? AG_STORE_NO_STREAM : base, ev, all->n, &ar, err);
    for (struct cmd *c = list; !rc && c; c = c->next)
        if (c->n) {
            c->res.appended = c->n;
            c->res.position = ar.first_position + (c->first + c->n - 1);
        }
    for (size_t i = 0; texts && i < all->n; i++) free(texts[i]); /* jansson's allocator */
    ag_free(texts);
    ag_free(ev);
    return rc;
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

/* Run one batch to its end (the leader, without the entry lock). */
static void run_batch(struct ag_es_repo *r, struct centry *e, struct cmd *list)
{
    for (uint32_t attempt = 0;; attempt++) {
        struct ag_err err;
        ag_err_clear(&err);
        int rc = catch_up(r, e, &err);
        for (struct cmd *c = list; rc && c; c = c->next) c->rc = rc, *c->err = err;
        if (rc) return;
        int64_t base = e->version;
        struct ag_es_batch all = {0};
        decide_all(e, list, &all);
        rc = all.n ? append_all(r, e, list, &all, base, &err) : 0;
        ag_es_batch_free(&all);
        if (!rc) {
            maybe_snapshot(r, e, base);
            note_size(e);
            return;
        }
        e->loaded = false; /* the tentative state is not in the store: rebuild */
        e->type->free(e->state);
        if (rc != AG_ECONFLICT || attempt >= r->cfg.max_retries) {
            for (struct cmd *c = list; c; c = c->next)
                if (c->n || c->rc == 0) c->rc = rc, *c->err = err;
            return;
        }
    }
}

/* Become the leader if nobody is, and run batches until the queue is empty. */
static void lead(struct ag_es_repo *r, struct centry *e)
{
    e->leader = true;
    while (e->qhead) {
        struct cmd *list = e->qhead, *last = list;
        for (int n = 1; last->next && n < BATCH_MAX_CMDS; n++) last = last->next;
        e->qhead = last->next;
        if (!e->qhead) e->qtail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&e->lock);
        run_batch(r, e, list);
        pthread_mutex_lock(&e->lock);
        for (struct cmd *c = list; c; c = c->next) c->done = true;
        pthread_cond_broadcast(&e->done);
    }
    e->leader = false;
    pthread_cond_broadcast(&e->done); /* a waiter may have to lead now */
}

static int submit(struct ag_es_repo *r, const struct ag_es_type *t, const char *stream,
                  struct cmd *c, struct ag_err *err)
{
    struct centry *e = acquire(r, t, stream);
    if (!e) return ag_err_set(err, AG_ENOMEM, "out of memory");
    c->err = err ? err : &c->local_err;
    pthread_mutex_lock(&e->lock);
    if (e->qtail)
        e->qtail->next = c;
    else
        e->qhead = c;
    e->qtail = c;
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
