/* Unit tests of the event store port: the conformance suite every adapter passes
 * (the embedded log here; PostgreSQL through tests/unit/store_pg, see
 * tests/lib/store_conformance.h). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "lib/store_conformance.h"

static char dir[64];
static struct ag_store *s;

static struct ag_store *open_at(const char *d, const struct ag_store_options *o)
{
    struct ag_store *st = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = conformance_open(d, o, &st, &err);
    cr_assert_eq(rc, 0, "open %s: %s", d, ag_err_msg(&err, rc));
    return st;
}

static void setup(void)
{
    strcpy(dir, "/tmp/agora-store-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    s = open_at(dir, &o);
}

static void teardown(void)
{
    ag_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static struct ag_event_data ev(const char *type, const char *data)
{
    return (struct ag_event_data){
        .type = type, .type_len = strlen(type), .data = data, .data_len = data ? strlen(data) : 0};
}

static int append1(const char *stream, int64_t expected, const char *type, const char *data,
                   struct ag_append_result *res, struct ag_err *err)
{
    struct ag_event_data e = ev(type, data);
    return ag_store_append(s, stream, strlen(stream), expected, &e, 1, res, err);
}

TestSuite(store, .init = setup, .fini = teardown);

/* ---- expected versions ---- */

Test(store, expected_version_rules)
{
    struct ag_append_result r;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(append1("a", AG_STORE_STREAM_EXISTS, "T", "{}", &r, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, -1, "actual version of a missing stream is -1");
    cr_assert_eq(append1("a", 0, "T", "{}", &r, &err), AG_ECONFLICT);
    cr_assert_eq(append1("a", AG_STORE_NO_STREAM, "T", "{}", &r, NULL), 0);
    cr_assert_eq(r.first_version, 0);
    POS_EQ(r.first_position, 0);
    cr_assert_eq(append1("a", AG_STORE_NO_STREAM, "T", "{}", &r, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, 0);
    cr_assert(strstr(err.msg, "stream 'a'") != NULL, "message names the stream: %s", err.msg);
    cr_assert_eq(append1("a", 0, "T", "{}", &r, NULL), 0);
    cr_assert_eq(r.last_version, 1);
    cr_assert_eq(append1("a", 0, "T", "{}", &r, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, 1);
    cr_assert_eq(append1("a", 5, "T", "{}", &r, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, 1);
    cr_assert_eq(append1("a", AG_STORE_STREAM_EXISTS, "T", "{}", &r, NULL), 0);
    cr_assert_eq(r.last_version, 2);
    cr_assert_eq(append1("a", AG_STORE_ANY, "T", "{}", &r, NULL), 0);
    cr_assert_eq(r.last_version, 3);
    POS_EQ(r.last_position, 3);
    cr_assert_eq(append1("b", AG_STORE_ANY, "T", "{}", &r, NULL), 0);
    cr_assert_eq(r.first_version, 0);
    POS_EQ(r.first_position, 4);
    int64_t v;
    ag_store_stream_version(s, "a", 1, &v);
    cr_assert_eq(v, 3);
    ag_store_stream_version(s, "zzz", 3, &v);
    cr_assert_eq(v, -1);
}

Test(store, batch_is_atomic_and_versions_are_contiguous)
{
    struct ag_event_data b[3] = {ev("A", "1"), ev("B", "[2]"), ev("C", "\"three\"")};
    struct ag_append_result r;
    cr_assert_eq(ag_store_append(s, "x", 1, AG_STORE_NO_STREAM, b, 3, &r, NULL), 0);
    cr_assert_eq(r.first_version, 0);
    cr_assert_eq(r.last_version, 2);
    POS_EQ(r.last_position, 2);
    /* a conflicting batch stores none of its events */
    struct ag_err err;
    cr_assert_eq(ag_store_append(s, "x", 1, 0, b, 3, &r, &err), AG_ECONFLICT);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(conformance_events(s, st.events), 3);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(s, "x", 1, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    cr_assert_eq(p.events[1].data_len, 3);
    cr_assert_eq(memcmp(p.events[2].type, "C", 1), 0);
    ag_event_page_free(&p);
}

/* ---- idempotent re-append ---- */

static struct ag_event_data with_id(const char *type, const char *data, uint8_t tag)
{
    struct ag_event_data e = ev(type, data);
    memset(e.id.b, tag, 16);
    e.id.b[6] = 0x70;
    return e;
}

Test(store, reappend_same_ids_returns_original_result)
{
    struct ag_event_data b[2] = {with_id("A", "{\"n\":1}", 1), with_id("B", "{\"n\":2}", 2)};
    struct ag_append_result r1, r2;
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, b, 2, &r1, NULL), 0);
    append1("other", AG_STORE_ANY, "T", "{}", NULL, NULL);
    append1("o", 1, "C", "{}", NULL, NULL);
    /* the same request again, as a client retrying after a timeout */
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, b, 2, &r2, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(&r1, &r2, sizeof r1), 0, "original result returned");
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_ANY, b, 2, &r2, NULL), 0);
    POS_EQ(r2.first_position, r1.first_position);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_STREAM_EXISTS, b, 2, &r2, NULL), 0);
    cr_assert_eq(r2.last_version, 1);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(conformance_events(s, st.events), 4, "nothing stored twice");
}

