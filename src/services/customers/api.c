/*
 * The customers context's API: registration (which opens the customer's wallet
 * account in payments), the caller's own customer, tiers. The read model is in
 * projection.c.
 *
 * Unique email: registering claims the stream `customer-email-<mac>` (a keyed
 * MAC of the email, customers/email.c) with no-stream; a second registration
 * with the same email loses that race and gets 409. A released claim is taken
 * over (erasure releases it, so an erased person may register again with the
 * same email), and so is one whose customer does not exist after the lease
 * (svc_claim_prepare: left by an older binary).
 *
 * One customer per principal: a customer-role caller registers its own customer,
 * bound to its sub (access.c); a second registration is 409 naming the first
 * (Location: it), the retry of one whose answer was lost as well — the client
 * follows Location or GET /customers/me; an Idempotency-Key replays the 201
 * instead. Only an admin sets a tier, registers for someone else (optional
 * "sub"), or changes a tier later (CustomerTierChanged).
 *
 * Atomic: the principal's binding, the email claim, CustomerRegistered and the
 * account's AccountOpened (both decided by the domain) are ONE multi-stream
 * append (ag_es_execute_multi_extra): a fault leaves all of it or nothing. A
 * claim that moved meanwhile (a conflict) is read and decided again (3 tries).
 *
 * Addresses: POST /customers/{id}/addresses adds one (the customer or an admin;
 * AddressAdded {addressId, address}; an address equal to a saved one answers 200
 * with that one's id instead of 201), GET lists them (at most eight, one page).
 * They are read from the aggregate, not a read model: an address is personal data
 * and the list is short. An order names one as its shippingAddressId
 * (ordering/api.c).
 *
 * Personal data (src/services/pii.c): the email and name reach the log, the read
 * model and the idempotency record sealed with the customer's data key; answers
 * open them. Erasure (POST /customers/{id}/erase, the customer or an admin)
 * releases the email claim (reading the email needs the key), destroys the key,
 * then records CustomerErased: a crash in between is finished by the retry (each
 * step is idempotent). Error messages never echo an email (they are kept in
 * idempotency records).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "agora/vault.h"
#include "services/internal.h"

/* Free customer `id`'s email for a new registration (before its key goes: the
 * email must still be readable). A no-op once the customer is erased. */
static int release_email(struct svc_env *p, const char *id, struct ag_err *err)
{
    char email[256], stream[SVC_EMAIL_STREAM_MAX];
    int rc = svc_customer_email(p, id, email, err);
    if (rc || !email[0]) return rc;
    rc = svc_email_stream(email, stream, err);
    return rc ? rc : svc_release_claim(p, stream, id, err);
}

/* What a registration decides: the customer and its account, as the domain
 * makes them (ag_customer_register, ag_account_open). What exists already is left
 * as it is (a retry with the same id: an Idempotency-Key's, after its record was
 * released), so a half left by an older binary is completed. */
struct reg_call {
    const struct ag_customer_register *reg;
    const struct ag_account_open *open;
};

/* A domain call's outcome `rc`: its events moved to `out` when it succeeded. */
static int take_events(int rc, struct ag_dom_events *evs, struct ag_es_batch *out)
{
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_es_batch_push(out, evs->v[i].type, evs->v[i].data);
        evs->v[i].data = NULL; /* moved (push releases it on failure) */
    }
    ag_dom_events_free(evs);
    return rc;
}

static int decide_registration(void *const *states, const int64_t *versions, void *ud,
                               struct ag_es_batch *outs, struct ag_err *err)
{
    AG_UNUSED(versions);
    const struct reg_call *c = ud;
    const struct ag_customer *cu = states[0];
    const struct ag_account *ac = states[1];
    struct ag_dom_events evs;
    int rc = 0;
    if (!cu->exists) {
        ag_dom_events_init(&evs);
        rc = take_events(ag_customer_register(cu, c->reg, &evs, err), &evs, &outs[0]);
        /* personal data sealed with the new customer's key (pii.c) */
        if (!rc) rc = svc_pii_seal_events(&svc_customer_type, NULL, &outs[0], 0, err);
    }
    if (!rc && !ac->exists) {
        ag_dom_events_init(&evs);
        rc = take_events(ag_account_open(ac, c->open, &evs, err), &evs, &outs[1]);
    }
    if (rc == AG_ENOMEM && !err->msg[0]) ag_err_set(err, AG_ENOMEM, "out of memory");
    return rc;
}

