/* Retention and scavenging on the embedded log (src/store/log/scavenge.c):
 * tombstones truncate and delete streams, the retention rules delete expired
 * idempotency records and ended sagas (by the store's injected clock: no sleeps),
 * a scavenge rewrites sealed segments only, kept events stay readable at the same
 * $all positions and versions (before and after a reopen, with and without the
 * index checkpoint), deleted ones are gone, bytes are reclaimed, and appends go
 * on while it runs. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/store_log.h"

static char dir[64];
static struct ag_store *s;
static struct ag_fake_clock fc;

static struct ag_store *reopen(void)
{
    struct ag_store *st = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_store_options o = {.no_sync = true, .segment_bytes = 16384, .clock = &fc.clock};
    int rc = ag_store_log_open(dir, &o, &st, &err);
    cr_assert_eq(rc, 0, "open %s: %s", dir, ag_err_msg(&err, rc));
    return st;
}

static void setup(void)
{
    ag_fake_clock_init(&fc, 1700000000000000000ull);
    strcpy(dir, "/tmp/agora-scav-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    s = reopen();
}

static void teardown(void)
{
    ag_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(scavenge, .init = setup, .fini = teardown);

static void put(const char *stream, int n, const char *type)
{
    char data[200];
    for (int i = 0; i < n; i++) {
        snprintf(data, sizeof data, "{\"i\":%d,\"pad\":\"%080d\"}", i, i);
        struct ag_event_data e = {
            .type = type, .type_len = strlen(type), .data = data, .data_len = strlen(data)};
        struct ag_err err;
        cr_assert_eq(ag_store_append(s, stream, strlen(stream), AG_STORE_ANY, &e, 1, NULL, &err), 0,
                     "%s", err.msg);
    }
}

/* fill until the log has rolled to a fresh segment: everything so far is sealed */
static void seal(void)
{
    struct ag_store_stats st0, st;
    ag_store_stats(s, &st0);
    static char big[4096];
    snprintf(big, sizeof big, "{\"pad\":\"%04000d\"}", 0);
    struct ag_event_data e = {.type = "Fill", .type_len = 4, .data = big, .data_len = strlen(big)};
    do {
        cr_assert_eq(ag_store_append(s, "filler", 6, AG_STORE_ANY, &e, 1, NULL, NULL), 0);
        ag_store_stats(s, &st);
    } while (st.segments == st0.segments);
}

static uint64_t dir_bytes(void)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "du -sb --apparent-size %s | cut -f1", dir);
    FILE *f = popen(cmd, "r");
    unsigned long long n = 0;
    cr_assert_eq(fscanf(f, "%llu", &n), 1);
    pclose(f);
    return n;
}

/* positions of stream's events, -1 where missing, into pos[0..n) */
static size_t stream_positions(const char *stream, int64_t *ver, uint64_t *pos, size_t max)
{
    struct ag_event_page pg;
    int rc = ag_store_read_stream(s, stream, strlen(stream), 0, AG_READ_FORWARD, max, &pg, NULL);
    if (rc == AG_ENOTFOUND) return 0;
    cr_assert_eq(rc, 0);
    for (size_t i = 0; i < pg.count; i++)
        ver[i] = pg.events[i].version, pos[i] = pg.events[i].position;
    size_t n = pg.count;
    ag_event_page_free(&pg);
    return n;
}

/* every event of $all, forward in pages of 7 (crossing gaps) */
static size_t all_positions(uint64_t *pos, size_t max)
{
    size_t n = 0;
    uint64_t from = 0;
    for (;;) {
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(s, from, AG_READ_FORWARD, 7, &pg, NULL), 0);
        for (size_t i = 0; i < pg.count && n < max; i++) {
            if (n) cr_assert_gt(pg.events[i].position, pos[n - 1], "in order");
            pos[n++] = pg.events[i].position;
        }
        bool end = pg.end;
        from = pg.next_position;
        ag_event_page_free(&pg);
        if (end) break;
    }
    return n;
}

