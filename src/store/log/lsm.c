/*
 * The stream index across memory and disk: the memtable (index.c) in front of
 * the immutable tables (sst.c), newest first.
 *
 * - A lookup asks the memtable, then the frozen memtable (if any), then each table
 *   from the newest; the first record found is the stream's whole state (a table
 *   record is never combined with an older one). Readers get a heap copy of a table
 *   record (a borrowed pointer into either memtable: they hold ix_lock); the writer
 *   (and the recovery scan) bring a frozen or table record into the memtable before
 *   appending ("fault").
 * - When the memtable holds more than 3/4 of `index_memory` (the rest is left for
 *   the tables' summaries and bloom filters and the $all sparse index) the writer
 *   freezes it: only between groups, when no request holds a stream pointer, and
 *   only when it holds at least LOG_TB_MIN_STREAMS streams (a stream in use is held
 *   whole, 12 bytes an event: a few huge hot streams can exceed the cap, and
 *   flushing them would only bring them straight back). Freezing moves the memtable
 *   to `frozen` and starts an empty one under the write side of ix_lock: a moment.
 *   The flusher thread writes the frozen memtable into a table with no lock held,
 *   then, under the write lock, pushes the table and drops the frozen memtable, and
 *   saves a checkpoint naming the table. Appends wait for table writing only when
 *   the memtable fills again while the frozen one is still being written (two
 *   memtables full: back-pressure, counted in fl_waits). The checkpoint saves the
 *   frozen memtable's streams with the memtable's until a table holds them, so the
 *   files on disk always describe the log up to the checkpoint; a crash before the
 *   flush's checkpoint leaves an orphan table file, deleted at open. A failed write
 *   keeps the frozen memtable (still searched) and is retried as the memtable grows.
 *   At open (no threads yet) and after a scavenge's swap the flush is synchronous
 *   (ag__lidx_maybe_flush); the swap first waits for a pending one (ag__lidx_drain),
 *   so it re-points entries in the active memtable only.
 * - The merger thread merges the newest LOG_TB_MERGE_AT or more tables (extended
 *   to older ones while they are not much bigger: size tiers) into one, swaps it
 *   in under the write lock, saves a checkpoint naming it and only then deletes
 *   the old files. A crash at any point leaves either the old set named by the
 *   checkpoint or the new one; files no checkpoint names are deleted at open.
 * - Tombstones (count 0: a stream a scavenge deleted) are records like any other:
 *   they stop a lookup and are written by a flush when older tables exist; a merge
 *   whose run includes the oldest table drops them (nothing older to hide).
 * - A scavenge's plan walks the tables without ix_lock (ag__lidx_each_online):
 *   each merge holds mg_run from picking its run to freeing the old tables.
 * - Both threads run below the request threads (ag_thread_background): the
 *   flusher at nice FLUSHER_NICE (it must keep up, or appends wait for it), the
 *   merger at nice MERGER_NICE with idle-class I/O (nothing waits for a merge;
 *   merging competing at equal weight showed as append stalls in the soak).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/log/internal.h"

#define FLUSHER_NICE 5
#define MERGER_NICE  10

/* ---- lookups ---- */

static int table_find(struct lstore *ls, const char *name, size_t len, uint64_t h,
                      struct lstream **out)
{
    *out = NULL;
    for (size_t i = ls->ntables; i-- > 0;) {
        int rc = ag__ltb_get(ls->tables[i], name, len, h, out);
        if (rc == AG_ENOTFOUND) continue;
        if (rc == AG_ECORRUPT || rc == AG_EIO) {
            if (!__atomic_exchange_n(&ls->tb_corrupt, true, __ATOMIC_RELAXED))
                AG_ERROR("store.index_table_corrupt", AG_LS("dir", ls->dir),
                         AG_LU("table", ls->tables[i]->id),
                         AG_LS("action", "the index is rebuilt from the log at the next open"));
        }
        return rc;
    }
    return 0;
}