/* The claims a registration commits with its events: the principal's binding
 * (when `sub`) and the email; one already the customer's is not appended again. */
static int prepare_claims(struct svc_env *p, const struct svc_registration *r,
                          const char *email_stream, struct svc_claim_part claims[2],
                          struct ag_append_part extra[2], size_t *n, char existing[40],
                          struct ag_err *err)
{
    *n = 0;
    if (r->sub && *r->sub) {
        int rc = svc_bind_principal_prepare(p, r->sub, r->id, existing, &claims[0], err);
        if (rc) return rc;
        if (!claims[0].held) extra[(*n)++] = claims[0].part;
    }
    int rc = svc_claim_prepare(p, email_stream, r->id, "customer", NULL, &claims[1], err);
    if (rc == AG_EEXISTS) return ag_err_set(err, AG_EEXISTS, "this email is already registered");
    if (rc) return rc;
    if (!claims[1].held) extra[(*n)++] = claims[1].part;
    return 0;
}

int svc_register_customer(struct svc_env *p, const struct svc_registration *r, char account_id[40],
                          char existing[40], struct ag_err *err)
{
    char email_stream[SVC_EMAIL_STREAM_MAX], cs[AG_STORE_STREAM_MAX + 1],
        as[AG_STORE_STREAM_MAX + 1];
    existing[0] = '\0';
    int rc = svc_email_stream(r->email, email_stream, err);
    if (rc) return rc;
    svc_new_id(account_id, "account", r->id); /* one account per customer, derived from it */
    if (ag_es_stream(&svc_customer_type, r->id, cs, sizeof cs) ||
        ag_es_stream(&svc_account_type, account_id, as, sizeof as))
        return ag_err_set(err, AG_EINVAL, "customer id is too long");
    struct ag_customer_register reg = {r->id, r->email, r->name, r->premium, account_id};
    struct ag_account_open open = {account_id, r->id, "USD", svc_now_ms()};
    struct reg_call call = {&reg, &open};
    /* the customer first: on a sharded store its shard coordinates the unit */
    const struct ag_es_part parts[2] = {{&svc_customer_type, cs}, {&svc_account_type, as}};
    const struct ag_es_multi_cmd mc = {parts, 2, decide_registration, &call, r->meta};
    for (int attempt = 0; attempt < 3; attempt++) { /* a claim moved meanwhile: decide again */
        struct svc_claim_part claims[2];
        struct ag_append_part extra[2];
        size_t n;
        rc = prepare_claims(p, r, email_stream, claims, extra, &n, existing, err);
        if (!rc) rc = ag_es_execute_multi_extra(p->repo, &mc, extra, n, NULL, err);
        if (rc != AG_ECONFLICT) return rc;
    }
    return ag_err_set(err, AG_ECONFLICT, "too many concurrent registrations");
}

static json_t *customer_json(const char *id, const char *email, const char *name, const char *tier,
                             const char *account_id)
{
    json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "email", email, "name", name,
                          "tier", tier, "accountId", account_id);
    svc_pii_open_field(c, "email"); /* from the read model: sealed */
    svc_pii_open_field(c, "name");
    const char *e = json_string_value(json_object_get(c, "email"));
    if (e && strcmp(e, AG_CUSTOMER_ERASED) == 0) json_object_set_new(c, "erased", json_true());
    return c;
}

static const char *const personal[] = {"email", "name", NULL};

