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
 * so the checker can prove that batches nobody acknowledged are whole too. One
 * append in eight is a multi-stream unit (ag_store_append_multi): two of the
 * thread's own streams and, one time in three, "shared", 1 to 3 events each; its
 * events also name the unit (,"u":"<first id>","ui":<k>,"un":<count>) so the
 * checker can prove units are whole, and it is acknowledged with one line per
 * part, all in one write(2). It runs until killed; any store error other than a
 * conflict ends it with status 2.
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

/* Format the acknowledgement line of a batch at `line`; returns its length. */
static int ack_line(char *line, size_t cap, const char *stream, const struct ag_append_result *res,
                    const struct ag_event_data *ev, size_t n)
{
    int len = snprintf(line, cap, "A %s %lld %zu %llu ", stream, (long long)res->first_version, n,
                       (unsigned long long)res->first_position);
    for (size_t i = 0; i < n; i++) {
        if (i) line[len++] = ',';
        ag_uuid_format(&ev[i].id, line + len);
        len += AG_UUID_STRLEN;
    }
    line[len++] = '\n';
    return len;
}

/* Report an acknowledged batch with one write(2). */
static void report(const char *stream, const struct ag_append_result *res,
                   const struct ag_event_data *ev, size_t n)
{
    char line[512];
    int len = ack_line(line, sizeof line, stream, res, ev, n);
    ssize_t w = write(out_fd, line, (size_t)len);
    if (w != len) die("cannot write the acknowledgement line", AG_EIO, NULL);
}

/* Fill `n` events of one batch; `meta`/`data` hold their JSON text. */
static void make_batch(struct worker *w, struct ag_event_data *ev, size_t n, char meta[][192],
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
            (size_t)snprintf(meta[i], 192, "{\"b\":\"%s\",\"i\":%zu,\"n\":%zu}", first, i, n);
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

#define UNIT_PARTS 3
#define UNIT_EACH  3

/* A multi-stream unit: own streams k and k+1 and, sometimes, "shared" (its
 * conflicts retried with the same events: a failed unit wrote nothing). */
static void append_unit(struct worker *w, int k, uint64_t r)
{
    struct ag_event_data ev[UNIT_PARTS * UNIT_EACH];
    char meta[UNIT_PARTS * UNIT_EACH][192], data[UNIT_PARTS * UNIT_EACH][64];
    struct ag_append_part p[UNIT_PARTS];
    int own[UNIT_PARTS] = {k, (k + 1) % OWN_STREAMS, -1};
    size_t np = (r >> 40) % 3 == 0 ? 3 : 2, total = 0;
    for (size_t i = 0; i < np; i++) {
        size_t n = 1 + (size_t)((r >> (44 + 2 * i)) % UNIT_EACH);
        make_batch(w, ev + total, n, meta + total, data + total);
        const char *name = own[i] >= 0 ? w->name[own[i]] : "shared";
        p[i] = (struct ag_append_part){name, strlen(name), own[i] >= 0 ? w->ver[own[i]] : 0,
                                       ev + total, n};
        total += n;
    }
    char first[AG_UUID_STRLEN + 1];
    ag_uuid_format(&ev[0].id, first);
    for (size_t i = 0; i < total; i++) { /* name the unit too: {"b":..,"u":..,"ui":..,"un":..} */
        size_t len = ev[i].metadata_len - 1;
        ev[i].metadata_len =
            len + (size_t)snprintf(meta[i] + len, 192 - len, ",\"u\":\"%s\",\"ui\":%zu,\"un\":%zu}",
                                   first, i, total);
    }
    struct ag_append_result res[UNIT_PARTS];
    for (;;) {
        if (np == 3) {
            int rc = ag_store_stream_version(store, "shared", 6, &p[2].expected_version);
            if (rc) die("stream_version(shared)", rc, NULL);
        }
        struct ag_err err;
        int rc = ag_store_append_multi(store, p, np, res, &err);
        if (rc == AG_ECONFLICT && np == 3) continue;
        if (rc) die("append_multi", rc, &err);
        break;
    }
    char lines[UNIT_PARTS * 512];
    int len = 0;
    for (size_t i = 0; i < np; i++) {
        if (own[i] >= 0) {
            if (res[i].first_version != w->ver[own[i]] + 1)
                die("append_multi returned the wrong version", AG_EFAILED, NULL);
            w->ver[own[i]] = res[i].last_version;
        }
        len += ack_line(lines + len, 512, p[i].stream, &res[i], p[i].events, p[i].count);
    }
    if (write(out_fd, lines, (size_t)len) != len)
        die("cannot write the acknowledgement lines", AG_EIO, NULL);
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
    char meta[MAX_BATCH][192], data[MAX_BATCH][64];
    for (;;) {
        uint64_t r = next_rand(w);
        size_t n = r % 10 < 7 ? 1 : 2 + (size_t)((r >> 8) % (MAX_BATCH - 1));
        int k = (int)((r >> 16) % OWN_STREAMS);
        if ((r >> 24) % 50 == 0) {
            snapshot_own(w, k);
            continue;
        }
        if ((r >> 36) % 8 == 0) {
            append_unit(w, k, r);
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