static struct ag_log_scavenge_report scavenge(const struct ag_log_retention *ret)
{
    struct ag_log_scavenge_report rep;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_log_scavenge(s, ret, NULL, NULL, &rep, &err);
    cr_assert_eq(rc, 0, "scavenge: %s", ag_err_msg(&err, rc));
    return rep;
}

Test(scavenge, tombstones_truncate_and_delete_and_kept_events_keep_their_positions)
{
    put("keep", 5, "K");
    put("trunc", 10, "T");
    put("gone", 6, "G");
    put("keep", 5, "K");
    /* a multi-stream unit: part of it is deleted, part kept */
    struct ag_event_data e[3] = {{.type = "M", .type_len = 1, .data = "{}", .data_len = 2},
                                 {.type = "M", .type_len = 1, .data = "{}", .data_len = 2},
                                 {.type = "M", .type_len = 1, .data = "{}", .data_len = 2}};
    struct ag_append_part parts[2] = {{"gone", 4, AG_STORE_ANY, e, 2},
                                      {"keep", 4, AG_STORE_ANY, e + 2, 1}};
    cr_assert_eq(ag_store_append_multi(s, parts, 2, NULL, NULL), 0);
    cr_assert_eq(ag_store_save_snapshot(s, "gone", 4, 7, "{}", 2, NULL), 0);
    cr_assert_eq(ag_store_log_truncate(s, "trunc", 5, 4, NULL), 0);
    cr_assert_eq(ag_store_log_truncate(s, "gone", 4, -1, NULL), 0);
    seal();
    put("trunc", 2, "T"); /* versions 10, 11 in the head segment */

    int64_t kv0[64], kv1[64];
    uint64_t kp0[64], kp1[64];
    static uint64_t all0[8192], all1[8192];
    size_t nk0 = stream_positions("keep", kv0, kp0, 64);
    cr_assert_eq(nk0, 11);
    uint64_t tp0[64];
    int64_t tv0[64];
    cr_assert_eq(stream_positions("trunc", tv0, tp0, 64), 12);
    size_t na0 = all_positions(all0, 8192);
    uint64_t bytes0 = dir_bytes();

    struct ag_log_scavenge_report rep = scavenge(NULL);
    cr_assert_geq(rep.rewritten, 1);
    cr_assert_eq(rep.events_dropped, 4 + 8, "4 of trunc, 6 + 2 of gone");
    cr_assert_eq(rep.streams_deleted, 1);
    cr_assert_lt(rep.bytes_after, rep.bytes_before);
    cr_assert_lt(dir_bytes(), bytes0, "bytes reclaimed on disk");

    for (int round = 0; round < 3; round++) {
        /* 0: the live store; 1: reopened without a checkpoint; 2: with one */
        size_t nk1 = stream_positions("keep", kv1, kp1, 64);
        cr_assert_eq(nk1, nk0);
        for (size_t i = 0; i < nk0; i++) cr_assert(kv1[i] == kv0[i] && kp1[i] == kp0[i]);
        int64_t tv[64];
        uint64_t tp[64];
        size_t nt = stream_positions("trunc", tv, tp, 64);
        cr_assert_eq(nt, 8, "versions 4..11");
        for (size_t i = 0; i < nt; i++) cr_assert(tv[i] == (int64_t)i + 4 && tp[i] == tp0[i + 4]);
        int64_t v;
        ag_store_stream_version(s, "trunc", 5, &v);
        cr_assert_eq(v, 11, "a truncated stream keeps its version");
        cr_assert_eq(stream_positions("gone", tv, tp, 64), 0, "deleted");
        ag_store_stream_version(s, "gone", 4, &v);
        cr_assert_eq(v, -1);
        struct ag_snapshot snap;
        cr_assert_eq(ag_store_load_snapshot(s, "gone", 4, &snap, NULL), AG_ENOTFOUND);
        size_t na1 = all_positions(all1, 8192);
        cr_assert_eq(na1, na0 - 12, "round %d: %zu events, were %zu", round, na1, na0);
        for (size_t i = 0, j = 0; i < na1; i++, j++) {
            while (all0[j] != all1[i]) j++; /* same positions, the deleted ones left out */
            cr_assert_lt(j, na0);
        }
        /* a page read backward crosses gaps and stays in order */
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(s, UINT64_MAX, AG_READ_BACKWARD, 5, &pg, NULL), 0);
        cr_assert_eq(pg.events[0].position, all1[na1 - 1]);
        ag_event_page_free(&pg);
        ag_store_close(s);
        if (round == 0) {
            char ck[128];
            snprintf(ck, sizeof ck, "%s/index.ckpt", dir);
            unlink(ck); /* close saved one: the first reopen scans every segment */
        }
        s = reopen();
    }
    /* the deleted stream starts again at version 0 */
    cr_assert_eq(ag_store_append(s, "gone", 4, AG_STORE_NO_STREAM, e, 1, NULL, NULL), 0);
    /* a second scavenge finds nothing more to do */
    struct ag_log_scavenge_report again = scavenge(NULL);
    cr_assert_eq(again.events_dropped, 0);
}

