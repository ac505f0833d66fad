/*
 * The customers read model (readmodels/customers.db): one row per customer, from
 * CustomerRegistered, CustomerTierChanged and CustomerErased.
 *
 * Personal data: the email and name columns hold the events' envelopes as they
 * are (sealed with the customer's data key, src/services/pii.c); the answers open
 * them. Nothing here is in clear, so a destroyed key leaves nothing readable, and
 * CustomerErased overwrites both with "[erased]" (a rebuild from the log does the
 * same). Email uniqueness does not need this table: registration claims a stream
 * per email hash (api.c).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS customers(id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT "
    "NULL,"
    " tier TEXT NOT NULL, account_id TEXT NOT NULL, registered_at TEXT NOT NULL);";

static const char *const types[] = {AG_EV_CUSTOMER_REGISTERED, AG_EV_CUSTOMER_TIER_CHANGED,
                                    AG_EV_CUSTOMER_ERASED, NULL};

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    char ts[32], id[128];
    ag_time_rfc3339(ev->time_ns, ts);
    if (ag_es_stream_id(&svc_customer_type, ev->stream, ev->stream_len, id, sizeof id))
        return 0;            /* not one of ours (the type owns its prefix) */
    svc_cache_touch(ud, id); /* the read cache drops it after the commit */
    if (ev->type_len == strlen(AG_EV_CUSTOMER_ERASED) &&
        memcmp(ev->type, AG_EV_CUSTOMER_ERASED, ev->type_len) == 0) {
        struct ag_rm_arg args[] = {AG_RM_TEXT(id), AG_RM_TEXT(AG_CUSTOMER_ERASED)};
        return ag_rm_exec(db, "UPDATE customers SET email=?2, name=?2 WHERE id=?1", args, 2, NULL);
    }
    if (ev->type_len != strlen(AG_EV_CUSTOMER_REGISTERED)) {
        struct ag_rm_arg args[] = {AG_RM_TEXT(id),
                                   AG_RM_TEXT(json_string_value(json_object_get(d, "tier")))};
        return ag_rm_exec(db, "UPDATE customers SET tier=?2 WHERE id=?1", args, 2, NULL);
    }
    struct ag_rm_arg args[] = {
        AG_RM_TEXT(id),
        AG_RM_TEXT(json_string_value(json_object_get(d, "email"))),
        AG_RM_TEXT(json_string_value(json_object_get(d, "name"))),
        AG_RM_TEXT(json_string_value(json_object_get(d, "tier"))),
        AG_RM_TEXT(json_string_value(json_object_get(d, "accountId"))),
        AG_RM_TEXT(ts),
    };
    return ag_rm_exec(db,
                      "INSERT INTO customers VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO"
                      " UPDATE SET email=excluded.email, name=excluded.name, tier=excluded.tier,"
                      " account_id=excluded.account_id, registered_at=excluded.registered_at",
                      args, 6, NULL);
}

void svc_customers_projection(struct ag_projection *out)
{
    *out = (struct ag_projection){
        .name = "customers", .schema = schema, .types = types, .apply = apply};
}
