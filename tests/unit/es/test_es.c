/* The event-sourcing kernel: repository (load, decide, append, conflicts,
 * batching, snapshots) and the projection runner (exactly-once, checkpoint, lag,
 * rebuild, inbox). A tiny counter aggregate stands in for the domain. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/es.h"
#include "agora/store_log.h"

#include "es_fixture.h"

struct counter {
    long long total;
    int adds;
};

static void c_init(void *s)
{
    memset(s, 0, sizeof(struct counter));
}
static void c_free(void *s)
{
    AG_UNUSED(s);
}
static int c_evolve(void *s, const char *type, const json_t *d)
{
    struct counter *c = s;
    if (strcmp(type, "Added") != 0) return 0;
    if (!json_is_integer(json_object_get(d, "n"))) return AG_EINVAL;
    c->total += json_integer_value(json_object_get(d, "n"));
    c->adds++;
    return 0;
}
static json_t *c_snapshot(const void *s)
{
    const struct counter *c = s;
    return json_pack("{s:I, s:i}", "total", (json_int_t)c->total, "adds", c->adds);
}
static int c_restore(void *s, const json_t *j)
{
    struct counter *c = s;
    c->total = json_integer_value(json_object_get(j, "total"));
    c->adds = (int)json_integer_value(json_object_get(j, "adds"));
    return 0;
}
static const struct ag_es_type counter_type = {
    "counter", sizeof(struct counter), c_init, c_free, c_evolve, c_snapshot, c_restore};

static struct es_fx fx; /* a temporary log store and a repository over it */

static void setup(void)
{
    es_fx_open(&fx, "es", (struct ag_es_repo_config){.snapshot_every = 10});
}

static void teardown(void)
{
    es_fx_close(&fx);
}

/* decide: add n unless the total would pass `limit` (a business rule) */
struct add {
    int n;
    long long limit;
};

static int decide_add(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                      struct ag_err *err)
{
    AG_UNUSED(version);
    const struct counter *c = state;
    const struct add *a = ud;
    if (a->limit && c->total + a->n > a->limit)
        return ag_err_set(err, AG_EDOMAIN, "limit %lld reached", a->limit);
    return ag_es_batch_push(out, "Added", json_pack("{s:i}", "n", a->n));
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct counter *)state)->total;
}

TestSuite(repo, .init = setup, .fini = teardown);

Test(repo, execute_appends_and_state_follows)
{
    struct ag_es_result res;
    long long total = 0;
    for (int i = 1; i <= 25; i++) {
        struct add a = {i, 0};
        struct ag_es_cmd cmd = {&counter_type,       "counter-1", decide_add, &a,
                                "{\"actor\":\"t\"}", view_total,  &total};
        cr_assert_eq(ag_es_execute(fx.repo, &cmd, &res, NULL), 0);
        cr_assert_eq(res.version, i - 1);
        cr_assert_eq(res.appended, 1);
    }
    cr_assert_eq(total, 325);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(fx.store, "counter-1", 9, 24, AG_READ_FORWARD, 1, &p, NULL),
                 0);
    cr_assert_eq(memcmp(p.events[0].metadata, "{\"actor\":\"t\"}", p.events[0].metadata_len), 0);
    ag_event_page_free(&p);
    struct ag_snapshot snap;
    cr_assert_eq(ag_store_load_snapshot(fx.store, "counter-1", 9, &snap, NULL), 0,
                 "snapshot every 10");
    cr_assert_eq(snap.version, 19);
    ag_snapshot_free(&snap);
}

Test(repo, business_errors_store_nothing)
{
    struct add a = {5, 7};
    cr_assert_eq(
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "c", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL),
        0);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "c", decide_add, &a, NULL, NULL, NULL},
                      NULL, &err),
        AG_EDOMAIN);
    cr_assert_str_eq(err.msg, "limit 7 reached");
    int64_t v;
    ag_store_stream_version(fx.store, "c", 1, &v);
    cr_assert_eq(v, 0);
}

