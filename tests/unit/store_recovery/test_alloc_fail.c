/*
 * Allocation-failure injection over the log's open / append / read / snapshot /
 * close paths (curl's torture runs, SQLite's OOM tests): for k = 1, 2, ... fail the
 * k-th allocation from the start of the sequence and every one after it, until a
 * sequence runs with no failure injected. Every step must either succeed or return
 * AG_ENOMEM; nothing may crash; LeakSanitizer (at exit of each test process) must
 * find nothing; and a failed append must have stored nothing, a successful one
 * everything, as a clean reopen afterwards shows. Each iteration starts from a
 * fresh copy of a small store. (The log itself uses no jansson; jansson
 * allocates through ag_malloc too, so tests of JSON code get the same treatment.)
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static char tmpl[64], work[64];
static struct model *m;

static void setup(void)
{
    scratch_dir(tmpl);
    scratch_dir(work);
    m = calloc(1, sizeof *m);
    ag_log_set_level(AG_LOG_OFF);
}

static void teardown(void)
{
    ag_alloc_fail_at(0);
    rm_tree(tmpl);
    rm_tree(work);
    free(m);
}

/* Replace `work` with a copy of `tmpl` (segments and checkpoint). */
static void fresh_copy(bool with_ckpt)
{
    rm_tree(work);
    cr_assert_eq(mkdir(work, 0700), 0);
    DIR *d = opendir(tmpl);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "LOCK") == 0) continue;
        if (!with_ckpt && strcmp(de->d_name, "index.ckpt") == 0) continue;
        char from[192], to[192];
        path_in(from, sizeof from, tmpl, de->d_name);
        path_in(to, sizeof to, work, de->d_name);
        size_t len;
        uint8_t *p = slurp(from, &len);
        spit(to, p, len);
        free(p);
    }
    closedir(d);
}

#define OK_OR_NOMEM(rc, what)                                                                      \
    cr_assert((rc) == 0 || (rc) == AG_ENOMEM, "k=%ld: %s returned %s", k, (what), ag_errname(rc))

/* One run of the sequence; returns whether the append was stored. */
static bool sequence(long k, const char *dir, bool *appended)
{
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    OK_OR_NOMEM(rc, "open");
    *appended = false;
    if (rc) return false;

    struct ag_event_data ev[3];
    for (int i = 0; i < 3; i++) {
        ev[i] = (struct ag_event_data){
            .type = "Oom", .type_len = 3, .data = "{\"x\":1}", .data_len = 7};
        memset(&ev[i].id, 0, sizeof ev[i].id);
        ev[i].id.b[0] = 0x77, ev[i].id.b[15] = (uint8_t)(i + 1), ev[i].id.b[6] = 0x70;
    }
    int64_t va = -1;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->ev[i].stream, "a") == 0) va = m->ev[i].version;
    struct ag_append_result res;
    rc = ag_store_append(s, "a", 1, va, ev, 3, &res, &err);
    OK_OR_NOMEM(rc, "append");
    *appended = rc == 0;

    struct ag_event_page p;
    rc = ag_store_read_all(s, 0, AG_READ_FORWARD, 64, &p, &err);
    OK_OR_NOMEM(rc, "read_all");
    if (!rc) {
        cr_assert_eq(p.count, m->n + (*appended ? 3 : 0), "k=%ld: read_all count", k);
        ag_event_page_free(&p);
    }
    rc = ag_store_read_stream(s, "b", 1, -1, AG_READ_BACKWARD, 4, &p, &err);
    OK_OR_NOMEM(rc, "read_stream");
    if (!rc) ag_event_page_free(&p);
    rc = ag_store_save_snapshot(s, "b", 1, 0, "{}", 2, &err);
    OK_OR_NOMEM(rc, "save_snapshot");
    struct ag_snapshot snap;
    rc = ag_store_load_snapshot(s, "b", 1, &snap, &err);
    cr_assert(rc == 0 || rc == AG_ENOMEM || rc == AG_ENOTFOUND, "k=%ld: load_snapshot %s", k,
              ag_errname(rc));
    if (!rc) ag_snapshot_free(&snap);
    struct ag_store_stats st;
    OK_OR_NOMEM(ag_store_stats(s, &st), "stats");
    ag_store_close(s);
    return true;
}

