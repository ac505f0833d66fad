/*
 * What only the PostgreSQL adapter has: gap-safe $all under a transaction held
 * open below later commits, the versioned schema (a newer database is refused, an
 * older one migrated at open), losing the server's connections mid-run
 * (AG_EUNAVAILABLE, health, reconnect), and $all read ahead for sequential readers.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/store_pg.h"
#include "lib/pgtest.h"

static char tag[16], uri[1024];
static struct ag_store *s;

static struct ag_store *open_store(void)
{
    struct ag_store *st = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_store_options o = {.retry_min_ns = 50000000ull, .retry_max_ns = 200000000ull};
    int rc = ag_store_open(uri, &o, &st, &err);
    cr_assert_eq(rc, 0, "open %s: %s", uri, ag_err_msg(&err, rc));
    return st;
}

static void setup(void)
{
    static int n;
    snprintf(tag, sizeof tag, "p%d_%d", (int)getpid(), n++);
    if (ag_test_pg_uri(tag, uri, sizeof uri))
        cr_skip_test("AGORA_TEST_PG_URI is not set (run through tests/lib/pgtmp.sh)");
    strncat(uri, "&pool_size=3&application_name=", sizeof uri - strlen(uri) - 1);
    strncat(uri, tag, sizeof uri - strlen(uri) - 1);
    s = open_store();
}

static void teardown(void)
{
    ag_store_close(s);
}

TestSuite(pg, .init = setup, .fini = teardown);

/* A raw session in the test's schema. */
static PGconn *raw(void)
{
    PGconn *c = PQconnectdb(ag_test_pg_conninfo());
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path = %s", tag);
    PQclear(PQexec(c, sql));
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static int append1(const char *stream, int64_t expected, struct ag_append_result *res)
{
    struct ag_event_data e = {.type = "T", .type_len = 1, .data = "{}", .data_len = 2};
    struct ag_err err;
    ag_err_clear(&err);
    return ag_store_append(s, stream, strlen(stream), expected, &e, 1, res, &err);
}

struct writer {
    char stream[8];
    int n, failed;
    uint64_t positions[8];
    char why[512];
};

static void *write_stream(void *p)
{
    struct writer *w = p;
    for (int i = 0; i < w->n; i++) {
        struct ag_append_result r;
        struct ag_event_data e = {.type = "T", .type_len = 1, .data = "{}", .data_len = 2};
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_store_append(s, w->stream, strlen(w->stream), i == 0 ? AG_STORE_NO_STREAM : i - 1,
                            &e, 1, &r, &err)) {
            w->failed++;
            snprintf(w->why, sizeof w->why, "%s", err.msg);
            continue;
        }
        w->positions[i] = r.first_position;
    }
    return NULL;
}

