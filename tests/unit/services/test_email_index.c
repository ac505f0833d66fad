/* The unique-email index (src/services/customers/email.c): claims named by a
 * keyed MAC, released by erasure (the email is free again), and the migration of
 * the unkeyed `customer-email-<xxh3>` claims an older data directory holds. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/vault.h"
#include "svc_test.h"

TestSuite(email_index, .init = t_start, .fini = t_stop, .timeout = 60);

/* Whether any event of the store sits in a stream named `name`. */
static bool stream_seen(const char *name)
{
    bool found = false, end = false;
    for (uint64_t pos = 0; !found && !end;) {
        struct ag_event_page pg;
        cr_assert_eq(ag_store_read_all(t_plat->store, pos, AG_READ_FORWARD, 500, &pg, NULL), 0);
        for (size_t i = 0; i < pg.count && !found; i++)
            found = pg.events[i].stream_len == strlen(name) &&
                    memcmp(pg.events[i].stream, name, strlen(name)) == 0;
        end = pg.end || pg.count == 0;
        pos = pg.next_position;
        ag_event_page_free(&pg);
    }
    return found;
}

/* The last event type of `stream` ("" when it has none). */
static const char *last_type(const char *stream)
{
    static char t[64];
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_stream(t_plat->store, stream, strlen(stream), -1, AG_READ_BACKWARD,
                                      1, &pg, NULL),
                 0);
    snprintf(t, sizeof t, "%.*s", pg.count ? (int)pg.events[0].type_len : 0,
             pg.count ? pg.events[0].type : "");
    ag_event_page_free(&pg);
    return t;
}

static void old_stream(const char *email, char out[64])
{
    snprintf(out, 64, "customer-email-%016llx",
             (unsigned long long)ag_xxh3(email, strlen(email))); /* lower-case already */
}

static void keyed_stream(const char *email, char out[SVC_EMAIL_STREAM_MAX])
{
    struct ag_err err;
    cr_assert_eq(svc_email_stream(email, out, &err), 0, "%s", err.msg);
}

static int register_as(const char *who, const char *email, char id[40])
{
    struct t_resp r;
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Index Person\"}", email);
    int st = t_call(&r, "POST", "/api/v1/customers", who, body, NULL);
    if (id) snprintf(id, 40, "%s", t_str(&r, "id"));
    t_free(&r);
    return st;
}

static void erase(const char *who, const char *id)
{
    struct t_resp r;
    char path[128];
    snprintf(path, sizeof path, "/api/v1/customers/%s/erase", id);
    cr_assert_eq(t_call(&r, "POST", path, who, "{}", NULL), 200, "%s", r.text);
    t_free(&r);
}

Test(email_index, the_claim_is_named_by_a_keyed_mac)
{
    char id[40], keyed[SVC_EMAIL_STREAM_MAX], old[64];
    cr_assert_eq(register_as(ALICE, "Keyed@Test.example", id), 201);
    keyed_stream("KEYED@test.example", keyed);
    cr_expect_eq(strlen(keyed), strlen("customer-email-") + 32, "128 bits: %s", keyed);
    cr_expect(stream_seen(keyed), "the claim is %s", keyed);
    old_stream("keyed@test.example", old);
    cr_expect_not(stream_seen(old), "no unkeyed claim is made any more");
    cr_expect_eq(register_as(BOB, "keyed@TEST.example", NULL), 409, "still unique, any case");
}

Test(email_index, erasure_frees_the_email)
{
    char id[40], id2[40], keyed[SVC_EMAIL_STREAM_MAX];
    cr_assert_eq(register_as(ALICE, "again@test.example", id), 201);
    erase(ALICE, id);
    keyed_stream("again@test.example", keyed);
    cr_expect_str_eq(last_type(keyed), SVC_CLAIM_RELEASED, "the claim names nobody now");
    cr_assert_eq(register_as(BOB, "again@test.example", id2), 201, "the erased may re-register");
    cr_expect_str_neq(id, id2, "as a new customer");
    cr_expect_eq(register_as(ADMIN, "again@test.example", NULL), 409, "and it is unique again");
    erase(ADMIN, id); /* erasing the first again touches nothing of the second */
    cr_expect_str_eq(last_type(keyed), "EmailClaimed");
}

