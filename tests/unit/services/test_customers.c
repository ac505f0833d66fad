/* The customers context's handlers (src/services/customers/api.c) as a user meets
 * them: a principal registers its own customer once and finds it at /me; another
 * principal's customer is 404; field errors name their JSON pointers; only an admin
 * sets a tier or registers for someone else; an Idempotency-Key replays. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/vault.h"
#include "svc_test.h"

TestSuite(customers, .init = t_start, .fini = t_stop, .timeout = 60);

Test(customers, register_own_then_me_and_get)
{
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"alice@test.example\",\"name\":\"Alice\"}", NULL),
                 201, "%s", r.text);
    char id[40];
    snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    cr_expect(svc_uuid_ok(id), "a UUID: %s", id);
    cr_expect_str_eq(t_str(&r, "tier"), "standard");
    cr_expect(svc_uuid_ok(t_str(&r, "accountId")), "a wallet account is opened");
    char loc[128];
    snprintf(loc, sizeof loc, "/api/v1/customers/%s", id);
    cr_expect_str_eq(t_header(&r, "Location"), loc);
    t_free(&r);

    cr_assert_eq(t_call(&r, "GET", "/api/v1/customers/me", ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "id"), id);
    cr_expect_str_eq(t_str(&r, "email"), "alice@test.example");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", loc, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_neq(t_header(&r, "X-Projection-Position")[0], '\0');
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", loc, ADMIN, NULL, NULL), 200, "an admin reads anyone's");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", loc, BOB, NULL, NULL), 404, "someone else's is not found");
    cr_expect_str_eq(t_str(&r, "title"), "Customer not found");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", BOB, NULL, NULL), 404,
                 "bob has no customer");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", ADMIN, NULL, NULL), 404,
                 "an admin without a customer");
    t_free(&r);
}

Test(customers, anonymous_is_401_with_a_bearer_challenge)
{
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", "/api/v1/customers", ANON,
                        "{\"email\":\"a@test.example\",\"name\":\"A\"}", NULL),
                 401);
    cr_expect_str_eq(t_header(&r, "WWW-Authenticate"), "Bearer");
    cr_expect(strstr(t_header(&r, "Content-Type"), "application/problem+json"));
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", ANON, NULL, NULL), 401);
    t_free(&r);
}

Test(customers, a_second_registration_is_409_naming_the_first)
{
    char id[40];
    t_register(ALICE, "alice@test.example", id, NULL);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"alice2@test.example\",\"name\":\"Alice\"}", NULL),
                 409, "%s", r.text);
    cr_expect(t_has_pointer(&r, ""), "the whole body: %s", r.text);
    cr_expect(strstr(t_str(&r, "detail"), id), "names %s: %s", id, r.text);
    cr_expect(strstr(t_header(&r, "Location"), id));
    t_free(&r);
}

Test(customers, a_taken_email_is_409_on_email)
{
    t_register(ALICE, "shared@test.example", NULL, NULL);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", BOB,
                        "{\"email\":\"SHARED@test.example\",\"name\":\"Bob\"}", NULL),
                 409, "emails are case-insensitive: %s", r.text);
    cr_expect(t_has_pointer(&r, "/email"), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", BOB, NULL, NULL), 404,
                 "nothing was bound to bob");
    t_free(&r);
}

Test(customers, validation_errors_name_their_fields)
{
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, "{}", NULL), 400);
    cr_expect(t_has_pointer(&r, "/email") && t_has_pointer(&r, "/name"), "%s", r.text);
    cr_expect(strstr(t_str(&r, "detail"), "and 1 more"), "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"not-an-email\",\"name\":\"A\"}", NULL),
                 400);
    cr_expect(t_has_pointer(&r, "/email"), "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"a@test.example\",\"name\":\"A\",\"tier\":\"gold\"}", NULL),
                 400);
    cr_expect(t_has_pointer(&r, "/tier"), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, "[1,2]", NULL), 400);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, "{\"email\":", NULL), 400);
    cr_expect_str_eq(t_str(&r, "title"), "Malformed JSON");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", ALICE, NULL, NULL), 404,
                 "nothing was registered");
    t_free(&r);
}

Test(customers, only_an_admin_sets_a_tier_or_registers_for_another)
{
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"a@test.example\",\"name\":\"A\",\"tier\":\"premium\"}", NULL),
                 403, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/tier"), "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"a@test.example\",\"name\":\"A\",\"sub\":\"bob\"}", NULL),
                 400, "%s", r.text);
    cr_expect(t_has_pointer(&r, "/sub"), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", ALICE, NULL, NULL), 404,
                 "nothing was registered");
    t_free(&r);
    /* an admin registers a premium customer for carol */
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ADMIN,
                        "{\"email\":\"carol@test.example\",\"name\":\"Carol\",\"tier\":\"premium\","
                        "\"sub\":\"carol\"}",
                        NULL),
                 201, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "tier"), "premium");
    char id[40];
    snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", "/api/v1/customers/me", "carol|customer", NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "id"), id, "bound to carol's sub");
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/me", ADMIN, NULL, NULL), 404,
                 "not bound to the admin");
    t_free(&r);
}