Test(repo, read_sees_writes_from_another_process_view)
{
    /* another writer (here: the store directly) appends: the cache catches up */
    long long total = 0;
    struct add a = {1, 0};
    cr_assert_eq(
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "x", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL),
        0);
    struct ag_event_data ev = {.type = "Added", .type_len = 5, .data = "{\"n\":41}", .data_len = 8};
    cr_assert_eq(ag_store_append(fx.store, "x", 1, 0, &ev, 1, NULL, NULL), 0);
    cr_assert_eq(ag_es_read(fx.repo, &counter_type, "x", view_total, &total, NULL), 0);
    cr_assert_eq(total, 42);
    cr_assert_eq(ag_es_read(fx.repo, &counter_type, "nothing", view_total, &total, NULL),
                 AG_ENOTFOUND);
}

Test(repo, cold_load_uses_the_snapshot)
{
    struct add a = {2, 0};
    for (int i = 0; i < 15; i++)
        cr_assert_eq(
            ag_es_execute(fx.repo,
                          &(struct ag_es_cmd){&counter_type, "s", decide_add, &a, NULL, NULL, NULL},
                          NULL, NULL),
            0);
    /* a second repository starts cold: snapshot at v9 + 5 events */
    struct ag_es_repo *r2;
    struct ag_es_repo_config rc = {.store = fx.store};
    cr_assert_eq(ag_es_repo_new(&rc, &r2), 0);
    long long total = 0;
    cr_assert_eq(ag_es_read(r2, &counter_type, "s", view_total, &total, NULL), 0);
    cr_assert_eq(total, 30);
    ag_es_repo_free(r2);
}

Test(repo, conflict_from_a_second_repository_is_retried)
{
    struct ag_es_repo *r2;
    struct ag_es_repo_config rc = {.store = fx.store};
    cr_assert_eq(ag_es_repo_new(&rc, &r2), 0);
    struct add a = {1, 0};
    long long t1 = 0, t2 = 0;
    cr_assert_eq(ag_es_execute(
                     fx.repo,
                     &(struct ag_es_cmd){&counter_type, "k", decide_add, &a, NULL, view_total, &t1},
                     NULL, NULL),
                 0);
    cr_assert_eq(ag_es_execute(
                     r2,
                     &(struct ag_es_cmd){&counter_type, "k", decide_add, &a, NULL, view_total, &t2},
                     NULL, NULL),
                 0);
    /* repo's cache is stale (version 0); it catches up before deciding */
    cr_assert_eq(ag_es_execute(
                     fx.repo,
                     &(struct ag_es_cmd){&counter_type, "k", decide_add, &a, NULL, view_total, &t1},
                     NULL, NULL),
                 0);
    cr_assert_eq(t1, 3);
    ag_es_repo_free(r2);
}

struct hammer {
    int adds;
    int failures;
};

static void *hammer(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < h->adds; i++) {
        struct add a = {1, 0};
        if (ag_es_execute(
                fx.repo,
                &(struct ag_es_cmd){&counter_type, "hot", decide_add, &a, NULL, NULL, NULL}, NULL,
                NULL))
            h->failures++;
    }
    return NULL;
}