Test(store, reused_id_with_other_content_is_an_error)
{
    struct ag_event_data a = with_id("A", "{\"n\":1}", 9);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, &a, 1, NULL, NULL), 0);
    struct ag_event_data b = with_id("A", "{\"n\":2}", 9);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, &b, 1, NULL, &err),
                 AG_EIDEMPOTENCY);
    cr_assert(strstr(err.msg, "different content"), "%s", err.msg);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_ANY, &b, 1, NULL, NULL), AG_EIDEMPOTENCY);
}

Test(store, idempotency_survives_reopen)
{
    struct ag_event_data a = with_id("A", "{}", 7);
    struct ag_append_result r1, r2;
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, &a, 1, &r1, NULL), 0);
    ag_store_close(s);
    struct ag_store_options o = {.no_sync = true};
    s = open_at(dir, &o);
    cr_assert_eq(ag_store_append(s, "o", 1, AG_STORE_NO_STREAM, &a, 1, &r2, NULL), 0);
    POS_EQ(r2.first_position, r1.first_position);
}

/* ---- validation ---- */

Test(store, validation_errors_are_clear)
{
    struct ag_err err;
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[299] = 0;
    struct {
        const char *stream, *type, *data, *needle;
        int code;
    } cases[] = {
        {"", "T", "{}", "empty", AG_EINVAL},
        {longname, "T", "{}", "limit is 255", AG_EINVAL},
        {"bad\x01name", "T", "{}", "control character", AG_EINVAL},
        {"bad\xff", "T", "{}", "UTF-8", AG_EINVAL},
        {"$all", "T", "{}", "reserved", AG_EINVAL},
        {"ok", "", "{}", "type is empty", AG_EINVAL},
        {"ok", "T\n", "{}", "control", AG_EINVAL},
        {"ok", "T", "{\"a\":", "not valid JSON", AG_EJSON},
        {"ok", "T", "{\"a\":1,\"a\":2}", "not valid JSON", AG_EJSON},
        {"ok", "T", "nope", "not valid JSON", AG_EJSON},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ag_err_clear(&err);
        struct ag_event_data e = ev(cases[i].type, cases[i].data);
        int rc = ag_store_append(s, cases[i].stream, strlen(cases[i].stream), AG_STORE_ANY, &e, 1,
                                 NULL, &err);
        cr_assert_eq(rc, cases[i].code, "case %zu: %s", i, ag_errname(rc));
        cr_assert(strstr(err.msg, cases[i].needle), "case %zu: '%s' lacks '%s'", i, err.msg,
                  cases[i].needle);
    }
    struct ag_event_data m = ev("T", "{}");
    m.metadata = "[1]", m.metadata_len = 3;
    cr_assert_eq(ag_store_append(s, "ok", 2, AG_STORE_ANY, &m, 1, NULL, &err), AG_EJSON);
    cr_assert(strstr(err.msg, "metadata must be a JSON object"));
    cr_assert_eq(ag_store_append(s, "ok", 2, AG_STORE_ANY, &m, 0, NULL, &err), AG_EINVAL);
    struct ag_event_data dup[2] = {with_id("A", "1", 3), with_id("B", "2", 3)};
    cr_assert_eq(ag_store_append(s, "ok", 2, AG_STORE_ANY, dup, 2, NULL, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "same id"));
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(conformance_events(s, st.events), 0, "nothing stored by rejected appends");
}