Test(customers, tier_changes_are_admin_only)
{
    char id[40], path[128];
    t_register(ALICE, "alice@test.example", id, NULL);
    snprintf(path, sizeof path, "/api/v1/customers/%s/tier", id);
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", path, ALICE, "{\"tier\":\"premium\"}", NULL), 403,
                 "not even on its own customer");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ANON, "{\"tier\":\"premium\"}", NULL), 401);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", path, ADMIN, "{\"tier\":\"platinum\"}", NULL), 400);
    cr_expect(t_has_pointer(&r, "/tier"), "%s", r.text);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", path, ADMIN, "{\"tier\":\"premium\"}", NULL), 200, "%s",
                 r.text);
    cr_expect_str_eq(t_str(&r, "tier"), "premium");
    cr_expect_str_eq(t_str(&r, "id"), id);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/customers/0190a1b2-0000-7000-8000-000000000000/tier",
                        ADMIN, "{\"tier\":\"premium\"}", NULL),
                 404);
    t_free(&r);
    t_catch_up();
    cr_assert_eq(t_call(&r, "GET", "/api/v1/customers/me", ALICE, NULL, NULL), 200);
    cr_expect_str_eq(t_str(&r, "tier"), "premium", "the read model follows");
    t_free(&r);
}

Test(customers, ids_that_are_not_uuids_are_404_before_any_lookup)
{
    struct t_resp r;
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/email-0123456789abcdef", ADMIN, NULL, NULL),
                 404);
    cr_expect(strstr(t_str(&r, "detail"), "no customer with id"), "%s", r.text);
    t_free(&r);
    cr_expect_eq(t_call(&r, "GET", "/api/v1/customers/0190a1b2-0000-7000-8000-00000000000", ADMIN,
                        NULL, NULL),
                 404, "35 characters");
    t_free(&r);
}

Test(customers, an_idempotency_key_replays_per_principal)
{
    const char *body = "{\"email\":\"alice@test.example\",\"name\":\"Alice\"}";
    const char *key = "Idempotency-Key: reg-1\r\n";
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, body, key), 201, "%s", r.text);
    char id[40];
    snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "");
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE, body, key), 201, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "id"), id, "the same customer");
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "true");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"other@test.example\",\"name\":\"Alice\"}", key),
                 422, "the key with another body");
    t_free(&r);
    /* bob's reg-1 is his own key: it registers bob, it does not replay alice's */
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", BOB,
                        "{\"email\":\"bob@test.example\",\"name\":\"Bob\"}", key),
                 201, "%s", r.text);
    cr_expect_str_neq(t_str(&r, "id"), id);
    cr_expect_str_eq(t_header(&r, "Idempotent-Replayed"), "");
    t_free(&r);
}

/* Personal data at rest (src/services/pii.c): the log holds envelopes, the API the
 * values; erasure destroys the key and the events stay. */
static bool log_holds(const char *needle)
{
    bool found = false, end = false;
    for (uint64_t pos = 0; !found && !end;) {
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(t_plat->store, pos, AG_READ_FORWARD, 500, &pg, NULL), 0);
        for (size_t i = 0; i < pg.count && !found; i++)
            found = memmem(pg.events[i].data, pg.events[i].data_len, needle, strlen(needle));
        end = pg.end || pg.count == 0;
        pos = pg.next_position;
        ag_event_page_free(&pg);
    }
    return found;
}

