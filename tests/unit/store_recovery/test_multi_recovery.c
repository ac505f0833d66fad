/*
 * Recovery of multi-stream batches (ag_store_append_multi): a batch header record
 * announces how many events in how many streams follow, and recovery applies the
 * batch only once its last event is read. A crash anywhere inside a multi-stream
 * batch at the end of the log must cut the whole batch — every part of every
 * stream — and damage inside one followed by intact records must refuse to open
 * like any mid-log damage (verify --repair cuts before the batch).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define MAX_RECS 256

static char dir[64];
static char seg0[128];
static struct model *m;

static void setup(void)
{
    scratch_dir(dir);
    path_in(seg0, sizeof seg0, dir, SEG0);
    m = calloc(1, sizeof *m);
    ag_log_set_level(AG_LOG_ERROR);
}

static void teardown(void)
{
    log_capture_stop();
    rm_tree(dir);
    free(m);
}

TestSuite(multi_tail, .init = setup, .fini = teardown);

/* In a child that exits without closing (a crash: no checkpoint): one unit of
 * three parts — "a" 2 events, "b" 1, "c" 3 — and, with `after`, one more single
 * append to "a" behind it. */
static void crash_multi(bool after)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct ag_store *s = open_ok(dir, 0);
        static char data[6][200];
        struct ag_event_data ev[6];
        for (int i = 0; i < 6; i++) {
            int len = snprintf(data[i], sizeof data[i], "{\"i\":%d,\"pad\":\"%0120d\"}", i, 0);
            ev[i] = (struct ag_event_data){
                .type = "Multi", .type_len = 5, .data = data[i], .data_len = (size_t)len};
        }
        struct ag_append_part p[3] = {{"a", 1, AG_STORE_ANY, ev, 2},
                                      {"b", 1, AG_STORE_ANY, ev + 2, 1},
                                      {"c", 1, AG_STORE_NO_STREAM, ev + 3, 3}};
        if (ag_store_append_multi(s, p, 3, NULL, NULL)) _exit(4);
        if (after && ag_store_append(s, "a", 1, AG_STORE_ANY, ev, 1, NULL, NULL)) _exit(5);
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the crashing writer failed (%d)", st);
}

/* Records of the segment; *hdr is the index of the batch header. */
static size_t records(struct seg_rec *recs, size_t *hdr)
{
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    *hdr = SIZE_MAX;
    for (size_t i = 0; i < nr; i++)
        if (recs[i].kind == 3) *hdr = i;
    cr_assert_neq(*hdr, SIZE_MAX, "the log holds a batch header record");
    cr_assert_eq(recs[*hdr].batch_left, 6, "the header counts the unit's events");
    return nr;
}

static int64_t model_last(const char *stream)
{
    int64_t v = -1;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->ev[i].stream, stream) == 0) v = m->ev[i].version;
    return v;
}

/* Put the crashed log back as it was (and drop the checkpoint the last close wrote). */
static void restore(const uint8_t *orig, size_t len)
{
    char ckpt[128];
    path_in(ckpt, sizeof ckpt, dir, "index.ckpt");
    unlink(ckpt);
    spit(seg0, orig, len);
}

static void assert_cut_whole(uint64_t cut_at, bool warned)
{
    log_capture_start();
    struct ag_store *s = open_ok(dir, 0);
    if (warned) cr_assert(log_capture_has("store.torn_tail_truncated"), "recovery logs it");
    log_capture_stop();
    assert_store_is(s, m, m->n);
    int64_t v;
    ag_store_stream_version(s, "b", 1, &v);
    cr_assert_eq(v, model_last("b"), "no part of the unit survives in 'b'");
    ag_store_stream_version(s, "c", 1, &v);
    cr_assert_eq(v, -1, "no part of the unit survives in 'c'");
    cr_assert_eq(file_size_of(seg0), cut_at, "cut at the batch header (size %llu, want %llu)",
                 (unsigned long long)file_size_of(seg0), (unsigned long long)cut_at);
    assert_appends_after(s, m);
    ag_store_close(s);
    m->n--; /* the next case starts from the same model */
}

Test(multi_tail, a_cut_anywhere_inside_the_unit_cuts_it_whole)
{
    static const size_t first[] = {1, 2, 1, 1};
    clean_append(dir, m, first, AG_ARRAY_SIZE(first), 80, 0);
    crash_multi(false);
    static struct seg_rec recs[MAX_RECS];
    size_t hdr, nr = records(recs, &hdr);
    cr_assert_eq(nr, hdr + 7, "the unit ends the log");
    size_t len;
    uint8_t *orig = slurp(seg0, &len);
    /* every record of the unit: cut right after its start, in its middle, and at
     * its start (for the events: a clean record edge inside the unit) */
    size_t cases = 0;
    for (size_t i = hdr; i < nr; i++) {
        uint64_t cuts[3] = {recs[i].off + 1, recs[i].off + recs[i].size / 2, recs[i].off};
        for (size_t k = 0; k < 3; k++) {
            if (i == hdr && k == 2) continue; /* before the unit: nothing torn */
            restore(orig, len);
            truncate_to(seg0, cuts[k]);
            assert_cut_whole(recs[hdr].off, true);
            cases++;
        }
    }
    /* the last byte missing; and the last event damaged in place */
    restore(orig, len);
    truncate_to(seg0, len - 1);
    assert_cut_whole(recs[hdr].off, true);
    restore(orig, len);
    flip_byte(seg0, recs[nr - 1].off + 80);
    assert_cut_whole(recs[hdr].off, true);
    cr_assert_eq(cases, 3 * 7 - 1);
    /* intact, the unit is all there */
    restore(orig, len);
    struct ag_store *s = open_ok(dir, 0);
    int64_t v;
    ag_store_stream_version(s, "c", 1, &v);
    cr_assert_eq(v, 2);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(st.events, m->n + 6);
    ag_store_close(s);
    free(orig);
}

Test(multi_tail, damage_inside_a_unit_before_intact_records_refuses_then_repair_cuts_it)
{
    static const size_t first[] = {1, 1, 2};
    clean_append(dir, m, first, AG_ARRAY_SIZE(first), 80, 0);
    crash_multi(true);
    static struct seg_rec recs[MAX_RECS];
    size_t hdr, nr = records(recs, &hdr);
    cr_assert_eq(nr, hdr + 8);
    flip_byte(seg0, recs[hdr + 3].off + 90); /* the part of "b" */
    struct ag_store *s = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(dir, &o, &s, &err), AG_ECORRUPT);
    cr_assert(strstr(err.msg, "intact records follow"), "%s", err.msg);
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, true, &rep, &err), 0, "%s", err.msg);
    cr_assert(!rep.ok && rep.repaired, "%s", rep.problem);
    cr_assert_eq(file_size_of(seg0), recs[hdr].off, "repair cuts before the unit");
    s = open_ok(dir, 0);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(multi_tail, verify_checks_a_whole_unit)
{
    static const size_t first[] = {1, 1};
    clean_append(dir, m, first, AG_ARRAY_SIZE(first), 80, 0);
    crash_multi(false);
    static struct seg_rec recs[MAX_RECS];
    size_t hdr, nr = records(recs, &hdr);
    /* verify (a full scan) accepts the log as written */
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, NULL), 0);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_eq(rep.events, m->n + 6);
    cr_assert_eq(rep.records, nr);
}