/* The frozen memtable's record of a stream (ix_lock held, or the flusher). */
static struct lstream *frozen_find(const struct lstore *ls, const char *name, size_t len,
                                   uint64_t h)
{
    return ls->frozen.slots ? ag__lindex_find(&ls->frozen, name, len, h) : NULL;
}

int ag__lidx_find(struct lstore *ls, const char *name, size_t len, uint64_t h, struct lstream **out,
                  bool *owned)
{
    *owned = false;
    *out = ag__lindex_find(&ls->ix, name, len, h);
    if (!*out) *out = frozen_find(ls, name, len, h); /* freed only under the write lock */
    if (*out || !ls->ntables) return 0;
    int rc = table_find(ls, name, len, h, out);
    *owned = *out != NULL;
    return rc;
}

void ag__lidx_release(struct lstream *st, bool owned)
{
    if (owned) ag__lstream_free(st);
}

/* A copy of the frozen memtable's record, or the tables' (ix_lock read side held). */
static int older_copy(struct lstore *ls, const char *name, size_t len, uint64_t h,
                      struct lstream **out)
{
    const struct lstream *f = frozen_find(ls, name, len, h);
    if (!f) return table_find(ls, name, len, h, out);
    struct ltb_rec r = {.hash = f->hash,
                        .name = f->name,
                        .name_len = f->name_len,
                        .count = f->count,
                        .snap_loc = f->snap_loc,
                        .entries = (const uint8_t *)lstream_entries((struct lstream *)f)};
    *out = ag__lstream_copy(&r);
    return *out ? 0 : AG_ENOMEM;
}

int ag__lidx_fault(struct lstore *ls, const char *name, size_t len, uint64_t h,
                   struct lstream **out, bool lock)
{
    *out = ag__lindex_find(&ls->ix, name, len, h);
    if (*out) return 0;
    struct lstream *copy;
    /* the merger swaps tables and the flusher empties the frozen memtable under it */
    if (lock) pthread_rwlock_rdlock(&ls->ix_lock);
    int rc = older_copy(ls, name, len, h, &copy);
    if (lock) pthread_rwlock_unlock(&ls->ix_lock);
    if (rc || !copy) return rc;
    if (lock) pthread_rwlock_wrlock(&ls->ix_lock);
    rc = ag__lindex_adopt(&ls->ix, copy); /* fails before inserting: never half a stream */
    if (lock) pthread_rwlock_unlock(&ls->ix_lock);
    if (rc)
        ag__lstream_free(copy);
    else
        *out = copy;
    return rc;
}

size_t ag__lidx_table_mem(const struct lstore *ls)
{
    size_t m = ls->tables_cap * sizeof *ls->tables;
    for (size_t i = 0; i < ls->ntables; i++) m += ls->tables[i]->mem;
    return m;
}

/* ---- the memtable, sorted ---- */

static int st_cmp(const void *a, const void *b)
{
    const struct lstream *x = *(struct lstream *const *)a, *y = *(struct lstream *const *)b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (int)x->name_len - (int)y->name_len;
}

/* The memtable's streams, sorted by (hash, name): those with no events too, which
 * are tombstones of streams a scavenge deleted (or streams of a failed group, which
 * shadow nothing). Caller frees. */
static struct lstream **mem_sorted(const struct lindex *ix, size_t *n)
{
    struct lstream **v = ag_malloc((ix->count ? ix->count : 1) * sizeof *v);
    *n = 0;
    if (!v) return NULL;
    for (size_t i = 0; i <= ix->mask; i++)
        if (ix->slots[i]) v[(*n)++] = ix->slots[i];
    qsort(v, *n, sizeof *v, st_cmp);
    return v;
}

/* ---- flushing the memtable (writer, or open) ---- */

