/*
 * bench_store: the event store benchmark (issue 2, "Benchmark"; STYLE.md "Benchmarks").
 *
 * WHAT IS MEASURED, IN ONE RUN, ON THE SAME BYTES
 *   store.append   W writer threads (W in AG_BENCH_WRITERS, default 1,16,64,256), each
 *                  appending single-event batches with an exact expected version to its
 *                  own stream for AG_BENCH_SECONDS (default 3) against
 *                  - agora:    the embedded log (fsync on), blocking ag_store_append;
 *                  - raw:      the ceiling: one file, one writer thread that takes
 *                              whatever is queued and does one pwrite + fdatasync
 *                              (group commit and nothing else), the same bytes per
 *                              event as agora's on-disk record;
 *                  - postgres: one libpq connection per writer, one prepared INSERT per
 *                              event in autocommit into a message-db style table whose
 *                              unique (stream_name, position) enforces the version.
 *                  - agora-pg: agora's PostgreSQL adapter (ag_store_append on
 *                              postgresql://, pool_size = writers up to 64) on the
 *                              same cluster, a fresh schema per round: the port's
 *                              whole append (locks, checks, ordering into $all).
 *                  Every append is timed with CLOCK_MONOTONIC; p50/p99 over all of them.
 *   store.read_all $all in pages of 1000 from a freshly reopened (page-cached) store.
 *   store.open     open time of that store with its index checkpoint, then without it.
 *   store.read_all (impl agora-pg) the same page loop on the PostgreSQL adapter over
 *                  AG_BENCH_PG_READ_EVENTS (100000) events appended 1000 at a time
 *                  (phase read_pg).
 *   store.append_multi  a saga step's write: W writers (AG_BENCH_MULTI_WRITERS, default
 *                  16,64) each commit one event to their own "order" stream and one to
 *                  their own "saga" stream, exact versions, fsync on, as
 *                  - multi:  one ag_store_append_multi (one atomic unit);
 *                  - 2x:     two ag_store_append calls in a row (not atomic: today's way).
 *                  ops_per_s counts steps (2 events each).
 *   store.index_memory  AG_BENCH_STREAMS (10M) single-event streams with index memory
 *                  AG_BENCH_INDEX_MEMORY (default 64M): stats.index_bytes, the RSS delta,
 *                  the on-disk tables, after building and again after a reopen,
 *                  measured in a forked child so earlier phases' heap does not blur it.
 *   store.index_lookup  AG_BENCH_LOOKUPS (100000) stream_version calls on random present
 *                  and missing streams of that store: p50/p99 (after build, after reopen).
 *
 * ENVIRONMENT
 *   AG_BENCH_DIR     scratch directory (same filesystem for all impls); required
 *   AG_BENCH_PG      libpq conninfo; postgres is skipped when unset
 *   AG_BENCH_PG_URI  the same server as a postgresql:// URI; agora-pg is skipped when unset
 *   AG_BENCH_SECONDS (per point, 3), AG_BENCH_ROUNDS (3), AG_BENCH_WRITERS,
 *   AG_BENCH_OPEN_EVENTS (10000000),
 *   AG_BENCH_BUILD_BUDGET (seconds allowed to build the open/read store, 60),
 *   AG_BENCH_STREAMS (10000000), AG_BENCH_INDEX_MEMORY, AG_BENCH_LOOKUPS,
 *   AG_BENCH_ONLY (subset of "append,multi,read_pg,open,memory"),
 *   AG_BENCH_IMPLS (subset of "agora,raw,postgres,agora-pg"),
 *   AG_BENCH_PG_POOL (agora-pg's pool_size; default: the writers, up to 64),
 *   AG_BENCH_PG_URI_EXTRA (appended to agora-pg's URI in the append phase, e.g.
 *   "&append_lanes=4"),
 *   AG_BENCH_PG_KEEP (set: read_pg keeps its schema bench_read, for EXPLAIN; see
 *   bench/store/profile_pg.sh).
 *
 * Output: one JSON object per line on stdout (run.sh appends them to
 * bench/results/store.jsonl), a human-readable table on stderr. Never pass/fail.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, pthread_barrier */
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/base.h"
#include "agora/store.h"
#include "agora/store_log.h"
#ifdef AG_HAVE_PQ
#include <libpq-fe.h>
#endif

#define MAX_POINTS 16

/* ---- the workload: the same bytes for every implementation ---- */

static const char EV_TYPE[] = "OrderPlaced";
/* 200 bytes of JSON: an order with two lines, padded by the note. */
static const char EV_DATA[] =
    "{\"orderId\":\"ord-0000000000000042\",\"customerId\":\"cus-00001337\",\"currency\":\"EUR\","
    "\"lines\":[{\"sku\":\"SKU-12345\",\"qty\":2,\"price\":1999},{\"sku\":\"SKU-67890\",\"qty\":1,"
    "\"price\":4999}],\"total\":8997,\"note\":\"bench-\"}";
static const char EV_META[] =
    "{\"correlationId\":\"c-0001\",\"causationId\":\"c-0000\",\"user\":\"bench\"}";

static struct ag_event_data bench_event(void)
{
    return (struct ag_event_data){.type = EV_TYPE,
                                  .type_len = sizeof EV_TYPE - 1,
                                  .data = EV_DATA,
                                  .data_len = sizeof EV_DATA - 1,
                                  .metadata = EV_META,
                                  .metadata_len = sizeof EV_META - 1};
}

/* agora's on-disk record size (log.c: 64-byte header, body, 8-byte checksum, 8-aligned):
 * what raw writes per event so the ceiling moves exactly the same bytes. */
static size_t record_bytes(size_t stream_len)
{
    size_t n =
        64 + stream_len + (sizeof EV_TYPE - 1) + (sizeof EV_META - 1) + (sizeof EV_DATA - 1) + 8;
    return (n + 7) & ~(size_t)7;
}