Test(repo, concurrent_commands_on_one_aggregate_are_batched_and_none_lost)
{
    pthread_t th[8];
    struct hammer h[8];
    for (int i = 0; i < 8; i++) {
        h[i] = (struct hammer){200, 0};
        pthread_create(&th[i], NULL, hammer, &h[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(h[i].failures, 0);
    }
    long long total = 0;
    cr_assert_eq(ag_es_read(fx.repo, &counter_type, "hot", view_total, &total, NULL), 0);
    cr_assert_eq(total, 1600);
    int64_t v;
    ag_store_stream_version(fx.store, "hot", 3, &v);
    cr_assert_eq(v, 1599, "one event per command, versions gapless");
    struct ag_store_stats st;
    ag_store_stats(fx.store, &st);
    cr_assert_lt(st.appends, 1600 + 200, "commands were combined into fewer appends (%llu)",
                 (unsigned long long)st.appends);
}

/* ---- projections ---- */

static int apply_sum(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    if (ag_es_inbox_seen(db, "sum", &ev->id) == 1) return 0;
    char stream[128];
    snprintf(stream, sizeof stream, "%.*s", (int)ev->stream_len, ev->stream);
    struct ag_rm_arg args[] = {AG_RM_TEXT(stream),
                               AG_RM_INT(json_integer_value(json_object_get(d, "n")))};
    return ag_rm_exec(db,
                      "INSERT INTO sums(stream, total) VALUES(?1, ?2) ON CONFLICT(stream) DO UPDATE"
                      " SET total = total + excluded.total",
                      args, 2, NULL);
}

static const char *const only_added[] = {"Added", NULL};
static const struct ag_projection sum_proj = {
    "sums", "CREATE TABLE IF NOT EXISTS sums(stream TEXT PRIMARY KEY, total INTEGER);", only_added,
    apply_sum, NULL};

static int total_row(const struct ag_rm_row *r, void *ud)
{
    *(long long *)ud = ag_rm_int64(r, 0);
    return 1;
}

static long long query_total(const char *rmdir, const char *stream)
{
    struct ag_rm *db;
    cr_assert_eq(ag_rm_open(rmdir, "sums", AG_RM_READONLY, &db, NULL), 0);
    long long t = -1;
    struct ag_rm_arg arg = AG_RM_TEXT(stream);
    cr_assert_eq(
        ag_rm_query(db, "SELECT total FROM sums WHERE stream=?1", &arg, 1, total_row, &t, NULL), 0);
    ag_rm_close(db);
    return t;
}

TestSuite(projector, .init = setup, .fini = teardown);

Test(projector, projects_exactly_once_across_restarts_and_rebuilds)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct add a = {3, 0};
    for (int i = 0; i < 50; i++)
        ag_es_execute(
            fx.repo,
            &(struct ag_es_cmd){&counter_type, i % 2 ? "a" : "b", decide_add, &a, NULL, NULL, NULL},
            NULL, NULL);
    struct ag_event_data other = {.type = "Ignored", .type_len = 7, .data = "{}", .data_len = 2};
    ag_store_append(fx.store, "z", 1, AG_STORE_ANY, &other, 1, NULL, NULL);
    struct ag_projector *p;
    cr_assert_eq(ag_projector_start(fx.store, rm, &sum_proj, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 50, 5000), 0);
    struct ag_projection_stats s;
    ag_projector_stats(p, 0, &s);
    cr_assert_eq(s.checkpoint, 51);
    cr_assert_eq(s.lag_events, 0);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "a"), 75);
    /* restart: resumes from its checkpoint, nothing applied twice */
    for (int i = 0; i < 10; i++)
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "a", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL);
    cr_assert_eq(ag_projector_start(fx.store, rm, &sum_proj, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 60, 5000), 0);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "a"), 105);
    cr_assert_eq(query_total(rm, "b"), 75);
    /* rebuild from zero gives the same rows */
    cr_assert_eq(ag_projection_rebuild(fx.store, rm, &sum_proj, NULL, NULL, NULL), 0);
    cr_assert_eq(query_total(rm, "a"), 105);
}

/* A projection that fails on the event at `poison_pos` until `fixed`. */
static int64_t poison_pos = -1;
static bool fixed;

static int apply_poisoned(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    if (!fixed && (int64_t)ev->position == poison_pos) {
        apply_sum(db, ev, d, ud); /* a half-done write: the savepoint undoes it */
        return AG_EIO;
    }
    return apply_sum(db, ev, d, ud);
}

static void add_to(const char *id)
{
    struct add a = {1, 0};
    cr_assert_eq(
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, id, decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL),
        0);
}

static json_t *parked(struct ag_projector *p)
{
    json_t *a = json_array();
    struct ag_err err;
    cr_assert_eq(ag_projector_parked(p, 0, false, a, &err), 0, "%s", err.msg);
    return a;
}

/* A projection that fails on an event parks it: later events of its stream wait
 * behind it, other streams flow; the list survives a restart; replay after the
 * fix applies it and then the waiting ones in order; drop releases the line. */