Test(customers, personal_data_sealed_then_erased)
{
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"sealed.alice@test.example\",\"name\":\"Alice Sealed\"}",
                        "Idempotency-Key: k-sealed\r\n"),
                 201, "%s", r.text);
    char id[40], loc[128], erase[160];
    snprintf(id, sizeof id, "%s", t_str(&r, "id"));
    snprintf(loc, sizeof loc, "/api/v1/customers/%s", id);
    snprintf(erase, sizeof erase, "%s/erase", loc);
    t_free(&r);
    cr_expect_not(log_holds("sealed.alice"), "the email is sealed in the log");
    cr_expect_not(log_holds("Alice Sealed"), "the name too (and the idempotency record)");
    cr_expect(log_holds("pii1:"), "as envelopes");
    cr_assert_eq(t_call(&r, "GET", loc, ALICE, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "email"), "sealed.alice@test.example");
    cr_expect_str_eq(t_str(&r, "name"), "Alice Sealed");
    t_free(&r);

    cr_expect_eq(t_call(&r, "POST", erase, BOB, "{}", NULL), 404, "not bob's");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", erase, ANON, "{}", NULL), 401);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", erase, ALICE, "{}", NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "email"), AG_CUSTOMER_ERASED);
    cr_expect(json_is_true(json_object_get(r.body, "erased")));
    t_free(&r);
    cr_assert_eq(t_call(&r, "GET", loc, ADMIN, NULL, NULL), 200, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "name"), AG_CUSTOMER_ERASED);
    cr_expect(svc_uuid_ok(t_str(&r, "accountId")), "the account stays");
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", ALICE,
                        "{\"email\":\"sealed.alice@test.example\",\"name\":\"Alice Sealed\"}",
                        "Idempotency-Key: k-sealed\r\n"),
                 201, "%s", r.text);
    cr_expect_str_eq(t_str(&r, "email"), AG_CUSTOMER_ERASED, "the replay cannot read it either");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", erase, ADMIN, "{}", NULL), 200, "erasing again: a no-op");
    t_free(&r);
}

/* The customer type's snapshot seals the personal fields; restore opens them, and
 * reads placeholders once the key is destroyed. */
Test(customers, snapshots_are_sealed)
{
    struct ag_customer *c = ag_calloc(2, sizeof *c);
    cr_assert(c);
    snprintf(c[0].id, sizeof c[0].id, "snap-1");
    snprintf(c[0].email, sizeof c[0].email, "snap@test.example");
    snprintf(c[0].name, sizeof c[0].name, "Snap Shot");
    snprintf(c[0].account_id, sizeof c[0].account_id, "acc-1");
    snprintf(c[0].addresses[0].street, sizeof c[0].addresses[0].street, "7 Snap Road");
    snprintf(c[0].addresses[0].city, sizeof c[0].addresses[0].city, "C");
    snprintf(c[0].addresses[0].state, sizeof c[0].addresses[0].state, "S");
    snprintf(c[0].addresses[0].zip_code, sizeof c[0].addresses[0].zip_code, "1");
    snprintf(c[0].addresses[0].country, sizeof c[0].addresses[0].country, "US");
    snprintf(c[0].address_ids[0], sizeof c[0].address_ids[0], "addr-1");
    c[0].naddresses = 1;
    c[0].exists = true;
    json_t *snap = svc_customer_type.snapshot(&c[0]);
    cr_assert(snap);
    char *text = json_dumps(snap, JSON_COMPACT);
    cr_expect_null(strstr(text, "snap@"), "%s", text);
    cr_expect_null(strstr(text, "Snap Shot"), "%s", text);
    cr_expect_null(strstr(text, "Snap Road"), "%s", text);
    free(text);
    cr_assert_eq(svc_customer_type.restore(&c[1], snap), 0);
    cr_expect_str_eq(c[1].email, "snap@test.example");
    cr_expect_str_eq(c[1].addresses[0].street, "7 Snap Road");
    struct ag_err err;
    cr_assert_eq(ag_vault_erase(svc_pii_vault(), "snap-1", &err), 0, "%s", err.msg);
    cr_assert_eq(svc_customer_type.restore(&c[1], snap), 0);
    cr_expect_str_eq(c[1].email, AG_CUSTOMER_ERASED);
    cr_expect_eq(c[1].naddresses, 0);
    json_decref(snap);
    ag_free(c);
}
