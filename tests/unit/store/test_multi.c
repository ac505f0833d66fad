/* Unit tests of the multi-stream append (ag_store_append_multi) on the embedded
 * log: all-or-nothing on conflict, versions and positions, idempotent re-append
 * per part, reads and subscriptions seeing one unit in commit order, validation,
 * and the port's answer for an adapter without the operation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lib/store_conformance.h"

static char dir[64];
static struct ag_store *s;

static struct ag_store *reopen(void)
{
    struct ag_store *st = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_store_options o = {.no_sync = true};
    int rc = conformance_open(dir, &o, &st, &err);
    cr_assert_eq(rc, 0, "open %s: %s", dir, ag_err_msg(&err, rc));
    return st;
}

static void setup(void)
{
    strcpy(dir, "/tmp/agora-multi-XXXXXX");
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

TestSuite(multi, .init = setup, .fini = teardown);

static struct ag_event_data ev(const char *type, const char *data, uint8_t tag)
{
    struct ag_event_data e = {
        .type = type, .type_len = strlen(type), .data = data, .data_len = strlen(data)};
    if (tag) {
        memset(e.id.b, tag, 16);
        e.id.b[6] = 0x70;
    }
    return e;
}

static struct ag_append_part part(const char *stream, int64_t expected,
                                  const struct ag_event_data *e, size_t n)
{
    return (struct ag_append_part){stream, strlen(stream), expected, e, n};
}

static void append1(const char *stream, int64_t expected)
{
    struct ag_event_data e = ev("T", "{}", 0);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_append(s, stream, strlen(stream), expected, &e, 1, NULL, &err);
    cr_assert_eq(rc, 0, "append %s: %s", stream, err.msg);
}

static uint64_t events_in_store(void)
{
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    return conformance_events(s, st.events);
}

Test(multi, parts_get_versions_and_consecutive_positions)
{
    append1("order-1", AG_STORE_NO_STREAM);
    append1("other", AG_STORE_NO_STREAM);
    struct ag_event_data a[2] = {ev("Reserved", "{\"n\":1}", 0), ev("Charged", "{\"n\":2}", 0)};
    struct ag_event_data b[1] = {ev("StepDone", "{\"step\":1}", 0)};
    struct ag_event_data c[3] = {ev("X", "1", 0), ev("Y", "2", 0), ev("Z", "3", 0)};
    struct ag_append_part p[3] = {part("order-1", 0, a, 2),
                                  part("saga-1", AG_STORE_NO_STREAM, b, 1),
                                  part("ledger", AG_STORE_ANY, c, 3)};
    struct ag_append_result r[3];
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, p, 3, r, &err), 0, "%s", err.msg);
    cr_assert_eq(r[0].first_version, 1);
    cr_assert_eq(r[0].last_version, 2);
    POS_EQ(r[0].first_position, 2);
    POS_EQ(r[0].last_position, 3);
    cr_assert_eq(r[1].first_version, 0);
    POS_EQ(r[1].first_position, 4);
    POS_EQ(r[1].last_position, 4);
    cr_assert_eq(r[2].first_version, 0);
    cr_assert_eq(r[2].last_version, 2);
    POS_EQ(r[2].first_position, 5);
    POS_EQ(r[2].last_position, 7);
    int64_t v;
    ag_store_stream_version(s, "order-1", 7, &v);
    cr_assert_eq(v, 2);
    ag_store_stream_version(s, "ledger", 6, &v);
    cr_assert_eq(v, 2);
    append1("saga-1", 0); /* the store goes on after the unit */
    cr_assert_eq(events_in_store(), 9);
}

Test(multi, a_conflict_on_any_part_writes_nothing)
{
    append1("a", AG_STORE_NO_STREAM);
    append1("b", AG_STORE_NO_STREAM);
    append1("b", 0);
    struct ag_event_data e[2] = {ev("T", "{}", 0), ev("U", "{}", 0)};
    struct ag_err err;
    /* each expected-version rule failing in a later part */
    int64_t bad[] = {5, AG_STORE_NO_STREAM, 0};
    for (size_t i = 0; i < 3; i++) {
        struct ag_append_part p[3] = {part("a", 0, e, 1), part("new", AG_STORE_NO_STREAM, e, 2),
                                      part("b", bad[i], e + 1, 1)};
        ag_err_clear(&err);
        cr_assert_eq(ag_store_append_multi(s, p, 3, NULL, &err), AG_ECONFLICT);
        cr_assert_eq(err.aux, 1, "the actual version of the failing stream");
        cr_assert(strstr(err.msg, "stream 'b'"), "names the stream: %s", err.msg);
    }
    struct ag_append_part q[2] = {part("a", 0, e, 1), part("gone", AG_STORE_STREAM_EXISTS, e, 1)};
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, q, 2, NULL, &err), AG_ECONFLICT);
    cr_assert_eq(err.aux, -1);
    cr_assert(strstr(err.msg, "stream 'gone'"), "%s", err.msg);
    cr_assert_eq(events_in_store(), 3, "nothing of any failed unit was written");
    int64_t v;
    ag_store_stream_version(s, "new", 3, &v);
    cr_assert_eq(v, -1);
    ag_store_stream_version(s, "a", 1, &v);
    cr_assert_eq(v, 0);
    /* and the right versions work */
    struct ag_append_part ok[2] = {part("a", 0, e, 1), part("b", 1, e, 2)};
    cr_assert_eq(ag_store_append_multi(s, ok, 2, NULL, NULL), 0);
    cr_assert_eq(events_in_store(), 6);
}