Test(projector, a_failing_event_is_parked_and_its_stream_waits)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    poison_pos = 2;
    fixed = false;
    add_to("f"); /* 0 */
    add_to("g"); /* 1 */
    add_to("f"); /* 2: poison */
    add_to("g"); /* 3 */
    add_to("f"); /* 4: waits */
    struct ag_projection proj = sum_proj;
    proj.apply = apply_poisoned;
    struct ag_projector *p;
    cr_assert_eq(ag_projector_start(fx.store, rm, &proj, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 4, 5000), 0);
    struct ag_projection_stats s;
    ag_projector_stats(p, 0, &s);
    cr_assert(!s.failed, "%s", s.error);
    cr_assert_eq(s.checkpoint, 5);
    cr_assert_eq(s.parked, 2);
    json_t *a = parked(p);
    cr_assert_eq(json_array_size(a), 2);
    json_t *h = json_array_get(a, 0), *w = json_array_get(a, 1);
    cr_assert_eq(json_integer_value(json_object_get(h, "id")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(h, "stream")), "f");
    cr_assert(json_is_false(json_object_get(h, "waiting")));
    cr_assert(strstr(json_string_value(json_object_get(h, "error")), "position 2"));
    cr_assert_eq(json_integer_value(json_object_get(w, "id")), 4);
    cr_assert(json_is_true(json_object_get(w, "waiting")));
    json_decref(a);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "f"), 1, "only the event before the parked one");
    cr_assert_eq(query_total(rm, "g"), 2, "the other stream flowed");

    /* restart: the stream is still held */
    add_to("f"); /* 5: waits */
    cr_assert_eq(ag_projector_start(fx.store, rm, &proj, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 5, 5000), 0);
    ag_projector_stats(p, 0, &s);
    cr_assert_eq(s.parked, 3);
    struct ag_err err;
    size_t released = 0;
    cr_assert_eq(ag_projector_replay(p, 0, 4, &released, &err), AG_ECONFLICT);
    cr_assert_eq(ag_projector_replay(p, 0, 2, &released, &err), AG_EIO, "still failing");
    cr_assert(strstr(err.msg, "still failing"), "%s", err.msg);
    cr_assert_eq(ag_projector_replay(p, 0, 99, &released, &err), AG_ENOTFOUND);
    fixed = true;
    cr_assert_eq(ag_projector_replay(p, 0, 2, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 2);
    ag_projector_stats(p, 0, &s);
    cr_assert_eq(s.parked, 0);
    a = parked(p);
    cr_assert_eq(json_array_size(a), 0);
    json_decref(a);
    cr_assert_eq(ag_projector_replay(p, 0, 2, &released, &err), AG_ECONFLICT);

    /* a new poison, dropped: the one behind it is applied */
    fixed = false;
    poison_pos = 6;
    add_to("f"); /* 6 */
    add_to("f"); /* 7 */
    cr_assert_eq(ag_projector_wait(p, 7, 5000), 0);
    ag_projector_stats(p, 0, &s);
    cr_assert_eq(s.parked, 2);
    cr_assert_eq(ag_projector_drop(p, 0, 6, &released, &err), 0, "%s", err.msg);
    cr_assert_eq(released, 1);
    cr_assert_eq(ag_projector_drop(p, 0, 6, &released, &err), AG_ECONFLICT);
    ag_projector_stats(p, 0, &s);
    cr_assert_eq(s.parked, 0);
    cr_assert(!s.failed);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "f"), 5, "0, 2, 4, 5 and 7: 6 was dropped");
}

static int flaky_left; /* failures still to give */
static int apply_flaky(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(db), AG_UNUSED(d), AG_UNUSED(ud);
    if (ev->position == 3 && flaky_left > 0) return flaky_left--, AG_EUNAVAILABLE;
    return 0;
}