/* Validate the registration body; the tier only an admin may set. */
static void parse_registration(struct svc_job *j, const char **email, const char **name,
                               bool *premium, const char **sub)
{
    json_t *b = j->body;
    *email = json_string_value(json_object_get(b, "email"));
    *name = json_string_value(json_object_get(b, "name"));
    json_t *tier = json_object_get(b, "tier"), *s = json_object_get(b, "sub");
    if (!*email) svc_field_error(j, "/email", "email is required and must be a string");
    if (!*name || !**name)
        svc_field_error(j, "/name", "name is required and must be a non-empty string");
    else if (strlen(*name) > 255)
        svc_field_error(j, "/name", "name is longer than 255 bytes");
    *premium = false;
    if (tier && !json_is_null(tier)) {
        const char *t = json_string_value(tier);
        if (t && strcmp(t, "premium") == 0)
            *premium = true;
        else if (!t || strcmp(t, "standard") != 0)
            svc_field_error(j, "/tier", "tier must be \"standard\" or \"premium\"");
    }
    *sub = j->who.admin ? json_string_value(s) : j->who.sub;
    if (s && !json_is_null(s) &&
        (!json_is_string(s) || !j->who.admin || !**sub || strlen(*sub) >= sizeof j->who.sub))
        svc_field_error(j, "/sub",
                        j->who.admin ? "sub must be a non-empty string of at most 127 bytes"
                                     : "only an admin registers a customer for another principal");
}

static int refuse_privileged(struct svc_job *j, bool premium)
{
    if (!premium || j->who.admin) return 0;
    svc_field_error(j, "/tier", "only an admin may set the tier");
    svc_fields_failed(j, 403);
    snprintf(j->title, sizeof j->title, "Forbidden field");
    return 1;
}

static void registered(struct svc_job *j, int rc, struct ag_err *err, const char *existing)
{
    if (rc == AG_EEXISTS && existing[0]) {
        svc_field_error(j, "", "this principal already has customer %s", existing);
        svc_fields_failed(j, 409);
        snprintf(j->title, sizeof j->title, "Customer already registered");
        snprintf(j->location, sizeof j->location, "/api/v1/customers/%s", existing);
    } else if (rc == AG_EEXISTS) {
        svc_field_error(j, "/email", "%s", err->msg);
        svc_fields_failed(j, 409);
        snprintf(j->title, sizeof j->title, "Email already registered");
    } else if (rc == AG_EINVAL || rc == AG_EDOMAIN) {
        svc_field_error(j, strstr(err->msg, "email") ? "/email" : "/name", "%s", err->msg);
        svc_fields_failed(j, 400);
    } else if (rc) {
        svc_error(j, rc, err);
    }
}

/* The domain's own checks (email shape, name), before anything is claimed: a
 * malformed registration is a 400 whoever sends it. */
static int check_registration(struct svc_job *j, const char *email, const char *name)
{
    struct ag_customer *blank = ag_calloc(1, sizeof *blank);
    if (!blank) return AG_ENOMEM;
    ag_customer_init(blank);
    struct ag_customer_register reg = {"check", email, name, false, "check"};
    struct ag_dom_events evs;
    ag_dom_events_init(&evs);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_customer_register(blank, &reg, &evs, &err);
    ag_dom_events_free(&evs);
    ag_customer_free(blank);
    ag_free(blank);
    if (rc == AG_EINVAL || rc == AG_EDOMAIN) {
        registered(j, rc, &err, "");
        return 1;
    }
    return 0;
}

struct same_view {
    const struct svc_registration *reg;
    json_t *found; /* OUT: the customer, when it is the same registration */
};

static void view_same(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    struct same_view *v = ud;
    if (!c->exists || c->erased || strcasecmp(c->email, v->reg->email) != 0 ||
        strcmp(c->name, v->reg->name) != 0 || c->premium != v->reg->premium)
        return;
    v->found =
        customer_json(c->id, c->email, c->name, ag_customer_tier_name(c->premium), c->account_id);
}

SVC_DECIDE(account_open)

/* The principal's customer `existing` as *out when it was registered with this
 * email (the claim's case-insensitive match), name and tier: a retry of a
 * registration that committed though its answer was lost (*out NULL: another
 * registration). A customer without its account, left by a binary that wrote
 * them in separate appends, gets it now: the error when that fails. */
