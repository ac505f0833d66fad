/*
 * Write failures of the embedded log (WRITE FAILURES at the top of
 * src/store/log/log.c), driven by the I/O fault hook: EIO on a write (torn, half
 * its bytes stored), EIO on fdatasync (the bytes are in the file and intact, yet
 * must not count), a full disk that stays full until "space is freed", a failing
 * segment roll, and a crash in the middle of an outage.
 *
 * Each case checks what an operator relies on: the failing append and every
 * append during the outage get AG_EUNAVAILABLE with a detail naming the cause; the
 * file is cut back to the last acknowledged byte; reads go on; ag_store_health
 * says unwritable; once the fault is gone the store takes appends again by itself
 * at the next version and position; one error line and one info line are logged;
 * and a reopen finds exactly the acknowledged events.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static char dir[64];
static char seg0[128];
static struct model *m;

static void setup(void)
{
    scratch_dir(dir);
    path_in(seg0, sizeof seg0, dir, SEG0);
    m = calloc(1, sizeof *m);
    ag_log_set_level(AG_LOG_OFF);
}

static void teardown(void)
{
    log_capture_stop();
    unsetenv("AGORA_STORE_FAULT");
    rm_tree(dir);
    free(m);
}

TestSuite(write_fault, .init = setup, .fini = teardown, .timeout = 60);

/* Fast retries (1 ms doubling to 8 ms) so a recovery takes milliseconds. */
static struct ag_store *open_fast(uint64_t segment_bytes)
{
    struct ag_store_options o = {.no_sync = true,
                                 .segment_bytes = segment_bytes,
                                 .retry_min_ns = 1000000,
                                 .retry_max_ns = 8000000};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return s;
}

static void inject(struct ag_store *s, enum ag_log_fault_op op, int error, uint64_t after,
                   uint64_t times, bool torn)
{
    struct ag_log_fault f = {op, error, after, times, torn};
    cr_assert_eq(ag_store_log_inject_fault(s, &f), 0);
}

/* One append to "a" that must fail with AG_EUNAVAILABLE naming `cause`. */
static void append_refused(struct ag_store *s, const char *cause)
{
    struct ag_event_data ev = {.type = "Refused", .type_len = 7, .data = "{}", .data_len = 2};
    ag_uuid_v7(&ev.id, NULL, NULL);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, "a", 1, AG_STORE_ANY, &ev, 1, NULL, &err);
    cr_assert_eq(rc, AG_EUNAVAILABLE, "append during the outage: %s (%s)", ag_errname(rc), err.msg);
    cr_assert(strstr(err.msg, "the event store cannot write: ") && strstr(err.msg, cause) &&
                  strstr(err.msg, "retrying"),
              "detail names the cause: %s", err.msg);
    cr_assert(err.aux >= 1, "a Retry-After hint in seconds");
}

static struct ag_store_health health_of(struct ag_store *s)
{
    struct ag_store_health h;
    cr_assert_eq(ag_store_health(s, &h), 0);
    return h;
}

