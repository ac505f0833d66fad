/*
 * Segment preallocation (src/store/log/prealloc.c) as recovery sees it: a store
 * written with syncing on has zeros after its last record (the filler runs ahead
 * of the writer). A crash there must reopen cleanly at the right head with the
 * zeros kept; zeros at the end of an earlier segment (left by a roll) are a clean
 * end too, for the recovery scan and for a read-only follower. The torn-record
 * and junk cases next to zeros are in test_recovery.c (tail suite).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SEG_BYTES ((4u << 20) + 64) /* the smallest segment: the filler runs 2 MiB ahead */
#define SEG1      "seg-00000000000000000001.log"

static char dir[64];
static char seg0[128], seg1[128];
static struct model *m; /* shared with the crashing child */

static void setup(void)
{
    scratch_dir(dir);
    path_in(seg0, sizeof seg0, dir, SEG0);
    path_in(seg1, sizeof seg1, dir, SEG1);
    m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert(m != MAP_FAILED);
    memset(m, 0, sizeof *m);
    ag_log_set_level(AG_LOG_ERROR);
}

static void teardown(void)
{
    log_capture_stop();
    rm_tree(dir);
    munmap(m, sizeof *m);
}

static struct ag_store *open_synced(void)
{
    struct ag_store_options o = {.segment_bytes = SEG_BYTES};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait (up to 20 s) until `path` is at least `want` bytes: the filler's progress. */
static bool wait_size(const char *path, uint64_t want)
{
    for (double until = now_s() + 20; now_s() < until;) {
        if (file_size_of(path) >= want) return true;
        usleep(2000);
    }
    return false;
}

/* Bytes of records in the store (its segments' ends). */
static uint64_t record_bytes(struct ag_store *s)
{
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    return st.bytes;
}

Test(prealloc, crash_after_preallocation_reopens_at_the_right_head, .init = setup, .fini = teardown)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct ag_store *s = open_synced();
        for (size_t i = 0; i < 40; i++) append_batch(s, m, i % 2 ? "b" : "a", 1 + i % 3, 200);
        /* the filler has zero-filled well past the records */
        bool filled = wait_size(seg0, record_bytes(s) + (1u << 20));
        _exit(filled ? 0 : 4); /* no close: a crash, no checkpoint */
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the writer failed (%d)", st);
    uint64_t size = file_size_of(seg0);
    static struct seg_rec recs[MODEL_MAX];
    size_t nr = walk_segment(seg0, recs, MODEL_MAX);
    cr_assert_eq(nr, m->n);
    uint64_t end = recs[nr - 1].off + recs[nr - 1].size;
    cr_assert_gt(size, end + (1u << 20), "zeros follow the records");

    log_capture_start();
    struct ag_store *s = open_ok(dir, SEG_BYTES);
    cr_assert_not(log_capture_has("torn"), "zeros after the last record are a clean end");
    log_capture_stop();
    assert_store_is(s, m, m->n);
    cr_assert_eq(file_size_of(seg0), size, "the preallocated zeros are kept");
    cr_assert_eq(record_bytes(s), end, "the store's end is its last record's");
    assert_appends_after(s, m); /* written over the zeros */
    ag_store_close(s);
    cr_assert_eq(file_size_of(seg0), size, "the append went into the preallocated bytes");

    struct ag_log_verify_report rep;
    struct ag_err err;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0, "verify: %s", err.msg);
    cr_assert(rep.ok, "verify: %s", rep.problem);
    cr_assert_eq(rep.events, m->n);

    s = open_ok(dir, SEG_BYTES);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(prealloc, zeros_left_in_a_rolled_segment_are_a_clean_end, .init = setup, .fini = teardown)
{
    struct ag_store *w = open_synced();
    append_batch(w, m, "a", 1, 8);
    struct ag_store_options ro = {.read_only = true};
    struct ag_store *r = NULL;
    struct ag_err err;
    cr_assert_eq(ag_store_log_open(dir, &ro, &r, &err), 0, "read-only open: %s", err.msg);
    /* ~6 MB of events: the writer rolls into seg 1 */
    for (size_t i = 0; access(seg1, F_OK) != 0 || i < 420; i++) {
        cr_assert_lt(i, 1000, "no roll");
        append_batch(w, m, i % 2 ? "b" : "a", 4, 3000);
    }
    cr_assert(wait_size(seg1, record_bytes(w) - file_size_of(seg0) + (1u << 20)),
              "the new segment is preallocated");
    /* seg 0 ended with zeros the filler wrote (it fills up to the segment's size) */
    static struct seg_rec recs[MODEL_MAX];
    size_t nr = walk_segment(seg0, recs, MODEL_MAX);
    uint64_t end0 = recs[nr - 1].off + recs[nr - 1].size;
    cr_assert_gt(file_size_of(seg0), end0, "seg 0 keeps zeros after its records");

    /* a read-only follower crosses from seg 0 (zeros at its end) into seg 1 */
    assert_store_is(r, m, m->n);
    ag_store_close(r);
    ag_store_close(w);

    log_capture_start();
    struct ag_store *s = open_ok(dir, SEG_BYTES);
    cr_assert_not(log_capture_has("torn"));
    log_capture_stop();
    assert_store_is(s, m, m->n);
    assert_appends_after(s, m);
    ag_store_close(s);
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0, "verify: %s", err.msg);
    cr_assert(rep.ok, "verify: %s", rep.problem);
    cr_assert_eq(rep.events, m->n);
}
