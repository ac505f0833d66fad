/* The gateway's Idempotency-Key store (src/gateway/idem.c) with an injected clock:
 * a finished answer is replayed whole (status, headers, content type, body) until
 * its TTL, a key in flight is 409's IN_PROGRESS, another request under the same key
 * is MISMATCH, keys are per user (no collision between "ab"+"c" and "a"+"bc"), a
 * 5xx or a lost answer frees the key, and the store stays bounded: expired entries
 * go first, then the oldest finished one, and when everything is in flight a new
 * key is refused rather than an in-flight one forgotten. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/internal.h"

#define SEC 1000000000ull

static struct ag_fake_clock fc;
static struct gw_idem *s;

static void setup(void)
{
    ag_fake_clock_init(&fc, 5 * SEC);
}

static void teardown(void)
{
    ag__gw_idem_free(s);
    s = NULL;
}

TestSuite(gateway_idem_store, .init = setup, .fini = teardown);

static void finish(const char *key, const char *user, int status, const char *body)
{
    struct gw_idem_resp r = {.status = status,
                             .headers = ag_strdup("Location: /orders/1\n"),
                             .body = ag_strdup(body),
                             .body_len = strlen(body),
                             .content_type = ag_strdup("application/json")};
    ag__gw_idem_finish(s, key, user, &r);
    cr_expect_null(r.body, "the store took (or freed) the answer");
}

static enum gw_idem_state begin(const char *key, const char *user, uint64_t fp)
{
    struct gw_idem_resp r = {0};
    enum gw_idem_state st = ag__gw_idem_begin(s, key, user, fp, &r);
    ag__gw_idem_resp_free(&r);
    return st;
}

Test(gateway_idem_store, a_replay_is_the_whole_answer)
{
    cr_assert_eq(ag__gw_idem_new(10, 60 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("k", "alice", 7), GW_IDEM_NEW);
    finish("k", "alice", 201, "{\"id\":1}");
    struct gw_idem_resp r = {0};
    cr_assert_eq(ag__gw_idem_begin(s, "k", "alice", 7, &r), GW_IDEM_DONE);
    cr_expect_eq(r.status, 201);
    cr_expect_str_eq(r.body, "{\"id\":1}");
    cr_expect_eq(r.body_len, 8);
    cr_expect_str_eq(r.headers, "Location: /orders/1\n");
    cr_expect_str_eq(r.content_type, "application/json");
    ag__gw_idem_resp_free(&r);
    cr_expect_eq(ag__gw_idem_begin(s, "k", "alice", 7, &r), GW_IDEM_DONE, "and again");
    ag__gw_idem_resp_free(&r);
}

Test(gateway_idem_store, in_progress_and_mismatch)
{
    cr_assert_eq(ag__gw_idem_new(10, 60 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("k", "alice", 7), GW_IDEM_NEW);
    cr_expect_eq(begin("k", "alice", 7), GW_IDEM_IN_PROGRESS);
    cr_expect_eq(begin("k", "alice", 8), GW_IDEM_MISMATCH, "another request, even in flight");
    finish("k", "alice", 200, "ok");
    cr_expect_eq(begin("k", "alice", 8), GW_IDEM_MISMATCH, "and once answered");
}

Test(gateway_idem_store, keys_are_per_user_without_collisions)
{
    cr_assert_eq(ag__gw_idem_new(10, 60 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("c", "ab", 1), GW_IDEM_NEW);
    cr_expect_eq(begin("bc", "a", 1), GW_IDEM_NEW, "user 'a' key 'bc' is not user 'ab' key 'c'");
    cr_expect_eq(begin("c", "", 1), GW_IDEM_NEW, "the anonymous user has its own keys");
    finish("c", "ab", 201, "ab's");
    struct gw_idem_resp r = {0};
    cr_assert_eq(ag__gw_idem_begin(s, "bc", "a", 1, &r), GW_IDEM_IN_PROGRESS);
    ag__gw_idem_resp_free(&r);
    cr_expect_eq(ag__gw_idem_size(s), 3);
}

Test(gateway_idem_store, failures_free_the_key)
{
    cr_assert_eq(ag__gw_idem_new(10, 60 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("k", "u", 1), GW_IDEM_NEW);
    finish("k", "u", 502, "bad gateway");
    cr_expect_eq(begin("k", "u", 1), GW_IDEM_NEW, "a 5xx is not replayed");
    ag__gw_idem_finish(s, "k", "u", NULL); /* the request died without an answer */
    cr_expect_eq(begin("k", "u", 2), GW_IDEM_NEW, "nothing is held for a lost answer");
    finish("k", "u", 409, "conflict");
    cr_expect_eq(begin("k", "u", 2), GW_IDEM_DONE, "a 4xx is an answer");
    finish("k", "u", 201, "late"); /* finishing a done key changes nothing */
    struct gw_idem_resp r = {0};
    cr_assert_eq(ag__gw_idem_begin(s, "k", "u", 2, &r), GW_IDEM_DONE);
    cr_expect_eq(r.status, 409);
    ag__gw_idem_resp_free(&r);
}