static int tables_push(struct lstore *ls, struct ltable *t)
{
    if (ls->ntables == ls->tables_cap) {
        size_t cap = ls->tables_cap ? ls->tables_cap * 2 : 8;
        struct ltable **v = ag_realloc(ls->tables, cap * sizeof *v);
        if (!v) return AG_ENOMEM;
        ls->tables = v, ls->tables_cap = cap;
    }
    ls->tables[ls->ntables++] = t;
    return 0;
}

static void merger_kick(struct lstore *ls)
{
    if (!ls->mg_started) return;
    pthread_mutex_lock(&ls->mg_lock);
    ls->mg_kick = true;
    pthread_cond_signal(&ls->mg_cond);
    pthread_mutex_unlock(&ls->mg_lock);
}

static bool over_budget(const struct lstore *ls)
{
    uint64_t budget = ls->index_memory / 4 * 3;
    /* a few streams with very many events: writing them out frees nothing (they are
     * hot and would come straight back); their entries are the memory, not the count */
    return ls->tb_enabled && ls->ix.bytes >= budget && ls->ix.bytes >= ls->tb_retry_at &&
           ls->ix.count >= LOG_TB_MIN_STREAMS;
}

/* Write the streams of `ix` (not changing meanwhile) into a new table. */
static int table_of(struct lstore *ls, const struct lindex *ix, const struct ltb_wopts *o,
                    struct ltable **out, struct ag_err *err)
{
    size_t n;
    struct lstream **v = mem_sorted(ix, &n);
    if (!v) return ag_err_set(err, AG_ENOMEM, "out of memory writing the stream index");
    struct ltb_it it = {.mem = v, .mn = n};
    uint64_t id = __atomic_fetch_add(&ls->tb_next_id, 1, __ATOMIC_RELAXED);
    int rc = ag__ltb_write(ls, id, &it, 1, n, o, out, err);
    ag__ltb_it_free(&it);
    ag_free(v);
    return rc;
}

static void log_flushed(const struct lstore *ls, const struct ltable *t, uint64_t t0, bool bg)
{
    if (!t) return;
    /* info: rare (every few hundred thousand new streams) */
    AG_INFO("store.index_flushed", AG_LS("dir", ls->dir), AG_LU("table", t->id),
            AG_LU("streams", t->streams), AG_LU("bytes", t->file_bytes),
            AG_LU("ms", (ag_clock_mono(ls->base.opts.clock) - t0) / 1000000u),
            AG_LB("background", bg),
            AG_LU("writer_waits", __atomic_load_n(&ls->fl_waits, __ATOMIC_RELAXED)));
}

int ag__lidx_maybe_flush(struct lstore *ls, bool save_ckpt, struct ag_err *err)
{
    if (!over_budget(ls)) return 0;
    uint64_t budget = ls->index_memory / 4 * 3;
    uint64_t t0 = ag_clock_mono(ls->base.opts.clock);
    struct ltable *t = NULL;
    /* a tombstone shadows the tables already written (only this thread adds tables now) */
    struct ltb_wopts o = {.stop = NULL, .keep_tombstones = ls->ntables > 0};
    int rc = table_of(ls, &ls->ix, &o, &t, err);
    struct lindex fresh, old;
    if (!rc && ag__lindex_init(&fresh, ls->ix.count)) rc = AG_ENOMEM;
    if (rc) {
        ag__ltb_free(t);
        ls->tb_retry_at = ls->ix.bytes + budget / 4; /* not at every group while the disk is full */
        AG_WARN("store.index_flush_failed", AG_LS("dir", ls->dir), AG_LS("error", ag_strerror(rc)),
                AG_LS("action", "the stream index stays in memory; retried as it grows"));
        return rc == AG_ENOMEM ? ag_err_set(err, rc, "out of memory writing the stream index") : rc;
    }
    pthread_rwlock_wrlock(&ls->ix_lock);
    rc = tables_push(ls, t);
    size_t ntables = ls->ntables; /* the merger changes it under the lock */
    if (!rc) {
        old = ls->ix;
        fresh.live = old.live;
        ls->ix = fresh;
        ls->tb_flushes++;
    }
    pthread_rwlock_unlock(&ls->ix_lock);
    if (rc) {
        ag__lindex_free(&fresh);
        ag__ltb_free(t);
        return ag_err_set(err, rc, "out of memory writing the stream index");
    }
    ag__lindex_free(&old);
    log_flushed(ls, t, t0, false);
    if (save_ckpt)
        rc = ag__log_ckpt_save(ls, err);
    else
        ls->tb_written = true;
    if (ntables >= LOG_TB_MERGE_AT) merger_kick(ls);
    return rc;
}