/* ---- small helpers ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static bool phase_on(const char *phase)
{
    const char *only = getenv("AG_BENCH_ONLY");
    return !only || !*only || strstr(only, phase) != NULL;
}

/* AG_BENCH_IMPLS narrows the append phase (e.g. "agora" under perf). */
static bool impl_on(const char *impl)
{
    const char *only = getenv("AG_BENCH_IMPLS");
    if (!only || !*only) return true;
    size_t n = strlen(impl); /* whole names: "agora" does not select "agora-pg" */
    for (const char *p = only; (p = strstr(p, impl)) != NULL; p += n)
        if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
    return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

/* Scratch stores are gigabytes: remove each as soon as its phase is over. */
static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* ---- latency samples ---- */

/* One per writer thread (no sharing on the hot path); merged and sorted at the end.
 * Nanoseconds fit 32 bits up to 4.29 s, far above any append we expect. */
struct lat {
    uint32_t *v; /* samples in ns */
    size_t n, cap;
};

static void lat_push(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) return; /* drop the sample rather than the run */
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* p in (0,1]: the nearest-rank percentile in microseconds of sorted samples. */
static double pct_us(const uint32_t *v, size_t n, double p)
{
    if (!n) return 0;
    size_t i = (size_t)(p * (double)n + 0.999999);
    return v[(i ? i : 1) - 1] / 1000.0;
}

/* ---- the generic closed-loop driver ---- */

/* An implementation under test: per-thread state and one append. */
struct impl {
    const char *name;
    void *ctx;
    /* Called in the writer thread before the clock starts (connect, name the stream). */
    void *(*thread_open)(void *ctx, int idx, int writers);
    /* Append the event with stream version `version` (expected = version - 1). */
    int (*append)(void *ts, int64_t version);
    void (*thread_close)(void *ts);
};

struct point {
    const struct impl *im;
    int writers;
    pthread_barrier_t start;
    atomic_bool stop;
};

struct worker {
    struct point *pt;
    int idx;
    pthread_t th;
    struct lat lat;
    uint64_t ops;     /* appends acknowledged */
    uint64_t last_ns; /* when the last one was acknowledged */
    int err;          /* first failure, 0 if none */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct point *pt = w->pt;
    void *ts = pt->im->thread_open(pt->im->ctx, w->idx, pt->writers);
    if (!ts) w->err = -1;
    pthread_barrier_wait(&pt->start);
    for (int64_t v = 0; ts && !atomic_load_explicit(&pt->stop, memory_order_relaxed); v++) {
        uint64_t t0 = now_ns();
        int rc = pt->im->append(ts, v);
        uint64_t t1 = now_ns();
        if (rc) {
            w->err = rc;
            break;
        }
        lat_push(&w->lat, t1 - t0);
        w->ops++;
        w->last_ns = t1;
    }
    if (ts) pt->im->thread_close(ts);
    return NULL;
}

/* What one implementation accumulated at one writer count over all its rounds. */
struct acc {
    const char *impl;
    int writers;
    struct lat lat;   /* every append's latency */
    uint64_t ops;     /* appends acknowledged */
    double secs;      /* sum over rounds of start -> last acknowledgement */
    uint64_t commits; /* fdatasync calls (agora, raw) */
    int err;          /* first failure, 0 if none */
    bool ran;
};

/* The figures of one accumulator, as printed. */
struct result {
    const char *impl;
    int writers;
    double ops_per_s, p50_us, p99_us;
    int err;
    bool ran;
};

/* Fold a round's workers into `a`. Throughput counts from the common start to the
 * last acknowledgement, so appends in flight at `stop` count with the time they took. */
static void fold(struct acc *a, struct worker *ws, int n, uint64_t start_ns)
{
    uint64_t end = start_ns;
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < ws[i].lat.n; k++) lat_push(&a->lat, ws[i].lat.v[k]);
        a->ops += ws[i].ops;
        if (ws[i].last_ns > end) end = ws[i].last_ns;
        if (ws[i].err && !a->err) a->err = ws[i].err;
        free(ws[i].lat.v);
    }
    a->secs += (double)(end - start_ns) / 1e9;
    a->ran = true;
}

static struct result finish(struct acc *a)
{
    struct result r = {.impl = a->impl, .writers = a->writers, .err = a->err, .ran = a->ran};
    qsort(a->lat.v, a->lat.n, sizeof *a->lat.v, cmp_u32);
    r.ops_per_s = a->secs > 0 ? (double)a->ops / a->secs : 0;
    r.p50_us = pct_us(a->lat.v, a->lat.n, 0.50);
    r.p99_us = pct_us(a->lat.v, a->lat.n, 0.99);
    free(a->lat.v);
    a->lat = (struct lat){0};
    return r;
}

/* One round: `writers` threads append for `seconds`; the samples go into `a`. */
static void run_point(const struct impl *im, int writers, double seconds, struct acc *a)
{
    struct point pt = {.im = im, .writers = writers};
    pthread_barrier_init(&pt.start, NULL, (unsigned)writers + 1);
    atomic_init(&pt.stop, false);
    struct worker *ws = calloc((size_t)writers, sizeof *ws);
    for (int i = 0; i < writers; i++) {
        ws[i].pt = &pt, ws[i].idx = i;
        pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
    }
    pthread_barrier_wait(&pt.start);
    uint64_t start = now_ns();
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&d, &d) && errno == EINTR) {
    }
    atomic_store(&pt.stop, true);
    for (int i = 0; i < writers; i++) pthread_join(ws[i].th, NULL);
    fold(a, ws, writers, start);
    free(ws);
    pthread_barrier_destroy(&pt.start);
}