static int registered_before(struct svc_job *j, const char *existing,
                             const struct svc_registration *reg, json_t **out, struct ag_err *err)
{
    struct same_view v = {reg, NULL};
    *out = NULL;
    if (svc_read(j->env, &svc_customer_type, existing, view_same, &v, err) || !v.found) return 0;
    const char *acc = json_string_value(json_object_get(v.found, "accountId"));
    if (acc && !svc_stream_exists(j->env, "account", acc)) {
        struct ag_account_open open = {acc, existing, "USD", svc_now_ms()};
        int rc = svc_exec(
            j->env,
            &(struct svc_cmd){&svc_account_type, acc, d_account_open, &open, j->meta, NULL, NULL},
            err);
        if (rc && rc != AG_EDOMAIN) { /* EDOMAIN: opened meanwhile */
            json_decref(v.found);
            return rc;
        }
    }
    *out = v.found;
    return 0;
}

static int create(struct svc_job *j)
{
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    const char *email, *name, *sub;
    bool premium;
    parse_registration(j, &email, &name, &premium, &sub);
    if (svc_fields_failed(j, 400) || refuse_privileged(j, premium) ||
        check_registration(j, email, name))
        return 0;
    if (svc_idem_begin(j, "customers")) return 0;
    char id[AG_UUID_STRLEN + 1], account[40], existing[40] = "";
    svc_job_id(j, "customers", id);
    struct ag_err err;
    ag_err_clear(&err);
    const struct svc_registration reg = {id, sub, email, name, premium, j->meta};
    int rc = svc_register_customer(j->env, &reg, account, existing, &err);
    if (rc == AG_EEXISTS && existing[0]) { /* 409 naming it, its account made whole */
        json_t *again = NULL;
        int brc = registered_before(j, existing, &reg, &again, &err);
        json_decref(again);
        if (brc) rc = brc, existing[0] = '\0';
    }
    if (rc) {
        registered(j, rc, &err, existing);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/customers/%s", id);
        svc_ok(j, 201, customer_json(id, email, name, ag_customer_tier_name(premium), account));
        snprintf(j->pii_subject, sizeof j->pii_subject, "%s", id);
        j->pii_fields = personal;
    }
    svc_idem_end(j, "customers");
    return 0;
}

static json_t *row(const struct ag_rm_row *st)
{
    return customer_json(ag_rm_text(st, 0), ag_rm_text(st, 1), ag_rm_text(st, 2), ag_rm_text(st, 3),
                         ag_rm_text(st, 4));
}

/* Owned customers only: a customer's own id is its owner filter. */
static const struct svc_one one = {
    RM_CUSTOMERS,
    "SELECT id, email, name, tier, account_id FROM customers WHERE id=?1 AND (?2 IS NULL OR id=?2)",
    row,
    "customer",
    "Customer not found",
    "no customer with id"};

/* Through the in-process read cache (readcache.c; personal data never goes to Redis). */
static int get(struct svc_job *j)
{
    return svc_cache_get_one(j, SVC_CACHE_CUSTOMER, &one, j->param, svc_owner_filter(j));
}

/* GET /api/v1/customers/me: the caller's own customer. */
static int me(struct svc_job *j)
{
    const char *mine = svc_caller_customer(j);
    if (!mine)
        return svc_problem(j, 404, "Customer not found",
                           "no customer is registered for principal %s: POST /api/v1/customers",
                           j->who.sub);
    return svc_cache_get_one(j, SVC_CACHE_CUSTOMER, &one, mine, NULL);
}

static int dom_tier(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    const struct ag_customer *c = st;
    if (!c->exists) return ag_err_set(err, AG_ENOTFOUND, "no customer with id");
    return ag_customer_change_tier(st, cmd, out, err);
}

static void view_customer(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    json_decref(*(json_t **)ud);
    *(json_t **)ud =
        customer_json(c->id, c->email, c->name, ag_customer_tier_name(c->premium), c->account_id);
}

