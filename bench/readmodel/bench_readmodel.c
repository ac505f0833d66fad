/*
 * bench_readmodel: the read-model port on each adapter, the same work on each.
 *
 * WHAT IS MEASURED
 *   readmodel.project  what a projection does: AG_BENCH_EVENTS (default 100000)
 *                      upserts of a stock-like row (`INSERT ... ON CONFLICT DO
 *                      UPDATE SET on_hand = stock.on_hand + excluded.on_hand`) over
 *                      AG_BENCH_KEYS (1000) keys, in pages of 512 per transaction,
 *                      each page ending with ag_rm_checkpoint_set, as the projector
 *                      runs them. events_per_s.
 *   readmodel.query    point reads by key on one read-only handle shared by T
 *                      threads (AG_BENCH_THREADS, default 1,8) for AG_BENCH_SECONDS
 *                      (default 2): queries_per_s, p50/p99 in microseconds.
 *
 * ENVIRONMENT
 *   AG_BENCH_RM_URIS  space-separated read-model URIs, each measured in turn (e.g.
 *                     "sqlite:/tmp/x postgresql://postgres@/postgres?host=/tmp/s");
 *                     required. The read model "bench" is dropped first and after.
 *
 * Output: one JSON object per line on stdout (run.sh appends them to
 * bench/results/readmodel.jsonl), a short table on stderr. Never pass/fail.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/readmodel.h"

#define PAGE 512

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && atol(v) > 0 ? atol(v) : dflt;
}

static const char *adapter(const char *uri)
{
    return strncmp(uri, "postgresql:", 11) == 0 ? "postgresql" : "sqlite";
}

static int project(const char *uri, long events, long keys)
{
    struct ag_rm *rw;
    struct ag_err err;
    ag_err_clear(&err);
    ag_rm_drop(uri, "bench", NULL);
    if (ag_rm_open(uri, "bench", AG_RM_READWRITE, &rw, &err) ||
        ag_rm_script(rw,
                     "CREATE TABLE IF NOT EXISTS stock(product_id TEXT PRIMARY KEY,"
                     " on_hand INTEGER NOT NULL, reserved INTEGER NOT NULL);",
                     &err)) {
        fprintf(stderr, "bench_readmodel: %s: %s\n", uri, err.msg);
        return 1;
    }
    double t0 = now();
    int rc = 0;
    for (long i = 0; i < events && !rc;) {
        rc = ag_rm_begin(rw, &err);
        for (long n = 0; n < PAGE && i < events && !rc; n++, i++) {
            char key[32];
            snprintf(key, sizeof key, "product-%06ld", i % keys);
            struct ag_rm_arg a[] = {AG_RM_TEXT(key), AG_RM_INT(1)};
            rc = ag_rm_exec(rw,
                            "INSERT INTO stock VALUES(?1, ?2, 0) ON CONFLICT(product_id) DO UPDATE"
                            " SET on_hand = stock.on_hand + excluded.on_hand",
                            a, 2, &err);
        }
        if (!rc) rc = ag_rm_checkpoint_set(rw, "bench", (uint64_t)i, &err);
        if (!rc) rc = ag_rm_commit(rw, &err);
    }
    double dt = now() - t0;
    ag_rm_close(rw);
    if (rc) {
        fprintf(stderr, "bench_readmodel: %s: %s\n", uri, err.msg);
        return 1;
    }
    printf("{\"bench\":\"readmodel.project\",\"adapter\":\"%s\",\"events\":%ld,\"keys\":%ld,"
           "\"page\":%d,\"seconds\":%.3f,\"events_per_s\":%.0f}\n",
           adapter(uri), events, keys, PAGE, dt, (double)events / dt);
    fprintf(stderr, "%-10s project  %8.0f events/s\n", adapter(uri), (double)events / dt);
    return 0;
}

struct reader {
    struct ag_rm *ro;
    long keys;
    double until;
    long n;
    double *lat; /* microseconds, up to cap */
    long cap;
    unsigned seed;
};

static int one(const struct ag_rm_row *row, void *ud)
{
    *(int64_t *)ud = ag_rm_int64(row, 0);
    return 1;
}

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (now() < r->until) {
        char key[32];
        snprintf(key, sizeof key, "product-%06ld", (long)(rand_r(&r->seed) % r->keys));
        struct ag_rm_arg a = AG_RM_TEXT(key);
        int64_t v = 0;
        double t0 = now();
        ag_rm_query(r->ro, "SELECT on_hand FROM stock WHERE product_id=?1", &a, 1, one, &v, NULL);
        if (r->n < r->cap) r->lat[r->n] = (now() - t0) * 1e6;
        r->n++;
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void query(const char *uri, long keys, int threads, double seconds)
{
    struct ag_rm *ro;
    if (ag_rm_open(uri, "bench", AG_RM_READONLY, &ro, NULL)) return;
    pthread_t t[64];
    struct reader r[64];
    long cap = 2000000 / threads;
    double until = now() + seconds;
    for (int i = 0; i < threads; i++) {
        r[i] = (struct reader){ro,  keys,           until, 0, malloc(sizeof(double) * (size_t)cap),
                               cap, (unsigned)i + 1};
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    }
    long total = 0, kept = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += r[i].n;
    }
    double *all = malloc(sizeof(double) * (size_t)(cap * threads));
    for (int i = 0; i < threads; i++) {
        long n = r[i].n < cap ? r[i].n : cap;
        memcpy(all + kept, r[i].lat, sizeof(double) * (size_t)n);
        kept += n;
        free(r[i].lat);
    }
    qsort(all, (size_t)kept, sizeof *all, cmp);
    double p50 = kept ? all[kept / 2] : 0, p99 = kept ? all[kept * 99 / 100] : 0;
    free(all);
    ag_rm_close(ro);
    printf("{\"bench\":\"readmodel.query\",\"adapter\":\"%s\",\"threads\":%d,\"seconds\":%.1f,"
           "\"queries_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           adapter(uri), threads, seconds, (double)total / seconds, p50, p99);
    fprintf(stderr, "%-10s query    %8.0f queries/s  %2d threads  p50 %.0f us  p99 %.0f us\n",
            adapter(uri), (double)total / seconds, threads, p50, p99);
}

int main(void)
{
    const char *uris = getenv("AG_BENCH_RM_URIS");
    if (!uris || !*uris) {
        fprintf(stderr, "bench_readmodel: set AG_BENCH_RM_URIS\n");
        return 2;
    }
    long events = env_long("AG_BENCH_EVENTS", 100000), keys = env_long("AG_BENCH_KEYS", 1000);
    double seconds = (double)env_long("AG_BENCH_SECONDS", 2);
    const char *threads = getenv("AG_BENCH_THREADS") ? getenv("AG_BENCH_THREADS") : "1,8";
    char *list = strdup(uris), *save = NULL;
    for (char *uri = strtok_r(list, " ", &save); uri; uri = strtok_r(NULL, " ", &save)) {
        if (project(uri, events, keys)) continue;
        char *tl = strdup(threads), *s2 = NULL;
        for (char *t = strtok_r(tl, ",", &s2); t; t = strtok_r(NULL, ",", &s2))
            if (atoi(t) > 0 && atoi(t) <= 64) query(uri, keys, atoi(t), seconds);
        free(tl);
        ag_rm_drop(uri, "bench", NULL);
    }
    free(list);
    return 0;
}