/* An older data directory: its claims carry the unkeyed name. Made here through
 * the store, as the old code did, then migrated. */
static void make_unkeyed(const char *email, const char *id)
{
    char old[64], keyed[SVC_EMAIL_STREAM_MAX], data[128];
    struct ag_err err;
    old_stream(email, old);
    keyed_stream(email, keyed);
    snprintf(data, sizeof data, "{\"customerId\":\"%s\",\"at\":1}", id);
    struct ag_event_data ev = {.type = "EmailClaimed",
                               .type_len = strlen("EmailClaimed"),
                               .data = data,
                               .data_len = strlen(data)};
    cr_assert_eq(
        ag_store_append(t_plat->store, old, strlen(old), AG_STORE_NO_STREAM, &ev, 1, NULL, &err), 0,
        "%s", err.msg);
    /* as if the keyed claim had never been made */
    cr_assert_eq(svc_release_claim(&t_plat->env, keyed, id, &err), 0, "%s", err.msg);
}

static void migrate(size_t want_found, size_t want_rekeyed)
{
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/keys/email-index", t_plat->cfg.data_dir);
    cr_assert_eq(access(marker, F_OK), 0, "the platform's start migrated (nothing) already");
    cr_assert_eq(unlink(marker), 0);
    size_t found = 0, rekeyed = 0;
    struct ag_err err;
    cr_assert_eq(svc_email_index_migrate(&t_plat->env, marker, &found, &rekeyed, &err), 0, "%s",
                 err.msg);
    cr_expect_eq(found, want_found);
    cr_expect_eq(rekeyed, want_rekeyed);
    cr_assert_eq(access(marker, F_OK), 0, "the marker is written");
    cr_assert_eq(svc_email_index_migrate(&t_plat->env, marker, &found, &rekeyed, &err), 0);
    cr_expect_eq(found, 0, "once");
}

Test(email_index, unkeyed_claims_are_migrated_once)
{
    char live[40], gone[40], old_live[64], old_gone[64], keyed[SVC_EMAIL_STREAM_MAX];
    cr_assert_eq(register_as(ALICE, "live@test.example", live), 201);
    cr_assert_eq(register_as(BOB, "gone@test.example", gone), 201);
    make_unkeyed("live@test.example", live);
    make_unkeyed("gone@test.example", gone);
    erase(BOB, gone); /* its keyed claim is released already: only the unkeyed one is left */
    migrate(2, 1);
    old_stream("live@test.example", old_live);
    old_stream("gone@test.example", old_gone);
    cr_expect_str_eq(last_type(old_live), SVC_CLAIM_RELEASED, "every unkeyed claim is released");
    cr_expect_str_eq(last_type(old_gone), SVC_CLAIM_RELEASED);
    keyed_stream("gone@test.example", keyed);
    cr_expect_str_eq(last_type(keyed), SVC_CLAIM_RELEASED, "an erased customer is not re-keyed");
    cr_expect_eq(register_as(ADMIN, "gone@test.example", NULL), 201, "its email is free");
}

Test(email_index, a_migrated_claim_keeps_the_email_unique)
{
    char live[40];
    cr_assert_eq(register_as(ALICE, "kept@test.example", live), 201);
    make_unkeyed("kept@test.example", live);
    migrate(1, 1);
    cr_expect_eq(register_as(BOB, "kept@test.example", NULL), 409, "re-keyed for alice");
    char keyed[SVC_EMAIL_STREAM_MAX];
    keyed_stream("kept@test.example", keyed);
    cr_expect_str_eq(last_type(keyed), "EmailClaimed");
}