Test(pg, all_never_passes_a_transaction_still_open_below_later_commits)
{
    for (int i = 0; i < 3; i++) cr_assert_eq(append1("before", AG_STORE_ANY, NULL), 0);
    struct ag_store_sub *sub;
    cr_assert_eq(ag_store_subscribe(s, NULL, 0, 0, &sub, NULL), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_sub_next(sub, 100, 2000, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    ag_event_page_free(&p);

    /* a transaction through the adapter's own append function, held open: it has
     * its transaction id (older than everything that follows) and its row */
    PGconn *held = raw(), *look = raw();
    exec_ok(held, "BEGIN");
    exec_ok(held, "SELECT * FROM append(ARRAY['held'], ARRAY[-2]::bigint[], ARRAY[1],"
                  " ARRAY['0190a000-0000-7000-8000-000000000001']::uuid[], ARRAY['Held'],"
                  " ARRAY['{}']::json[], ARRAY['{}']::json[])");
    /* later appends commit above it */
    struct writer w[3] = {{"w0", 5, 0, {0}}, {"w1", 5, 0, {0}}, {"w2", 5, 0, {0}}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, write_stream, &w[i]);
    for (int i = 0; i < 200 && scalar(look, "SELECT count(*) FROM events e JOIN streams s"
                                            " USING (stream_id) WHERE s.stream_name LIKE 'w_'") < 3;
         i++)
        usleep(20000);
    cr_assert_eq(scalar(look,
                        "SELECT count(*) FROM events e WHERE NOT EXISTS"
                        " (SELECT 1 FROM positions p WHERE p.global_position = e.global_position)"),
                 3, "each writer's first append is committed, unordered");
    /* ...and nobody sees past the open transaction */
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_sub_next(sub, 100, 300, &p, &err), AG_ETIMEDOUT, "%s", err.msg);
    cr_assert_eq(ag_store_read_all(s, 3, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_eq(p.count, 0, "read_all stops below the open transaction");
    ag_event_page_free(&p);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_eq(st.events, 3);

    exec_ok(held, "COMMIT");
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].failed, 0, "%s: %s", w[i].stream, w[i].why);
    }
    /* every event exactly once, dense, the held one first, each stream in order */
    uint64_t expect = 3;
    int64_t versions[3] = {-1, -1, -1};
    int held_seen = 0;
    while (expect < 19) {
        cr_assert_eq(ag_store_sub_next(sub, 4, 5000, &p, &err), 0, "%s", err.msg);
        for (size_t i = 0; i < p.count; i++, expect++) {
            const struct ag_event *e = &p.events[i];
            cr_assert_eq(e->position, expect, "dense, no repeats");
            if (e->stream_len == 4 && memcmp(e->stream, "held", 4) == 0) {
                held_seen++;
                cr_assert_eq(e->position, 3, "the older transaction comes first");
            } else {
                int k = e->stream[1] - '0';
                cr_assert_eq(e->version, versions[k] + 1, "per-stream order");
                versions[k] = e->version;
            }
        }
        ag_event_page_free(&p);
    }
    cr_assert_eq(held_seen, 1);
    for (int i = 0; i < 3; i++) cr_assert_eq(versions[i], 4);
    cr_assert_eq(ag_store_sub_next(sub, 10, 100, &p, NULL), AG_ETIMEDOUT, "nothing twice");
    /* what the appends were told matches what $all says */
    for (int i = 0; i < 3; i++) {
        struct ag_event_page sp;
        cr_assert_eq(ag_store_read_stream(s, w[i].stream, 2, 0, AG_READ_FORWARD, 10, &sp, NULL), 0);
        for (size_t k = 0; k < sp.count; k++)
            cr_assert_eq(sp.events[k].position, w[i].positions[k]);
        ag_event_page_free(&sp);
    }
    ag_store_sub_free(sub);
    PQfinish(held);
    PQfinish(look);
}

Test(pg, a_database_newer_than_the_binary_is_refused)
{
    int from = -1, to = -1;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_pg_migrate(uri, &from, &to, &err), 0, "%s", err.msg);
    cr_assert_eq(from, AG_STORE_PG_SCHEMA_VERSION, "open migrated already");
    cr_assert_eq(to, AG_STORE_PG_SCHEMA_VERSION);
    PGconn *c = raw();
    cr_assert_eq(scalar(c, "SELECT max(version) FROM schema_version"), AG_STORE_PG_SCHEMA_VERSION);
    exec_ok(c, "INSERT INTO schema_version (version) VALUES (99)");
    struct ag_store *t = NULL;
    cr_assert_eq(ag_store_open(uri, NULL, &t, &err), AG_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "version 99, newer than this agora understands"), "%s", err.msg);
    cr_assert_eq(ag_store_pg_migrate(uri, NULL, NULL, &err), AG_EUNSUPPORTED);
    exec_ok(c, "DELETE FROM schema_version WHERE version = 99");
    PQfinish(c);
}