/* POST /api/v1/customers/{id}/tier {"tier": "premium"|"standard"} (admin). */
static int tier(struct svc_job *j)
{
    const char *t = json_string_value(json_object_get(j->body, "tier"));
    if (!t || (strcmp(t, "premium") != 0 && strcmp(t, "standard") != 0))
        svc_field_error(j, "/tier", "tier must be \"standard\" or \"premium\"");
    if (svc_fields_failed(j, 400)) return 0;
    if (!svc_stream_exists(j->env, "customer", j->param))
        return svc_problem(j, 404, "Customer not found", "no customer with id %s", j->param);
    struct ag_customer_change_tier c = {strcmp(t, "premium") == 0};
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_customer_type, j->param, dom_tier, &c, j->meta,
                                        view_customer, &view},
                      &err);
    if (rc)
        svc_error(j, rc, &err);
    else
        svc_ok(j, 200, view), view = NULL;
    json_decref(view);
    return 0;
}

static int dom_erase(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    AG_UNUSED(cmd);
    return ag_customer_erase(st, out, err);
}

/* POST /api/v1/customers/{id}/erase (the customer or an admin): crypto-shredding. */
static int erase(struct svc_job *j)
{
    if (!svc_owns(j, j->param) || !svc_stream_exists(j->env, "customer", j->param))
        return svc_problem(j, 404, "Customer not found", "no customer with id %s", j->param);
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_vault *v = svc_pii_vault();
    int rc = v ? release_email(j->env, j->param, &err)
               : ag_err_set(&err, AG_ECONFIG, "no vault for personal data");
    if (!rc) rc = ag_vault_erase(v, j->param, &err);
    if (!rc) svc_cache_forget(j->env->cache, SVC_CACHE_CUSTOMER, j->param); /* no clear copy left */
    json_t *view = NULL;
    if (!rc)
        rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_customer_type, j->param, dom_erase, NULL, j->meta,
                                        view_customer, &view},
                      &err);
    if (rc) {
        svc_error(j, rc, &err);
    } else {
        AG_INFO("customers.erased", AG_LS("customer", j->param), AG_LS("by", j->who.sub));
        svc_ok(j, 200, view), view = NULL;
    }
    json_decref(view);
    return 0;
}

/* ---- addresses ---- */

static const char *const address_personal[] = {"street", "city", "state", "zipCode", NULL};

struct addr_view {
    const struct ag_address *find; /* the address whose id to report, or NULL */
    char id[AG_DOM_ID_MAX];        /* OUT: its id */
    json_t *items;                 /* OUT (when non-NULL): every address with its id */
    bool exists;                   /* OUT: the customer is registered */
};

static json_t *address_json(const char *id, const struct ag_address *a)
{
    json_t *o = ag_address_to_json(a);
    if (o) json_object_set_new(o, "id", json_string(id));
    return o;
}

static void view_addresses(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_customer *c = state;
    struct addr_view *v = ud;
    v->exists = c->exists;
    for (size_t i = 0; i < c->naddresses; i++) {
        if (v->find && ag_address_eq(&c->addresses[i], v->find))
            snprintf(v->id, sizeof v->id, "%s", c->address_ids[i]);
        if (v->items)
            json_array_append_new(v->items, address_json(c->address_ids[i], &c->addresses[i]));
    }
}

static int dom_address(const void *st, const void *cmd, struct ag_dom_events *out,
                       struct ag_err *err)
{
    const struct ag_customer *c = st;
    if (!c->exists) return ag_err_set(err, AG_ENOTFOUND, "no customer with id");
    return ag_customer_add_address(st, cmd, out, err);
}

/* The body as an address, or a field error (its pointer from the parser). */
static int parse_address(struct svc_job *j, struct ag_address *a)
{
    static const char *const fields[] = {"street", "city", "state", "zipCode", "country", NULL};
    struct ag_err err;
    ag_err_clear(&err);
    if (svc_body_object(j, fields) && !json_is_object(j->body)) return 1;
    if (ag_address_from_json(j->body, a, "", &err) == 0) return json_array_size(j->errors) > 0;
    const char *colon = strstr(err.msg, ": ");
    char ptr[96];
    snprintf(ptr, sizeof ptr, "%.*s", colon ? (int)(colon - err.msg) : 0, colon ? err.msg : "");
    svc_field_error(j, ptr, "%s", colon ? colon + 2 : err.msg);
    return 1;
}

