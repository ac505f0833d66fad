/*
 * crash_writer: the victim of the store's kill -9 test (tests/integration/store_crash.sh).
 *
 *   crash_writer DIR [THREADS] [SEGMENT_MIB]
 *
 * Opens the log at DIR with fsync on and small segments (SEGMENT_MIB, default the
 * smallest the store allows, so rounds roll segments and write checkpoints) and starts THREADS
 * (default 4) threads that append forever, each to three streams of its own ("c<t>-<k>", exact
 * expected versions, no conflicts) and to one stream they all share ("shared", exact expected
 * versions, conflicts retried), in batches of 1 to 5 events, with an occasional snapshot. After
 * each acknowledged append it writes one line, with a single write(2) so lines are whole, to
 * stdout:
 *
 *   A <stream> <first_version> <count> <first_position> <id>[,<id>...]
 *
 * Every event's metadata names its batch ({"b":"<first id>","i":<k>,"n":<count>})
 * so the checker can prove that batches nobody acknowledged are whole too. It runs
 * until killed; any store error other than a conflict ends it with status 2.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/store_log.h"

#define OWN_STREAMS 3
#define MAX_BATCH   5

static struct ag_store *store;
static const int out_fd = 1;

struct worker {
    int t;                      /* thread number */
    uint64_t rng;               /* xorshift state */
    int64_t ver[OWN_STREAMS];   /* last version of each own stream (-1: none) */
    char name[OWN_STREAMS][32]; /* own stream names */
};

static uint64_t next_rand(struct worker *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void die(const char *what, int rc, const struct ag_err *err)
{
    char line[800];
    int n = snprintf(line, sizeof line, "crash_writer: %s: %s (%s)\n", what, ag_errname(rc),
                     err && err->msg[0] ? err->msg : ag_strerror(rc));
    if (write(2, line, (size_t)n) < 0) {
    }
    _exit(2);
}

/* Report an acknowledged batch with one write(2). */
static void report(const char *stream, const struct ag_append_result *res,
                   const struct ag_event_data *ev, size_t n)
{
    char line[512];
    int len = snprintf(line, sizeof line, "A %s %lld %zu %llu ", stream,
                       (long long)res->first_version, n, (unsigned long long)res->first_position);
    for (size_t i = 0; i < n; i++) {
        if (i) line[len++] = ',';
        ag_uuid_format(&ev[i].id, line + len);
        len += AG_UUID_STRLEN;
    }
    line[len++] = '\n';
    ssize_t w = write(out_fd, line, (size_t)len);
    if (w != len) die("cannot write the acknowledgement line", AG_EIO, NULL);
}

/* Fill `n` events of one batch; `meta`/`data` hold their JSON text. */
static void make_batch(struct worker *w, struct ag_event_data *ev, size_t n, char meta[][96],
                       char data[][64])
{
    char first[AG_UUID_STRLEN + 1];
    for (size_t i = 0; i < n; i++) {
        memset(&ev[i], 0, sizeof ev[i]);
        ag_uuid_v7(&ev[i].id, NULL, NULL);
        if (i == 0) ag_uuid_format(&ev[0].id, first);
        ev[i].type = "CrashTested";
        ev[i].type_len = strlen(ev[i].type);
        ev[i].metadata_len =
            (size_t)snprintf(meta[i], 96, "{\"b\":\"%s\",\"i\":%zu,\"n\":%zu}", first, i, n);
        ev[i].metadata = meta[i];
        ev[i].data_len = (size_t)snprintf(data[i], 64, "{\"t\":%d,\"r\":%llu}", w->t,
                                          (unsigned long long)(next_rand(w) % 1000000));
        ev[i].data = data[i];
    }
}

/* Append one batch to the shared stream, retrying on conflicts. */
static void append_shared(struct ag_event_data *ev, size_t n)
{
    for (;;) {
        int64_t v;
        int rc = ag_store_stream_version(store, "shared", 6, &v);
        if (rc) die("stream_version(shared)", rc, NULL);
        struct ag_append_result res;
        struct ag_err err;
        rc = ag_store_append(store, "shared", 6, v, ev, n, &res, &err);
        if (rc == AG_ECONFLICT) continue;
        if (rc) die("append(shared)", rc, &err);
        report("shared", &res, ev, n);
        return;
    }
}

static void append_own(struct worker *w, int k, struct ag_event_data *ev, size_t n)
{
    struct ag_append_result res;
    struct ag_err err;
    const char *s = w->name[k];
    int rc = ag_store_append(store, s, strlen(s), w->ver[k], ev, n, &res, &err);
    if (rc) die("append(own stream)", rc, &err);
    if (res.first_version != w->ver[k] + 1)
        die("append returned the wrong version", AG_EFAILED, NULL);
    w->ver[k] = res.last_version;
    report(s, &res, ev, n);
}

static void snapshot_own(struct worker *w, int k)
{
    if (w->ver[k] < 0) return;
    char state[64];
    int len = snprintf(state, sizeof state, "{\"v\":%lld}", (long long)w->ver[k]);
    struct ag_err err;
    const char *s = w->name[k];
    int rc = ag_store_save_snapshot(store, s, strlen(s), w->ver[k], state, (size_t)len, &err);
    if (rc) die("save_snapshot", rc, &err);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ag_event_data ev[MAX_BATCH];
    char meta[MAX_BATCH][96], data[MAX_BATCH][64];
    for (;;) {
        uint64_t r = next_rand(w);
        size_t n = r % 10 < 7 ? 1 : 2 + (size_t)((r >> 8) % (MAX_BATCH - 1));
        int k = (int)((r >> 16) % OWN_STREAMS);
        if ((r >> 24) % 50 == 0) {
            snapshot_own(w, k);
            continue;
        }
        make_batch(w, ev, n, meta, data);
        if ((r >> 32) % 5 == 0)
            append_shared(ev, n);
        else
            append_own(w, k, ev, n);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: crash_writer DIR [THREADS] [SEGMENT_MIB]\n");
        return 64;
    }
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (nthreads < 1 || nthreads > 64) nthreads = 4;
    struct ag_store_options o = {.segment_bytes = argc > 3 ? strtoull(argv[3], NULL, 10) << 20 : 1};
    ag_log_set_level(AG_LOG_ERROR);
    struct ag_err err;
    int rc = ag_store_log_open(argv[1], &o, &store, &err);
    if (rc) die("open", rc, &err);
    static struct worker w[64];
    pthread_t th[64];
    for (int t = 0; t < nthreads; t++) {
        w[t].t = t;
        w[t].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1) ^ (uint64_t)getpid() << 20;
        for (int k = 0; k < OWN_STREAMS; k++) {
            snprintf(w[t].name[k], sizeof w[t].name[k], "c%d-%d", t, k);
            rc = ag_store_stream_version(store, w[t].name[k], strlen(w[t].name[k]), &w[t].ver[k]);
            if (rc) die("stream_version", rc, NULL);
        }
        if (pthread_create(&th[t], NULL, worker_main, &w[t]))
            die("pthread_create", AG_ENOMEM, NULL);
    }
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    return 0;
}