Test(pg, losing_the_connections_mid_run_fails_fast_then_reconnects)
{
    cr_assert_eq(append1("a", AG_STORE_ANY, NULL), 0);
    PGconn *c = raw();
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE application_name = '%s' AND pid <> pg_backend_pid()",
             tag);
    cr_assert_geq(scalar(c, sql), 1);
    /* the pool finds its connections dead one by one; each failure is AG_EUNAVAILABLE */
    int rc = 0, unavailable = 0;
    for (int i = 0; i < 4; i++) {
        rc = append1("a", AG_STORE_ANY, NULL);
        if (rc == AG_EUNAVAILABLE)
            unavailable++;
        else
            cr_assert_eq(rc, 0, "%s", ag_errname(rc));
    }
    cr_assert_geq(unavailable, 1);
    struct ag_store_health h;
    ag_store_health(s, &h);
    cr_assert_geq(h.outages, 1);
    /* after the backoff it reconnects by itself and takes appends again */
    rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        usleep(50000);
        rc = append1("a", AG_STORE_ANY, NULL);
    }
    cr_assert_eq(rc, 0);
    ag_store_health(s, &h);
    cr_assert(h.writable, "%s", h.message);
    PQfinish(c);
}

/* ---- group commit: many callers, batches of appends on disjoint streams ---- */

struct crowd {
    int idx, n, failed;
    int64_t last_shared; /* the version its last shared append got */
    char why[512];
};

/* Each caller appends to its own stream (exact versions) and to one shared stream
 * (ANY), alternately: batches hold appends of other callers, and appends to the
 * shared stream must go to different batches. */
static void *crowd_main(void *p)
{
    struct crowd *c = p;
    char own[16];
    snprintf(own, sizeof own, "own-%d", c->idx);
    for (int i = 0; i < c->n; i++) {
        struct ag_event_data e = {.type = "T", .type_len = 1, .data = "{}", .data_len = 2};
        struct ag_append_result r;
        struct ag_err err;
        ag_err_clear(&err);
        int rc = i % 2 ? ag_store_append(s, "shared", 6, AG_STORE_ANY, &e, 1, &r, &err)
                       : ag_store_append(s, own, strlen(own),
                                         i == 0 ? AG_STORE_NO_STREAM : i / 2 - 1, &e, 1, &r, &err);
        if (rc) {
            c->failed++;
            snprintf(c->why, sizeof c->why, "%s", err.msg);
        } else if (i % 2) {
            c->last_shared = r.first_version;
        }
    }
    return NULL;
}

Test(pg, concurrent_callers_share_batches_and_every_stream_stays_in_order)
{
    enum { CALLERS = 12, EACH = 20 };
    struct crowd c[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        c[i] = (struct crowd){.idx = i, .n = EACH};
        pthread_create(&th[i], NULL, crowd_main, &c[i]);
    }
    for (int i = 0; i < CALLERS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < CALLERS; i++) cr_assert_eq(c[i].failed, 0, "caller %d: %s", i, c[i].why);
    int64_t v = -2;
    cr_assert_eq(ag_store_stream_version(s, "shared", 6, &v), 0);
    cr_assert_eq(v, CALLERS * EACH / 2 - 1, "every shared append got its own version");
    /* $all: dense, each event once, every stream in version order */
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 1000, &pg, NULL), 0);
    cr_assert_eq(pg.count, CALLERS * EACH);
    int64_t shared_next = 0, own_next[CALLERS] = {0};
    for (size_t i = 0; i < pg.count; i++) {
        const struct ag_event *e = &pg.events[i];
        cr_assert_eq(e->position, i);
        if (e->stream_len == 6 && memcmp(e->stream, "shared", 6) == 0) {
            cr_assert_eq(e->version, shared_next++);
        } else {
            int k = atoi(e->stream + 4);
            cr_assert_eq(e->version, own_next[k]++, "%.*s", (int)e->stream_len, e->stream);
        }
    }
    ag_event_page_free(&pg);
    struct ag_store_stats st;
    ag_store_stats(s, &st);
    cr_assert_lt(st.commits, st.appends, "some appends shared a transaction (%llu commits)",
                 (unsigned long long)st.commits);
}

/* ---- migration 3 from a database written at version 2 ---- */