/* ---- flushing in the background (the writer freezes, the flusher writes) ---- */

/* Write the frozen memtable into a table, swap it in for it and name it in a
 * checkpoint (the flusher, or the writer after a failure). The frozen memtable
 * changes nowhere meanwhile: only the thread that empties it reads it unlocked. */
static int flush_frozen(struct lstore *ls)
{
    struct ag_err err;
    ag_err_clear(&err);
    uint64_t t0 = ag_clock_mono(ls->base.opts.clock);
    pthread_rwlock_rdlock(&ls->ix_lock);
    struct ltb_wopts o = {.stop = &ls->mg_quit, .keep_tombstones = ls->ntables > 0};
    pthread_rwlock_unlock(&ls->ix_lock);
    struct ltable *t = NULL;
    int rc = table_of(ls, &ls->frozen, &o, &t, &err);
    struct lindex old = {0};
    size_t ntables = 0;
    if (!rc) {
        pthread_rwlock_wrlock(&ls->ix_lock);
        rc = tables_push(ls, t);
        ntables = ls->ntables;
        if (!rc) {
            old = ls->frozen;
            memset(&ls->frozen, 0, sizeof ls->frozen);
            ls->tb_flushes++;
        }
        pthread_rwlock_unlock(&ls->ix_lock);
    }
    if (rc) {
        ag__ltb_free(t); /* its file, if any, is an orphan: deleted at the next open */
        if (rc != AG_ECLOSED)
            AG_WARN("store.index_flush_failed", AG_LS("dir", ls->dir),
                    AG_LS("error", ag_strerror(rc)), AG_LS("detail", err.msg),
                    AG_LS("action", "the frozen memtable stays in memory; retried as it grows"));
        return rc;
    }
    ag__lindex_free(&old); /* no reader can hold it: it left under the write lock */
    log_flushed(ls, t, t0, true);
    if (ag__log_ckpt_save(ls, &err))
        AG_WARN("store.checkpoint_failed", AG_LS("dir", ls->dir), AG_LS("error", err.msg));
    if (ntables >= LOG_TB_MERGE_AT) merger_kick(ls);
    return 0;
}

static void *flusher_main(void *arg)
{
    struct lstore *ls = arg;
    ag_thread_background("ag-ix-flusher", FLUSHER_NICE, false);
    pthread_mutex_lock(&ls->mg_lock);
    for (;;) {
        while ((!ls->fl_pending || ls->fl_failed) && !ls->mg_quit)
            pthread_cond_wait(&ls->fl_cond, &ls->mg_lock);
        if (ls->mg_quit) break;
        pthread_mutex_unlock(&ls->mg_lock);
        int rc = flush_frozen(ls);
        pthread_mutex_lock(&ls->mg_lock);
        if (rc)
            ls->fl_failed = true; /* the writer clears it once the memtable has grown */
        else
            ls->fl_pending = false;
        pthread_cond_broadcast(&ls->fl_cond);
    }
    pthread_mutex_unlock(&ls->mg_lock);
    return NULL;
}