/* ---- released claims leave the log at the next scavenge ---- */

static void start_small_segments(void)
{
    setenv("AGORA_STORE_SEGMENT_BYTES", "4194368", 1); /* the smallest: 4 MiB */
    t_start();
    unsetenv("AGORA_STORE_SEGMENT_BYTES");
}

TestSuite(email_scavenge, .init = start_small_segments, .fini = t_stop, .timeout = 120);

/* Fill until the log rolls to a new segment: everything so far is sealed. */
static void seal_log(void)
{
    struct ag_store_stats st0, st;
    ag_store_stats(t_plat->store, &st0);
    static char big[8192];
    snprintf(big, sizeof big, "{\"pad\":\"%08000d\"}", 0);
    struct ag_event_data e = {.type = "Fill", .type_len = 4, .data = big, .data_len = strlen(big)};
    do {
        cr_assert_eq(ag_store_append(t_plat->store, "filler", 6, AG_STORE_ANY, &e, 1, NULL, NULL),
                     0);
        ag_store_stats(t_plat->store, &st);
    } while (st.segments == st0.segments);
}

/* Whether any file under the data directory holds `s`. */
static bool on_disk(const char *s)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "grep -rlaF -- '%s' '%s' >/dev/null", s, t_plat->cfg.data_dir);
    return system(cmd) == 0;
}

Test(email_scavenge, released_claims_leave_the_log)
{
    char gone[40], live[40], kgone[SVC_EMAIL_STREAM_MAX], klive[SVC_EMAIL_STREAM_MAX], old[64];
    cr_assert_eq(register_as(ALICE, "leaves@test.example", gone), 201);
    cr_assert_eq(register_as(BOB, "stays@test.example", live), 201);
    make_unkeyed("stays@test.example", live); /* an older directory's claim */
    migrate(1, 1);
    erase(ALICE, gone);
    keyed_stream("leaves@test.example", kgone);
    keyed_stream("stays@test.example", klive);
    old_stream("stays@test.example", old);
    cr_assert(on_disk(kgone) && on_disk(old), "released, not yet gone");
    seal_log();
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/admin/store/scavenge", ADMIN, NULL, NULL), 200, "%s", r.text);
    t_free(&r);
    cr_expect_not(on_disk(kgone + strlen("customer-email-")),
                  "the erased customer's claim name is in no file");
    cr_expect_not(on_disk(old + strlen("customer-email-")), "nor the migrated unkeyed name");
    cr_expect(on_disk(klive), "a live claim stays");
    cr_expect_eq(register_as(ADMIN, "stays@test.example", NULL), 409);
    cr_expect_eq(register_as(ADMIN, "leaves@test.example", NULL), 201, "free, from no stream");
}

/* The marker names the index key: a vault whose index key changed (index.key
 * lost and made anew) would orphan every claim, so the start is refused. */
Test(email_index, another_index_key_is_refused)
{
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/keys/email-index", t_plat->cfg.data_dir);
    FILE *f = fopen(marker, "r");
    cr_assert(f);
    char text[256] = "";
    cr_assert(fgets(text, sizeof text, f));
    fclose(f);
    cr_assert(strstr(text, "index key "), "%s", text);
    f = fopen(marker, "w");
    fputs("keyed email claims v1, index key 0000000000000000: 0 unkeyed found, 0 re-keyed\n", f);
    fclose(f);
    size_t found, rekeyed;
    struct ag_err err;
    cr_assert_eq(svc_email_index_migrate(&t_plat->env, marker, &found, &rekeyed, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "restore keys/index.key"), "%s", err.msg);
    f = fopen(marker, "w");
    fputs(text, f);
    fclose(f);
    cr_assert_eq(svc_email_index_migrate(&t_plat->env, marker, &found, &rekeyed, &err), 0, "%s",
                 err.msg);
}