static void print_append(const struct result *r, const char *extra)
{
    printf("{\"bench\":\"store.append\",\"impl\":\"%s\",\"params\":{\"writers\":%d},"
           "\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f%s%s}\n",
           r->impl, r->writers, r->ops_per_s, r->p50_us, r->p99_us, r->err ? ",\"error\":true" : "",
           extra ? extra : "");
    fflush(stdout);
}

/* ---- agora: the embedded log, fsync on ---- */

struct agora_ts {
    struct ag_store *s;
    char stream[32];
    size_t stream_len;
    struct ag_event_data ev;
};

static void *agora_open_t(void *ctx, int idx, int writers)
{
    struct agora_ts *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->s = ctx;
    t->stream_len = (size_t)snprintf(t->stream, sizeof t->stream, "order-w%03d-%04d", writers, idx);
    t->ev = bench_event();
    return t;
}

static int agora_append(void *ts, int64_t version)
{
    struct agora_ts *t = ts;
    struct ag_append_result res;
    struct ag_err err;
    int rc = ag_store_append(t->s, t->stream, t->stream_len, version - 1, &t->ev, 1, &res, &err);
    if (rc) fprintf(stderr, "agora append: %s\n", ag_err_msg(&err, rc));
    return rc;
}

static void agora_close_t(void *ts)
{
    free(ts);
}

/* One round in a fresh directory. */
static void bench_agora(const char *dir, int writers, double seconds, struct acc *a)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/agora-w%d", dir, writers);
    struct ag_store_options o = {0}; /* no_sync = false: every ack is durable */
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_log_open(path, &o, &s, &err);
    if (rc) {
        fprintf(stderr, "agora open %s: %s\n", path, ag_err_msg(&err, rc));
        a->err = rc;
        return;
    }
    struct impl im = {"agora", s, agora_open_t, agora_append, agora_close_t};
    run_point(&im, writers, seconds, a);
    struct ag_store_stats st = {0};
    ag_store_stats(s, &st);
    a->commits += st.commits;
    ag_store_close(s);
    rm_tree(path);
}

/* ---- a saga step: two streams, one unit or two appends ---- */

static void print_ratio(double a, double b);

struct step_ts {
    struct ag_store *s;
    char order[32], saga[32];
    struct ag_event_data ev;
    bool multi;
};

static void *step_open_t(void *ctx, int idx, int writers, bool multi)
{
    struct step_ts *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->s = ctx;
    snprintf(t->order, sizeof t->order, "order-w%03d-%04d", writers, idx);
    snprintf(t->saga, sizeof t->saga, "saga-w%03d-%04d", writers, idx);
    t->ev = bench_event();
    t->multi = multi;
    return t;
}
static void *step_multi_open_t(void *ctx, int idx, int writers)
{
    return step_open_t(ctx, idx, writers, true);
}
static void *step_2x_open_t(void *ctx, int idx, int writers)
{
    return step_open_t(ctx, idx, writers, false);
}

static int step_append(void *ts, int64_t version)
{
    struct step_ts *t = ts;
    struct ag_err err;
    int rc;
    if (t->multi) {
        struct ag_append_part p[2] = {{t->order, strlen(t->order), version - 1, &t->ev, 1},
                                      {t->saga, strlen(t->saga), version - 1, &t->ev, 1}};
        rc = ag_store_append_multi(t->s, p, 2, NULL, &err);
    } else {
        rc = ag_store_append(t->s, t->order, strlen(t->order), version - 1, &t->ev, 1, NULL, &err);
        if (!rc)
            rc =
                ag_store_append(t->s, t->saga, strlen(t->saga), version - 1, &t->ev, 1, NULL, &err);
    }
    if (rc) fprintf(stderr, "agora step append: %s\n", ag_err_msg(&err, rc));
    return rc;
}

static void bench_step(const char *dir, int writers, double seconds, bool multi, struct acc *a)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/step-%s-w%d", dir, multi ? "multi" : "2x", writers);
    struct ag_store_options o = {0};
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_log_open(path, &o, &s, &err);
    if (rc) {
        fprintf(stderr, "agora open %s: %s\n", path, ag_err_msg(&err, rc));
        a->err = rc;
        return;
    }
    struct impl im = {multi ? "multi" : "2x", s, multi ? step_multi_open_t : step_2x_open_t,
                      step_append, agora_close_t};
    run_point(&im, writers, seconds, a);
    ag_store_close(s);
    rm_tree(path);
}