Test(multi, reappend_after_a_timeout_is_idempotent_per_part)
{
    struct ag_event_data a[2] = {ev("A1", "{}", 1), ev("A2", "{}", 2)};
    struct ag_event_data b[1] = {ev("B1", "{}", 3)};
    struct ag_append_part p[2] = {part("a", AG_STORE_NO_STREAM, a, 2),
                                  part("b", AG_STORE_NO_STREAM, b, 1)};
    struct ag_append_result r1[2], r2[2];
    cr_assert_eq(ag_store_append_multi(s, p, 2, r1, NULL), 0);
    append1("a", 1); /* the streams move on */
    append1("b", 0);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, p, 2, r2, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(r1, r2, sizeof r1), 0, "the original results");
    cr_assert_eq(events_in_store(), 5, "nothing stored twice");
    /* after a reopen (index rebuilt from the log) as well, with ANY */
    ag_store_close(s);
    s = reopen();
    p[0].expected_version = p[1].expected_version = AG_STORE_ANY;
    cr_assert_eq(ag_store_append_multi(s, p, 2, r2, NULL), 0);
    cr_assert_eq(memcmp(r1, r2, sizeof r1), 0);
    cr_assert_eq(events_in_store(), 5);
    /* a part that repeats is answered from the log; a new part is written */
    struct ag_event_data c[1] = {ev("C1", "{}", 4)};
    struct ag_append_part q[2] = {part("a", AG_STORE_NO_STREAM, a, 2),
                                  part("c", AG_STORE_NO_STREAM, c, 1)};
    struct ag_append_result r3[2];
    cr_assert_eq(ag_store_append_multi(s, q, 2, r3, NULL), 0);
    cr_assert_eq(memcmp(&r3[0], &r1[0], sizeof r1[0]), 0);
    cr_assert_eq(r3[1].first_version, 0);
    POS_EQ(r3[1].first_position, 5);
    cr_assert_eq(events_in_store(), 6);
    /* the same id with other content fails the whole call (over shards only
     * when found before anything is written: see src/store/shard/xs.c) */
    if (CONF_SHARDED) return;
    struct ag_event_data a2[2] = {ev("A1", "{\"x\":1}", 1), ev("A2", "{}", 2)};
    struct ag_event_data d[1] = {ev("D", "{}", 5)};
    struct ag_append_part w[2] = {part("d", AG_STORE_NO_STREAM, d, 1),
                                  part("a", AG_STORE_ANY, a2, 2)};
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, w, 2, NULL, &err), AG_EIDEMPOTENCY);
    cr_assert_eq(events_in_store(), 6, "nothing written");
}