Test(scavenge, retention_rules_delete_expired_idempotency_records_and_ended_sagas)
{
    put("idempotency-aaa", 2, "IdempotencyKeyClaimed");
    put("saga-done", 3, "SagaStarted");
    put("saga-done", 1, "SagaCompleted");
    put("saga-running", 3, "SagaStarted");
    fc.now_ns += 3600ull * 1000000000ull; /* 1 h later */
    put("idempotency-bbb", 2, "IdempotencyKeyClaimed");
    seal();
    struct ag_log_retention ret = {.idempotency_ns = 24ull * 3600 * 1000000000ull,
                                   .saga_ns = 7ull * 24 * 3600 * 1000000000ull};
    cr_assert_eq(scavenge(&ret).events_dropped, 0, "nothing has expired yet");
    fc.now_ns += 23ull * 3600 * 1000000000ull; /* aaa is 24 h old, bbb 23 h */
    struct ag_log_scavenge_report rep = scavenge(&ret);
    cr_assert_eq(rep.events_dropped, 2);
    int64_t v;
    ag_store_stream_version(s, "idempotency-aaa", 15, &v);
    cr_assert_eq(v, -1, "expired");
    ag_store_stream_version(s, "idempotency-bbb", 15, &v);
    cr_assert_eq(v, 1, "not yet");
    fc.now_ns += 7ull * 24 * 3600 * 1000000000ull;
    rep = scavenge(&ret);
    cr_assert_eq(rep.events_dropped, 2 + 4, "bbb and the ended saga");
    ag_store_stream_version(s, "saga-done", 9, &v);
    cr_assert_eq(v, -1);
    ag_store_stream_version(s, "saga-running", 12, &v);
    cr_assert_eq(v, 2, "a saga that has not ended stays");
}

static void *writer(void *arg)
{
    int *stop = arg;
    int n = 0;
    while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE) || n < 200) {
        char name[32];
        snprintf(name, sizeof name, "live-%d", n % 7);
        put(name, 1, "L");
        n++;
    }
    return (void *)(intptr_t)n;
}