static void bench_multi(const char *dir)
{
    const char *spec = getenv("AG_BENCH_MULTI_WRITERS");
    int ws[MAX_POINTS], n = 0;
    for (const char *p = spec && *spec ? spec : "16,64"; *p && n < MAX_POINTS;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v > 0 && v <= 4096) ws[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    double secs = (double)env_long("AG_BENCH_SECONDS", 3);
    long rounds = env_long("AG_BENCH_ROUNDS", 3);
    if (rounds < 1) rounds = 1;
    fprintf(stderr, "\nstore.append_multi (saga steps/s = 2 events each, p50/p99 us)\n");
    for (int i = 0; i < n; i++) {
        struct acc a[2] = {{.impl = "multi", .writers = ws[i]}, {.impl = "2x", .writers = ws[i]}};
        for (long round = 0; round < rounds; round++)
            for (int k = 0; k < 2; k++)
                bench_step(dir, ws[i], secs / (double)rounds, k == 0, &a[k]);
        struct result r[2];
        for (int k = 0; k < 2; k++) {
            r[k] = finish(&a[k]);
            printf("{\"bench\":\"store.append_multi\",\"impl\":\"%s\",\"params\":{\"writers\":%d},"
                   "\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f%s}\n",
                   r[k].impl, r[k].writers, r[k].ops_per_s, r[k].p50_us, r[k].p99_us,
                   r[k].err ? ",\"error\":true" : "");
        }
        fprintf(stderr, "%7d | multi %8.0f %6.0f/%-7.0f | 2x %8.0f %6.0f/%-7.0f |", ws[i],
                r[0].ops_per_s, r[0].p50_us, r[0].p99_us, r[1].ops_per_s, r[1].p50_us, r[1].p99_us);
        print_ratio(r[0].ops_per_s, r[1].ops_per_s);
        fputc('\n', stderr);
    }
}

/* ---- raw: the ceiling (one file, group commit, nothing else) ---- */

struct raw_req {
    const void *buf; /* the event's bytes, borrowed until `done` */
    size_t len;
    sem_t done;
    struct raw_req *next;
};

struct raw {
    int fd;
    off_t off;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct raw_req *head, *tail; /* queued, not yet taken by the writer */
    bool closing;
    pthread_t th;
    char *gbuf; /* the group being written */
    size_t gcap;
    uint64_t commits;
    int err;
};

/* Take the whole queue; NULL when closing and empty. */
static struct raw_req *raw_take(struct raw *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->head && !r->closing) pthread_cond_wait(&r->cond, &r->lock);
    struct raw_req *list = r->head;
    r->head = r->tail = NULL;
    pthread_mutex_unlock(&r->lock);
    return list;
}

static int raw_write_group(struct raw *r, struct raw_req *list)
{
    size_t len = 0;
    for (struct raw_req *q = list; q; q = q->next) len += q->len;
    if (len > r->gcap) {
        char *b = realloc(r->gbuf, len * 2);
        if (!b) return -ENOMEM;
        r->gbuf = b, r->gcap = len * 2;
    }
    size_t at = 0;
    for (struct raw_req *q = list; q; q = q->next)
        memcpy(r->gbuf + at, q->buf, q->len), at += q->len;
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(r->fd, r->gbuf + done, len - done, r->off + (off_t)done);
        if (w < 0) return -errno;
        done += (size_t)w;
    }
    r->off += (off_t)len;
    r->commits++;
    return fdatasync(r->fd) ? -errno : 0;
}

static void *raw_writer(void *arg)
{
    struct raw *r = arg;
    struct raw_req *list;
    while ((list = raw_take(r))) {
        int rc = raw_write_group(r, list);
        if (rc && !r->err) r->err = rc;
        while (list) {
            struct raw_req *next = list->next; /* list lives on a caller's stack */
            sem_post(&list->done);
            list = next;
        }
    }
    return NULL;
}

struct raw_ts {
    struct raw *r;
    char *rec; /* one event's bytes, as agora would lay them out */
    size_t len;
};

static void *raw_open_t(void *ctx, int idx, int writers)
{
    struct raw_ts *t = calloc(1, sizeof *t);
    char stream[32];
    int sl = snprintf(stream, sizeof stream, "order-w%03d-%04d", writers, idx);
    if (!t) return NULL;
    t->r = ctx;
    t->len = record_bytes((size_t)sl);
    t->rec = calloc(1, t->len);
    if (!t->rec) return free(t), NULL;
    /* Header left zero; the body carries the same stream, type, metadata, data. */
    char *p = t->rec + 64;
    memcpy(p, stream, (size_t)sl), p += sl;
    memcpy(p, EV_TYPE, sizeof EV_TYPE - 1), p += sizeof EV_TYPE - 1;
    memcpy(p, EV_META, sizeof EV_META - 1), p += sizeof EV_META - 1;
    memcpy(p, EV_DATA, sizeof EV_DATA - 1);
    return t;
}

static int raw_append(void *ts, int64_t version)
{
    struct raw_ts *t = ts;
    struct raw *r = t->r;
    struct raw_req q = {.buf = t->rec, .len = t->len};
    (void)version; /* no index: nothing to check, that is the point of the ceiling */
    sem_init(&q.done, 0, 0);
    pthread_mutex_lock(&r->lock);
    if (r->tail)
        r->tail->next = &q;
    else
        r->head = &q;
    r->tail = &q;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    while (sem_wait(&q.done) && errno == EINTR) {
    }
    sem_destroy(&q.done);
    return r->err;
}

static void raw_close_t(void *ts)
{
    struct raw_ts *t = ts;
    free(t->rec);
    free(t);
}

static void raw_stop(struct raw *r)
{
    pthread_mutex_lock(&r->lock);
    r->closing = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->th, NULL);
    close(r->fd);
    free(r->gbuf);
}

/* One round on a fresh file. */
static void bench_raw(const char *dir, int writers, double seconds, struct acc *a)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/raw-w%d.log", dir, writers);
    struct raw r = {.fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644)};
    if (r.fd < 0) {
        perror(path);
        a->err = -errno;
        return;
    }
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    pthread_create(&r.th, NULL, raw_writer, &r);
    struct impl im = {"raw", &r, raw_open_t, raw_append, raw_close_t};
    run_point(&im, writers, seconds, a);
    raw_stop(&r);
    a->commits += r.commits;
    if (r.err && !a->err) a->err = r.err;
    unlink(path);
}

/* ---- postgres: message-db / Eventuous style table through libpq ---- */

#ifdef AG_HAVE_PQ
static const char PG_SCHEMA[] =
    "SET client_min_messages = warning; DROP TABLE IF EXISTS messages;"
    "CREATE TABLE messages(global_position bigserial primary key, stream_name text not null,"
    " position bigint not null, id uuid not null unique, type text not null, data jsonb,"
    " metadata jsonb, time timestamptz default now(), unique(stream_name, position));";
static const char PG_INSERT[] =
    "INSERT INTO messages(stream_name, position, id, type, data, metadata)"
    " VALUES ($1, $2, $3, $4, $5, $6)";

