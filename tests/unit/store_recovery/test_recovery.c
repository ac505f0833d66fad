/*
 * Recovery of the embedded log (the RECOVERY RULE at the top of src/store/log/log.c),
 * as data: each case writes a log, damages it the way a crash or a bad disk would,
 * and says what must come back.
 *
 * Tail cases: a "crashed" writer (a child that exits without closing, so no
 * checkpoint is written at close; an earlier clean close left one covering the
 * first part of the log) is followed by damage to the end of the last segment.
 * The store must open with exactly the whole batches before the damage, cut the
 * file there, log a warning and take new appends at the next version/position.
 * Zeros after the last record are not damage: they are a preallocated segment's
 * rest (src/store/log/prealloc.c), a clean end that is kept and written over.
 *
 * Middle cases: damage with intact records after it must refuse to open, naming
 * the file and offset; verify finds it; verify --repair cuts there, keeping the
 * cut bytes beside the segment.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define MAX_RECS 8192

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

/* ---- tail damage ---- */

enum tail_damage {
    TRUNC_MID,       /* cut the last record in half */
    TRUNC_IN_HEADER, /* cut inside the last record's fixed header */
    FLIP_BYTES,      /* flip bytes in the last record's payload */
    FLIP_SIZE,       /* flip a byte of the last record's size field */
    ZERO_PAGE,       /* zero the last 4 KiB page of the file */
    GARBAGE_AFTER,   /* random bytes after the last record */
    ZEROS_AFTER,     /* a zero-filled page after the last record (preallocation): clean */
    TORN_THEN_ZEROS, /* the last record cut in half, zeros after it */
    ZEROS_THEN_JUNK, /* zeros after the last record, then random bytes */
    BATCH_CUT_3RD,   /* a 3-event batch last, cut inside its 3rd record */
    BATCH_CUT_EDGE,  /* a 3-event batch last, cut exactly after its 2nd record */
};

static const size_t first_part[] = {1, 1, 2, 1, 1, 3, 1, 1, 1, 2};
static const size_t tail_part[] = {1, 2, 1, 1, 3, 1, 1, 1, 2, 1, 1, 1, 4, 1, 1, 1, 1, 2, 1, 1,
                                   1, 1, 3, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 5, 1, 1, 1};

/* Damage the last segment; returns the offset of the first damaged byte. */
static uint64_t damage_tail(enum tail_damage d, const struct seg_rec *last)
{
    uint64_t size = file_size_of(seg0);
    cr_assert_eq(last->off + last->size, size, "the log ends with its last record");
    switch (d) {
    case TRUNC_MID:
    case BATCH_CUT_3RD: {
        uint64_t cut = last->off + last->size / 2;
        truncate_to(seg0, cut);
        return cut;
    }
    case TRUNC_IN_HEADER:
        truncate_to(seg0, last->off + 5);
        return last->off + 5;
    case FLIP_BYTES:
        flip_byte(seg0, last->off + last->size - 20);
        flip_byte(seg0, last->off + 70);
        return last->off + 70;
    case FLIP_SIZE:
        flip_byte(seg0, last->off + 1);
        return last->off + 1;
    case ZERO_PAGE: {
        uint64_t page = (size - 1) / 4096 * 4096;
        uint8_t *z = calloc(1, size - page);
        poke(seg0, page, z, size - page);
        free(z);
        return page;
    }
    case GARBAGE_AFTER:
    case ZEROS_THEN_JUNK: {
        uint8_t junk[1000];
        uint64_t x = 0x2545F4914F6CDD1Dull;
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 56);
        poke(seg0, d == ZEROS_THEN_JUNK ? size + 8192 : size, junk, sizeof junk);
        return size;
    }
    case ZEROS_AFTER: {
        uint8_t z[4096] = {0};
        poke(seg0, size, z, sizeof z);
        return size;
    }
    case TORN_THEN_ZEROS: {
        static const uint8_t z[65536];
        uint64_t cut = last->off + last->size / 2;
        truncate_to(seg0, cut);
        poke(seg0, cut, z, sizeof z);
        return cut;
    }
    case BATCH_CUT_EDGE:
        truncate_to(seg0, last->off);
        return last->off;
    }
    return 0;
}