void ag__lidx_maybe_freeze(struct lstore *ls)
{
    if (!over_budget(ls)) return;
    if (!ls->fl_started) {
        struct ag_err err;
        ag_err_clear(&err);
        (void)ag__lidx_maybe_flush(ls, true, &err); /* failures are logged */
        return;
    }
    pthread_mutex_lock(&ls->mg_lock);
    if (ls->fl_pending && !ls->fl_failed) { /* two memtables full: back-pressure */
        uint64_t t0 = ag_clock_mono(ls->base.opts.clock);
        __atomic_add_fetch(&ls->fl_waits, 1, __ATOMIC_RELAXED);
        while (ls->fl_pending && !ls->fl_failed && !ls->mg_quit)
            pthread_cond_wait(&ls->fl_cond, &ls->mg_lock);
        __atomic_add_fetch(&ls->fl_wait_ns, ag_clock_mono(ls->base.opts.clock) - t0,
                           __ATOMIC_RELAXED);
    }
    bool pending = ls->fl_pending;
    if (pending && ls->fl_failed) { /* its write failed: try again now that ix has grown */
        ls->fl_failed = false;
        ls->tb_retry_at = ls->ix.bytes + ls->index_memory / 4 * 3 / 4;
        pthread_cond_broadcast(&ls->fl_cond);
    }
    pthread_mutex_unlock(&ls->mg_lock);
    struct lindex fresh;
    if (pending || ag__lindex_init(&fresh, ls->ix.count)) return;
    pthread_rwlock_wrlock(&ls->ix_lock);
    ls->frozen = ls->ix;
    fresh.live = ls->ix.live;
    ls->ix = fresh;
    pthread_rwlock_unlock(&ls->ix_lock);
    pthread_mutex_lock(&ls->mg_lock);
    ls->fl_pending = true;
    pthread_cond_broadcast(&ls->fl_cond);
    pthread_mutex_unlock(&ls->mg_lock);
}

int ag__lidx_drain(struct lstore *ls, struct ag_err *err)
{
    if (!ls->fl_started) return 0;
    pthread_mutex_lock(&ls->mg_lock);
    while (ls->fl_pending && !ls->fl_failed && !ls->mg_quit)
        pthread_cond_wait(&ls->fl_cond, &ls->mg_lock);
    bool left = ls->fl_pending; /* failed: the flusher waits; written here instead */
    pthread_mutex_unlock(&ls->mg_lock);
    if (!left) return 0;
    int rc = flush_frozen(ls);
    if (rc)
        return ag_err_set(err, rc == AG_ENOMEM ? AG_ENOMEM : AG_EUNAVAILABLE,
                          "%s: the stream index cannot be written to disk (%s)", ls->dir,
                          ag_strerror(rc));
    pthread_mutex_lock(&ls->mg_lock);
    ls->fl_pending = ls->fl_failed = false;
    pthread_cond_broadcast(&ls->fl_cond);
    pthread_mutex_unlock(&ls->mg_lock);
    return 0;
}

/* ---- open and close ---- */

int ag__lidx_open_tables(struct lstore *ls, const uint64_t *ids, const uint64_t *sums, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct ltable *t;
        int rc = ag__ltb_open(ls, ids[i], sums[i], &t);
        if (rc == AG_ENOMEM) return rc;
        if (rc) {
            AG_WARN(
                "store.index_rebuilt", AG_LS("dir", ls->dir), AG_LU("table", ids[i]),
                AG_LS("reason", rc == AG_ENOTFOUND ? "index table missing" : "index table corrupt"),
                AG_LS("action", "rebuilding the stream index from the log"));
            return 1;
        }
        if (tables_push(ls, t)) {
            ag__ltb_free(t);
            return AG_ENOMEM;
        }
    }
    return 0;
}

void ag__lidx_close_tables(struct lstore *ls)
{
    for (size_t i = 0; i < ls->ntables; i++) ag__ltb_free(ls->tables[i]);
    ag_free(ls->tables);
    ls->tables = NULL;
    ls->ntables = ls->tables_cap = 0;
}