struct pg_ts {
    PGconn *c;
    char stream[32];
};

static PGconn *pg_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "postgres connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool pg_ok(PGresult *res, ExecStatusType want, const char *what, PGconn *c)
{
    bool ok = PQresultStatus(res) == want;
    if (!ok) fprintf(stderr, "postgres %s: %s", what, PQerrorMessage(c));
    PQclear(res);
    return ok;
}

static void *pg_open_t(void *ctx, int idx, int writers)
{
    struct pg_ts *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    snprintf(t->stream, sizeof t->stream, "order-w%03d-%04d", writers, idx);
    t->c = pg_connect(ctx);
    if (t->c &&
        pg_ok(PQprepare(t->c, "ins", PG_INSERT, 6, NULL), PGRES_COMMAND_OK, "prepare", t->c))
        return t;
    if (t->c) PQfinish(t->c);
    free(t);
    return NULL;
}

static int pg_append(void *ts, int64_t version)
{
    struct pg_ts *t = ts;
    char pos[24], id[AG_UUID_STRLEN + 1];
    struct ag_uuid u;
    ag_uuid_v7(&u, NULL, NULL); /* agora assigns a UUIDv7 too: same work on both sides */
    ag_uuid_format(&u, id);
    snprintf(pos, sizeof pos, "%lld", (long long)version);
    const char *vals[6] = {t->stream, pos, id, EV_TYPE, EV_DATA, EV_META};
    PGresult *res = PQexecPrepared(t->c, "ins", 6, vals, NULL, NULL, 0);
    return pg_ok(res, PGRES_COMMAND_OK, "insert", t->c) ? 0 : -1;
}

static void pg_close_t(void *ts)
{
    struct pg_ts *t = ts;
    PQfinish(t->c);
    free(t);
}

/* A fresh table per point, like a fresh directory for agora. */
static bool pg_reset(const char *conninfo)
{
    PGconn *c = pg_connect(conninfo);
    if (!c) return false;
    bool ok = pg_ok(PQexec(c, PG_SCHEMA), PGRES_COMMAND_OK, "schema", c);
    PQfinish(c);
    return ok;
}

/* One round on a fresh table. */
static void bench_pg(const char *conninfo, int writers, double seconds, struct acc *a)
{
    if (!pg_reset(conninfo)) {
        a->err = -1;
        return;
    }
    struct impl im = {"postgres", (void *)conninfo, pg_open_t, pg_append, pg_close_t};
    run_point(&im, writers, seconds, a);
}
#else
static void bench_pg(const char *conninfo, int writers, double seconds, struct acc *a)
{
    (void)conninfo, (void)writers, (void)seconds, (void)a;
    fprintf(stderr, "postgres: built without libpq, skipped\n");
}
#endif

/* ---- agora-pg: agora's PostgreSQL adapter on the same cluster ---- */

static void bench_agora_pg(const char *uri, const char *conninfo, int writers, long round,
                           double seconds, struct acc *a)
{
    char full[2048], schema[48];
    snprintf(schema, sizeof schema, "bench_w%d_r%ld", writers, round);
    long pool = env_long("AG_BENCH_PG_POOL", 0); /* default: writers, up to 64 */
    if (pool <= 0) pool = writers < 64 ? writers : 64;
    const char *extra = getenv("AG_BENCH_PG_URI_EXTRA"); /* e.g. "&append_lanes=4" */
    snprintf(full, sizeof full, "%s%cschema=%s&pool_size=%ld%s", uri, strchr(uri, '?') ? '&' : '?',
             schema, pool, extra ? extra : "");
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_open(full, NULL, &s, &err);
    if (rc) {
        fprintf(stderr, "agora-pg open: %s\n", ag_err_msg(&err, rc));
        a->err = rc;
        return;
    }
    struct impl im = {"agora-pg", s, agora_open_t, agora_append, agora_close_t};
    run_point(&im, writers, seconds, a);
    struct ag_store_stats st = {0};
    if (ag_store_stats(s, &st) == 0) a->commits += st.commits; /* batches: events_per_commit */
    ag_store_close(s);
#ifdef AG_HAVE_PQ
    PGconn *c = conninfo ? PQconnectdb(conninfo) : NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP SCHEMA %s CASCADE", schema);
    if (c && PQstatus(c) == CONNECTION_OK) PQclear(PQexec(c, sql));
    PQfinish(c);
#else
    (void)conninfo;
#endif
}

/* ---- store.read_all on agora-pg: $all in pages of 1000, as a subscription reads it ---- */

static int build_store(struct ag_store *s, uint64_t streams, size_t per_stream, int threads,
                       double budget_s);

/* Read all of $all in pages of `page`; one JSON line. */
static void read_pg_pages(struct ag_store *s, size_t page)
{
    uint64_t from = 0, n = 0;
    struct ag_err err;
    double t0 = now_s();
    for (;;) {
        struct ag_event_page pg;
        int rc = ag_store_read_all(s, from, AG_READ_FORWARD, page, &pg, &err);
        if (rc) {
            fprintf(stderr, "read_all: %s\n", ag_err_msg(&err, rc));
            break;
        }
        n += pg.count;
        from = pg.next_position;
        bool end = pg.end || pg.count == 0;
        ag_event_page_free(&pg);
        if (end) break;
    }
    double dt = now_s() - t0;
    printf("{\"bench\":\"store.read_all\",\"impl\":\"agora-pg\",\"params\":{\"events\":%llu,"
           "\"page\":%zu},\"ops_per_s\":%.0f,\"seconds\":%.3f}\n",
           (unsigned long long)n, page, (double)n / dt, dt);
    fprintf(
        stderr,
        "store.read_all agora-pg: %llu events in pages of %zu in %.3f s = %.0f events/s (goal >= "
        "100000)\n",
        (unsigned long long)n, page, dt, (double)n / dt);
}