static void tail_case(enum tail_damage d)
{
    clean_append(dir, m, first_part, AG_ARRAY_SIZE(first_part), 100, 0);
    size_t n_tail = AG_ARRAY_SIZE(tail_part);
    size_t sizes[64];
    memcpy(sizes, tail_part, sizeof tail_part);
    if (d == BATCH_CUT_3RD || d == BATCH_CUT_EDGE) sizes[n_tail++] = 3;
    crash_append(dir, m, sizes, n_tail, 120, 0);

    static struct seg_rec recs[MAX_RECS];
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    cr_assert_eq(nr, m->n, "one record per event");
    const struct seg_rec *last = &recs[nr - 1];
    if (d == BATCH_CUT_EDGE) last = &recs[nr - 1]; /* the 3rd record: cut at its start */
    uint64_t bad = damage_tail(d, last);
    uint64_t end;
    size_t keep = survivors(recs, nr, bad, &end);
    if (d == BATCH_CUT_3RD || d == BATCH_CUT_EDGE)
        cr_assert_eq(keep, m->n - 3, "the batch goes whole");
    else if (d == GARBAGE_AFTER || d == ZEROS_AFTER || d == ZEROS_THEN_JUNK)
        cr_assert_eq(keep, m->n);
    else
        cr_assert_lt(keep, m->n);

    bool clean = d == ZEROS_AFTER;
    if (clean) end = file_size_of(seg0); /* the zeros stay */
    log_capture_start();
    struct ag_store *s = open_ok(dir, 0);
    if (clean)
        cr_assert_not(log_capture_has("torn"), "zeros after the last record are a clean end");
    else
        cr_assert(log_capture_has("store.torn_tail_truncated"), "recovery logs a warning");
    log_capture_stop();
    assert_store_is(s, m, keep);
    cr_assert_eq(file_size_of(seg0), end,
                 "the segment is cut after the last whole batch "
                 "(size %llu, expected %llu)",
                 (unsigned long long)file_size_of(seg0), (unsigned long long)end);
    m->n = keep;
    assert_appends_after(s, m);
    ag_store_close(s);

    log_capture_start();
    s = open_ok(dir, 0);
    cr_assert_not(log_capture_has("torn"), "a clean reopen finds nothing to cut");
    log_capture_stop();
    assert_store_is(s, m, keep + 1);
    ag_store_close(s);
}

TestSuite(tail, .init = setup, .fini = teardown);

Test(tail, truncated_mid_record)
{
    tail_case(TRUNC_MID);
}
Test(tail, truncated_inside_record_header)
{
    tail_case(TRUNC_IN_HEADER);
}
Test(tail, flipped_bytes_in_last_record)
{
    tail_case(FLIP_BYTES);
}
Test(tail, flipped_size_field_of_last_record)
{
    tail_case(FLIP_SIZE);
}
Test(tail, zeroed_last_page)
{
    tail_case(ZERO_PAGE);
}
Test(tail, garbage_after_last_record)
{
    tail_case(GARBAGE_AFTER);
}
Test(tail, zeros_after_last_record)
{
    tail_case(ZEROS_AFTER);
}
Test(tail, torn_record_followed_by_zeros)
{
    tail_case(TORN_THEN_ZEROS);
}
Test(tail, junk_after_zeros_after_last_record)
{
    tail_case(ZEROS_THEN_JUNK);
}
Test(tail, incomplete_batch_cut_in_third_record)
{
    tail_case(BATCH_CUT_3RD);
}
Test(tail, incomplete_batch_cut_at_record_edge)
{
    tail_case(BATCH_CUT_EDGE);
}

/* ---- damage in the middle ---- */

static const size_t middle_part[] = {1, 1, 1, 1, 3, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1};

/* Find the `*.corrupt-*` file verify left beside `seg`, or "" */
static void find_corrupt_file(const char *seg, char *out, size_t cap)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *de;
    size_t sl = strlen(seg);
    while ((de = readdir(d)))
        if (strncmp(de->d_name, seg, sl) == 0 && strncmp(de->d_name + sl, ".corrupt-", 9) == 0)
            path_in(out, cap, dir, de->d_name);
    closedir(d);
}

