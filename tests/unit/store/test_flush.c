/*
 * The stream index's memtable goes to disk off the writer thread (lsm.c: the
 * writer freezes a full memtable, the flusher thread writes it into a table).
 * With the smallest index memory (1 MiB) appender threads go through many
 * flushes while a reader thread looks up streams the appenders had acknowledged:
 * every lookup, whether it lands in the memtable, the frozen memtable or a table,
 * finds the stream at or past its acknowledged version; afterwards (and after a
 * reopen) every stream has exactly its version, and list_streams counts each
 * once. A second test kills the process (kill -9) at random moments of the same
 * work, round after round over one directory: every acknowledged version is there
 * after each reopen. `make tsan` runs the first test under ThreadSanitizer.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agora/store_log.h"

#define FL_THREADS 2
#define FL_NEW     12000 /* new single-event streams per appender thread */
#define FL_HOT     16    /* streams per thread that get an event every 8 appends */

static char fl_dir[64];

static int fl_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void fl_setup(void)
{
    snprintf(fl_dir, sizeof fl_dir, "/tmp/agora-flush-XXXXXX");
    cr_assert_not_null(mkdtemp(fl_dir));
    ag_log_set_level(AG_LOG_OFF);
}

static void fl_teardown(void)
{
    nftw(fl_dir, fl_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store_flush, .init = fl_setup, .fini = fl_teardown, .timeout = 240);

/* What the appenders acknowledged: new streams made, and each hot stream's version. */
struct fl_acked {
    uint64_t made[FL_THREADS];
    int64_t hot[FL_THREADS][FL_HOT]; /* events acknowledged (version + 1) */
};

struct fl_run {
    struct ag_store *s;
    struct fl_acked *acked; /* shared with the parent across fork in the kill test */
    int t;
    int fails;
    bool stop;
};

static struct ag_store *fl_open(void)
{
    struct ag_store_options o = {.no_sync = true, .index_memory = 1u << 20};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(fl_dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return s;
}

static int fl_append(struct ag_store *s, const char *name, int64_t expected, uint64_t seq)
{
    struct ag_event_data ev = {
        .type = "Flushed", .type_len = 7, .data = "{\"n\":1}", .data_len = 7};
    memset(ev.id.b, 0, 16);
    memcpy(ev.id.b, &seq, 8);
    ev.id.b[8] = 0x5f;
    struct ag_append_result r;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, name, strlen(name), expected, &ev, 1, &r, &err);
    if (rc) fprintf(stderr, "append %s: %s\n", name, err.msg);
    return rc;
}

static void *fl_appender(void *arg)
{
    struct fl_run *run = arg;
    struct fl_acked *a = run->acked;
    int t = run->t;
    char name[48];
    for (uint64_t i = __atomic_load_n(&a->made[t], __ATOMIC_RELAXED); i < FL_NEW; i++) {
        snprintf(name, sizeof name, "new-%d-%llu", t, (unsigned long long)i);
        uint64_t seq = (uint64_t)t << 56 | i << 8;
        if (fl_append(run->s, name, AG_STORE_NO_STREAM, seq)) {
            run->fails++;
            break;
        }
        __atomic_store_n(&a->made[t], i + 1, __ATOMIC_RELEASE);
        if (i % 8) continue;
        int k = (int)(i / 8 % FL_HOT);
        int64_t v = __atomic_load_n(&a->hot[t][k], __ATOMIC_RELAXED);
        snprintf(name, sizeof name, "hot-%d-%d", t, k);
        if (fl_append(run->s, name, v - 1, seq | 1)) { /* v events: at version v - 1 */
            run->fails++;
            break;
        }
        __atomic_store_n(&a->hot[t][k], v + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* Looks up acknowledged streams while the appenders run: never older than acked. */
static void *fl_reader(void *arg)
{
    struct fl_run *run = arg;
    unsigned seed = 7;
    char name[48];
    while (!__atomic_load_n(&run->stop, __ATOMIC_ACQUIRE)) {
        int t = (int)(rand_r(&seed) % FL_THREADS);
        uint64_t made = __atomic_load_n(&run->acked->made[t], __ATOMIC_ACQUIRE);
        int64_t v = -2;
        if (made) {
            uint64_t i = (uint64_t)rand_r(&seed) % made;
            snprintf(name, sizeof name, "new-%d-%llu", t, (unsigned long long)i);
            if (ag_store_stream_version(run->s, name, strlen(name), &v) || v != 0) run->fails++;
        }
        int k = (int)(rand_r(&seed) % FL_HOT);
        int64_t want = __atomic_load_n(&run->acked->hot[t][k], __ATOMIC_ACQUIRE) - 1;
        snprintf(name, sizeof name, "hot-%d-%d", t, k);
        if (ag_store_stream_version(run->s, name, strlen(name), &v) || v < want) run->fails++;
    }
    return NULL;
}

/* Appenders and a reader on `s` until the appenders are done; failures seen. */
static int fl_work(struct ag_store *s, struct fl_acked *a)
{
    struct fl_run runs[FL_THREADS + 1];
    pthread_t th[FL_THREADS + 1];
    for (int t = 0; t <= FL_THREADS; t++) {
        runs[t] = (struct fl_run){.s = s, .acked = a, .t = t};
        cr_assert_eq(
            pthread_create(&th[t], NULL, t < FL_THREADS ? fl_appender : fl_reader, &runs[t]), 0);
    }
    int fails = 0;
    for (int t = 0; t < FL_THREADS; t++) {
        pthread_join(th[t], NULL);
        fails += runs[t].fails;
    }
    __atomic_store_n(&runs[FL_THREADS].stop, true, __ATOMIC_RELEASE);
    pthread_join(th[FL_THREADS], NULL);
    return fails + runs[FL_THREADS].fails;
}

static int fl_count(void *ud, const char *name, size_t len, int64_t version)
{
    (void)name, (void)len, (void)version;
    (*(size_t *)ud)++;
    return 0;
}

static void fl_check(struct ag_store *s, const struct fl_acked *a, bool exact)
{
    char name[48];
    size_t total = 0;
    for (int t = 0; t < FL_THREADS; t++) {
        for (uint64_t i = 0; i < a->made[t]; i++) {
            snprintf(name, sizeof name, "new-%d-%llu", t, (unsigned long long)i);
            int64_t v = -2;
            cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
            cr_assert_eq(v, 0, "%s acknowledged, found at %lld", name, (long long)v);
        }
        total += a->made[t];
        for (int k = 0; k < FL_HOT; k++) {
            snprintf(name, sizeof name, "hot-%d-%d", t, k);
            int64_t v = -2;
            cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
            /* killed: an append may be durable without its acknowledgement */
            if (exact || v != a->hot[t][k])
                cr_assert_eq(v, a->hot[t][k] - 1, "%s at %lld, acknowledged %lld", name,
                             (long long)v, (long long)a->hot[t][k] - 1);
            total += a->hot[t][k] > 0;
        }
    }
    if (!exact) return;
    size_t n = 0;
    cr_assert_eq(ag_store_list_streams(s, fl_count, &n), 0);
    cr_assert_eq(n, total, "listed %zu streams, made %zu", n, total);
}

Test(store_flush, appends_and_lookups_across_background_flushes)
{
    struct fl_acked a;
    memset(&a, 0, sizeof a);
    struct ag_store *s = fl_open();
    cr_assert_eq(fl_work(s, &a), 0, "a lookup missed an acknowledged version");
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    cr_assert_geq(st.index_flushes, 2, "flushes: %llu", (unsigned long long)st.index_flushes);
    fl_check(s, &a, true);
    ag_store_close(s);
    s = fl_open();
    fl_check(s, &a, true);
    ag_store_close(s);
}

Test(store_flush, kill9_during_background_flushes_loses_nothing)
{
    struct fl_acked *a =
        mmap(NULL, sizeof *a, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(a != MAP_FAILED);
    memset(a, 0, sizeof *a);
    srand((unsigned)getpid());
    for (int round = 0; round < 5; round++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            struct ag_store_options o = {.index_memory = 1u << 20, .no_sync = true};
            struct ag_store *s = NULL;
            struct ag_err err;
            if (ag_store_log_open(fl_dir, &o, &s, &err)) _exit(2);
            /* the hot versions a killed round left unacknowledged were written */
            for (int t = 0; t < FL_THREADS; t++)
                for (int k = 0; k < FL_HOT; k++) {
                    char name[48];
                    int64_t v = -2;
                    snprintf(name, sizeof name, "hot-%d-%d", t, k);
                    if (ag_store_stream_version(s, name, strlen(name), &v)) _exit(4);
                    a->hot[t][k] = v + 1;
                }
            for (int t = 0; t < FL_THREADS; t++) {
                char name[48];
                int64_t v = -2;
                snprintf(name, sizeof name, "new-%d-%llu", t, (unsigned long long)a->made[t]);
                if (ag_store_stream_version(s, name, strlen(name), &v)) _exit(4);
                if (v == 0) a->made[t]++; /* durable, not acknowledged */
            }
            _exit(fl_work(s, a) ? 3 : 5);
        }
        usleep(200000 + (useconds_t)(rand() % 600) * 1000);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        /* killed, or done before the kill (5); never a failed check (3) or open (2, 4) */
        cr_assert(WIFSIGNALED(status) || WEXITSTATUS(status) == 5, "round %d: child exit %d", round,
                  WEXITSTATUS(status));
        struct ag_store *s = fl_open();
        fl_check(s, a, false);
        ag_store_close(s);
    }
    munmap(a, sizeof *a);
}