static void bench_read_pg(const char *uri, const char *conninfo)
{
    if (!uri || !*uri) return;
    char full[2048];
    snprintf(full, sizeof full, "%s%cschema=bench_read", uri, strchr(uri, '?') ? '&' : '?');
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_open(full, NULL, &s, &err);
    if (rc) return (void)fprintf(stderr, "agora-pg open: %s\n", ag_err_msg(&err, rc));
    uint64_t want = (uint64_t)env_long("AG_BENCH_PG_READ_EVENTS", 100000);
    double t0 = now_s();
    build_store(s, want / 1000, 1000, 2, (double)env_long("AG_BENCH_BUILD_BUDGET", 60));
    struct ag_store_stats st = {0};
    ag_store_stats(s, &st);
    fprintf(stderr, "agora-pg: built %llu events in %.1f s\n", (unsigned long long)st.events,
            now_s() - t0);
    read_pg_pages(s, 1000);
    read_pg_pages(s, 4096); /* the projectors' page */
    ag_store_close(s);
#ifdef AG_HAVE_PQ
    PGconn *c = conninfo && !getenv("AG_BENCH_PG_KEEP") ? PQconnectdb(conninfo) : NULL;
    if (c && PQstatus(c) == CONNECTION_OK)
        PQclear(PQexec(c, "SET client_min_messages = warning; DROP SCHEMA bench_read CASCADE"));
    PQfinish(c);
#else
    (void)conninfo;
#endif
}

/* ---- store.read_all and store.open: one big store built without fsync ---- */

struct build {
    struct ag_store *s;
    atomic_ullong next_stream; /* streams handed out to builder threads */
    uint64_t streams;          /* streams wanted */
    size_t per_stream;         /* events per stream (one batch) */
    double deadline;           /* stop early past this (now_s) */
};

/* Each stream gets one batch of `per_stream` events with expected NO_STREAM. */
static void *build_main(void *arg)
{
    struct build *b = arg;
    struct ag_event_data ev[AG_STORE_BATCH_MAX];
    for (size_t i = 0; i < b->per_stream; i++) ev[i] = bench_event();
    for (;;) {
        uint64_t k = atomic_fetch_add(&b->next_stream, 1);
        if (k >= b->streams || ((k & 63) == 0 && now_s() > b->deadline)) break;
        char name[32];
        int n = snprintf(name, sizeof name, "order-%010llu", (unsigned long long)k);
        struct ag_append_result res;
        struct ag_err err;
        int rc = ag_store_append(b->s, name, (size_t)n, AG_STORE_NO_STREAM, ev, b->per_stream, &res,
                                 &err);
        if (rc) {
            fprintf(stderr, "build append: %s\n", ag_err_msg(&err, rc));
            break;
        }
    }
    return NULL;
}

static int build_store(struct ag_store *s, uint64_t streams, size_t per_stream, int threads,
                       double budget_s)
{
    struct build b = {
        .s = s, .streams = streams, .per_stream = per_stream, .deadline = now_s() + budget_s};
    atomic_init(&b.next_stream, 0);
    pthread_t th[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, build_main, &b);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    return 0;
}

static int timed_open(const char *path, struct ag_store **s, double *secs)
{
    struct ag_store_options o = {0};
    struct ag_err err;
    double t0 = now_s();
    int rc = ag_store_log_open(path, &o, s, &err);
    *secs = now_s() - t0;
    if (rc) fprintf(stderr, "open %s: %s\n", path, ag_err_msg(&err, rc));
    return rc;
}

static void bench_read_all(struct ag_store *s, struct ag_store_stats *st)
{
    uint64_t from = 0, n = 0, payload = 0;
    double t0 = now_s();
    for (;;) {
        struct ag_event_page pg;
        struct ag_err err;
        int rc = ag_store_read_all(s, from, AG_READ_FORWARD, 1000, &pg, &err);
        if (rc) {
            fprintf(stderr, "read_all: %s\n", ag_err_msg(&err, rc));
            break;
        }
        for (size_t i = 0; i < pg.count; i++)
            payload += pg.events[i].data_len + pg.events[i].metadata_len;
        n += pg.count;
        from = pg.next_position;
        bool end = pg.end || pg.count == 0;
        ag_event_page_free(&pg);
        if (end) break;
    }
    double dt = now_s() - t0;
    /* mb_per_s: log bytes scanned (what the store reads); payload: data + metadata. */
    printf("{\"bench\":\"store.read_all\",\"impl\":\"agora\",\"params\":{\"events\":%llu,"
           "\"page\":1000,\"cache\":\"warm\"},\"ops_per_s\":%.0f,\"mb_per_s\":%.1f,"
           "\"payload_mb_per_s\":%.1f,\"seconds\":%.3f}\n",
           (unsigned long long)n, (double)n / dt, (double)st->bytes / dt / 1e6,
           (double)payload / dt / 1e6, dt);
    fflush(stdout);
}

static void print_open(uint64_t events, uint64_t streams, bool ckpt, double secs)
{
    printf("{\"bench\":\"store.open\",\"impl\":\"agora\",\"params\":{\"events\":%llu,"
           "\"streams\":%llu,\"checkpoint\":%s,\"cache\":\"warm\"},\"seconds\":%.3f}\n",
           (unsigned long long)events, (unsigned long long)streams, ckpt ? "true" : "false", secs);
    fflush(stdout);
}

/* Build, close (writes index.ckpt), open timed, read $all, close, drop the
 * checkpoint, open timed again (full scan). */