/* The id in "index-<id>.sst[.tmp]", or false. */
static bool table_file(const char *name, uint64_t *id)
{
    if (strncmp(name, "index-", 6) != 0 || name[6] < '0' || name[6] > '9') return false;
    char *end;
    unsigned long long v = strtoull(name + 6, &end, 10);
    if (strcmp(end, ".sst") != 0 && strcmp(end, ".sst.tmp") != 0) return false;
    *id = v;
    return true;
}

void ag__lidx_remove_orphans(struct lstore *ls)
{
    DIR *d = opendir(ls->dir);
    if (!d) return;
    uint64_t next = ls->tb_next_id;
    for (struct dirent *de; (de = readdir(d));) {
        uint64_t id;
        if (!table_file(de->d_name, &id)) continue;
        if (id >= next) next = id + 1;
        bool named = false;
        for (size_t i = 0; i < ls->ntables && !named; i++)
            named = ls->tables[i]->id == id && !strstr(de->d_name, ".tmp");
        if (!named) unlinkat(ls->dir_fd, de->d_name, 0);
    }
    closedir(d);
    ls->tb_next_id = next;
}

/* ---- the merger ---- */

/* The run of tables to merge: [*from, ntables) (ix_lock held). false: none. */
static bool pick_run(const struct lstore *ls, size_t *from)
{
    if (ls->ntables < LOG_TB_MERGE_AT) return false;
    size_t j = ls->ntables - LOG_TB_MERGE_AT;
    uint64_t acc = 0;
    for (size_t i = j; i < ls->ntables; i++) acc += ls->tables[i]->file_bytes;
    while (j > 0 && ls->tables[j - 1]->file_bytes <= 2 * acc) acc += ls->tables[--j]->file_bytes;
    *from = j;
    return true;
}

/* Swap the merged table in for run[0..k) at index `from` (write lock taken here). */
static void swap_in(struct lstore *ls, size_t from, size_t k, struct ltable *merged)
{
    pthread_rwlock_wrlock(&ls->ix_lock);
    ls->tables[from] = merged;
    memmove(&ls->tables[from + 1], &ls->tables[from + k],
            (ls->ntables - from - k) * sizeof *ls->tables);
    ls->ntables -= k - 1;
    ls->tb_merges++;
    pthread_rwlock_unlock(&ls->ix_lock);
}

static int merge_run(struct lstore *ls);

/* One merge, if a run is due; 1 when none. Holds mg_run until the old tables are
 * freed (ag__lidx_each_online reads tables without ix_lock meanwhile). */
static int merge_once(struct lstore *ls)
{
    pthread_mutex_lock(&ls->mg_run);
    int rc = merge_run(ls);
    pthread_mutex_unlock(&ls->mg_run);
    return rc;
}