Test(store, size_limit_is_configurable)
{
    ag_store_close(s);
    struct ag_store_options o = {.no_sync = true, .max_event_bytes = 100};
    s = open_at(dir, &o);
    char big[200];
    memset(big, ' ', sizeof big - 3);
    big[0] = '"';
    big[sizeof big - 3] = '"';
    big[sizeof big - 2] = 0;
    struct ag_err err;
    cr_assert_eq(append1("a", AG_STORE_ANY, "T", big, NULL, &err), AG_ETOOBIG);
    cr_assert(strstr(err.msg, "limit is 100"), "%s", err.msg);
    cr_assert_eq(append1("a", AG_STORE_ANY, "T", "\"small\"", NULL, NULL), 0);
}

/* ---- reads and paging ---- */

static void fill(const char *stream, int n)
{
    for (int i = 0; i < n; i++) {
        char data[32];
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        cr_assert_eq(append1(stream, AG_STORE_ANY, "T", data, NULL, NULL), 0);
    }
}

Test(store, read_stream_pages_forward_and_backward)
{
    fill("s", 25);
    fill("t", 3);
    struct ag_event_page p;
    int64_t from = 0, seen = 0;
    bool end = false;
    while (!end) {
        cr_assert_eq(ag_store_read_stream(s, "s", 1, from, AG_READ_FORWARD, 10, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++) cr_assert_eq(p.events[i].version, seen++);
        from = p.next_version, end = p.end;
        ag_event_page_free(&p);
    }
    cr_assert_eq(seen, 25);
    cr_assert_eq(ag_store_read_stream(s, "s", 1, -1, AG_READ_BACKWARD, 4, &p, NULL), 0);
    cr_assert_eq(p.count, 4);
    cr_assert_eq(p.events[0].version, 24);
    cr_assert_eq(p.events[3].version, 21);
    cr_assert_eq(p.next_version, 20);
    cr_assert_not(p.end);
    ag_event_page_free(&p);
    cr_assert_eq(ag_store_read_stream(s, "s", 1, 2, AG_READ_BACKWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    cr_assert(p.end);
    ag_event_page_free(&p);
    cr_assert_eq(ag_store_read_stream(s, "nope", 4, 0, AG_READ_FORWARD, 10, &p, NULL),
                 AG_ENOTFOUND);
}

Test(store, read_all_pages_in_commit_order)
{
    ONE_ALL();
    for (int i = 0; i < 100; i++) fill(i % 2 ? "odd" : "even", 1);
    struct ag_event_page p;
    uint64_t from = 0, seen = 0;
    for (bool end = false; !end;) {
        cr_assert_eq(ag_store_read_all(s, from, AG_READ_FORWARD, 7, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++) {
            cr_assert_eq(p.events[i].position, seen);
            cr_assert_eq(p.events[i].version, (int64_t)seen / 2);
            seen++;
        }
        from = p.next_position, end = p.end;
        ag_event_page_free(&p);
    }
    cr_assert_eq(seen, 100);
    cr_assert_eq(ag_store_read_all(s, 33, AG_READ_FORWARD, 5, &p, NULL), 0);
    cr_assert_eq(p.events[0].position, 33, "unaligned start");
    ag_event_page_free(&p);
    cr_assert_eq(ag_store_read_all(s, UINT64_MAX, AG_READ_BACKWARD, 3, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    cr_assert_eq(p.events[0].position, 99);
    cr_assert_eq(p.events[2].position, 97);
    POS_EQ(p.next_position, 96);
    ag_event_page_free(&p);
    cr_assert_eq(ag_store_read_all(s, 100, AG_READ_FORWARD, 5, &p, NULL), 0);
    cr_assert_eq(p.count, 0);
    cr_assert(p.end);
    ag_event_page_free(&p);
}

Test(store, events_carry_all_fields)
{
    ONE_ALL();
    struct ag_event_data e = with_id("OrderPlaced", "{\"total\":1999}", 5);
    e.metadata = "{\"correlationId\":\"c-1\"}";
    e.metadata_len = strlen(e.metadata);
    cr_assert_eq(ag_store_append(s, "order-1", 7, AG_STORE_NO_STREAM, &e, 1, NULL, NULL), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 1, &p, NULL), 0);
    struct ag_buf b;
    ag_buf_init(&b);
    ag_event_to_json(&p.events[0], &b);
    cr_assert(strstr(b.data,
                     "\"stream\":\"order-1\",\"version\":0,\"position\":0,"
                     "\"id\":\"05050505-0505-7005-0505-050505050505\",\"type\":\"OrderPlaced\""),
              "%s", b.data);
    cr_assert(
        strstr(b.data, "\"data\":{\"total\":1999},\"metadata\":{\"correlationId\":\"c-1\"}}"));
    cr_assert(strstr(b.data, "\"time\":\"20"));
    ag_buf_free(&b);
    ag_event_page_free(&p);
}

/* ---- snapshots ---- */

Test(store, snapshot_roundtrip_and_errors)
{
    struct ag_snapshot snap;
    struct ag_err err;
    cr_assert_eq(ag_store_save_snapshot(s, "acc", 3, 0, "{}", 2, &err), AG_ENOTFOUND);
    fill("acc", 5);
    cr_assert_eq(ag_store_load_snapshot(s, "acc", 3, &snap, NULL), AG_ENOTFOUND);
    cr_assert_eq(ag_store_save_snapshot(s, "acc", 3, 9, "{}", 2, &err), AG_EINVAL);
    cr_assert_eq(ag_store_save_snapshot(s, "acc", 3, 2, "{\"balance\":10}", 14, NULL), 0);
    cr_assert_eq(ag_store_save_snapshot(s, "acc", 3, 4, "{\"balance\":30}", 14, NULL), 0);
    cr_assert_eq(ag_store_load_snapshot(s, "acc", 3, &snap, NULL), 0);
    cr_assert_eq(snap.version, 4);
    cr_assert_str_eq(snap.state, "{\"balance\":30}");
    ag_snapshot_free(&snap);
    /* snapshots are not events */
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(conformance_events(s, st.events), 5);
    fill("acc", 1);
    ag_store_close(s);
    struct ag_store_options o = {.no_sync = true};
    s = open_at(dir, &o);
    cr_assert_eq(ag_store_load_snapshot(s, "acc", 3, &snap, NULL), 0, "survives reopen");
    cr_assert_eq(snap.version, 4);
    ag_snapshot_free(&snap);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    if (!CONF_SHARDED) cr_assert_eq(p.count, 6); /* a sharded read: shard 0's page */
    POS_EQ(p.events[5].position, 5);             /* snapshot records take no position */
    ag_event_page_free(&p);
}

/* ---- persistence ---- */

Test(store, reopen_keeps_everything_with_and_without_checkpoint)
{
    LOG_ONLY();
    fill("a", 40);
    fill("b", 9);
    ag_store_close(s);
    struct ag_store_options o = {.no_sync = true};
    s = open_at(dir, &o);
    int64_t v;
    ag_store_stream_version(s, "a", 1, &v);
    cr_assert_eq(v, 39);
    ag_store_close(s);
    char path[128];
    snprintf(path, sizeof path, "%s/index.ckpt", dir);
    cr_assert_eq(unlink(path), 0);
    s = open_at(dir, &o);
    ag_store_stream_version(s, "b", 1, &v);
    cr_assert_eq(v, 8);
    struct ag_append_result r;
    cr_assert_eq(append1("b", 8, "T", "{}", &r, NULL), 0);
    POS_EQ(r.first_position, 49);
}

Test(store, segments_roll_and_reads_cross_them)
{
    LOG_ONLY();
    ag_store_close(s);
    struct ag_store_options o = {.no_sync = true, .segment_bytes = 4u << 20};
    s = open_at(dir, &o);
    char data[1100];
    memset(data, 'x', sizeof data);
    data[0] = '"', data[1098] = '"', data[1099] = 0;
    for (int i = 0; i < 9000; i++)
        cr_assert_eq(append1(i % 3 ? "r" : "q", AG_STORE_ANY, "T", data, NULL, NULL), 0);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_geq(st.segments, 3, "segments: %llu", (unsigned long long)st.segments);
    struct ag_event_page p;
    uint64_t from = 0, seen = 0;
    for (bool end = false; !end;) {
        cr_assert_eq(ag_store_read_all(s, from, AG_READ_FORWARD, 1000, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++) cr_assert_eq(p.events[i].position, seen++);
        from = p.next_position, end = p.end;
        ag_event_page_free(&p);
    }
    cr_assert_eq(seen, 9000);
    ag_store_close(s);
    s = open_at(dir, &o);
    int64_t v;
    ag_store_stream_version(s, "r", 1, &v);
    cr_assert_eq(v, 5999);
    cr_assert_eq(ag_store_read_stream(s, "q", 1, 2999, AG_READ_FORWARD, 5, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    cr_assert_eq(p.events[0].position, 8997);
    ag_event_page_free(&p);
}

Test(store, read_only_open_sees_data_and_refuses_writes)
{
    fill("a", 3);
    struct ag_store_options ro = {.read_only = true};
    struct ag_store *r = open_at(dir, &ro);
    struct ag_store_stats st;
    ag_store_stats(r, &st);
    cr_assert_eq(conformance_events(r, st.events), 3);
    fill("a", 2); /* the writer goes on; the reader picks it up */
    ag_store_stats(r, &st);
    cr_assert_eq(conformance_events(r, st.events), 5);
    struct ag_err err;
    struct ag_event_data e = ev("T", "{}");
    cr_assert_eq(ag_store_append(r, "a", 1, AG_STORE_ANY, &e, 1, NULL, &err), AG_EINVAL);
    ag_store_close(r);
}

Test(store, second_writer_is_refused)
{
    LOG_ONLY();
    struct ag_store *t = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_log_open(dir, NULL, &t, &err), AG_ELOCKED);
    cr_assert(strstr(err.msg, "in use by another agora process"), "%s", err.msg);
}

/* ---- subscriptions ---- */

struct writer_arg {
    const char *stream;
    int n;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        struct ag_event_data e = ev("T", "{}");
        int rc = ag_store_append(s, a->stream, strlen(a->stream),
                                 i == 0 ? AG_STORE_NO_STREAM : i - 1, &e, 1, NULL, NULL);
        if (rc) return (void *)1;
    }
    return NULL;
}

Test(store, subscription_catches_up_then_goes_live_in_order)
{
    ONE_ALL();
    fill("pre", 50); /* history to catch up on */
    struct ag_store_sub *sub;
    cr_assert_eq(ag_store_subscribe(s, NULL, 0, 10, &sub, NULL), 0);
    pthread_t th[4];
    struct writer_arg args[4] = {{"w0", 200}, {"w1", 200}, {"w2", 200}, {"w3", 200}};
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, writer, &args[i]);
    uint64_t expect = 10;
    int64_t versions[4] = {-1, -1, -1, -1};
    while (expect < 850) {
        struct ag_event_page p;
        struct ag_err err;
        int rc = ag_store_sub_next(sub, 64, 5000, &p, &err);
        cr_assert_eq(rc, 0, "sub_next: %s", ag_err_msg(&err, rc));
        for (size_t i = 0; i < p.count; i++) {
            cr_assert_eq(p.events[i].position, expect, "no gap, no reorder");
            expect++;
            if (p.events[i].stream[0] == 'w') {
                int w = p.events[i].stream[1] - '0';
                cr_assert_eq(p.events[i].version, versions[w] + 1, "per-stream order");
                versions[w] = p.events[i].version;
            }
        }
        ag_event_page_free(&p);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        cr_assert_null(ret);
    }
    cr_assert_eq(ag_store_sub_checkpoint(sub), 850);
    struct ag_event_page p;
    cr_assert_eq(ag_store_sub_next(sub, 10, 50, &p, NULL), AG_ETIMEDOUT, "caught up: nothing new");
    ag_store_sub_free(sub);
}

Test(store, stream_subscription_sees_only_its_stream)
{
    fill("mine", 3);
    fill("theirs", 3);
    struct ag_store_sub *sub;
    cr_assert_eq(ag_store_subscribe(s, "mine", 4, 1, &sub, NULL), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_sub_next(sub, 10, 100, &p, NULL), 0);
    cr_assert_eq(p.count, 2);
    cr_assert_eq(p.events[0].version, 1);
    ag_event_page_free(&p);
    fill("theirs", 1);
    fill("mine", 1);
    cr_assert_eq(ag_store_sub_next(sub, 10, 1000, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    cr_assert_eq(p.events[0].version, 3);
    cr_assert_eq(memcmp(p.events[0].stream, "mine", 4), 0);
    ag_event_page_free(&p);
    ag_store_sub_free(sub);
}

/* ---- async appends on a libuv loop ---- */

struct async_ctx {
    int done;
    int conflicts;
    int64_t last_version;
    uv_thread_t loop_thread;
    uv_thread_t cb_thread;
};

static void on_appended(void *ud, int status, const struct ag_append_result *res,
                        const struct ag_err *err)
{
    struct async_ctx *c = ud;
    c->cb_thread = uv_thread_self();
    c->done++;
    if (status == AG_ECONFLICT) {
        c->conflicts++;
        cr_assert_not_null(err);
        cr_assert_eq(err->aux, 9);
    } else {
        cr_assert_eq(status, 0);
        if (res->last_version > c->last_version) c->last_version = res->last_version;
    }
}

Test(store, async_append_completes_on_the_loop)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ag_store_loop *l;
    cr_assert_eq(ag_store_loop_init(s, &loop, &l), 0);
    struct async_ctx c = {.last_version = -1, .loop_thread = uv_thread_self()};
    struct ag_event_data e = ev("T", "{}");
    struct ag_append_req reqs[11];
    for (int i = 0; i < 10; i++) {
        reqs[i] = (struct ag_append_req){.stream = "as",
                                         .stream_len = 2,
                                         .expected_version = AG_STORE_ANY,
                                         .events = &e,
                                         .count = 1,
                                         .cb = on_appended,
                                         .ud = &c};
        cr_assert_eq(ag_store_append_async(l, &reqs[i]), 0);
    }
    while (c.done < 10) uv_run(&loop, UV_RUN_ONCE);
    reqs[10] = (struct ag_append_req){.stream = "as",
                                      .stream_len = 2,
                                      .expected_version = 3,
                                      .events = &e,
                                      .count = 1,
                                      .cb = on_appended,
                                      .ud = &c};
    cr_assert_eq(ag_store_append_async(l, &reqs[10]), 0);
    while (c.done < 11) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c.conflicts, 1);
    cr_assert_eq(c.last_version, 9);
    cr_assert(uv_thread_equal(&c.cb_thread, &c.loop_thread), "callbacks run on the loop thread");
    ag_store_loop_close(l);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(store, expected_version_parsing)
{
    int64_t v;
    cr_assert_eq(ag_store_parse_expected("any", &v), 0);
    cr_assert_eq(v, AG_STORE_ANY);
    cr_assert_eq(ag_store_parse_expected("no-stream", &v), 0);
    cr_assert_eq(v, AG_STORE_NO_STREAM);
    cr_assert_eq(ag_store_parse_expected("exists", &v), 0);
    cr_assert_eq(v, AG_STORE_STREAM_EXISTS);
    cr_assert_eq(ag_store_parse_expected("42", &v), 0);
    cr_assert_eq(v, 42);
    cr_assert_eq(ag_store_parse_expected("-1", &v), AG_EINVAL);
    cr_assert_eq(ag_store_parse_expected("x", &v), AG_EINVAL);
}
