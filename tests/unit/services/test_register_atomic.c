/* Registration is one multi-stream append (src/services/customers/api.c): the
 * principal's binding, the email claim, CustomerRegistered and AccountOpened
 * commit together. A store write or sync that fails anywhere around it (an
 * injected ENOSPC, torn or not, or EIO on fdatasync) leaves either the whole
 * registration — the principal finds its customer, whose account takes a deposit —
 * or nothing, and then the retry registers anew (201). A retry of a registration
 * that did commit answers 409 naming that customer (Location). A product's SKU claim commits
 * with its ProductAdded the same way. A customer left without its account by an
 * older binary gets it when the same registration is retried. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/store_log.h"
#include "svc_test.h"

/* in the customers suite (test_customers.c): its platform per test */

static void fault(enum ag_log_fault_op op, int error, uint64_t after, bool torn)
{
    struct ag_log_fault f = {op, error, after, 1, torn};
    cr_assert_eq(ag_store_log_inject_fault(t_plat->env.store, &f), 0, "the tests run on the log");
}

static void no_fault(void)
{
    fault(AG_LOG_FAULT_WRITE, 0, 0, false);
    fault(AG_LOG_FAULT_SYNC, 0, 0, false);
}

/* POST `body` as `who`, again while the store is recovering from a fault (503;
 * it retries in the background from 100 ms): the first other status. */
static int post_until_up(struct t_resp *r, const char *path, const char *who, const char *body)
{
    for (int i = 0; i < 400; i++) { /* bounded: 20 s */
        int st = t_call(r, "POST", path, who, body, NULL);
        if (st != 503) return st;
        t_free(r);
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    cr_assert_fail("the store did not take appends again");
    return 0;
}

/* True when claim `stream`-style (the principal's or the email's) is absent:
 * claiming it for a new owner would expect "no stream". */
static bool principal_unbound(const char *sub)
{
    struct svc_claim_part c;
    char existing[40] = "";
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_bind_principal_prepare(&t_plat->env, sub, "probe", existing, &c, &err);
    return rc == 0 && !c.held && c.part.expected_version == AG_STORE_NO_STREAM;
}

static bool email_unclaimed(const char *email)
{
    char stream[SVC_EMAIL_STREAM_MAX];
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(svc_email_stream(email, stream, &err), 0, "%s", err.msg);
    int64_t v = 0;
    ag_store_stream_version(t_plat->env.store, stream, strlen(stream), &v);
    return v < 0;
}

/* Register principal `n` while the fault is armed, then check: whole or nothing,
 * and a retry (with the same body, no Idempotency-Key) ends registered. */
static void register_through_fault(int n, enum ag_log_fault_op op, int error, uint64_t after,
                                   bool torn)
{
    char who[64], sub[32], email[64], body[160];
    snprintf(sub, sizeof sub, "fault%d", n);
    snprintf(who, sizeof who, "%s|customer", sub);
    snprintf(email, sizeof email, "fault%d@test.example", n);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Fault %d\"}", email, n);
    fault(op, error, after, torn);
    struct t_resp r;
    int first = t_call(&r, "POST", "/api/v1/customers", who, body, NULL);
    t_free(&r);
    no_fault();
    cr_assert(first == 201 || first >= 500, "case %d: %d", n, first);

    /* what the failure left, read as a client and in the store */
    int me = t_call(&r, "GET", "/api/v1/customers/me", who, NULL, NULL);
    char id[40] = "";
    snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    t_free(&r);
    cr_assert(me == 200 || me == 404, "case %d: /me %d", n, me);
    if (first == 201) cr_assert_eq(me, 200, "case %d: acknowledged, so durable", n);
    if (me == 404) {
        cr_expect(principal_unbound(sub), "case %d: a binding without its customer", n);
        cr_expect(email_unclaimed(email), "case %d: an email claim without its customer", n);
    }

    int again = post_until_up(&r, "/api/v1/customers", who, body);
    cr_assert_eq(again, me == 404 ? 201 : 409, "case %d: retry %d: %s", n, again, r.text);
    if (me == 200) { /* committed before: the 409 names it */
        char loc[128];
        snprintf(loc, sizeof loc, "/api/v1/customers/%s", id);
        cr_expect_str_eq(t_header(&r, "Location"), loc, "case %d: the same customer", n);
    } else {
        snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    }
    t_free(&r);

    cr_assert_eq(t_call(&r, "GET", "/api/v1/customers/me", who, NULL, NULL), 200, "case %d", n);
    cr_expect_str_eq(t_str(&r, "id"), id, "case %d", n);
    char account[40];
    snprintf(account, sizeof account, "%s", t_str(&r, "accountId"));
    cr_expect(account[0], "case %d: an account", n);
    t_free(&r);
    t_deposit(who, account, 500); /* the account exists: never a customer without one */
}