static void bench_open_read(const char *dir)
{
    double open_ck, open_scan;
    char path[4096], ck[4200];
    snprintf(path, sizeof path, "%s/agora-open", dir);
    snprintf(ck, sizeof ck, "%s/index.ckpt", path);
    uint64_t want = (uint64_t)env_long("AG_BENCH_OPEN_EVENTS", 10000000);
    size_t per = 100; /* events per stream: one batch each */
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_log_open(path, &o, &s, &err);
    if (rc) return (void)fprintf(stderr, "open %s: %s\n", path, ag_err_msg(&err, rc));
    double t0 = now_s();
    build_store(s, want / per, per, 2, (double)env_long("AG_BENCH_BUILD_BUDGET", 60));
    struct ag_store_stats st = {0};
    ag_store_stats(s, &st);
    fprintf(stderr, "built %llu events in %llu streams (%.0f MB) in %.1f s\n",
            (unsigned long long)st.events, (unsigned long long)st.streams, st.bytes / 1e6,
            now_s() - t0);
    ag_store_close(s);
    if (!timed_open(path, &s, &open_ck)) {
        print_open(st.events, st.streams, true, open_ck);
        bench_read_all(s, &st);
        ag_store_close(s);
    }
    unlink(ck);
    if (!timed_open(path, &s, &open_scan)) {
        print_open(st.events, st.streams, false, open_scan);
        ag_store_close(s);
    }
    rm_tree(path);
}

/* ---- store.index_memory (in a forked child: a clean heap to measure) ---- */

/* `n` stream_version lookups of random streams order-<k> with k < `range` (present
 * when range <= streams) or k >= streams (missing): sorted latencies. */
static struct lat lookup_lat(struct ag_store *s, uint64_t streams, size_t n, bool present)
{
    struct lat l = {0};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t k = present ? x % streams : streams + x % (streams + 1);
        char name[32];
        int len = snprintf(name, sizeof name, "order-%010llu", (unsigned long long)k);
        int64_t v = -2;
        double t0 = now_s();
        int rc = ag_store_stream_version(s, name, (size_t)len, &v);
        lat_push(&l, (uint64_t)((now_s() - t0) * 1e9));
        if (rc || (present ? v != 0 : v != -1))
            fprintf(stderr, "lookup %s: rc %d version %lld\n", name, rc, (long long)v);
    }
    qsort(l.v, l.n, sizeof *l.v, cmp_u32);
    return l;
}

static void print_lookups(struct ag_store *s, uint64_t streams, const char *when)
{
    size_t n = (size_t)env_long("AG_BENCH_LOOKUPS", 100000);
    struct lat hit = lookup_lat(s, streams, n, true), miss = lookup_lat(s, streams, n, false);
    printf("{\"bench\":\"store.index_lookup\",\"impl\":\"agora\",\"params\":{\"streams\":%llu,"
           "\"lookups\":%zu,\"when\":\"%s\"},\"present_p50_us\":%.2f,\"present_p99_us\":%.2f,"
           "\"missing_p50_us\":%.2f,\"missing_p99_us\":%.2f}\n",
           (unsigned long long)streams, n, when, pct_us(hit.v, hit.n, 0.5),
           pct_us(hit.v, hit.n, 0.99), pct_us(miss.v, miss.n, 0.5), pct_us(miss.v, miss.n, 0.99));
    fprintf(stderr,
            "lookups (%s): present p50 %.1f us p99 %.1f us; missing p50 %.1f us p99 %.1f us\n",
            when, pct_us(hit.v, hit.n, 0.5), pct_us(hit.v, hit.n, 0.99),
            pct_us(miss.v, miss.n, 0.5), pct_us(miss.v, miss.n, 0.99));
    free(hit.v);
    free(miss.v);
}

static void print_index_memory(struct ag_store *s, uint64_t cap, uint64_t rss0, const char *when,
                               double secs)
{
    struct ag_store_stats st = {0};
    ag_store_stats(s, &st);
    uint64_t rss1 = rss_bytes();
    printf("{\"bench\":\"store.index_memory\",\"impl\":\"agora\",\"params\":{\"streams\":%llu,"
           "\"stream_name_bytes\":16,\"index_memory\":%llu,\"when\":\"%s\"},\"index_bytes\":%llu,"
           "\"rss_bytes\":%llu,\"tables\":%llu,\"table_entries\":%llu,\"table_bytes\":%llu,"
           "\"seconds\":%.1f}\n",
           (unsigned long long)st.streams, (unsigned long long)cap, when,
           (unsigned long long)st.index_bytes, (unsigned long long)(rss1 > rss0 ? rss1 - rss0 : 0),
           (unsigned long long)st.index_tables, (unsigned long long)st.index_entries,
           (unsigned long long)st.index_table_bytes, secs);
    fprintf(stderr,
            "index (%s): %llu streams, index %.1f MB, RSS delta %.1f MB, %llu tables (%.0f MB), "
            "%.1f s\n",
            when, (unsigned long long)st.streams, st.index_bytes / 1e6,
            (rss1 > rss0 ? rss1 - rss0 : 0) / 1e6, (unsigned long long)st.index_tables,
            st.index_table_bytes / 1e6, secs);
}