Test(pg, a_version_2_database_is_migrated_at_open_and_its_events_stay)
{
    /* back to version 2 (what the step added goes, the foreign keys come back), then
     * an append written the version-2 way */
    ag_store_close(s);
    s = NULL;
    PGconn *c = raw();
    exec_ok(c, "BEGIN; DROP FUNCTION append3, resolve_ids, resolve4, resolve5;"
               " ALTER TABLE events ADD CONSTRAINT events_stream_id_fkey FOREIGN KEY (stream_id)"
               " REFERENCES streams;"
               " ALTER TABLE snapshots ADD CONSTRAINT snapshots_stream_id_fkey FOREIGN KEY"
               " (stream_id) REFERENCES streams;"
               " DELETE FROM schema_version WHERE version >= 3; COMMIT");
    exec_ok(c, "SELECT * FROM append_batch('{1}', '{old}', '{-1}', '{2}',"
               " '{01890000-0000-7000-8000-000000000001,01890000-0000-7000-8000-000000000002}',"
               " '{A,B}', '{\"{}\",\"{}\"}', '{\"{}\",\"{}\"}')");
    exec_ok(c, "SELECT sequence()");
    cr_assert_eq(scalar(c, "SELECT max(version) FROM schema_version"), 2);
    s = open_store(); /* steps 3 to 5 are safe: applied at open */
    cr_assert_eq(scalar(c, "SELECT max(version) FROM schema_version"), AG_STORE_PG_SCHEMA_VERSION);
    cr_assert_eq(scalar(c, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                           " AND connamespace = current_schema()::regnamespace"),
                 0, "no foreign keys at version 3");
    PQfinish(c);
    /* the old append, repeated, answers as before; the stream goes on after it */
    struct ag_event_data e[2] = {{.type = "A", .type_len = 1, .data = "{}", .data_len = 2},
                                 {.type = "B", .type_len = 1, .data = "{}", .data_len = 2}};
    ag_uuid_parse("01890000-0000-7000-8000-000000000001", 36, &e[0].id);
    ag_uuid_parse("01890000-0000-7000-8000-000000000002", 36, &e[1].id);
    struct ag_append_result r;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_append(s, "old", 3, AG_STORE_NO_STREAM, e, 2, &r, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(r.first_version, 0);
    cr_assert_eq(r.last_position, 1);
    cr_assert_eq(append1("old", 1, &r), 0);
    cr_assert_eq(r.first_version, 2);
    cr_assert_eq(r.first_position, 2);
}

/* ---- migration 5 from a database at version 4 ---- */

Test(pg, a_version_4_database_is_migrated_at_open_and_appends_go_on)
{
    struct ag_append_result r;
    cr_assert_eq(append1("v4", AG_STORE_NO_STREAM, &r), 0);
    ag_store_close(s);
    s = NULL;
    PGconn *c = raw();
    exec_ok(c, "BEGIN; DROP FUNCTION resolve5; DELETE FROM schema_version WHERE version >= 5;"
               " COMMIT");
    cr_assert_eq(scalar(c, "SELECT max(version) FROM schema_version"), 4);
    /* written the version-4 way meanwhile (an older binary still running) */
    exec_ok(c, "SELECT * FROM append3('{1}', '{v4}', '{0}', '{1}',"
               " '{01890000-0000-7000-8000-0000000000a1}', '{Old}', '{\"{}\"}', '{\"{}\"}')");
    exec_ok(c, "SELECT * FROM resolve4('{01890000-0000-7000-8000-0000000000a1}')");
    s = open_store(); /* step 5 is safe: applied at open */
    cr_assert_eq(scalar(c, "SELECT max(version) FROM schema_version"), 5);
    cr_assert_eq(scalar(c, "SELECT count(*) FROM pg_proc WHERE proname = 'resolve5'"
                           " AND pronamespace = current_schema()::regnamespace"),
                 1);
    PQfinish(c);
    cr_assert_eq(append1("v4", 1, &r), 0);
    cr_assert_eq(r.first_version, 2);
    cr_assert_eq(r.first_position, 2, "after the event numbered by the version-4 resolve");
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 3);
    cr_assert_eq(p.events[1].type_len, 3);
    cr_assert(memcmp(p.events[1].type, "Old", 3) == 0);
    ag_event_page_free(&p);
}