Test(multi, reads_and_all_see_the_unit_in_one_commit_order)
{
    ONE_ALL();
    append1("x", AG_STORE_NO_STREAM);
    struct ag_event_data a[2] = {ev("A1", "{\"i\":1}", 0), ev("A2", "{\"i\":2}", 0)};
    struct ag_event_data b[2] = {ev("B1", "{\"i\":3}", 0), ev("B2", "{\"i\":4}", 0)};
    struct ag_append_part p[2] = {part("pa", AG_STORE_ANY, a, 2), part("pb", AG_STORE_ANY, b, 2)};
    cr_assert_eq(ag_store_append_multi(s, p, 2, NULL, NULL), 0);
    append1("x", 0);
    for (int round = 0; round < 2; round++) { /* live index, then rebuilt by a scan */
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 100, &pg, NULL), 0);
        cr_assert_eq(pg.count, 6);
        const char *types[] = {"T", "A1", "A2", "B1", "B2", "T"};
        for (size_t i = 0; i < 6; i++) {
            cr_assert_eq(pg.events[i].position, i);
            cr_assert_eq(pg.events[i].type_len, strlen(types[i]));
            cr_assert_eq(memcmp(pg.events[i].type, types[i], pg.events[i].type_len), 0);
        }
        cr_assert_eq(pg.events[1].time_ns, pg.events[4].time_ns, "one commit time");
        ag_event_page_free(&pg);
        cr_assert_eq(ag_store_read_all(s, UINT64_MAX, AG_READ_BACKWARD, 3, &pg, NULL), 0);
        cr_assert_eq(pg.count, 3);
        cr_assert_eq(pg.events[1].position, 4);
        ag_event_page_free(&pg);
        cr_assert_eq(ag_store_read_stream(s, "pb", 2, 0, AG_READ_FORWARD, 10, &pg, NULL), 0);
        cr_assert_eq(pg.count, 2);
        cr_assert_eq(pg.events[0].version, 0);
        cr_assert_eq(pg.events[0].position, 3);
        cr_assert_eq(pg.events[1].position, 4);
        ag_event_page_free(&pg);
        ag_store_close(s);
        char path[128];
        snprintf(path, sizeof path, "%s/index.ckpt", dir);
        if (round == 0) remove(path); /* the second round scans the whole log */
        s = reopen();
    }
#ifndef AG_TEST_STORE_PG
    struct ag_log_verify_report rep;
    ag_store_close(s);
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, NULL), 0);
    cr_assert(rep.ok, "verify: %s", rep.problem);
    cr_assert_eq(rep.events, 6);
    s = reopen();
#endif
}

Test(multi, subscriptions_see_every_part)
{
    ONE_ALL();
    struct ag_store_sub *all, *one;
    cr_assert_eq(ag_store_subscribe(s, NULL, 0, 0, &all, NULL), 0);
    cr_assert_eq(ag_store_subscribe(s, "sb", 2, 0, &one, NULL), 0);
    struct ag_event_data a[1] = {ev("A", "{}", 0)};
    struct ag_event_data b[2] = {ev("B1", "{}", 0), ev("B2", "{}", 0)};
    struct ag_append_part p[2] = {part("sa", AG_STORE_NO_STREAM, a, 1),
                                  part("sb", AG_STORE_NO_STREAM, b, 2)};
    cr_assert_eq(ag_store_append_multi(s, p, 2, NULL, NULL), 0);
    struct ag_event_page pg;
    size_t got = 0;
    while (got < 3) {
        cr_assert_eq(ag_store_sub_next(all, 10, 2000, &pg, NULL), 0);
        for (size_t i = 0; i < pg.count; i++, got++) cr_assert_eq(pg.events[i].position, got);
        ag_event_page_free(&pg);
    }
    cr_assert_eq(ag_store_sub_next(one, 10, 2000, &pg, NULL), 0);
    cr_assert_eq(pg.count, 2);
    cr_assert_eq(pg.events[1].version, 1);
    ag_event_page_free(&pg);
    ag_store_sub_free(all);
    ag_store_sub_free(one);
}

Test(multi, concurrent_units_and_single_appends_stay_consistent)
{
    /* many units in the same groups as single appends: versions never collide */
    for (int i = 0; i < 50; i++) {
        struct ag_event_data e[2] = {ev("T", "{}", 0), ev("U", "{}", 0)};
        struct ag_append_part p[2] = {part("m1", AG_STORE_ANY, e, 2),
                                      part("m2", AG_STORE_ANY, e, 1)};
        cr_assert_eq(ag_store_append_multi(s, p, 2, NULL, NULL), 0);
        append1("m2", AG_STORE_ANY);
    }
    int64_t v1, v2;
    ag_store_stream_version(s, "m1", 2, &v1);
    ag_store_stream_version(s, "m2", 2, &v2);
    cr_assert_eq(v1, 99);
    cr_assert_eq(v2, 99);
    cr_assert_eq(events_in_store(), 200);
}

