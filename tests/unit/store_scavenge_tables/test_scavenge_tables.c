/*
 * Scavenging with the on-disk stream index (scavenge.c with sst.c/lsm.c): the
 * streams whose events a scavenge moves or deletes have their index records only
 * in the tables (1 MiB of index memory, and a flush after they were written).
 * Kept events must be read at the same $all positions and versions, deleted
 * streams must be gone (not resurrected by the stale table records, also once the
 * tombstones themselves went to a table and after merges), a deleted stream starts
 * again at version 0 — after the scavenge, after a reopen from the checkpoint and
 * after a rebuild without it. And kill -9 at random moments of a scavenge with
 * tables present loses nothing kept.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agora/store_log.h"

#define NS  9000 /* single-event streams s-<i>; every third is deleted */
#define NM  12   /* streams m-<k> of 15 events; the even ones lose versions < 10 */
#define MEV 15

static char dir[64];
static uint64_t pos_s[NS];
static uint64_t pos_m[NM][MEV];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/agora-scavtb-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ag_log_set_level(AG_LOG_OFF);
}

static void teardown(void)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(scavenge_tables, .init = setup, .fini = teardown, .timeout = 240);

static struct ag_store *open_small(void)
{
    struct ag_store_options o = {.no_sync = true, .index_memory = 1u << 20}; /* 4 MiB segments */
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return s;
}

static uint64_t put(struct ag_store *s, const char *stream, int64_t expected)
{
    struct ag_event_data ev = {
        .type = "Touched", .type_len = 7, .data = "{\"n\":1}", .data_len = 7};
    struct ag_append_result r;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, stream, strlen(stream), expected, &ev, 1, &r, &err);
    cr_assert_eq(rc, 0, "append %s: %s", stream, err.msg);
    return r.first_position;
}

static uint64_t stat_of(struct ag_store *s, int which)
{
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    return which == 0 ? st.index_flushes : which == 1 ? st.index_tables : st.streams;
}

/* New pad streams until the memtable was written out once more: everything
 * written before now has its index record only in a table. */
static void push_to_tables(struct ag_store *s, size_t *pad)
{
    uint64_t f0 = stat_of(s, 0);
    char name[32];
    while (stat_of(s, 0) == f0) {
        snprintf(name, sizeof name, "p-%zu", (*pad)++);
        put(s, name, AG_STORE_NO_STREAM);
    }
}

/* Big events until the log rolls to a new segment: all before is sealed. The
 * padding is pseudo-random digits: records are compressed once the log has
 * trained a dictionary, and zeros would shrink to a few bytes. */
static void seal(struct ag_store *s)
{
    static char big[4096];
    static uint64_t x = 88172645463325252ull;
    size_t n = (size_t)snprintf(big, sizeof big, "{\"pad\":\"");
    for (; n < 4008; n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        big[n] = (char)('0' + x % 10);
    }
    snprintf(big + n, sizeof big - n, "\"}");
    struct ag_event_data e = {.type = "Fill", .type_len = 4, .data = big, .data_len = strlen(big)};
    struct ag_store_stats st0, st;
    ag_store_stats(s, &st0);
    do {
        cr_assert_eq(ag_store_append(s, "filler", 6, AG_STORE_ANY, &e, 1, NULL, NULL), 0);
        ag_store_stats(s, &st);
    } while (st.segments == st0.segments);
}

/* s-i, m-k written (positions kept), pushed to the tables, then marked deleted. */
static void build(void)
{
    struct ag_store *s = open_small();
    char name[32];
    for (size_t i = 0; i < NS; i++) {
        snprintf(name, sizeof name, "s-%zu", i);
        pos_s[i] = put(s, name, AG_STORE_NO_STREAM);
        if (i % (NS / MEV) == 0 && i / (NS / MEV) < MEV)
            for (size_t k = 0; k < NM; k++) {
                snprintf(name, sizeof name, "m-%zu", k);
                pos_m[k][i / (NS / MEV)] = put(s, name, AG_STORE_ANY);
            }
    }
    size_t pad = 0;
    push_to_tables(s, &pad);
    cr_assert_geq(stat_of(s, 1), 1, "tables exist");
    seal(s);
    struct ag_err err;
    for (size_t i = 0; i < NS; i += 3) {
        snprintf(name, sizeof name, "s-%zu", i);
        cr_assert_eq(ag_store_log_truncate(s, name, strlen(name), -1, &err), 0, "%s", err.msg);
    }
    for (size_t k = 0; k < NM; k += 2) {
        snprintf(name, sizeof name, "m-%zu", k);
        cr_assert_eq(ag_store_log_truncate(s, name, strlen(name), 10, &err), 0, "%s", err.msg);
    }
    ag_store_close(s);
}

static int count_s(void *ud, const char *name, size_t len, int64_t version)
{
    (void)version;
    if (len > 2 && name[0] == 's' && name[1] == '-') (*(size_t *)ud)++;
    return 0;
}