Test(customers, a_failed_write_leaves_all_or_nothing)
{
    /* the Nth write from now fails: the registration's own, or one after it */
    for (int n = 0; n < 4; n++) register_through_fault(n, AG_LOG_FAULT_WRITE, ENOSPC, n, false);
    register_through_fault(4, AG_LOG_FAULT_WRITE, ENOSPC, 0, true); /* half its bytes written */
}

Test(customers, a_failed_sync_leaves_nothing)
{
    for (int n = 0; n < 3; n++) register_through_fault(10 + n, AG_LOG_FAULT_SYNC, EIO, n, false);
}

Test(customers, a_retry_after_a_lost_answer_is_409_naming_the_customer)
{
    char id[40], account[40];
    t_register(ALICE, "alice@test.example", id, account);
    struct t_resp r;
    const char *same = "{\"email\":\"ALICE@test.example\",\"name\":\"Test Person\"}";
    /* the same registration again (its answer lost): 409, Location the customer */
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, same, NULL), 409, "%s", r.text);
    char loc[128];
    snprintf(loc, sizeof loc, "/api/v1/customers/%s", id);
    cr_expect_str_eq(t_header(&r, "Location"), loc);
    cr_expect(strstr(r.text, id) != NULL, "the detail names it: %s", r.text);
    t_free(&r);
    /* another name is another registration: 409 naming the first */
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"alice@test.example\",\"name\":\"Someone Else\"}", NULL),
                 409, "%s", r.text);
    cr_expect_str_eq(t_header(&r, "Location"), loc);
    t_free(&r);
    /* the same body from another principal: the email is taken */
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", BOB, same, NULL), 409, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/email"), "%s", r.text);
    cr_expect_str_eq(t_header(&r, "Location"), "", "nothing of alice's is shown to bob");
    t_free(&r);
}

Test(customers, a_product_and_its_sku_claim_commit_together)
{
    const char *body = "{\"sku\":\"ATOM-1\",\"name\":\"Atom\",\"price\":{\"amount\":100,"
                       "\"currency\":\"USD\"}}";
    fault(AG_LOG_FAULT_WRITE, ENOSPC, 0, false);
    struct t_resp r;
    int first = t_call(&r, "POST", "/api/v1/products", ADMIN, body, NULL);
    t_free(&r);
    no_fault();
    cr_assert_geq(first, 500, "the one append failed");
    /* nothing was claimed: the retry adds it (a claim left behind would be 409) */
    cr_assert_eq(post_until_up(&r, "/api/v1/products", ADMIN, body), 201, "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/products", ADMIN, body, NULL), 409, "%s", r.text);
    t_free(&r);
}

static int d_register(const void *st, const void *cmd, struct ag_dom_events *out,
                      struct ag_err *err)
{
    return ag_customer_register(st, cmd, out, err);
}

Test(customers, a_customer_left_without_its_account_gets_it_on_retry)
{
    /* what a binary that registered in separate appends left when it died before
     * AccountOpened: the binding, the email claim and the customer */
    struct svc_env *env = &t_plat->env;
    char id[40], account[40], stream[SVC_EMAIL_STREAM_MAX], existing[40] = "";
    svc_new_id(id, NULL, NULL);
    svc_new_id(account, "account", id);
    struct ag_err err;
    ag_err_clear(&err);
    struct svc_claim_part c;
    cr_assert_eq(svc_bind_principal_prepare(env, "alice", id, existing, &c, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(ag_store_append(env->store, c.part.stream, c.part.stream_len,
                                 c.part.expected_version, &c.ev, 1, NULL, &err),
                 0, "%s", err.msg);
    cr_assert_eq(svc_email_stream("half@test.example", stream, &err), 0, "%s", err.msg);
    cr_assert_eq(svc_claim(env, stream, id, "customer", NULL, &err), 0, "%s", err.msg);
    struct ag_customer_register reg = {id, "half@test.example", "Half Done", false, account};
    cr_assert_eq(
        svc_exec(env, &(struct svc_cmd){&svc_customer_type, id, d_register, &reg, NULL, NULL, NULL},
                 &err),
        0, "%s", err.msg);
    cr_assert_not(svc_stream_exists(env, "account", account));

    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"half@test.example\",\"name\":\"Half Done\"}", NULL),
                 409, "the same registration again: %s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/api/v1/customers/me", ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "id"), id);
    cr_expect_str_eq(t_str(&r, "accountId"), account);
    t_free(&r);
    t_deposit(ALICE, account, 100); /* its account was opened by the retry */
}