Test(projector, a_page_failing_for_a_passing_reason_is_retried)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct add a = {1, 0};
    for (int i = 0; i < 6; i++)
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "f", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL);
    flaky_left = 2; /* e.g. a full disk under the read model, then space freed */
    struct ag_projection flaky = {"flaky", NULL, NULL, apply_flaky, NULL};
    struct ag_projector *p;
    cr_assert_eq(ag_projector_start(fx.store, rm, &flaky, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 5, 5000), 0, "caught up after the retries");
    struct ag_projection_stats s;
    ag_projector_stats(p, 0, &s);
    cr_assert(!s.failed);
    cr_assert_eq(flaky_left, 0);
    cr_assert_eq(s.checkpoint, 6);
    ag_projector_stop(p);
}

Test(projector, a_corrupt_read_model_is_set_aside_and_rebuilt)
{
    char rm[128], path[192];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct add a = {2, 0};
    for (int i = 0; i < 5; i++)
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "a", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL);
    struct ag_projector *p;
    cr_assert_eq(ag_projector_start(fx.store, rm, &sum_proj, 1, &p, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 4, 5000), 0);
    ag_projector_stop(p);
    snprintf(path, sizeof path, "%s/sums.db", rm);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("this is not a database, it is garbage written over the read model file....", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/sums.db-wal", rm);
    remove(path);
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_projector_start(fx.store, rm, &sum_proj, 1, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_projector_wait(p, 4, 5000), 0);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "a"), 10, "rebuilt from the log");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q 'sums.db.corrupt-'", rm);
    cr_assert_eq(system(cmd), 0, "the damaged file is kept aside");
}

Test(repo, stream_names_come_from_the_type)
{
    char out[64];
    cr_assert_eq(ag_es_stream(&counter_type, "01", out, sizeof out), 0);
    cr_assert_str_eq(out, "counter-01");
    cr_assert_eq(ag_es_stream(&counter_type, "0123456789", out, 8), AG_ETOOBIG);
    cr_assert_eq(ag_es_stream_id(&counter_type, "counter-01", 10, out, sizeof out), 0);
    cr_assert_str_eq(out, "01");
    cr_assert_eq(ag_es_stream_id(&counter_type, "counters-01", 11, out, sizeof out), AG_EINVAL);
    cr_assert_eq(ag_es_stream_id(&counter_type, "counter-", 8, out, sizeof out), AG_EINVAL);
    cr_assert_eq(ag_es_stream_id(&counter_type, "other-01", 8, out, sizeof out), AG_EINVAL);
}

/* Put a row no event made into the sums read model (to see whether it survives). */
static void plant(const char *rmdir, const char *sql)
{
    struct ag_rm *db;
    cr_assert_eq(ag_rm_open(rmdir, "sums", AG_RM_READWRITE, &db, NULL), 0);
    struct ag_err err;
    cr_assert_eq(ag_rm_script(db, sql, &err), 0, "%s", err.msg);
    ag_rm_close(db);
}

