/*
 * The customers context: registration (which opens the customer's wallet account
 * in payments) and the customers read model.
 *
 * Unique email: registering first claims the stream `customer-email-<hash>` with
 * no-stream; a second registration with the same email loses that race and gets
 * 409. A claim whose customer never got registered (a crash in between) is taken
 * over by the next registration.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static void email_stream(const char *email, char out[64])
{
    char low[256];
    size_t n = strlen(email);
    if (n >= sizeof low) n = sizeof low - 1;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)email[i]);
    snprintf(out, 64, "customer-email-%016llx", (unsigned long long)ag_xxh3(low, n));
}

/* Claim `email` for `id`: 0, or AG_EEXISTS when another customer has it. */
static int claim_email(struct ag_platform *p, const char *email, const char *id, struct ag_err *err)
{
    char stream[64], data[128];
    email_stream(email, stream);
    snprintf(data, sizeof data, "{\"customerId\":\"%s\"}", id);
    struct ag_event_data ev = {
        .type = "EmailClaimed", .type_len = 12, .data = data, .data_len = strlen(data)};
    int64_t expected = AG_STORE_NO_STREAM;
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = ag_store_append(p->store, stream, strlen(stream), expected, &ev, 1, NULL, err);
        if (rc != AG_ECONFLICT) return rc;
        struct ag_event_page pg;
        if (ag_store_read_stream(p->store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &pg,
                                 err))
            return AG_EIO;
        json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
        const char *owner = json_string_value(json_object_get(d, "customerId"));
        bool mine = owner && strcmp(owner, id) == 0;
        bool orphan = owner && !svc_stream_exists(p, "customer", owner);
        expected = pg.events[0].version;
        json_decref(d);
        ag_event_page_free(&pg);
        if (mine) return 0;
        if (!orphan) return ag_err_set(err, AG_EEXISTS, "email %s is already registered", email);
    }
    return ag_err_set(err, AG_ECONFLICT, "email %s: too many concurrent registrations", email);
}

static int dom_register(const void *st, const void *cmd, struct ag_dom_events *out,
                        struct ag_err *err)
{
    return ag_customer_register(st, cmd, out, err);
}

static int dom_open(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_account_open(st, cmd, out, err);
}

int svc_register_customer(struct ag_platform *p, const char *id, const char *email,
                          const char *name, bool premium, const char *meta, char account_id[40],
                          struct ag_err *err)
{
    char stream[128];
    int rc = claim_email(p, email, id, err);
    if (rc) return rc;
    svc_new_id(account_id, "account", id); /* one account per customer, derived from it */
    struct ag_customer_register reg = {id, email, name, premium, account_id};
    svc_stream(stream, sizeof stream, "customer", id);
    rc = svc_exec(p, &svc_customer_type, stream, dom_register, &reg, meta, NULL, NULL, NULL, err);
    if (rc) return rc;
    struct ag_account_open open = {account_id, id, "USD", svc_now_ms()};
    svc_stream(stream, sizeof stream, "account", account_id);
    return svc_exec(p, &svc_account_type, stream, dom_open, &open, meta, NULL, NULL, NULL, err);
}

static json_t *customer_json(const char *id, const char *email, const char *name, const char *tier,
                             const char *account_id)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "email", email, "name", name, "tier",
                     tier, "accountId", account_id);
}

static int create(struct svc_job *j)
{
    json_t *b = j->body;
    if (!json_is_object(b))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    const char *email = json_string_value(json_object_get(b, "email"));
    const char *name = json_string_value(json_object_get(b, "name"));
    json_t *tier = json_object_get(b, "tier");
    if (!email) svc_field_error(j, "/email", "email is required and must be a string");
    if (!name || !*name)
        svc_field_error(j, "/name", "name is required and must be a non-empty string");
    else if (strlen(name) > 255)
        svc_field_error(j, "/name", "name is longer than 255 bytes");
    bool premium = false;
    if (tier && !json_is_null(tier)) {
        const char *t = json_string_value(tier);
        if (t && strcmp(t, "premium") == 0)
            premium = true;
        else if (!t || strcmp(t, "standard") != 0)
            svc_field_error(j, "/tier", "tier must be \"standard\" or \"premium\"");
    }
    if (svc_fields_failed(j, 400)) return 0;
    if (svc_idem_begin(j, "customers")) return 0;
    char id[AG_UUID_STRLEN + 1], account[40];
    svc_new_id(id, "customers", j->idem_key);
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_register_customer(j->p, id, email, name, premium, j->meta, account, &err);
    if (rc == AG_EEXISTS) {
        svc_field_error(j, "/email", "%s", err.msg);
        svc_fields_failed(j, 409);
        snprintf(j->title, sizeof j->title, "Email already registered");
    } else if (rc == AG_EINVAL || rc == AG_EDOMAIN) {
        svc_field_error(j, strstr(err.msg, "email") ? "/email" : "/name", "%s", err.msg);
        svc_fields_failed(j, 400);
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/customers/%s", id);
        svc_ok(j, 201, customer_json(id, email, name, ag_customer_tier_name(premium), account));
    }
    svc_idem_end(j, "customers");
    return 0;
}

static json_t *row(sqlite3_stmt *st)
{
    return customer_json(
        (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
        (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
        (const char *)sqlite3_column_text(st, 4));
}

static int get(struct svc_job *j)
{
    static const char sql[] = "SELECT id, email, name, tier, account_id FROM customers WHERE id=?";
    return svc_get_one(j, RM_CUSTOMERS, sql, row, "customer", "Customer not found",
                       "no customer with id");
}

static int h_create(struct ag_http_req *req, void *ud)
{
    return svc_offload(ud, req, create, NULL, NULL);
}
static int h_get(struct ag_http_req *req, void *ud)
{
    return svc_offload(ud, req, get, "id", NULL);
}

void svc_customers_routes(struct ag_platform *p)
{
    ag_http_route(p->router, "POST", "/api/v1/customers", h_create, p);
    ag_http_route(p->router, "GET", "/api/v1/customers/{id}", h_get, p);
}

/* ---- projection ---- */

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS customers(id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT "
    "NULL,"
    " tier TEXT NOT NULL, account_id TEXT NOT NULL, registered_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS customers_email ON customers(email);";

static const char *const types[] = {AG_EV_CUSTOMER_REGISTERED, AG_EV_CUSTOMER_TIER_CHANGED, NULL};

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ud);
    char ts[32], id[128];
    ag_time_rfc3339(ev->time_ns, ts);
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 9, ev->stream + 9); /* "customer-" */
    sqlite3_stmt *st;
    bool reg = ev->type_len == strlen(AG_EV_CUSTOMER_REGISTERED);
    const char *sql = reg ? "INSERT OR REPLACE INTO customers VALUES(?, ?, ?, ?, ?, ?)"
                          : "UPDATE customers SET tier=?2 WHERE id=?1";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (reg) {
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "email")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, json_string_value(json_object_get(d, "name")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, json_string_value(json_object_get(d, "tier")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, json_string_value(json_object_get(d, "accountId")), -1,
                          SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, ts, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(d, "tier")), -1,
                          SQLITE_TRANSIENT);
    }
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

void svc_customers_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "customers", .schema = schema, .types = types, .apply = apply};
}