/* ---- $all read ahead ---- */

/* $all in pages of `page` from 0 to its end: positions and ids into pos[]/ids[]. */
static size_t read_pages(size_t page, uint64_t *pos, struct ag_uuid *ids, size_t cap,
                         size_t append_after, int *appended)
{
    size_t n = 0, pages = 0;
    uint64_t from = 0;
    for (;;) {
        struct ag_event_page p;
        struct ag_err err;
        ag_err_clear(&err);
        cr_assert_eq(ag_store_read_all(s, from, AG_READ_FORWARD, page, &p, &err), 0, "%s", err.msg);
        for (size_t i = 0; i < p.count && n < cap; i++, n++) {
            pos[n] = p.events[i].position;
            ids[n] = p.events[i].id;
        }
        bool end = p.end;
        from = p.next_position;
        ag_event_page_free(&p);
        if (++pages == append_after) /* events appended while the reader is mid-way */
            for (int i = 0; i < 7; i++) {
                cr_assert_eq(append1("late", AG_STORE_ANY, NULL), 0);
                ++*appended;
            }
        if (end) return n;
    }
}

Test(pg, all_read_sequentially_in_pages_is_what_one_read_returns)
{
    for (int i = 0; i < 45; i++) {
        char name[8];
        snprintf(name, sizeof name, "ra%d", i % 4);
        cr_assert_eq(append1(name, AG_STORE_ANY, NULL), 0);
    }
    static uint64_t pos[2][128];
    static struct ag_uuid ids[2][128];
    int appended = 0;
    /* pages of 4: the reader is sequential from its second page on, so pages come
     * from rows read ahead, across appends made while it reads */
    size_t n = read_pages(4, pos[0], ids[0], 128, 3, &appended);
    cr_assert_eq(appended, 7);
    cr_assert_eq(n, 52, "every event once, the late ones too");
    size_t m = read_pages(1000, pos[1], ids[1], 128, 0, &appended);
    cr_assert_eq(m, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(pos[0][i], i, "dense");
        cr_assert_eq(pos[1][i], i);
        cr_assert(memcmp(&ids[0][i], &ids[1][i], sizeof ids[0][i]) == 0, "event %zu", i);
    }
    /* two readers interleaved, each sequential: the same pages as one alone */
    uint64_t from[2] = {0, 10};
    for (int round = 0; round < 6; round++)
        for (int k = 0; k < 2; k++) {
            struct ag_event_page p;
            cr_assert_eq(ag_store_read_all(s, from[k], AG_READ_FORWARD, 3, &p, NULL), 0);
            cr_assert_eq(p.count, 3);
            for (size_t i = 0; i < p.count; i++) {
                cr_assert_eq(p.events[i].position, from[k] + i);
                cr_assert(memcmp(&p.events[i].id, &ids[1][from[k] + i], sizeof p.events[i].id) ==
                          0);
            }
            from[k] = p.next_position;
            ag_event_page_free(&p);
        }
    cr_assert_eq(from[0], 18);
    cr_assert_eq(from[1], 28);
}

/* The URI's counts are checked before any connection is made, each by its name. */
Test(pg_uri, pool_size_and_append_lanes_out_of_range_are_refused_by_name)
{
    static const char *const bad[][2] = {
        {"postgresql:///x?pool_size=0", "store URI: pool_size must be 1.."},
        {"postgresql:///x?append_lanes=0", "store URI: append_lanes must be 1.."},
        {"postgresql:///x?append_lanes=1000000", "store URI: append_lanes must be 1.."},
        {"postgresql:///x?pool_size=x", "store URI: pool_size must be 1.."},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ag_store *st = NULL;
        struct ag_err err;
        ag_err_clear(&err);
        int rc = ag_store_pg_open(bad[i][0], NULL, &st, &err);
        cr_assert_eq(rc, AG_EINVAL, "%s: %d", bad[i][0], rc);
        cr_assert(strstr(err.msg, bad[i][1]), "%s: %s", bad[i][0], err.msg);
        cr_assert_null(st);
    }
}