/* After an iteration, a clean open must show the template's events, plus the
 * batch if (and only if) its append was acknowledged. */
static void assert_intact(long k, bool appended)
{
    struct ag_store *s = open_ok(work, 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 64, &p, NULL), 0);
    cr_assert_eq(p.count, m->n + (appended ? 3 : 0),
                 "k=%ld: after an append that %s, the store holds %zu events (had %zu)", k,
                 appended ? "succeeded" : "failed", p.count, m->n);
    for (size_t i = 0; i < m->n; i++)
        cr_assert_eq(memcmp(&p.events[i].id, &m->ev[i].id, 16), 0, "k=%ld: event %zu", k, i);
    ag_event_page_free(&p);
    ag_store_close(s);
}

static void torture(bool with_ckpt, bool crashed_tail)
{
    static const size_t sizes[] = {1, 2, 1, 3, 1, 1};
    if (crashed_tail) {
        clean_append(tmpl, m, sizes, 3, 40, 0);
        crash_append(tmpl, m, sizes + 3, 3, 40, 0); /* a tail after the checkpoint */
    } else {
        clean_append(tmpl, m, sizes, AG_ARRAY_SIZE(sizes), 40, 0);
    }
    long k;
    for (k = 1; k < 100000; k++) {
        fresh_copy(with_ckpt);
        long before = ag_alloc_count();
        bool appended;
        ag_alloc_fail_at(k);
        if (getenv("AG_TRACE_K")) fprintf(stderr, "k=%ld\n", k);
        sequence(k, work, &appended);
        ag_alloc_fail_at(0);
        bool injected = ag_alloc_count() - before >= k;
        assert_intact(k, appended);
        if (!injected) break;
    }
    cr_assert_gt(k, 20, "the sequence allocates (k reached %ld)", k);
    cr_log_info("allocation failure injected at 1..%ld", k - 1);
}

TestSuite(alloc_fail, .init = setup, .fini = teardown);

Test(alloc_fail, open_append_read_close_with_checkpoint)
{
    torture(true, false);
}
Test(alloc_fail, open_append_read_close_full_scan)
{
    torture(false, false);
}
Test(alloc_fail, open_append_read_close_checkpoint_then_tail)
{
    torture(true, true);
}

/* Failures inside open only, then memory comes back: an open that failed halfway
 * must leave the files as they were, and one that carried on despite a failure
 * (a checkpoint it could not load is only a hint) must hold every event. */
Test(alloc_fail, open_fails_then_memory_returns)
{
    static const size_t sizes[] = {1, 2, 1, 3, 1, 1};
    clean_append(tmpl, m, sizes, AG_ARRAY_SIZE(sizes), 40, 0);
    long k;
    for (k = 1; k < 100000; k++) {
        fresh_copy(k % 2);
        long before = ag_alloc_count();
        ag_alloc_fail_at(k);
        struct ag_store_options o = {.no_sync = true};
        struct ag_store *s = NULL;
        int rc = ag_store_log_open(work, &o, &s, NULL);
        ag_alloc_fail_at(0);
        cr_assert(rc == 0 || rc == AG_ENOMEM, "k=%ld: open %s", k, ag_errname(rc));
        bool injected = ag_alloc_count() - before >= k;
        if (!rc) {
            struct ag_event_page p;
            cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 64, &p, NULL), 0);
            cr_assert_eq(p.count, m->n, "k=%ld: opened with %zu events of %zu", k, p.count, m->n);
            ag_event_page_free(&p);
            ag_store_close(s);
        }
        assert_intact(k, false);
        if (!injected) break;
    }
    cr_assert_gt(k, 5);
}
