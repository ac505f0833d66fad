/*
 * The log's on-disk stream index (src/store/log/sst.c, lsm.c) seen through the
 * store's API: with the smallest index memory (1 MiB) a few tens of thousands of
 * streams fill several tables; every stream must still be found with its version,
 * events and snapshot — in the memtable, in one table, or rewritten into a newer
 * one — after merges, after a reopen, after a crash mid-write, and after a table
 * file was damaged or deleted (rebuilt from the log, with a log line). Tables of
 * record format 1 (before the compact records) are still read, and merged into
 * format 2; names of every encoding (UUID, hex, raw, no '-') round-trip.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agora/store_log.h"
#include "store/log/internal.h" /* ag__ltb_write_version */

#define NSTREAMS 50000
#define NMULTI   20
#define LOG_TB_MERGE_AT_TEST                                                                       \
    4 /* LOG_TB_MERGE_AT: tables before a merge */ /* streams appended to all along, so their      \
                                                      records span tables */

static char dir[64];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/agora-index-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ag_log_set_level(AG_LOG_OFF);
}

static void teardown(void)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store_index, .init = setup, .fini = teardown, .timeout = 120);

static struct ag_store *open_small(void)
{
    struct ag_store_options o = {.no_sync = true, .index_memory = 1u << 20};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return s;
}

static void name_of(char out[32], const char *prefix, size_t i)
{
    snprintf(out, 32, "%s-%zu", prefix, i);
}

static int append1(struct ag_store *s, const char *stream, int64_t expected, uint8_t id_seed,
                   uint32_t id_n, struct ag_append_result *res)
{
    struct ag_event_data ev = {
        .type = "Touched", .type_len = 7, .data = "{\"n\":1}", .data_len = 7};
    memset(ev.id.b, 0, 16);
    ev.id.b[0] = id_seed;
    memcpy(ev.id.b + 1, &id_n, 4);
    memcpy(ev.id.b + 5, stream, strlen(stream) < 11 ? strlen(stream) : 11);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, stream, strlen(stream), expected, &ev, 1, res, &err);
    if (rc && rc != AG_ECONFLICT) fprintf(stderr, "append %s: %s\n", stream, err.msg);
    return rc;
}

/* NSTREAMS single-event streams; NMULTI streams get one more event every 1000. */
static void fill(struct ag_store *s)
{
    char name[32];
    for (size_t i = 0; i < NSTREAMS; i++) {
        name_of(name, "s", i);
        struct ag_append_result r;
        cr_assert_eq(append1(s, name, AG_STORE_NO_STREAM, 1, (uint32_t)i, &r), 0, "%s", name);
        if (i % 1000 == 0)
            for (size_t k = 0; k < NMULTI; k++) {
                name_of(name, "m", k);
                cr_assert_eq(append1(s, name, AG_STORE_ANY, 2, (uint32_t)(i * NMULTI + k), &r), 0);
            }
    }
}

static int count_cb(void *ud, const char *name, size_t len, int64_t version)
{
    (void)name, (void)len, (void)version;
    (*(size_t *)ud)++;
    return 0;
}

static size_t extra_streams; /* streams a test added beyond fill()'s */

static void check_all(struct ag_store *s)
{
    char name[32];
    for (size_t i = 0; i < NSTREAMS; i++) {
        name_of(name, "s", i);
        int64_t v = -2;
        cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
        cr_assert_eq(v, 0, "%s at %lld", name, (long long)v);
    }
    for (size_t k = 0; k < NMULTI; k++) {
        name_of(name, "m", k);
        struct ag_event_page p;
        struct ag_err err;
        cr_assert_eq(ag_store_read_stream(s, name, strlen(name), 0, AG_READ_FORWARD, 100, &p, &err),
                     0, "%s", err.msg);
        cr_assert_eq(p.count, NSTREAMS / 1000, "%s has %zu events", name, p.count);
        for (size_t e = 0; e < p.count; e++) cr_assert_eq(p.events[e].version, (int64_t)e);
        ag_event_page_free(&p);
    }
    int64_t v = 0;
    cr_assert_eq(ag_store_stream_version(s, "missing-1", 9, &v), 0);
    cr_assert_eq(v, -1);
    size_t n = 0;
    cr_assert_eq(ag_store_list_streams(s, count_cb, &n), 0);
    cr_assert_eq(n, NSTREAMS + NMULTI + extra_streams);
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    cr_assert_eq(st.streams, NSTREAMS + NMULTI + extra_streams);
}