static void project_all(const char *rmdir, const struct ag_projection *proj, uint64_t head)
{
    struct ag_projector *p;
    struct ag_err err;
    cr_assert_eq(ag_projector_start(fx.store, rmdir, proj, 1, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_projector_wait(p, head, 5000), 0);
    ag_projector_stop(p);
}

static int ok_row(const struct ag_rm_row *r, void *ud)
{
    AG_UNUSED(r);
    *(bool *)ud = true;
    return 1;
}

Test(projector, a_read_model_made_by_another_schema_is_rebuilt)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct add a = {2, 0};
    for (int i = 0; i < 5; i++)
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "a", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL);
    project_all(rm, &sum_proj, 4);
    plant(rm, "INSERT INTO sums(stream, total) VALUES('planted', 99);");
    /* the same schema: opened as it is */
    project_all(rm, &sum_proj, 4);
    cr_assert_eq(query_total(rm, "planted"), 99, "same schema: not rebuilt");
    /* another schema: dropped, made again, the log replayed into it */
    struct ag_projection v2 = sum_proj;
    v2.schema = "CREATE TABLE IF NOT EXISTS sums(stream TEXT PRIMARY KEY, total INTEGER,"
                " note TEXT);";
    FILE *cap = tmpfile();
    int level = ag_log_get_level();
    ag_log_set_level(AG_LOG_INFO);
    ag_log_set_fd(fileno(cap));
    project_all(rm, &v2, 4);
    ag_log_set_fd(2);
    ag_log_set_level(level);
    char logged[8192] = "";
    ssize_t n = pread(fileno(cap), logged, sizeof logged - 1, 0);
    logged[n > 0 ? n : 0] = 0;
    fclose(cap);
    cr_assert(strstr(logged, "projection.schema_changed_rebuilding"), "said so: %s", logged);
    cr_assert_eq(query_total(rm, "planted"), -1, "the old rows are gone");
    cr_assert_eq(query_total(rm, "a"), 10, "rebuilt from the log");
    struct ag_rm *db;
    bool seen = false;
    cr_assert_eq(ag_rm_open(rm, "sums", AG_RM_READONLY, &db, NULL), 0);
    cr_assert_eq(ag_rm_query(db, "SELECT note FROM sums", NULL, 0, ok_row, &seen, NULL), 0);
    ag_rm_close(db);
    cr_assert(seen, "the new schema's column is there");
    /* a file from before fingerprints (no ag_schema, a checkpoint past 0): rebuilt */
    plant(rm, "DROP TABLE ag_schema; INSERT INTO sums(stream, total) VALUES('planted', 7);");
    project_all(rm, &v2, 4);
    cr_assert_eq(query_total(rm, "planted"), -1, "no fingerprint: rebuilt");
    cr_assert_eq(query_total(rm, "a"), 10);
}

/* The log lines `fn` wrote at level info and above. */
static void logged_by(void (*fn)(const char *), const char *rm, char *out, size_t n)
{
    FILE *cap = tmpfile();
    int level = ag_log_get_level();
    ag_log_set_level(AG_LOG_INFO);
    ag_log_set_fd(fileno(cap));
    fn(rm);
    ag_log_set_fd(2);
    ag_log_set_level(level);
    ssize_t got = pread(fileno(cap), out, n - 1, 0);
    out[got > 0 ? got : 0] = 0;
    fclose(cap);
}

static struct ag_projection v2_proj;
static void project_v2(const char *rm)
{
    project_all(rm, &v2_proj, 4);
}

/* A read model made by the schema a projection declares as its previous one
 * (prev_schema) is converted in place by its `migrate` script: its rows (even one
 * no event made) and checkpoint are kept, nothing is replayed; a migration that
 * fails is rolled back and the read model rebuilt from the log as for any other
 * schema. */
Test(projector, a_read_model_made_by_the_previous_schema_is_migrated_in_place)
{
    char rm[128], logged[8192];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct add a = {2, 0};
    for (int i = 0; i < 5; i++)
        ag_es_execute(fx.repo,
                      &(struct ag_es_cmd){&counter_type, "a", decide_add, &a, NULL, NULL, NULL},
                      NULL, NULL);
    project_all(rm, &sum_proj, 4);
    plant(rm, "INSERT INTO sums(stream, total) VALUES('planted', 99);");
    v2_proj = sum_proj;
    v2_proj.schema = "CREATE TABLE IF NOT EXISTS sums(stream TEXT PRIMARY KEY, total INTEGER,"
                     " note TEXT);";
    v2_proj.prev_schema = sum_proj.schema;
    v2_proj.migrate = "ALTER TABLE sums ADD COLUMN note TEXT; UPDATE sums SET note='moved';";
    logged_by(project_v2, rm, logged, sizeof logged);
    cr_assert(strstr(logged, "projection.migrated"), "said so: %s", logged);
    cr_assert_null(strstr(logged, "schema_changed_rebuilding"), "%s", logged);
    cr_assert_eq(query_total(rm, "planted"), 99, "kept: not rebuilt");
    cr_assert_eq(query_total(rm, "a"), 10);
    struct ag_rm *db;
    bool seen = false;
    cr_assert_eq(ag_rm_open(rm, "sums", AG_RM_READONLY, &db, NULL), 0);
    cr_assert_eq(
        ag_rm_query(db, "SELECT note FROM sums WHERE note='moved'", NULL, 0, ok_row, &seen, NULL),
        0);
    ag_rm_close(db);
    cr_assert(seen, "the migration ran");
    /* opened again by the same schema: as it is */
    logged_by(project_v2, rm, logged, sizeof logged);
    cr_assert_null(strstr(logged, "projection.migrated"), "%s", logged);
    cr_assert_eq(query_total(rm, "planted"), 99);
    /* from the previous schema again, with a migration that fails: rebuilt */
    cr_assert_eq(ag_rm_drop(rm, "sums", NULL), 0);
    project_all(rm, &sum_proj, 4);
    plant(rm, "INSERT INTO sums(stream, total) VALUES('planted', 99);");
    v2_proj.migrate = "ALTER TABLE sums ADD COLUMN note TEXT; SELECT * FROM no_such_table;";
    logged_by(project_v2, rm, logged, sizeof logged);
    cr_assert(strstr(logged, "projection.migrate_failed"), "%s", logged);
    cr_assert(strstr(logged, "projection.schema_changed_rebuilding"), "%s", logged);
    cr_assert_eq(query_total(rm, "planted"), -1, "rebuilt from the log");
    cr_assert_eq(query_total(rm, "a"), 10);
}