/* Damage record `victim` (flip a payload byte), with intact records after it. */
static void middle_case(size_t victim)
{
    clean_append(dir, m, middle_part, AG_ARRAY_SIZE(middle_part), 100, 0);
    /* The checkpoint written at close covers these bytes and open would trust it
     * (see ckpt_hides_old_damage_verify_finds_it); without it, the scan must catch it. */
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    cr_assert_eq(unlink(ck), 0);
    static struct seg_rec recs[MAX_RECS];
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    cr_assert_eq(nr, m->n);
    uint64_t size = file_size_of(seg0);
    size_t orig_len;
    uint8_t *orig = slurp(seg0, &orig_len);
    flip_byte(seg0, recs[victim].off + recs[victim].size - 16);
    uint64_t end;
    size_t keep = survivors(recs, nr, recs[victim].off, &end);

    /* open refuses, naming the file and the offset */
    struct ag_store *s = NULL;
    struct ag_err err;
    struct ag_store_options o = {.no_sync = true};
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, AG_ECORRUPT, "open: %s: %s", ag_errname(rc), err.msg);
    char off[64];
    snprintf(off, sizeof off, "offset %llu", (unsigned long long)recs[victim].off);
    cr_assert(strstr(err.msg, SEG0) && strstr(err.msg, off), "message names file and %s: %s", off,
              err.msg);
    cr_assert_eq(file_size_of(seg0), size, "a refused open changes nothing");

    /* verify finds it without changing anything */
    struct ag_log_verify_report rep;
    rc = ag_store_log_verify(dir, false, &rep, &err);
    cr_assert_eq(rc, 0, "verify: %s", err.msg);
    cr_assert_not(rep.ok);
    cr_assert_not(rep.repaired);
    cr_assert(strstr(rep.problem, SEG0) && strstr(rep.problem, off), "problem: %s", rep.problem);
    cr_assert_eq(file_size_of(seg0), size);

    /* verify --repair cuts there and keeps the cut bytes */
    rc = ag_store_log_verify(dir, true, &rep, &err);
    cr_assert_eq(rc, 0, "verify --repair: %s", err.msg);
    cr_assert(rep.repaired, "report.repaired");
    cr_assert_eq(file_size_of(seg0), end, "cut after the last whole batch before the damage");
    char kept[192];
    find_corrupt_file(SEG0, kept, sizeof kept);
    cr_assert(kept[0], "a %s.corrupt-* file holds the cut bytes", SEG0);
    size_t kl;
    uint8_t *k = slurp(kept, &kl);
    cr_assert_eq(kl, size - end, "kept %zu bytes, cut %llu", kl, (unsigned long long)(size - end));
    orig[recs[victim].off + recs[victim].size - 16] ^= 0x5a; /* the damage is kept as it was */
    cr_assert_eq(memcmp(k, orig + end, kl), 0, "the kept bytes are the cut bytes");
    free(k);
    free(orig);

    s = open_ok(dir, 0);
    assert_store_is(s, m, keep);
    m->n = keep;
    assert_appends_after(s, m);
    ag_store_close(s);

    rc = ag_store_log_verify(dir, false, &rep, &err);
    cr_assert(rc == 0 && rep.ok, "verify after repair: %s", rep.problem);
    cr_assert_eq(rep.events, keep + 1);
}

TestSuite(middle, .init = setup, .fini = teardown);

Test(middle, flipped_byte_in_early_record)
{
    middle_case(2);
}
Test(middle, flipped_byte_inside_early_batch)
{
    middle_case(5); /* 2nd of the 3-event batch */
}
Test(middle, flipped_byte_in_first_record)
{
    middle_case(0);
}

Test(middle, open_with_repair_option_cuts_too)
{
    clean_append(dir, m, middle_part, AG_ARRAY_SIZE(middle_part), 100, 0);
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    unlink(ck);
    static struct seg_rec recs[MAX_RECS];
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    flip_byte(seg0, recs[10].off + 3 * 8);
    uint64_t end;
    size_t keep = survivors(recs, nr, recs[10].off, &end);
    struct ag_store_options o = {.no_sync = true, .repair = true};
    struct ag_store *s;
    struct ag_err err;
    cr_assert_eq(ag_store_log_open(dir, &o, &s, &err), 0, "%s", err.msg);
    assert_store_is(s, m, keep);
    ag_store_close(s);
    char kept[192];
    find_corrupt_file(SEG0, kept, sizeof kept);
    cr_assert(kept[0], "the cut bytes are kept");
}