Test(store_index, lookups_across_memtable_and_tables)
{
    struct ag_store *s = open_small();
    fill(s);
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    cr_assert_geq(st.index_tables, 1, "tables: %llu", (unsigned long long)st.index_tables);
    cr_assert_geq(st.index_entries, NSTREAMS / 2);
    cr_assert_lt(st.index_mem_streams, NSTREAMS);
    /* a frozen memtable still being written by the flusher counts too (up to about
     * twice the memtable's share, for as long as the flush takes): the cap holds
     * once it is in a table */
    for (int i = 0; i < 1000 && st.index_bytes >= 1u << 20; i++) {
        usleep(10000);
        ag_store_stats(s, &st);
    }
    cr_assert_lt(st.index_bytes, 1u << 20, "index memory %llu", (unsigned long long)st.index_bytes);
    cr_assert_geq(st.index_flushes, LOG_TB_MERGE_AT_TEST, "flushes: %llu",
                  (unsigned long long)st.index_flushes);
    for (int i = 0; i < 1000 && st.index_merges == 0; i++) { /* the merger runs in background */
        usleep(10000);
        ag_store_stats(s, &st);
    }
    cr_assert_geq(st.index_merges, 1, "the tables were merged");
    cr_assert_lt(st.index_tables, st.index_flushes);
    check_all(s);
    ag_store_close(s);
    s = open_small();
    check_all(s);
    ag_store_close(s);
}

Test(store_index, conflicts_and_dedup_for_streams_only_on_disk)
{
    struct ag_store *s = open_small();
    fill(s);
    struct ag_append_result r;
    struct ag_err err;
    struct ag_event_data ev = {.type = "Touched", .type_len = 7, .data = "{}", .data_len = 2};
    int rc = ag_store_append(s, "s-3", 3, AG_STORE_NO_STREAM, &ev, 1, &r, &err);
    cr_assert_eq(rc, AG_ECONFLICT, "s-3 is on disk at version 0: %d", rc);
    cr_assert_eq(err.aux, 0);
    cr_assert_eq(ag_store_append(s, "s-4", 3, 5, &ev, 1, &r, &err), AG_ECONFLICT);
    /* the same event again (same id, same content): answered from the log */
    cr_assert_eq(append1(s, "s-5", AG_STORE_ANY, 1, 5, &r), 0);
    cr_assert_eq(r.first_version, 0, "re-append deduplicated, got v%lld",
                 (long long)r.first_version);
    cr_assert_eq(append1(s, "s-6", 0, 9, 9, &r), 0);
    cr_assert_eq(r.first_version, 1);
    int64_t v;
    cr_assert_eq(ag_store_stream_version(s, "s-6", 3, &v), 0);
    cr_assert_eq(v, 1);
    ag_store_close(s);
    s = open_small();
    cr_assert_eq(ag_store_stream_version(s, "s-6", 3, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(ag_store_append(s, "s-6", 3, 0, &ev, 1, &r, &err), AG_ECONFLICT);
    ag_store_close(s);
}

Test(store_index, snapshots_survive_a_flush)
{
    struct ag_store *s = open_small();
    struct ag_append_result r;
    cr_assert_eq(append1(s, "snap-me", AG_STORE_NO_STREAM, 3, 1, &r), 0);
    struct ag_err err;
    cr_assert_eq(ag_store_save_snapshot(s, "snap-me", 7, 0, "{\"x\":1}", 7, &err), 0, "%s",
                 err.msg);
    fill(s);
    struct ag_snapshot sn;
    cr_assert_eq(ag_store_load_snapshot(s, "snap-me", 7, &sn, &err), 0, "%s", err.msg);
    cr_assert_eq(sn.version, 0);
    cr_assert_str_eq(sn.state, "{\"x\":1}");
    ag_snapshot_free(&sn);
    ag_store_close(s);
}

/* The table files in dir, by name (up to 64). */
static size_t tables(char names[64][400])
{
    DIR *d = opendir(dir);
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d)) && n < 64;)
        if (strstr(de->d_name, ".sst") && !strstr(de->d_name, ".tmp"))
            snprintf(names[n++], 400, "%s/%s", dir, de->d_name);
    if (d) closedir(d);
    return n;
}

static void flip(const char *path, long off_from_end)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat st;
    fstat(fd, &st);
    off_t off = off_from_end >= 0 ? st.st_size - off_from_end : -off_from_end;
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

Test(store_index, damaged_footer_or_missing_table_is_rebuilt_at_open)
{
    struct ag_store *s = open_small();
    fill(s);
    ag_store_close(s);
    char names[64][400];
    size_t n = tables(names);
    cr_assert_geq(n, 1);
    flip(names[0], 20); /* inside the footer's bloom filter or trailer */
    s = open_small();
    check_all(s);
    ag_store_close(s);
    n = tables(names);
    cr_assert_geq(n, 1);
    cr_assert_eq(unlink(names[n - 1]), 0);
    s = open_small();
    check_all(s);
    ag_store_close(s);
}

Test(store_index, damaged_block_fails_reads_then_is_rebuilt)
{
    struct ag_store *s = open_small();
    fill(s);
    ag_store_close(s);
    char names[64][400];
    size_t n = tables(names);
    cr_assert_geq(n, 1);
    for (size_t i = 0; i < n; i++) flip(names[i], -100); /* the first block of each */
    s = open_small();
    size_t bad = 0;
    char name[32];
    for (size_t i = 0; i < NSTREAMS; i++) {
        name_of(name, "s", i);
        int64_t v;
        int rc = ag_store_stream_version(s, name, strlen(name), &v);
        if (rc) {
            cr_assert_eq(rc, AG_EUNAVAILABLE);
            bad++;
        }
    }
    cr_assert_gt(bad, 0, "a damaged block is noticed");
    ag_store_close(s);
    s = open_small(); /* the checkpoint was dropped: rebuilt from the log */
    check_all(s);
    ag_store_close(s);
}