static int merge_run(struct lstore *ls)
{
    size_t from, k;
    struct ltable *run[64];
    pthread_rwlock_rdlock(&ls->ix_lock);
    bool any = pick_run(ls, &from);
    k = any ? ls->ntables - from : 0;
    if (k > 64) from = ls->ntables - 64, k = 64;
    for (size_t i = 0; i < k; i++) run[i] = ls->tables[from + i];
    pthread_rwlock_unlock(&ls->ix_lock);
    if (!any) return 1;
    struct ltb_it its[64];
    uint64_t streams = 0;
    for (size_t i = 0; i < k; i++) { /* newest first */
        its[i] = (struct ltb_it){.t = run[k - 1 - i]};
        ag_buf_init(&its[i].buf);
        streams += run[k - 1 - i]->streams;
    }
    uint64_t id = __atomic_fetch_add(&ls->tb_next_id, 1, __ATOMIC_RELAXED);
    struct ltable *merged = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    /* a tombstone may go once the run reaches the oldest table: it shadows nothing else */
    struct ltb_wopts o = {.stop = &ls->mg_quit, .keep_tombstones = from > 0};
    int rc = ag__ltb_write(ls, id, its, k, streams, &o, &merged, &err);
    for (size_t i = 0; i < k; i++) ag__ltb_it_free(&its[i]);
    if (rc) {
        if (rc == AG_ECORRUPT) __atomic_store_n(&ls->tb_corrupt, true, __ATOMIC_RELAXED);
        if (rc != AG_ECLOSED)
            AG_WARN("store.index_merge_failed", AG_LS("dir", ls->dir),
                    AG_LS("error", ag_strerror(rc)), AG_LS("detail", err.msg));
        return rc;
    }
    swap_in(ls, from, k, merged);
    bool saved = ag__log_ckpt_save(ls, &err) == 0;
    for (size_t i = 0; i < k; i++) {
        char name[48];
        ag__ltb_name(name, run[i]->id, false);
        if (saved) unlinkat(ls->dir_fd, name, 0); /* else: orphans, deleted at the next open */
        ag__ltb_free(run[i]);
    }
    AG_DEBUG("store.index_merged", AG_LS("dir", ls->dir), AG_LU("tables", k),
             AG_LU("streams", merged->streams), AG_LU("bytes", merged->file_bytes));
    return 0;
}

static void *merger_main(void *arg)
{
    struct lstore *ls = arg;
    ag_thread_background("ag-ix-merger", MERGER_NICE, true);
    for (;;) {
        pthread_mutex_lock(&ls->mg_lock);
        while (!ls->mg_kick && !ls->mg_quit) pthread_cond_wait(&ls->mg_cond, &ls->mg_lock);
        bool quit = ls->mg_quit;
        ls->mg_kick = false;
        pthread_mutex_unlock(&ls->mg_lock);
        if (quit) break;
        while (!__atomic_load_n(&ls->mg_quit, __ATOMIC_RELAXED) && merge_once(ls) == 0) {
        }
    }
    return NULL;
}

int ag__lidx_merger_start(struct lstore *ls)
{
    if (!ls->tb_enabled) return 0;
    if (pthread_create(&ls->mg_thread, NULL, merger_main, ls) != 0) return AG_ENOMEM;
    ls->mg_started = true;
    if (pthread_create(&ls->fl_thread, NULL, flusher_main, ls) != 0) return AG_ENOMEM;
    ls->fl_started = true;
    if (ls->ntables >= LOG_TB_MERGE_AT) merger_kick(ls);
    return 0;
}

void ag__lidx_merger_stop(struct lstore *ls)
{
    if (!ls->mg_started) return;
    pthread_mutex_lock(&ls->mg_lock);
    __atomic_store_n(&ls->mg_quit, true, __ATOMIC_RELAXED);
    pthread_cond_signal(&ls->mg_cond);
    pthread_cond_broadcast(&ls->fl_cond);
    pthread_mutex_unlock(&ls->mg_lock);
    pthread_join(ls->mg_thread, NULL);
    ls->mg_started = false;
    if (ls->fl_started)
        pthread_join(ls->fl_thread, NULL); /* a frozen memtable left goes
                                               into the close checkpoint */
    ls->fl_started = false;
}

/* ---- every stream ---- */