static void address_added(struct svc_job *j, const struct ag_address *a, const char *new_id)
{
    struct addr_view v = {a, "", NULL, false};
    struct ag_err err;
    ag_err_clear(&err);
    struct ag_customer_add_address cmd = {new_id, a};
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_customer_type, j->param, dom_address, &cmd, j->meta,
                                        view_addresses, &v},
                      &err);
    if (rc == AG_EDOMAIN) {
        svc_problem(j, 409, "Address not added", "%s", err.msg);
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        bool added = strcmp(v.id, new_id) == 0;
        snprintf(j->location, sizeof j->location, "/api/v1/customers/%s/addresses", j->param);
        svc_ok(j, added ? 201 : 200, address_json(v.id, a));
        snprintf(j->pii_subject, sizeof j->pii_subject, "%.36s", j->param); /* a UUID */
        j->pii_fields = address_personal;
    }
}

/* POST /api/v1/customers/{id}/addresses (the customer or an admin). */
static int add_address(struct svc_job *j)
{
    struct ag_address a;
    memset(&a, 0, sizeof a);
    if (!svc_owns(j, j->param) || !svc_stream_exists(j->env, "customer", j->param))
        return svc_problem(j, 404, "Customer not found", "no customer with id %s", j->param);
    if (parse_address(j, &a)) return svc_fields_failed(j, 400), 0;
    if (svc_idem_begin(j, "addresses")) return 0;
    char id[AG_UUID_STRLEN + 1];
    svc_job_id(j, "addresses", id);
    address_added(j, &a, id);
    svc_idem_end(j, "addresses");
    return 0;
}

/* GET /api/v1/customers/{id}/addresses (the customer or an admin). */
static int list_addresses(struct svc_job *j)
{
    if (!svc_owns(j, j->param) || !svc_stream_exists(j->env, "customer", j->param))
        return svc_problem(j, 404, "Customer not found", "no customer with id %s", j->param);
    struct addr_view v = {NULL, "", json_array(), false};
    if (!v.items) return AG_ENOMEM;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_read(j->env, &svc_customer_type, j->param, view_addresses, &v, &err);
    if (rc == 0 && !v.exists)
        rc = ag_err_set(&err, AG_ENOTFOUND, "no customer with id %s", j->param);
    if (rc) {
        json_decref(v.items);
        return rc == AG_ENOTFOUND
                   ? svc_problem(j, 404, "Customer not found", "no customer with id %s", j->param)
                   : svc_error(j, rc, &err);
    }
    return svc_ok(j, 200, json_pack("{s:o, s:n}", "items", v.items, "nextCursor"));
}

static const struct svc_route routes[] = {
    {"POST", "/api/v1/customers", SVC_OWNER, create, NULL, NULL, {NULL}},
    {"GET", "/api/v1/customers/me", SVC_OWNER, me, NULL, NULL, {NULL}},
    {"GET", "/api/v1/customers/{id}", SVC_OWNER, get, "id", "customer", {NULL}},
    {"POST", "/api/v1/customers/{id}/tier", SVC_ADMIN, tier, "id", "customer", {NULL}},
    {"POST", "/api/v1/customers/{id}/erase", SVC_OWNER, erase, "id", "customer", {NULL}},
    {"POST", "/api/v1/customers/{id}/addresses", SVC_OWNER, add_address, "id", "customer", {NULL}},
    {"GET",
     "/api/v1/customers/{id}/addresses",
     SVC_OWNER,
     list_addresses,
     "id",
     "customer",
     {NULL}},
};

const struct svc_context svc_customers_context = {
    "customers", routes, sizeof routes / sizeof routes[0], svc_customers_projection, RM_CUSTOMERS};