static void index_memory_child(const char *dir, uint64_t streams)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/agora-index", dir);
    uint64_t cap = 0;
    const char *cs = getenv("AG_BENCH_INDEX_MEMORY");
    if (cs && *cs && ag_parse_size(cs, &cap)) cap = 0;
    uint64_t rss0 = rss_bytes();
    struct ag_store_options o = {.no_sync = true, .index_memory = cap};
    struct ag_store *s;
    struct ag_err err;
    int rc = ag_store_log_open(path, &o, &s, &err);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", path, ag_err_msg(&err, rc));
        _exit(1);
    }
    double t0 = now_s();
    build_store(s, streams, 1, 16, (double)env_long("AG_BENCH_BUILD_BUDGET", 3600));
    print_index_memory(s, cap, rss0, "built", now_s() - t0);
    print_lookups(s, streams, "built");
    ag_store_close(s);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork(); /* the reopen in a fresh process: no heap left over from the build */
    if (pid == 0) {
        rss0 = rss_bytes();
        t0 = now_s();
        if (ag_store_log_open(path, &o, &s, &err) == 0) { /* checkpoint + tables */
            print_index_memory(s, cap, rss0, "reopened", now_s() - t0);
            print_lookups(s, streams, "reopened");
            ag_store_close(s);
        }
        fflush(stdout);
        _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
    rm_tree(path);
    _exit(0);
}

static void bench_index_memory(const char *dir)
{
    uint64_t streams = (uint64_t)env_long("AG_BENCH_STREAMS", 10000000);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork(); /* no other thread runs here: forking is safe */
    if (pid == 0) index_memory_child(dir, streams);
    if (pid > 0) waitpid(pid, NULL, 0);
}

/* ---- the append phase and the table ---- */

static int parse_writers(int *ws)
{
    const char *spec = getenv("AG_BENCH_WRITERS");
    if (!spec || !*spec) spec = "1,16,64,256";
    int n = 0;
    for (const char *p = spec; *p && n < MAX_POINTS;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v > 0 && v <= 4096) ws[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

static void print_ratio(double a, double b)
{
    if (a > 0 && b > 0)
        fprintf(stderr, " %8.2fx", a / b);
    else
        fprintf(stderr, " %9s", "-");
}

static void print_table(const struct result (*r)[4], int n)
{
    fprintf(stderr, "\nstore.append (events/s, p50/p99 us), single-event batches, exact version\n");
    fprintf(stderr, "%7s | %24s | %24s | %24s | %24s | %9s %9s %9s\n", "writers", "agora", "raw",
            "postgres", "agora-pg", "agora/raw", "agora/pg", "apg/pg");
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "%7d |", r[i][0].writers);
        for (int k = 0; k < 4; k++) {
            if (r[i][k].ran)
                fprintf(stderr, " %8.0f %6.0f/%-7.0f |", r[i][k].ops_per_s, r[i][k].p50_us,
                        r[i][k].p99_us);
            else
                fprintf(stderr, " %24s |", "-");
        }
        print_ratio(r[i][0].ops_per_s, r[i][1].ops_per_s);
        print_ratio(r[i][0].ops_per_s, r[i][2].ops_per_s);
        print_ratio(r[i][3].ops_per_s, r[i][2].ops_per_s);
        fputc('\n', stderr);
    }
    fprintf(stderr, "targets at 64 writers: agora/raw >= 0.80, agora/pg >= 10x, p99 <= 2000 us,"
                    " agora-pg/pg (apg/pg) >= 0.9\n");
}

/* Print the three lines of one writer count; the extras say how well each batched. */
static void print_point(struct acc *a, struct result *out)
{
    char extra[160];
    for (int k = 0; k < 4; k++) {
        if (!a[k].ran) continue;
        uint64_t ops = a[k].ops, commits = a[k].commits;
        out[k] = finish(&a[k]);
        if (commits)
            snprintf(extra, sizeof extra,
                     ",\"seconds\":%.2f,\"commits\":%llu,\"events_per_commit\":%.1f", a[k].secs,
                     (unsigned long long)commits, (double)ops / (double)commits);
        else
            snprintf(extra, sizeof extra, ",\"seconds\":%.2f", a[k].secs);
        print_append(&out[k], extra);
    }
}

/* Round-robin the implementations in short rounds, so a burst of noise from a
 * shared disk hits all of them alike instead of one whole point. */
static void bench_append(const char *dir, const char *pg, const char *pg_uri)
{
    int ws[MAX_POINTS];
    int n = parse_writers(ws);
    double secs = (double)env_long("AG_BENCH_SECONDS", 3);
    long rounds = env_long("AG_BENCH_ROUNDS", 3);
    if (rounds < 1) rounds = 1;
    struct result r[MAX_POINTS][4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < n; i++) {
        struct acc a[4] = {
            {.impl = "agora"}, {.impl = "raw"}, {.impl = "postgres"}, {.impl = "agora-pg"}};
        for (int k = 0; k < 4; k++) a[k].writers = r[i][k].writers = ws[i];
        for (long round = 0; round < rounds; round++) {
            if (impl_on("agora")) bench_agora(dir, ws[i], secs / (double)rounds, &a[0]);
            if (impl_on("raw")) bench_raw(dir, ws[i], secs / (double)rounds, &a[1]);
            if (pg && *pg && impl_on("postgres")) bench_pg(pg, ws[i], secs / (double)rounds, &a[2]);
            if (pg_uri && *pg_uri && impl_on("agora-pg"))
                bench_agora_pg(pg_uri, pg, ws[i], round, secs / (double)rounds, &a[3]);
        }
        print_point(a, r[i]);
    }
    print_table(r, n);
}

int main(void)
{
    const char *dir = getenv("AG_BENCH_DIR");
    if (!dir || !*dir) {
        fprintf(stderr, "bench_store: set AG_BENCH_DIR to a scratch directory (run.sh does)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    ag_log_set_level(AG_LOG_WARN);
    if (phase_on("append")) bench_append(dir, getenv("AG_BENCH_PG"), getenv("AG_BENCH_PG_URI"));
    if (phase_on("multi")) bench_multi(dir);
    if (phase_on("read_pg")) bench_read_pg(getenv("AG_BENCH_PG_URI"), getenv("AG_BENCH_PG"));
    if (phase_on("open")) bench_open_read(dir);
    if (phase_on("memory")) bench_index_memory(dir);
    return 0;
}
