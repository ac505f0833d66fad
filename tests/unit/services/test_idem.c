/* Idempotency-Key records (src/services/common.c svc_idem_begin/svc_idem_end) on a
 * real embedded store: a replay of the same body answers from the record, another
 * body is 422, a request still in flight is 409, and no key stays stuck: a 5xx or
 * a lost concurrency race releases it, and a claim left by a dead process is taken
 * over after the lease, by one retry only. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/store_log.h"
#include "services/internal.h"

static char dir[] = "/tmp/agora-idem-XXXXXX";
static struct svc_env plat; /* only the log: idempotency records live there */

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    struct ag_err err;
    cr_assert_eq(ag_store_log_open(dir, &o, &plat.store, &err), 0, "%s", err.msg);
}

static void teardown(void)
{
    ag_store_close(plat.store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(idem, .init = setup, .fini = teardown);

static struct svc_job *job(const char *key, const char *body)
{
    struct svc_job *j = calloc(1, sizeof *j);
    j->env = &plat;
    snprintf(j->idem_key, sizeof j->idem_key, "%s", key);
    snprintf(j->who.sub, sizeof j->who.sub, "alice");
    j->who.authenticated = true;
    j->body = json_loads(body, 0, NULL);
    return j;
}

static void job_free(struct svc_job *j)
{
    json_decref(j->body);
    json_decref(j->resp);
    json_decref(j->errors);
    free(j);
}

/* begin + end with a final answer `status`; returns what begin returned */
static int run(const char *key, const char *body, int status, int *answered_status)
{
    struct svc_job *j = job(key, body);
    int r = svc_idem_begin(j, "t");
    if (!r) {
        if (status < 400)
            svc_ok(j, status, json_pack("{s:s}", "id", "x1"));
        else
            svc_problem(j, status, status == 409 ? "Concurrent modification" : NULL, "failed");
        svc_idem_end(j, "t");
    }
    *answered_status = j->status;
    job_free(j);
    return r;
}

Test(idem, replay_same_body_and_422_for_another)
{
    int st;
    cr_assert_eq(run("k1", "{\"a\":1}", 201, &st), 0);
    cr_assert_eq(run("k1", "{\"a\":1}", 201, &st), 1, "replayed");
    cr_assert_eq(st, 201);
    cr_assert_eq(run("k1", "{\"a\":2}", 201, &st), 1);
    cr_assert_eq(st, 422);
}

Test(idem, a_4xx_answer_is_final)
{
    int st;
    cr_assert_eq(run("k4", "{}", 400, &st), 0);
    cr_assert_eq(run("k4", "{}", 201, &st), 1);
    cr_assert_eq(st, 400, "the recorded 400 is replayed");
}

Test(idem, in_flight_is_409)
{
    struct svc_job *a = job("k2", "{}");
    cr_assert_eq(svc_idem_begin(a, "t"), 0);
    int st;
    cr_assert_eq(run("k2", "{}", 201, &st), 1);
    cr_assert_eq(st, 409, "in progress");
    cr_assert_eq(run("k2", "{\"other\":1}", 201, &st), 1);
    cr_assert_eq(st, 422, "another body is 422 even in flight");
    svc_ok(a, 201, json_object());
    svc_idem_end(a, "t");
    job_free(a);
    cr_assert_eq(run("k2", "{}", 201, &st), 1);
    cr_assert_eq(st, 201, "replayed once answered");
}

Test(idem, a_5xx_releases_the_key)
{
    int st;
    cr_assert_eq(run("k3", "{}", 500, &st), 0);
    cr_assert_eq(run("k3", "{}", 503, &st), 0, "proceeds after a 500");
    cr_assert_eq(run("k3", "{}", 201, &st), 0, "proceeds after a 503");
    cr_assert_eq(run("k3", "{}", 201, &st), 1, "then replays");
    cr_assert_eq(st, 201);
    /* a failure with no status yet (filled in later from the error code) too */
    struct svc_job *j = job("k5", "{}");
    cr_assert_eq(svc_idem_begin(j, "t"), 0);
    svc_idem_end(j, "t");
    job_free(j);
    cr_assert_eq(run("k5", "{}", 201, &st), 0);
}

Test(idem, a_lost_race_409_releases_the_key)
{
    int st;
    cr_assert_eq(run("k6", "{}", 409, &st), 0);
    cr_assert_eq(run("k6", "{}", 201, &st), 0, "proceeds after a transient 409");
}

/* what a process killed between claim and answer leaves behind */
static void stale_claim(const char *key, const char *body, long long age_ms)
{
    struct svc_job *j = job(key, body);
    cr_assert_eq(svc_idem_begin(j, "t"), 0);
    char stream[64];
    svc_idem_stream(j, "t", stream);
    job_free(j); /* dies without svc_idem_end */
    if (!age_ms) return;
    /* an older claim: release, then claim again with an old `at` */
    struct ag_event_page pg;
    cr_assert_eq(
        ag_store_read_stream(plat.store, stream, strlen(stream), 0, AG_READ_FORWARD, 1, &pg, NULL),
        0);
    json_t *c = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
    ag_event_page_free(&pg);
    json_object_set_new(c, "at", json_integer(svc_now_ms() - age_ms));
    char *t = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    struct ag_event_data evs[2] = {
        {.type = "IdempotencyKeyReleased", .type_len = 22, .data = "{}", .data_len = 2},
        {.type = "IdempotencyKeyClaimed", .type_len = 21, .data = t, .data_len = strlen(t)}};
    cr_assert_eq(ag_store_append(plat.store, stream, strlen(stream), 0, evs, 2, NULL, NULL), 0);
    free(t);
}

Test(idem, a_fresh_orphan_claim_is_still_in_progress)
{
    int st;
    stale_claim("k7", "{}", 0);
    cr_assert_eq(run("k7", "{}", 201, &st), 1);
    cr_assert_eq(st, 409);
}

Test(idem, an_expired_claim_is_taken_over_by_one_retry)
{
    int st;
    stale_claim("k8", "{}", 31000);
    struct svc_job *a = job("k8", "{}"), *b = job("k8", "{}");
    cr_assert_eq(svc_idem_begin(a, "t"), 0, "the first retry takes the key over");
    cr_assert_eq(svc_idem_begin(b, "t"), 1, "the second does not");
    cr_assert_eq(b->status, 409);
    svc_ok(a, 201, json_object());
    svc_idem_end(a, "t");
    cr_assert_eq(run("k8", "{}", 201, &st), 1);
    cr_assert_eq(st, 201);
    job_free(a);
    job_free(b);
}

Test(idem, an_expired_claim_of_another_body_is_still_422)
{
    int st;
    stale_claim("k9", "{\"a\":1}", 31000);
    cr_assert_eq(run("k9", "{\"a\":2}", 201, &st), 1);
    cr_assert_eq(st, 422);
}

Test(idem, the_slow_request_cannot_answer_after_a_takeover)
{
    int st;
    struct svc_job *slow = job("k10", "{}");
    cr_assert_eq(svc_idem_begin(slow, "t"), 0);
    /* its claim is superseded (as when a retry took an expired claim over) */
    char stream[64];
    svc_idem_stream(slow, "t", stream);
    struct ag_event_data ev = {
        .type = "IdempotencyKeyReleased", .type_len = 22, .data = "{}", .data_len = 2};
    cr_assert_eq(ag_store_append(plat.store, stream, strlen(stream), 0, &ev, 1, NULL, NULL), 0);
    cr_assert_eq(run("k10", "{}", 201, &st), 0, "the retry proceeds");
    svc_ok(slow, 500, json_object());
    svc_idem_end(slow, "t"); /* conflicts: does not release the retry's record */
    job_free(slow);
    cr_assert_eq(run("k10", "{}", 201, &st), 1);
    cr_assert_eq(st, 201, "the retry's answer stands");
}

Test(idem, keys_are_per_principal)
{
    int st;
    cr_assert_eq(run("k11", "{\"a\":1}", 201, &st), 0);
    struct svc_job *bob = job("k11", "{\"a\":2}");
    snprintf(bob->who.sub, sizeof bob->who.sub, "bob");
    cr_assert_eq(svc_idem_begin(bob, "t"), 0, "bob's k11 is not alice's k11");
    svc_ok(bob, 201, json_object());
    svc_idem_end(bob, "t");
    job_free(bob);
    cr_assert_eq(run("k11", "{\"a\":1}", 201, &st), 1, "alice's replay is still hers");
    cr_assert_eq(st, 201);
}

/* Expiry (IETF Idempotency-Key draft): after the TTL a reused key is a new request,
 * whatever body it first came with; before it, replay and 422 as usual. The
 * environment's clock is a fake one: no sleeps. */
Test(idem, records_expire_after_the_ttl)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1700000000000000000ull);
    plat.clock = &fc.clock;
    plat.idem_ttl_ms = 3600 * 1000; /* 1 h */
    int st;
    cr_assert_eq(run("e1", "{\"a\":1}", 201, &st), 0);
    ag_fake_clock_advance(&fc, 3599ull * 1000000000ull);
    cr_assert_eq(run("e1", "{\"a\":1}", 201, &st), 1, "replayed inside the TTL");
    cr_assert_eq(st, 201);
    cr_assert_eq(run("e1", "{\"a\":2}", 201, &st), 1);
    cr_assert_eq(st, 422, "another body inside the TTL");
    ag_fake_clock_advance(&fc, 1ull * 1000000000ull);
    cr_assert_eq(run("e1", "{\"a\":2}", 400, &st), 0, "expired: a new request, any body");
    cr_assert_eq(run("e1", "{\"a\":2}", 201, &st), 1, "and its answer is the new record");
    cr_assert_eq(st, 400);
    cr_assert_eq(run("e1", "{\"a\":1}", 201, &st), 1);
    cr_assert_eq(st, 422, "the old body is now the other one");
    ag_fake_clock_advance(&fc, 3600ull * 1000000000ull);
    cr_assert_eq(run("e1", "{\"a\":1}", 201, &st), 0, "expired again");
    plat.clock = NULL;
    plat.idem_ttl_ms = 0;
}