/* Kept events where they were; deleted ones gone when `strict` (else either). */
static void check(struct ag_store *s, bool strict)
{
    char name[32];
    size_t present = 0;
    for (size_t i = 0; i < NS; i++) {
        snprintf(name, sizeof name, "s-%zu", i);
        struct ag_event_page p;
        struct ag_err err;
        int rc = ag_store_read_stream(s, name, strlen(name), 0, AG_READ_FORWARD, 4, &p, &err);
        int64_t v = -2;
        cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
        if (i % 3 == 0 && (strict || rc == AG_ENOTFOUND)) {
            if (rc == 0) ag_event_page_free(&p);
            cr_assert_eq(rc, AG_ENOTFOUND, "%s was deleted: %d", name, rc);
            cr_assert_eq(v, -1, "%s was deleted, at %lld", name, (long long)v);
            continue;
        }
        present++;
        cr_assert_eq(rc, 0, "%s: %s", name, err.msg);
        cr_assert_eq(p.count, 1, "%s", name);
        cr_assert_eq(p.events[0].version, 0);
        cr_assert_eq(p.events[0].position, pos_s[i], "%s at %llu, was %llu", name,
                     (unsigned long long)p.events[0].position, (unsigned long long)pos_s[i]);
        cr_assert_eq(v, 0);
        ag_event_page_free(&p);
    }
    for (size_t k = 0; k < NM; k++) {
        snprintf(name, sizeof name, "m-%zu", k);
        struct ag_event_page p;
        struct ag_err err;
        cr_assert_eq(ag_store_read_stream(s, name, strlen(name), 0, AG_READ_FORWARD, 100, &p, &err),
                     0, "%s: %s", name, err.msg);
        /* segments go oldest first: what is left of a truncated stream is a suffix */
        size_t first = MEV - p.count;
        if (k % 2 == 1 || strict)
            cr_assert_eq(first, k % 2 == 0 ? 10 : 0, "%s has %zu", name, p.count);
        cr_assert_leq(first, 10, "%s has %zu", name, p.count);
        for (size_t e = 0; e < p.count; e++) {
            cr_assert_eq(p.events[e].version, (int64_t)(first + e));
            cr_assert_eq(p.events[e].position, pos_m[k][first + e]);
        }
        int64_t v = -2;
        cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
        cr_assert_eq(v, MEV - 1, "a truncated stream keeps its version");
        ag_event_page_free(&p);
    }
    size_t listed = 0;
    cr_assert_eq(ag_store_list_streams(s, count_s, &listed), 0);
    cr_assert_eq(listed, present, "listed %zu s- streams, %zu present", listed, present);
    if (strict) cr_assert_eq(present, NS - NS / 3);
}

static struct ag_log_scavenge_report scavenge(struct ag_store *s)
{
    struct ag_log_scavenge_report rep;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_log_scavenge(s, NULL, NULL, NULL, &rep, &err), 0, "%s", err.msg);
    return rep;
}