Test(gateway_idem_store, answers_expire_after_the_ttl)
{
    cr_assert_eq(ag__gw_idem_new(10, 60 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("k", "u", 1), GW_IDEM_NEW);
    ag_fake_clock_advance(&fc, 30 * SEC);
    finish("k", "u", 201, "x");
    ag_fake_clock_advance(&fc, 59 * SEC);
    cr_expect_eq(begin("k", "u", 1), GW_IDEM_DONE, "the TTL runs from the answer");
    ag_fake_clock_advance(&fc, 1 * SEC);
    cr_expect_eq(begin("k", "u", 2), GW_IDEM_NEW, "expired: a new request under the old key");
}

Test(gateway_idem_store, bounded_evicting_expired_then_oldest_done)
{
    cr_assert_eq(ag__gw_idem_new(3, 10 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("a", "u", 1), GW_IDEM_NEW);
    finish("a", "u", 201, "a");
    ag_fake_clock_advance(&fc, 1 * SEC);
    cr_assert_eq(begin("b", "u", 1), GW_IDEM_NEW);
    finish("b", "u", 201, "b");
    cr_assert_eq(begin("c", "u", 1), GW_IDEM_NEW); /* in flight */
    cr_expect_eq(ag__gw_idem_size(s), 3);
    cr_assert_eq(begin("d", "u", 1), GW_IDEM_NEW, "full: the oldest finished entry makes room");
    cr_expect_eq(ag__gw_idem_size(s), 3);
    cr_expect_eq(begin("a", "u", 1), GW_IDEM_NEW, "a was evicted (and is reserved again)");
    cr_expect_eq(begin("c", "u", 1), GW_IDEM_IN_PROGRESS, "an in-flight key is never evicted");
    cr_expect_eq(ag__gw_idem_size(s), 3);
}

Test(gateway_idem_store, full_of_requests_in_flight_refuses_new_keys)
{
    cr_assert_eq(ag__gw_idem_new(2, 10 * SEC, &fc.clock, &s), 0);
    cr_assert_eq(begin("a", "u", 1), GW_IDEM_NEW);
    cr_assert_eq(begin("b", "u", 1), GW_IDEM_NEW);
    cr_expect_eq(begin("c", "u", 1), GW_IDEM_IN_PROGRESS, "refused for now (the caller's 503)");
    cr_expect_eq(ag__gw_idem_size(s), 2);
    finish("a", "u", 201, "a");
    cr_expect_eq(begin("c", "u", 1), GW_IDEM_NEW, "room once one finished");
}

Test(gateway_idem_store, an_oversized_key_is_refused)
{
    cr_assert_eq(ag__gw_idem_new(2, 10 * SEC, &fc.clock, &s), 0);
    char key[600];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    cr_expect_eq(begin(key, "u", 1), GW_IDEM_MISMATCH);
    cr_expect_eq(ag__gw_idem_size(s), 0);
}