/* Wait (bounded) until the writer's own retries make the store writable. */
static void wait_writable(struct ag_store *s)
{
    for (int i = 0; i < 5000; i++) {
        if (health_of(s).writable) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    struct ag_store_health h = health_of(s);
    cr_assert_fail("still unwritable after 5 s: %s (retries %llu)", h.message,
                   (unsigned long long)h.retries);
}

static const size_t first[] = {1, 2, 1, 3, 1, 1, 2, 1};
#define NFIRST (sizeof first / sizeof first[0])

static void write_first(struct ag_store *s)
{
    for (size_t i = 0; i < NFIRST; i++) append_batch(s, m, i % 2 ? "b" : "a", first[i], 40);
}

/* The common shape: fail one group, check the outage, let it recover, check. */
static void fail_once_and_recover(enum ag_log_fault_op op, int error, bool torn, const char *cause)
{
    log_capture_start();
    ag_log_set_level(AG_LOG_INFO);
    struct ag_store *s = open_fast(0);
    write_first(s);
    uint64_t acked = file_size_of(seg0);
    inject(s, op, error, 0, 1, torn);
    append_refused(s, cause);
    cr_assert_eq(file_size_of(seg0), acked, "the unacknowledged tail was cut at once");
    assert_store_is(s, m, m->n); /* reads go on */
    wait_writable(s);
    struct ag_store_health h = health_of(s);
    cr_assert(h.writable && h.error == 0 && h.message[0] == 0);
    cr_assert_eq(h.outages, 1);
    cr_assert_geq(h.failures, 1);
    cr_assert_geq(h.retries, 1);
    assert_appends_after(s, m); /* next version and position: nothing half-written */
    cr_assert_eq(log_capture_count("store.write_failed"), 1);
    cr_assert_eq(log_capture_count("store.write_recovered"), 1);
    ag_store_close(s);
    s = open_fast(0);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(write_fault, eio_on_a_torn_write_recovers)
{
    fail_once_and_recover(AG_LOG_FAULT_WRITE, EIO, true, "Input/output error");
}

Test(write_fault, eio_on_fdatasync_cuts_intact_bytes_and_recovers)
{
    /* the pwrite succeeded: the records are whole in the file, but after a failed
     * fdatasync they are not known to be on disk, so they must go */
    fail_once_and_recover(AG_LOG_FAULT_SYNC, EIO, false, "Input/output error");
}

Test(write_fault, full_disk_refuses_until_space_is_freed)
{
    log_capture_start();
    ag_log_set_level(AG_LOG_INFO);
    struct ag_store *s = open_fast(0);
    write_first(s);
    uint64_t acked = file_size_of(seg0);
    inject(s, AG_LOG_FAULT_WRITE, ENOSPC, 0, 0, true); /* full until cleared */
    for (int i = 0; i < 20; i++) append_refused(s, "No space left on device");
    /* let several recovery attempts fail */
    for (int i = 0; i < 5000 && health_of(s).retries < 3; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    struct ag_store_health h = health_of(s);
    cr_assert(!h.writable && h.error == AG_EUNAVAILABLE && h.os_error == ENOSPC);
    cr_assert_str_eq(h.message, "No space left on device");
    cr_assert(h.since_ns > 0 && h.retries >= 3 && h.failures >= 4);
    cr_assert_leq(h.retry_in_ms, 8);
    assert_store_is(s, m, m->n);
    /* every append of the outage was refused at once: not one per attempt logged */
    cr_assert_eq(log_capture_count("store.write_failed"), 1);
    inject(s, AG_LOG_FAULT_WRITE, 0, 0, 0, false); /* space freed */
    wait_writable(s);
    cr_assert_eq(file_size_of(seg0), acked, "torn writes and probes left nothing behind");
    assert_appends_after(s, m);
    cr_assert_eq(log_capture_count("store.write_recovered"), 1);
    ag_store_close(s);
    s = open_fast(0);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(write_fault, sync_failing_during_recovery_keeps_retrying)
{
    struct ag_store *s = open_fast(0);
    write_first(s);
    /* the group's fdatasync, the immediate cut's and two attempts' fail */
    inject(s, AG_LOG_FAULT_SYNC, EIO, 0, 4, false);
    append_refused(s, "Input/output error");
    wait_writable(s);
    struct ag_store_health h = health_of(s);
    cr_assert_geq(h.failures, 3);
    cr_assert_geq(h.retries, 2);
    assert_appends_after(s, m);
    ag_store_close(s);
    s = open_fast(0);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(write_fault, failed_segment_roll_recovers_into_the_new_segment)
{
    uint64_t seg_bytes = (4u << 20) + 64;
    struct ag_store *s = open_fast(seg_bytes);
    /* fill segment 0 until less than 32 KiB are left: a 40 KB event must roll */
    while (file_size_of(seg0) + 2 * (16u << 10) < seg_bytes)
        append_batch(s, m, m->n % 2 ? "b" : "a", 1, 16u << 10);
    inject(s, AG_LOG_FAULT_WRITE, ENOSPC, 0, 1, false); /* the new segment's header */
    size_t before = m->n;
    struct ag_event_data ev = {.type = "Big", .type_len = 3};
    char *data = malloc(64u << 10);
    int len = snprintf(data, 64u << 10, "{\"pad\":\"%0*d\"}", 40000, 0);
    ev.data = data, ev.data_len = (size_t)len;
    struct ag_err err;
    int rc = ag_store_append(s, "a", 1, AG_STORE_ANY, &ev, 1, NULL, &err);
    cr_assert_eq(rc, AG_EUNAVAILABLE, "%s: %s", ag_errname(rc), err.msg);
    cr_assert(strstr(err.msg, "No space left on device"), "%s", err.msg);
    free(data);
    wait_writable(s);
    append_batch(s, m, "a", 1, 40000); /* rolls now */
    char seg1[128];
    path_in(seg1, sizeof seg1, dir, "seg-00000000000000000001.log");
    cr_assert_gt(file_size_of(seg1), 64, "the append went to the new segment");
    cr_assert_eq(m->n, before + 1);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
    s = open_fast(seg_bytes);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

Test(write_fault, crash_during_the_outage_keeps_only_acknowledged_events)
{
    struct ag_store *s = open_fast(0);
    write_first(s);
    ag_store_close(s);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct ag_store_options o = {.no_sync = true};
        struct ag_store *c;
        if (ag_store_log_open(dir, &o, &c, NULL)) _exit(3);
        struct ag_log_fault f = {AG_LOG_FAULT_SYNC, EIO, 0, 0, false};
        ag_store_log_inject_fault(c, &f);
        struct ag_event_data ev = {.type = "Lost", .type_len = 4};
        ag_uuid_v7(&ev.id, NULL, NULL);
        int rc = ag_store_append(c, "a", 1, AG_STORE_ANY, &ev, 1, NULL, NULL);
        _exit(rc == AG_EUNAVAILABLE ? 0 : 4); /* killed mid-outage: no close */
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", st);
    s = open_fast(0);
    assert_store_is(s, m, m->n); /* the refused append is not there */
    assert_appends_after(s, m);
    ag_store_close(s);
}

Test(write_fault, reads_and_async_appends_during_the_outage)
{
    struct ag_store *s = open_fast(0);
    write_first(s);
    inject(s, AG_LOG_FAULT_WRITE, EROFS, 0, 0, false);
    append_refused(s, "Read-only file system");
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(s, "a", 1, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_gt(p.count, 0);
    ag_event_page_free(&p);
    cr_assert_eq(ag_store_save_snapshot(s, "a", 1, 0, "{}", 2, NULL), AG_EUNAVAILABLE);
    inject(s, AG_LOG_FAULT_WRITE, 0, 0, 0, false);
    wait_writable(s);
    cr_assert_eq(ag_store_save_snapshot(s, "a", 1, 0, "{}", 2, NULL), 0);
    ag_store_close(s);
}

Test(write_fault, parse_fault_spec)
{
    struct ag_log_fault f;
    cr_assert_eq(ag_store_log_parse_fault("write:enospc:500:0:torn", &f), 0);
    cr_assert(f.op == AG_LOG_FAULT_WRITE && f.error == ENOSPC && f.after == 500 && f.times == 0 &&
              f.torn);
    cr_assert_eq(ag_store_log_parse_fault("sync:EIO:3:2", &f), 0);
    cr_assert(f.op == AG_LOG_FAULT_SYNC && f.error == EIO && f.after == 3 && f.times == 2 &&
              !f.torn);
    cr_assert_eq(ag_store_log_parse_fault("write:erofs", &f), 0);
    cr_assert_eq(ag_store_log_parse_fault("read:eio", &f), AG_EINVAL);
    cr_assert_eq(ag_store_log_parse_fault("write:enoent", &f), AG_EINVAL);
    cr_assert_eq(ag_store_log_parse_fault("write:eio:1:1:half", &f), AG_EINVAL);
    cr_assert_eq(ag_store_log_parse_fault("", &f), AG_EINVAL);
}

Test(write_fault, env_fault_applies_at_open)
{
    setenv("AGORA_STORE_FAULT", "write:eio:1:1", 1); /* segment 0's header, then a group */
    struct ag_store *s = open_fast(0);
    append_refused(s, "Input/output error");
    wait_writable(s);
    append_batch(s, m, "a", 1, 10);
    assert_store_is(s, m, m->n);
    ag_store_close(s);
}

/* A multi-stream unit is the last acknowledged batch when a write fails: the
 * failing unit gets AG_EUNAVAILABLE with nothing of it stored, the recovery's
 * tail check starts at the acknowledged unit's header, and appends resume. */
Test(write_fault, multi_stream_unit_fails_whole_and_the_tail_check_reads_units)
{
    struct ag_store *s = open_fast(0);
    write_first(s);
    struct ag_event_data ev[3];
    for (int i = 0; i < 3; i++) {
        ev[i] = (struct ag_event_data){.type = "Unit", .type_len = 4, .data = "{}", .data_len = 2};
        ag_uuid_v7(&ev[i].id, NULL, NULL);
    }
    struct ag_append_part p[2] = {{"a", 1, AG_STORE_ANY, ev, 2}, {"u", 1, AG_STORE_ANY, ev + 2, 1}};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, p, 2, NULL, &err), 0, "%s", err.msg);
    uint64_t acked = file_size_of(seg0);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    uint64_t events = st.events;

    inject(s, AG_LOG_FAULT_WRITE, EIO, 0, 1, true);
    struct ag_event_data ev2[2];
    for (int i = 0; i < 2; i++) {
        ev2[i] = (struct ag_event_data){.type = "Unit", .type_len = 4, .data = "{}", .data_len = 2};
        ag_uuid_v7(&ev2[i].id, NULL, NULL);
    }
    struct ag_append_part q[2] = {{"b", 1, AG_STORE_ANY, ev2, 1},
                                  {"v", 1, AG_STORE_ANY, ev2 + 1, 1}};
    cr_assert_eq(ag_store_append_multi(s, q, 2, NULL, &err), AG_EUNAVAILABLE, "%s", err.msg);
    wait_writable(s);
    cr_assert_eq(file_size_of(seg0), acked, "the failed unit was cut");
    int64_t v;
    ag_store_stream_version(s, "v", 1, &v);
    cr_assert_eq(v, -1);
    /* the retry with the same ids goes through once, at the next positions */
    struct ag_append_result r[2];
    cr_assert_eq(ag_store_append_multi(s, q, 2, r, &err), 0, "%s", err.msg);
    cr_assert_eq(r[0].first_position, events);
    cr_assert_eq(r[1].first_position, events + 1);
    ag_store_close(s);
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, NULL), 0);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_eq(rep.events, events + 2);
}