Test(idem, the_default_ttl_is_24h)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1700000000000000000ull);
    plat.clock = &fc.clock;
    int st;
    cr_assert_eq(run("e2", "{}", 201, &st), 0);
    ag_fake_clock_advance(&fc, (24ull * 3600 - 1) * 1000000000ull);
    cr_assert_eq(run("e2", "{}", 201, &st), 1, "kept for 24 h");
    ag_fake_clock_advance(&fc, 1000000000ull);
    cr_assert_eq(run("e2", "{}", 201, &st), 0, "gone after 24 h");
    plat.clock = NULL;
}

/* A deferred key (svc_idem_begin_defer): nothing is appended until its record,
 * claim and answer, commits with the command's events in one multi-stream append;
 * replays then answer from it exactly as from a claim + answer written apart. */
Test(idem, a_deferred_record_commits_with_the_command)
{
    struct svc_job *j = job("kd", "{}");
    cr_assert_eq(svc_idem_begin_defer(j, "t", true), 0);
    cr_assert(j->idem_deferred, "no record yet: deferred");
    char stream[64];
    svc_idem_stream(j, "t", stream);
    int64_t v = 0;
    cr_assert_eq(ag_store_stream_version(plat.store, stream, strlen(stream), &v), 0);
    cr_expect_eq(v, -1, "nothing appended before the command");
    svc_ok(j, 202, json_pack("{s:s}", "id", "o1"));
    snprintf(j->location, sizeof j->location, "/o/o1");
    struct svc_idem_rec rec;
    cr_assert_eq(svc_idem_rec_make(j, "t", &rec), 0);
    struct ag_event_data ev = {.type = "Thing", .type_len = 5, .data = "{}", .data_len = 2};
    struct ag_append_part parts[2] = {{"thing-o1", 8, AG_STORE_NO_STREAM, &ev, 1}, rec.part};
    struct ag_append_result res[2];
    struct ag_err err;
    cr_assert_eq(ag_store_append_multi(plat.store, parts, 2, res, &err), 0, "%s", err.msg);
    svc_idem_rec_free(&rec);
    job_free(j);
    cr_assert_eq(ag_store_stream_version(plat.store, stream, strlen(stream), &v), 0);
    cr_expect_eq(v, 1, "claim and answer");
    int st;
    cr_assert_eq(run("kd", "{}", 201, &st), 1, "replayed");
    cr_expect_eq(st, 202, "the recorded answer");
    cr_assert_eq(run("kd", "{\"a\":1}", 201, &st), 1);
    cr_expect_eq(st, 422, "another body");
    struct svc_job *again = job("kd", "{}");
    cr_expect_eq(svc_idem_begin_defer(again, "t", true), 1, "a key with a record is not deferred");
    cr_expect(!again->idem_deferred);
    job_free(again);
}

Test(idem, a_deferred_key_settles_as_usual_when_the_command_did_not_commit)
{
    struct svc_job *j = job("ks", "{}");
    cr_assert_eq(svc_idem_begin_defer(j, "t", true), 0);
    svc_problem(j, 422, NULL, "refused"); /* a final answer without the command */
    svc_idem_settle(j, "t");
    cr_expect(!j->idem_deferred);
    job_free(j);
    int st;
    cr_assert_eq(run("ks", "{}", 201, &st), 1, "the 422 was recorded");
    cr_expect_eq(st, 422);
    j = job("k5s", "{}"); /* a 5xx leaves the key free */
    cr_assert_eq(svc_idem_begin_defer(j, "t", true), 0);
    svc_problem(j, 503, NULL, "later");
    svc_idem_settle(j, "t");
    job_free(j);
    cr_assert_eq(run("k5s", "{}", 201, &st), 0, "proceeds as new");
}