/* A bad record at the end of a segment that is not the last is not a torn tail. */
Test(middle, damaged_end_of_an_earlier_segment)
{
    uint64_t segsz = (4u << 20) + 64; /* the smallest segment the store allows */
    size_t sizes[30];
    for (size_t i = 0; i < 30; i++) sizes[i] = 1;
    clean_append(dir, m, sizes, 30, 200000, segsz); /* ~21 events per segment */
    char seg1[128];
    path_in(seg1, sizeof seg1, dir, "seg-00000000000000000001.log");
    cr_assert_gt(file_size_of(seg1), 64, "the log rolled into a second segment");
    static struct seg_rec recs[MAX_RECS];
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    cr_assert(nr > 2 && nr < m->n);
    const struct seg_rec *last = &recs[nr - 1];
    truncate_to(seg0, last->off + last->size / 2);
    uint64_t end;
    size_t keep = survivors(recs, nr, last->off, &end);

    struct ag_store *s;
    struct ag_err err;
    struct ag_store_options o = {.no_sync = true, .segment_bytes = segsz};
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, AG_ECORRUPT, "open: %s: %s", ag_errname(rc), err.msg);
    cr_assert(strstr(err.msg, SEG0), "names segment 0: %s", err.msg);

    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, true, &rep, &err), 0, "%s", err.msg);
    cr_assert(rep.repaired);
    char moved[192];
    find_corrupt_file("seg-00000000000000000001.log", moved, sizeof moved);
    cr_assert(moved[0], "the later segment is moved aside, not deleted");
    s = open_ok(dir, segsz);
    assert_store_is(s, m, keep);
    m->n = keep;
    assert_appends_after(s, m);
    ag_store_close(s);
}

/* ---- the index checkpoint ---- */

static char *build_with_snapshots(void)
{
    static const size_t sizes[] = {1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 4, 1};
    struct ag_store *s = open_ok(dir, 0);
    for (size_t i = 0; i < AG_ARRAY_SIZE(sizes); i++) {
        append_batch(s, m, i % 3 == 2 ? "c" : i % 2 ? "b" : "a", sizes[i], 50);
        if (i == 4) cr_assert_eq(ag_store_save_snapshot(s, "a", 1, 1, "{\"s\":1}", 7, NULL), 0);
    }
    cr_assert_eq(ag_store_save_snapshot(s, "b", 1, 2, "{\"s\":2}", 7, NULL), 0);
    cr_assert_eq(ag_store_save_snapshot(s, "a", 1, 3, "{\"s\":3}", 7, NULL), 0);
    char *d = dump_store(s);
    ag_store_close(s);
    return d;
}

static void assert_same_after_reopen(const char *want, const char *what)
{
    struct ag_store *s = open_ok(dir, 0);
    char *got = dump_store(s);
    cr_assert_str_eq(got, want, "%s: contents differ", what);
    ag_free(got);
    ag_store_close(s);
    s = open_ok(dir, 0); /* and once more on the checkpoint written at that close */
    got = dump_store(s);
    cr_assert_str_eq(got, want, "%s, second reopen: contents differ", what);
    ag_free(got);
    ag_store_close(s);
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

Test(checkpoint, deleted)
{
    char *want = build_with_snapshots();
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    cr_assert_eq(unlink(ck), 0);
    assert_same_after_reopen(want, "no checkpoint");
    ag_free(want);
}

Test(checkpoint, corrupted_byte)
{
    char *want = build_with_snapshots();
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    uint64_t n = file_size_of(ck);
    for (uint64_t off = 0; off < n; off += n / 7 + 1) { /* several places, one at a time */
        flip_byte(ck, off);
        log_capture_start();
        assert_same_after_reopen(want, "corrupted checkpoint");
        cr_assert(log_capture_has("store.checkpoint_ignored"), "byte %llu: checkpoint ignored",
                  (unsigned long long)off);
        log_capture_stop();
    }
    ag_free(want);
}

Test(checkpoint, truncated_and_empty)
{
    char *want = build_with_snapshots();
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    truncate_to(ck, file_size_of(ck) / 2);
    assert_same_after_reopen(want, "half a checkpoint");
    truncate_to(ck, 0);
    assert_same_after_reopen(want, "empty checkpoint");
    ag_free(want);
}

/* A checkpoint from earlier (the log has grown since): load it, scan the rest. */
Test(checkpoint, older_than_the_log)
{
    static const size_t sizes[] = {1, 2, 1};
    clean_append(dir, m, sizes, 3, 50, 0);
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    size_t oldlen;
    uint8_t *old = slurp(ck, &oldlen);
    char *want = build_with_snapshots();
    spit(ck, old, oldlen);
    free(old);
    assert_same_after_reopen(want, "older checkpoint");
    ag_free(want);
}

/* A checkpoint that says more than the log holds (the log lost its tail). */
Test(checkpoint, newer_than_the_log)
{
    static const size_t sizes[] = {1, 2, 1, 1, 1};
    clean_append(dir, m, sizes, 5, 50, 0);
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    static struct seg_rec recs[MAX_RECS];
    size_t nr = walk_segment(seg0, recs, MAX_RECS);
    truncate_to(seg0, recs[nr - 1].off); /* lose the last (single-event) batch */
    struct ag_store *s = open_ok(dir, 0);
    assert_store_is(s, m, m->n - 1);
    m->n--;
    assert_appends_after(s, m);
    ag_store_close(s);
}

/* Damage inside what the checkpoint covers is not looked at by open (the checkpoint
 * is trusted, by design); verify, which ignores the checkpoint, must find it. */
Test(checkpoint, hides_old_damage_verify_finds_it)
{
    clean_append(dir, m, middle_part, AG_ARRAY_SIZE(middle_part), 100, 0);
    static struct seg_rec recs[MAX_RECS];
    walk_segment(seg0, recs, MAX_RECS);
    flip_byte(seg0, recs[3].off + recs[3].size - 16);
    struct ag_log_verify_report rep;
    struct ag_err err;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0, "%s", err.msg);
    cr_assert_not(rep.ok, "verify reads past the checkpoint and finds the damage");
    char off[64];
    snprintf(off, sizeof off, "offset %llu", (unsigned long long)recs[3].off);
    cr_assert(strstr(rep.problem, off), "problem: %s", rep.problem);
}