Test(scavenge_tables, streams_only_in_tables_keep_positions_and_deleted_stay_gone)
{
    build();
    struct ag_store *s = open_small();
    uint64_t streams0 = stat_of(s, 2);
    struct ag_log_scavenge_report rep = scavenge(s);
    cr_assert_geq(rep.rewritten, 1);
    cr_assert_eq(rep.streams_deleted, NS / 3, "deleted %llu",
                 (unsigned long long)rep.streams_deleted);
    cr_assert_eq(rep.events_dropped, NS / 3 + (NM / 2) * 10);
    cr_assert_eq(stat_of(s, 2), streams0 - NS / 3, "stats count streams with events");
    check(s, true);
    /* the tombstones go to a table (and the merger may fold tables): still gone */
    size_t pad = 100000;
    push_to_tables(s, &pad);
    push_to_tables(s, &pad);
    check(s, true);
    ag_store_close(s);
    s = open_small(); /* from the checkpoint */
    check(s, true);
    /* a deleted stream starts again at version 0 */
    cr_assert_gt(put(s, "s-3", AG_STORE_NO_STREAM), pos_s[NS - 1]);
    int64_t v;
    cr_assert_eq(ag_store_stream_version(s, "s-3", 3, &v), 0);
    cr_assert_eq(v, 0);
    ag_store_close(s);
    char ck[128];
    snprintf(ck, sizeof ck, "%s/index.ckpt", dir);
    cr_assert_eq(unlink(ck), 0);
    s = open_small(); /* rebuilt from the log, tables and all */
    cr_assert_eq(ag_store_stream_version(s, "s-3", 3, &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(ag_store_stream_version(s, "s-6", 3, &v), 0);
    cr_assert_eq(v, -1);
    ag_store_close(s);
}

static void put_type(struct ag_store *s, const char *stream, const char *type)
{
    struct ag_event_data ev = {.type = type, .type_len = strlen(type), .data = "{}", .data_len = 2};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append(s, stream, strlen(stream), AG_STORE_ANY, &ev, 1, NULL, &err), 0,
                 "append %s: %s", stream, err.msg);
}

static int count_prefix(void *ud, const char *name, size_t len, int64_t version)
{
    (void)version;
    size_t *c = ud; /* c[0]: idempotency-, c[1]: saga- */
    c[0] += len > 12 && memcmp(name, "idempotency-", 12) == 0;
    c[1] += len > 5 && memcmp(name, "saga-", 5) == 0;
    return 0;
}

/* The retention rules find expired streams whose records are only in tables. */
Test(scavenge_tables, retention_rules_reach_streams_in_tables)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1700000000000000000ull);
    struct ag_store_options o = {.no_sync = true, .index_memory = 1u << 20, .clock = &fc.clock};
    struct ag_store *s = NULL;
    struct ag_err err;
    cr_assert_eq(ag_store_log_open(dir, &o, &s, &err), 0, "%s", err.msg);
    char name[40];
    for (size_t i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "idempotency-%zu", i);
        put_type(s, name, "IdempotencyKeyClaimed");
    }
    for (size_t j = 0; j < 300; j++) { /* the even ones end */
        snprintf(name, sizeof name, "saga-%zu", j);
        put_type(s, name, "SagaStarted");
        if (j % 2 == 0) put_type(s, name, "SagaCompleted");
    }
    size_t pad = 0;
    push_to_tables(s, &pad);
    seal(s);
    fc.now_ns += 48ull * 3600 * 1000000000ull;
    struct ag_log_retention ret = {.idempotency_ns = 3600ull * 1000000000ull,
                                   .saga_ns = 3600ull * 1000000000ull};
    struct ag_log_scavenge_report rep;
    cr_assert_eq(ag_store_log_scavenge(s, &ret, NULL, NULL, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.streams_deleted, 3000 + 150, "deleted %llu",
                 (unsigned long long)rep.streams_deleted);
    for (int round = 0; round < 2; round++) {
        size_t c[2] = {0, 0};
        cr_assert_eq(ag_store_list_streams(s, count_prefix, c), 0);
        cr_assert_eq(c[0], 0, "round %d: %zu idempotency streams left", round, c[0]);
        cr_assert_eq(c[1], 150, "round %d: %zu sagas left", round, c[1]);
        int64_t v;
        cr_assert_eq(ag_store_stream_version(s, "saga-1", 6, &v), 0);
        cr_assert_eq(v, 0, "a saga that has not ended stays");
        cr_assert_eq(ag_store_stream_version(s, "saga-2", 6, &v), 0);
        cr_assert_eq(v, -1);
        ag_store_close(s);
        cr_assert_eq(ag_store_log_open(dir, &o, &s, &err), 0, "%s", err.msg);
    }
    ag_store_close(s);
}

/* Copy the store's files from one directory to another (which exists). */
static void copy_store(const char *from, const char *to)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -f %s/*.log %s/index* %s/*.scavenge && cp -a %s/. %s/", to, to,
             to, from, to);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* kill -9 at random moments of a scavenge over a log whose index is in tables
 * (each round from the same copy): every kept event is where it was after the
 * reopen, and a scavenge after the kill finishes the job. */
Test(scavenge_tables, kill9_during_scavenge_with_tables_loses_nothing_kept)
{
    build();
    char orig[80];
    snprintf(orig, sizeof orig, "%s-orig", dir);
    cr_assert_eq(mkdir(orig, 0700), 0);
    copy_store(dir, orig);
    volatile uint64_t *phase =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(phase != MAP_FAILED);
    srand((unsigned)getpid());
    uint64_t full_us = 0;
    int mid = 0;
    for (int round = 0; round < 4; round++) {
        *phase = 0;
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            struct ag_store_options o = {.index_memory = 1u << 20, .no_sync = true};
            struct ag_store *s = NULL;
            struct ag_err err;
            if (ag_store_log_open(dir, &o, &s, &err)) _exit(2);
            *phase = 1;
            if (ag_store_log_scavenge(s, NULL, NULL, NULL, NULL, &err)) _exit(3);
            *phase = 2;
            ag_store_close(s);
            _exit(0);
        }
        while (*phase == 0) usleep(1000);
        uint64_t t0 = now_us();
        if (round == 0) { /* the first runs to its end: how long a scavenge takes */
            while (*phase == 1) usleep(1000);
            full_us = now_us() - t0;
        } else {
            usleep((useconds_t)((uint64_t)rand() % (full_us + 1)));
            mid += *phase == 1;
            kill(pid, SIGKILL);
        }
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status) || WEXITSTATUS(status) == 0, "round %d: exit %d", round,
                  WEXITSTATUS(status));
        struct ag_store *s = open_small();
        check(s, round == 0);
        scavenge(s);      /* finishes what the killed one left */
        if (round == 3) { /* (checked strictly once: the same every round) */
            check(s, true);
            ag_store_close(s);
            s = open_small();
            check(s, true);
        }
        ag_store_close(s);
        copy_store(orig, dir);
    }
    munmap((void *)phase, 4096);
    nftw(orig, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    cr_assert_geq(mid, 1, "no kill landed during a scavenge (%llu us)",
                  (unsigned long long)full_us);
}