/* kill -9 at random moments while streams (and so tables, merges and checkpoints)
 * are written, round after round over the same directory: every acknowledged
 * stream is there after each reopen. */
Test(store_index, kill9_while_writing_tables_loses_nothing)
{
    volatile uint64_t *acked =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(acked != MAP_FAILED);
    *acked = 0;
    srand((unsigned)getpid());
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            struct ag_store_options o = {.index_memory = 1u << 20, .no_sync = true};
            struct ag_store *s = NULL;
            struct ag_err err;
            if (ag_store_log_open(dir, &o, &s, &err)) _exit(2);
            for (uint64_t i = *acked;; i++) {
                char name[32];
                struct ag_append_result r;
                name_of(name, "k", (size_t)i);
                if (append1(s, name, AG_STORE_NO_STREAM, 4, (uint32_t)i, &r)) _exit(3);
                *acked = i + 1;
            }
        }
        usleep(300000 + (useconds_t)(rand() % 700) * 1000);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "round %d: the writer stopped by itself (%d)", round,
                  WEXITSTATUS(status));
        struct ag_store *s = open_small();
        uint64_t n = *acked;
        for (uint64_t i = 0; i < n; i++) {
            char name[32];
            name_of(name, "k", (size_t)i);
            int64_t v = -2;
            cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0);
            cr_assert_eq(v, 0, "round %d: %s acknowledged, found at %lld", round, name,
                         (long long)v);
        }
        struct ag_store_stats st;
        ag_store_stats(s, &st);
        cr_assert_geq(st.streams, n);
        if (round == 5) cr_assert_geq(st.index_tables, 1, "the rounds wrote tables");
        ag_store_close(s);
    }
    munmap((void *)acked, 4096);
}

/* The record format of table file `path` (the u32 after the magic). */
static uint32_t table_version(const char *path)
{
    uint8_t h[12];
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
    return (uint32_t)h[8] | (uint32_t)h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
}

/* Names of every encoding a table has: UUID, even hex, odd hex, uppercase, no
 * '-', empty rest, a second '-', the longest. */
static const char *const odd_names[] = {
    "order-0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b",
    "idempotency-9f86d081884c7d659a2feaa0c55ad015",
    "idempotency-abc",
    "order-0190A2B3-C4D5-7E6F-8A9B-0C1D2E3F4A5B",
    "nodash",
    "empty-",
    "two-parts-0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b",
    "-0190a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b",
};

static void check_odd(struct ag_store *s)
{
    for (size_t i = 0; i < sizeof odd_names / sizeof odd_names[0]; i++) {
        struct ag_event_page p;
        struct ag_err err;
        const char *n = odd_names[i];
        cr_assert_eq(ag_store_read_stream(s, n, strlen(n), 0, AG_READ_FORWARD, 10, &p, &err), 0,
                     "%s", err.msg);
        cr_assert_eq(p.count, 2, "%s has %zu events", n, p.count);
        cr_assert_eq(p.events[1].version, 1);
        ag_event_page_free(&p);
    }
}

Test(store_index, format1_tables_are_read_and_merged_into_format2)
{
    ag__ltb_write_version = 1;
    struct ag_store *s = open_small();
    struct ag_append_result r;
    for (size_t i = 0; i < sizeof odd_names / sizeof odd_names[0]; i++)
        for (uint32_t k = 0; k < 2; k++)
            cr_assert_eq(append1(s, odd_names[i], AG_STORE_ANY, 3, (uint32_t)i * 2 + k, &r), 0);
    fill(s);
    extra_streams = sizeof odd_names / sizeof odd_names[0];
    ag_store_close(s);
    char names[64][400];
    size_t n = tables(names);
    cr_assert_gt(n, 0, "no table written");
    for (size_t i = 0; i < n; i++) cr_assert_eq(table_version(names[i]), 1, "%s", names[i]);

    ag__ltb_write_version = 2;
    s = open_small();
    check_all(s);
    check_odd(s);
    char name[32];
    for (size_t i = 0; i < NSTREAMS; i++) { /* enough for new tables and a merge */
        name_of(name, "t", i);
        cr_assert_eq(append1(s, name, AG_STORE_NO_STREAM, 4, (uint32_t)i, &r), 0, "%s", name);
    }
    ag_store_close(s);
    extra_streams += NSTREAMS;
    s = open_small();
    check_all(s);
    check_odd(s);
    size_t v2 = 0;
    n = tables(names);
    for (size_t i = 0; i < n; i++) v2 += table_version(names[i]) == 2;
    cr_assert_gt(v2, 0, "no table of format 2 after more appends");
    ag_store_close(s);
}