/* But a damaged record under the checkpoint must not crash a reader: open may
 * refuse (AG_ECORRUPT) or open, and then reads that reach the record must fail
 * with AG_ECORRUPT instead of trusting a size field the disk garbled.
 * FAILS (crashes) as of 22ff9f2: read.c's rec_fields/page_build/next_event trust
 * the record's size, so a flipped size bit makes them memcpy out of the mapping
 * (or, with size 0, never advance). */
static void damaged_size_under_checkpoint(uint32_t size)
{
    clean_append(dir, m, middle_part, AG_ARRAY_SIZE(middle_part), 100, 0);
    static struct seg_rec recs[MAX_RECS];
    walk_segment(seg0, recs, MAX_RECS);
    poke(seg0, recs[3].off, &size, 4);
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    if (rc == AG_ECORRUPT) {
        cr_assert(strstr(err.msg, SEG0), "names the file: %s", err.msg);
        return;
    }
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    struct ag_event_page p;
    rc = ag_store_read_all(s, 0, AG_READ_FORWARD, 64, &p, &err);
    if (!rc) ag_event_page_free(&p);
    cr_assert_eq(rc, AG_ECORRUPT, "read_all over a damaged record: %s", ag_errname(rc));
    rc = ag_store_read_stream(s, m->ev[3].stream, 1, 0, AG_READ_FORWARD, 64, &p, &err);
    if (!rc) ag_event_page_free(&p);
    cr_assert_eq(rc, AG_ECORRUPT, "read_stream over a damaged record: %s", ag_errname(rc));
    /* the records before it are still readable */
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 3, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(p.count, 3);
    ag_event_page_free(&p);
    ag_store_close(s);
}

Test(checkpoint, damaged_size_field_under_checkpoint_huge)
{
    damaged_size_under_checkpoint(0x40000000u);
}
Test(checkpoint, damaged_size_field_under_checkpoint_zero)
{
    damaged_size_under_checkpoint(0);
}

/* ---- the writer lock ---- */

TestSuite(lock, .init = setup, .fini = teardown);

Test(lock, second_writer_is_refused_naming_the_pid)
{
    struct ag_store *s = open_ok(dir, 0);
    struct ag_store *s2 = NULL;
    struct ag_err err;
    struct ag_store_options o = {.no_sync = true};
    int rc = ag_store_log_open(dir, &o, &s2, &err);
    cr_assert_eq(rc, AG_ELOCKED, "second open: %s", ag_errname(rc));
    cr_assert_null(s2);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)getpid());
    cr_assert(strstr(err.msg, pid) && strstr(err.msg, dir), "message names dir and %s: %s", pid,
              err.msg);
    /* a read-only open does not need the lock */
    struct ag_store_options ro = {.read_only = true};
    cr_assert_eq(ag_store_log_open(dir, &ro, &s2, &err), 0, "%s", err.msg);
    ag_store_close(s2);
    /* verify --repair needs it too */
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, true, &rep, &err), AG_ELOCKED);
    ag_store_close(s);
    s = open_ok(dir, 0); /* released at close */
    ag_store_close(s);
}