static int commits;
static void count_commit(void *ud)
{
    AG_UNUSED(ud);
    __atomic_add_fetch(&commits, 1, __ATOMIC_SEQ_CST);
}

static uint64_t stored_checkpoint(const char *rmdir)
{
    struct ag_rm *db;
    uint64_t pos = 0;
    cr_assert_eq(ag_rm_open(rmdir, "sums", AG_RM_READONLY, &db, NULL), 0);
    cr_assert_eq(ag_rm_checkpoint_get(db, "sums", &pos, NULL), 0);
    ag_rm_close(db);
    return pos;
}

/* Pages with no event the projection wants take no transaction of their own: the
 * cursor moves in memory (waits see it) and is stored when the runner idles or
 * stops, or with the next page it applies; after a restart nothing is applied
 * twice. */
Test(projector, pages_without_a_wanted_event_take_no_transaction)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    struct ag_projection proj = sum_proj;
    proj.committed = count_commit;
    commits = 0;
    struct ag_projector *p;
    cr_assert_eq(ag_projector_start(fx.store, rm, &proj, 1, &p, NULL), 0);
    struct ag_event_data other = {.type = "Ignored", .type_len = 7, .data = "{}", .data_len = 2};
    for (int i = 0; i < 30; i++)
        cr_assert_eq(ag_store_append(fx.store, "z", 1, AG_STORE_ANY, &other, 1, NULL, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 29, 5000), 0);
    cr_assert_eq(__atomic_load_n(&commits, __ATOMIC_SEQ_CST), 0, "no page was applied");
    add_to("a"); /* position 30: applied, the cursor stored with it */
    cr_assert_eq(ag_projector_wait(p, 30, 5000), 0);
    cr_assert_eq(__atomic_load_n(&commits, __ATOMIC_SEQ_CST), 1);
    cr_assert_eq(stored_checkpoint(rm), 31);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ag_store_append(fx.store, "z", 1, AG_STORE_ANY, &other, 1, NULL, NULL), 0);
    cr_assert_eq(ag_projector_wait(p, 35, 5000), 0);
    ag_projector_stop(p);
    cr_assert_eq(stored_checkpoint(rm), 36, "stored when the runner stopped");
    cr_assert_eq(__atomic_load_n(&commits, __ATOMIC_SEQ_CST), 1);
    cr_assert_eq(query_total(rm, "a"), 1);
    cr_assert_eq(ag_projector_start(fx.store, rm, &proj, 1, &p, NULL), 0);
    add_to("a");
    cr_assert_eq(ag_projector_wait(p, 36, 5000), 0);
    ag_projector_stop(p);
    cr_assert_eq(query_total(rm, "a"), 2, "nothing applied twice");
}