Test(multi, validation)
{
    struct ag_event_data e[1] = {ev("T", "{}", 7)};
    struct ag_event_data e2[1] = {ev("U", "{}", 7)};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(s, NULL, 0, NULL, &err), AG_EINVAL);
    struct ag_append_part dup[2] = {part("a", AG_STORE_ANY, e, 1), part("a", AG_STORE_ANY, e2, 1)};
    cr_assert_eq(ag_store_append_multi(s, dup, 2, NULL, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "both append to 'a'"), "%s", err.msg);
    struct ag_append_part same_id[2] = {part("a", AG_STORE_ANY, e, 1),
                                        part("b", AG_STORE_ANY, e2, 1)};
    cr_assert_eq(ag_store_append_multi(s, same_id, 2, NULL, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "same id"), "%s", err.msg);
    struct ag_append_part bad[2] = {part("a", AG_STORE_ANY, e, 1), part("$x", AG_STORE_ANY, e2, 1)};
    cr_assert_eq(ag_store_append_multi(s, bad, 2, NULL, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "part 1:"), "%s", err.msg);
    struct ag_append_part empty[2] = {part("a", AG_STORE_ANY, e, 1),
                                      part("b", AG_STORE_ANY, e2, 0)};
    cr_assert_eq(ag_store_append_multi(s, empty, 2, NULL, &err), AG_EINVAL);
    struct ag_append_part many[AG_STORE_MULTI_MAX + 1];
    for (size_t i = 0; i <= AG_STORE_MULTI_MAX; i++) many[i] = part("a", AG_STORE_ANY, e, 1);
    cr_assert_eq(ag_store_append_multi(s, many, AG_STORE_MULTI_MAX + 1, NULL, &err), AG_ETOOBIG);
    cr_assert_eq(events_in_store(), 0);
}

static int no_append(struct ag_store *st, const char *stream, size_t len, int64_t expected,
                     const struct ag_event_data *e, size_t n, struct ag_append_result *out,
                     struct ag_err *err)
{
    (void)st, (void)stream, (void)len, (void)expected, (void)e, (void)n, (void)out, (void)err;
    return AG_EIO;
}

Test(multi, an_adapter_without_it_says_unsupported)
{
    static const struct ag_store_ops ops = {.name = "bare", .append = no_append};
    struct ag_store bare = {.ops = &ops};
    struct ag_event_data e[1] = {ev("T", "{}", 0)};
    struct ag_append_part p[1] = {part("a", AG_STORE_ANY, e, 1)};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append_multi(&bare, p, 1, NULL, &err), AG_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "'bare'"), "%s", err.msg);
}

/* ---- the async twin ---- */

struct multi_async_ctx {
    int done, status[4];
    struct ag_append_result first[4];
    long long aux[4];
};

static void on_unit(void *ud, int status, const struct ag_append_result *res,
                    const struct ag_err *err)
{
    struct multi_async_ctx *c = ud;
    c->status[c->done] = status;
    c->aux[c->done] = err ? err->aux : 0;
    if (!status) c->first[c->done] = *res;
    c->done++;
}

Test(multi, async_twin_completes_on_the_loop_with_every_part)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ag_store_loop *l;
    cr_assert_eq(ag_store_loop_init(s, &loop, &l), 0);
    append1("y", AG_STORE_NO_STREAM);
    struct multi_async_ctx c = {0};
    struct ag_event_data a[2] = {ev("A1", "{}", 0), ev("A2", "{}", 0)};
    struct ag_event_data b[1] = {ev("B1", "{}", 0)};
    struct ag_append_part p[2] = {part("y", 0, a, 2), part("z", AG_STORE_NO_STREAM, b, 1)};
    struct ag_append_result res[2];
    struct ag_append_multi_req r1 = {
        .parts = p, .nparts = 2, .results = res, .cb = on_unit, .ud = &c};
    cr_assert_eq(ag_store_append_multi_async(l, &r1), 0);
    while (c.done < 1) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c.status[0], 0);
    cr_assert_eq(c.first[0].first_version, 1);
    cr_assert_eq(res[0].last_version, 2);
    cr_assert_eq(res[1].first_version, 0);
    POS_EQ(res[1].first_position, 3);
    /* a conflict (the same unit again with new events) comes through the callback */
    struct ag_event_data b2[1] = {ev("B2", "{}", 0)};
    struct ag_append_part q[2] = {part("y", 2, a, 1), part("z", AG_STORE_NO_STREAM, b2, 1)};
    struct ag_append_multi_req r2 = {.parts = q, .nparts = 2, .cb = on_unit, .ud = &c};
    cr_assert_eq(ag_store_append_multi_async(l, &r2), 0);
    /* and a validation failure too */
    struct ag_append_multi_req r3 = {.parts = q, .nparts = 0, .cb = on_unit, .ud = &c};
    cr_assert_eq(ag_store_append_multi_async(l, &r3), 0);
    while (c.done < 3) uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(c.status[1] == AG_ECONFLICT ? c.aux[1] : c.aux[2], 0, "z is at version 0");
    cr_assert(c.status[1] + c.status[2] == AG_ECONFLICT + AG_EINVAL, "%d %d", c.status[1],
              c.status[2]);
    cr_assert_eq(events_in_store(), 4);
    ag_store_loop_close(l);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