Test(lock, released_when_the_holder_dies)
{
    static const size_t sizes[] = {1};
    crash_append(dir, m, sizes, 1, 10, 0); /* the child held the lock and died */
    struct ag_store *s = open_ok(dir, 0);
    assert_store_is(s, m, 1);
    ag_store_close(s);
}

/* ---- the compact checkpoint (AGORAIX3): every kind of name round-trips ---- */

#define NAMED 4200 /* more distinct prefixes than the checkpoint remembers (4096) */

static void named_stream(size_t i, char *out, size_t cap)
{
    static const char *const fixed[] = {
        "order-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", /* prefix + UUID */
        "order-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", /* the same prefix again */
        "idempotency-00ff10aa",                       /* prefix + even hex */
        "idempotency-00ff10a",                        /* odd hex: raw */
        "Order-0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", /* upper case: raw */
        "nodash",                                     /* no prefix */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",       /* prefix "0190a1b2-", raw rest */
        "x-",                                         /* empty rest */
        "-",                                          /* prefix only */
        "a-b-c-d",                                    /* the first dash only */
        "long-prefix-that-is-longer-than-sixty-four-bytes-so-it-is-not-a-prefix-at-all-x",
    };
    if (i < AG_ARRAY_SIZE(fixed))
        snprintf(out, cap, "%s", fixed[i]);
    else /* a new prefix each: overflows the table of prefixes */
        snprintf(out, cap, "p%zu-%08zx", i, i * 2654435761u);
}

static void append_named(struct ag_store *s, const char *name, int64_t expect, size_t n)
{
    struct ag_event_data ev[4];
    for (size_t i = 0; i < n; i++) {
        ev[i] = (struct ag_event_data){.type = "T", .type_len = 1, .data = "{}", .data_len = 2};
        ag_uuid_v7(&ev[i].id, NULL, NULL);
    }
    struct ag_err err;
    struct ag_append_result res;
    int rc = ag_store_append(s, name, strlen(name), expect, ev, n, &res, &err);
    cr_assert_eq(rc, 0, "append %s: %s", name, err.msg);
}

Test(checkpoint, compact_names_round_trip)
{
    struct ag_store *s = open_ok(dir, 4096); /* small segments: locations cross them */
    char name[128];
    for (size_t i = 0; i < NAMED; i++) {
        named_stream(i, name, sizeof name);
        append_named(s, name, -1, 1 + i % 3);
    }
    named_stream(0, name, sizeof name);
    cr_assert_eq(ag_store_save_snapshot(s, name, strlen(name), 0, "{\"s\":1}", 7, NULL), 0);
    char *want = dump_store(s);
    ag_store_close(s);
    char ck[128];
    path_in(ck, sizeof ck, dir, "index.ckpt");
    size_t len;
    uint8_t *raw = slurp(ck, &len);
    cr_assert_eq(memcmp(raw, "AGORAIX3", 8), 0, "the compact format is written");
    free(raw);
    /* ~40 bytes a stream here (names ~12 bytes, 2 events), not ~70 as before */
    cr_assert_lt(len, (size_t)NAMED * 40, "checkpoint %zu bytes for %d streams", len, NAMED);

    log_capture_start();
    s = open_ok(dir, 4096);
    cr_assert_not(log_capture_has("checkpoint_ignored"), "the checkpoint is loaded, not rebuilt");
    log_capture_stop();
    char *got = dump_store(s);
    cr_assert_str_eq(got, want, "same contents after reopen");
    for (size_t i = 0; i < NAMED; i++) {
        named_stream(i, name, sizeof name);
        int64_t v = -2;
        cr_assert_eq(ag_store_stream_version(s, name, strlen(name), &v), 0, "%s", name);
        cr_assert_eq(v, (int64_t)(i % 3), "%s: version", name);
        struct ag_event_page p;
        cr_assert_eq(ag_store_read_stream(s, name, strlen(name), 0, AG_READ_FORWARD, 8, &p, NULL),
                     0);
        cr_assert_eq(p.count, 1 + i % 3, "%s: events read through the loaded locations", name);
        ag_event_page_free(&p);
    }
    named_stream(0, name, sizeof name);
    struct ag_snapshot snap;
    cr_assert_eq(ag_store_load_snapshot(s, name, strlen(name), &snap, NULL), 0);
    cr_assert_eq(snap.version, 0);
    ag_snapshot_free(&snap);
    append_named(s, name, 0, 1); /* and it takes appends at the right version */
    ag_free(got);
    ag_free(want);
    ag_store_close(s);
}