Test(scavenge, runs_while_appends_go_on)
{
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof name, "old-%d", i);
        put(name, 3, "O");
        if (i % 2) cr_assert_eq(ag_store_log_truncate(s, name, strlen(name), -1, NULL), 0);
    }
    seal();
    int stop = 0;
    pthread_t t;
    pthread_create(&t, NULL, writer, &stop);
    struct ag_log_scavenge_report rep = scavenge(NULL);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    void *ret;
    pthread_join(t, &ret);
    int n = (int)(intptr_t)ret;
    cr_assert_eq(rep.events_dropped, 60);
    int64_t total = 0;
    for (int k = 0; k < 7; k++) {
        char name[32];
        snprintf(name, sizeof name, "live-%d", k);
        int64_t v;
        ag_store_stream_version(s, name, strlen(name), &v);
        total += v + 1;
    }
    cr_assert_eq(total, n, "every append made while scavenging is there");
    static uint64_t all[8192];
    size_t na = all_positions(all, 8192);
    ag_store_close(s);
    s = reopen();
    static uint64_t all2[8192];
    cr_assert_eq(all_positions(all2, 8192), na);
    cr_assert_eq(memcmp(all, all2, na * sizeof *all), 0);
}

/* Many streams leave the index at once (backward-shift deletion in the open-
 * addressing table): every other one must still be found, before and after a
 * reopen. */
Test(scavenge, deleting_many_streams_keeps_the_others_findable)
{
    for (int i = 0; i < 1500; i++) {
        char name[32];
        snprintf(name, sizeof name, "s-%d", i);
        put(name, 1 + i % 3, "S");
        if (i % 3 == 0) cr_assert_eq(ag_store_log_truncate(s, name, strlen(name), -1, NULL), 0);
    }
    seal();
    struct ag_log_scavenge_report rep = scavenge(NULL);
    cr_assert_eq(rep.streams_deleted, 500);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 1500; i++) {
            char name[32];
            snprintf(name, sizeof name, "s-%d", i);
            int64_t v;
            ag_store_stream_version(s, name, strlen(name), &v);
            cr_assert_eq(v, i % 3 == 0 ? -1 : i % 3, "%s", name);
        }
        struct ag_store_stats st;
        ag_store_stats(s, &st);
        cr_assert_eq(st.streams, 1000 + 2, "the others, filler and $retention");
        ag_store_close(s);
        s = reopen();
    }
}

/* A released claim (a stream with the released prefix whose last event has the
 * released type) is deleted at any age, its name with it; a claim taken again
 * stays, and so does a stream of another prefix. */
Test(scavenge, released_claims_leave_the_log)
{
    put("claim-aaaa1111", 1, "Claimed");
    put("claim-aaaa1111", 1, "Released");
    put("claim-bbbb2222", 1, "Claimed");
    put("claim-cccc3333", 1, "Claimed");
    put("claim-cccc3333", 1, "Released");
    put("claim-cccc3333", 1, "Claimed");
    put("other-dddd4444", 1, "Released");
    seal();
    struct ag_log_retention ret = {.released_prefix = "claim-", .released_type = "Released"};
    struct ag_log_scavenge_report rep = scavenge(&ret);
    cr_assert_eq(rep.events_dropped, 2, "only claim-aaaa1111's two events");
    int64_t v;
    ag_store_stream_version(s, "claim-aaaa1111", 14, &v);
    cr_assert_eq(v, -1, "released: gone");
    ag_store_stream_version(s, "claim-bbbb2222", 14, &v);
    cr_assert_eq(v, 0);
    ag_store_stream_version(s, "claim-cccc3333", 14, &v);
    cr_assert_eq(v, 2, "claimed again: stays");
    ag_store_stream_version(s, "other-dddd4444", 14, &v);
    cr_assert_eq(v, 0);
    ag_store_close(s);
    s = reopen(); /* the index checkpoint written after the swap */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "grep -rlaF aaaa1111 %s >/dev/null", dir);
    cr_assert_neq(system(cmd), 0, "the released claim's name is in no file of the log");
    ag_store_stream_version(s, "claim-aaaa1111", 14, &v);
    cr_assert_eq(v, -1);
    struct ag_event_data e = {.type = "Claimed", .type_len = 7, .data = "{}", .data_len = 2};
    cr_assert_eq(ag_store_append(s, "claim-aaaa1111", 14, AG_STORE_NO_STREAM, &e, 1, NULL, NULL), 0,
                 "claimed anew from nothing");
}