int ag__lidx_each(struct lstore *ls, int (*cb)(void *ud, const struct ltb_rec *r), void *ud)
{
    size_t n, fn = 0, k = ls->ntables + 2; /* the memtable, the frozen one, the tables */
    struct lstream **v = mem_sorted(&ls->ix, &n);
    struct lstream **fv = ls->frozen.slots ? mem_sorted(&ls->frozen, &fn) : NULL;
    struct ltb_it *its = ag_calloc(k, sizeof *its);
    int rc = v && its && (fv || !ls->frozen.slots) ? 0 : AG_ENOMEM;
    if (!rc) {
        its[0] = (struct ltb_it){.mem = v, .mn = n};
        its[1] = (struct ltb_it){.mem = fv ? fv : v, .mn = fn}; /* fn 0: none */
        for (size_t i = 2; i < k; i++) its[i].t = ls->tables[ls->ntables + 1 - i];
        for (size_t i = 0; i < k; i++) ag_buf_init(&its[i].buf);
        for (size_t i = 0; !rc && i < k; i++) rc = ag__ltb_it_next(&its[i]);
    }
    while (!rc) {
        struct ltb_it *best;
        if ((rc = ag__ltb_merge_step(its, k, &best)) || !best) break;
        if (best->cur.count) rc = cb(ud, &best->cur);
        if (!rc) rc = ag__ltb_it_next(best);
    }
    for (size_t i = 0; its && i < k; i++) ag__ltb_it_free(&its[i]);
    ag_free(its);
    ag_free(v);
    ag_free(fv);
    return rc;
}

static int hash_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Hand the memtable's (or the frozen one's) streams to `cb`, each hash into seen. */
static int mem_each(const struct lindex *ix, const struct lindex *newer,
                    int (*cb)(void *ud, const struct ltb_rec *r), void *ud, uint64_t *seen,
                    size_t *nh)
{
    int rc = 0;
    for (size_t i = 0; !rc && ix->slots && i <= ix->mask; i++) {
        struct lstream *st = ix->slots[i];
        if (!st || (newer && ag__lindex_find(newer, st->name, st->name_len, st->hash))) continue;
        seen[(*nh)++] = st->hash; /* a tombstone too: it hides the tables' record */
        if (st->count)
            rc = cb(ud, &(struct ltb_rec){.hash = st->hash,
                                          .name = st->name,
                                          .name_len = st->name_len,
                                          .count = st->count,
                                          .snap_loc = st->snap_loc,
                                          .entries = (const uint8_t *)lstream_entries(st)});
    }
    return rc;
}

int ag__lidx_each_online(struct lstore *ls, int (*cb)(void *ud, const struct ltb_rec *r), void *ud,
                         bool *locked)
{
    pthread_mutex_lock(&ls->mg_run); /* the tables copied below stay open */
    pthread_rwlock_rdlock(&ls->ix_lock);
    *locked = true;
    size_t k = ls->ntables, nh = 0, mem = ls->ix.count + ls->frozen.count;
    struct ltb_it *its = ag_calloc(k ? k : 1, sizeof *its);
    uint64_t *seen = ag_malloc((mem ? mem : 1) * sizeof *seen);
    int rc = its && seen ? 0 : AG_ENOMEM;
    for (size_t i = 0; !rc && i < k; i++) its[i].t = ls->tables[k - 1 - i]; /* newest first */
    if (!rc) rc = mem_each(&ls->ix, NULL, cb, ud, seen, &nh);
    if (!rc) rc = mem_each(&ls->frozen, &ls->ix, cb, ud, seen, &nh);
    pthread_rwlock_unlock(&ls->ix_lock);
    *locked = false;
    if (!rc) qsort(seen, nh, sizeof *seen, hash_cmp);
    for (size_t i = 0; its && i < k; i++) ag_buf_init(&its[i].buf);
    for (size_t i = 0; !rc && i < k; i++) rc = ag__ltb_it_next(&its[i]);
    while (!rc) {
        struct ltb_it *best;
        if ((rc = ag__ltb_merge_step(its, k, &best)) || !best) break;
        /* a name the memtables held was seen there (a hash collision only skips one) */
        if (best->cur.count && !bsearch(&best->cur.hash, seen, nh, sizeof *seen, hash_cmp))
            rc = cb(ud, &best->cur);
        if (!rc) rc = ag__ltb_it_next(best);
    }
    for (size_t i = 0; its && i < k; i++) ag__ltb_it_free(&its[i]);
    ag_free(its);
    ag_free(seen);
    pthread_mutex_unlock(&ls->mg_run);
    return rc;
}
