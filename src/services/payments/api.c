/*
 * The payments context's API: customer wallet accounts — deposits (the owner's or
 * an admin's), reads, and "balance ≥ X" lists from the accounts read model
 * (projection.c). Charges and refunds are the PlaceOrder saga's
 * (sagas/placeorder.c).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

static json_t *account_json(const char *id, json_int_t amount, const char *currency,
                            const char *status, json_int_t tx, const char *last)
{
    return json_pack("{s:s, s:{s:I, s:s}, s:s, s:I, s:s?}", "id", id, "balance", "amount", amount,
                     "currency", currency, "status", status, "transactionCount", tx, "lastActivity",
                     last);
}

static void view_account(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_account *a = state;
    char ts[32];
    ag_time_rfc3339((uint64_t)a->last_activity_ms * 1000000ull, ts);
    json_decref(*(json_t **)ud); /* a retried batch shows the state again */
    *(json_t **)ud = account_json(a->id, a->balance.amount, a->balance.currency,
                                  ag_account_status_name(a), a->tx_count, a->tx_count ? ts : NULL);
}

static int dom_deposit(const void *st, const void *cmd, struct ag_dom_events *out,
                       struct ag_err *err)
{
    const struct ag_account *a = st;
    if (!a->exists) return ag_err_set(err, AG_ENOTFOUND, "account not found");
    return ag_account_deposit(st, cmd, out, err);
}

int svc_deposit(struct svc_env *p, const char *account_id, const struct ag_money *amount,
                const char *meta, struct ag_err *err)
{
    struct ag_account_deposit d = {*amount, svc_now_ms()};
    return svc_exec(
        p, &(struct svc_cmd){&svc_account_type, account_id, dom_deposit, &d, meta, NULL, NULL},
        err);
}

static void view_owner(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    const struct ag_account *a = state;
    snprintf(ud, AG_DOM_ID_MAX, "%s", a->exists ? a->customer_id : "");
}

/* POST /api/v1/accounts/{id}/deposits: the owner's or an admin's. */
static int deposit(struct svc_job *j)
{
    if (!json_is_object(j->body))
        return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    struct ag_money amount;
    struct ag_err err;
    ag_err_clear(&err);
    json_t *a = json_object_get(j->body, "amount");
    if (!a)
        svc_field_error(j, "/amount",
                        "amount is required: {\"amount\": 1000, \"currency\": \"USD\"}");
    else if (ag_money_from_json(a, &amount, "/amount", &err)) {
        const char *colon = strstr(err.msg, ": ");
        char ptr[64];
        snprintf(ptr, sizeof ptr, "%.*s", colon ? (int)(colon - err.msg) : 7,
                 colon ? err.msg : "/amount");
        svc_field_error(j, ptr, "%s", colon ? colon + 2 : err.msg);
    } else if (amount.amount <= 0) {
        svc_field_error(j, "/amount/amount", "a deposit must be greater than zero");
    }
    if (svc_fields_failed(j, 400)) return 0;
    char owner[AG_DOM_ID_MAX] = "";
    if (svc_stream_exists(j->env, "account", j->param))
        svc_read(j->env, &svc_account_type, j->param, view_owner, owner, NULL);
    if (!owner[0] || !svc_owns(j, owner)) /* someone else's account is not found either */
        return svc_problem(j, 404, "Account not found", "no account with id %s", j->param);
    if (svc_idem_begin(j, j->param)) return 0;
    struct ag_account_deposit d = {amount, svc_now_ms()};
    json_t *view = NULL;
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_account_type, j->param, dom_deposit, &d, j->meta,
                                        view_account, &view},
                      &err);
    if (rc == AG_EDOMAIN && (strstr(err.msg, "currency") || strstr(err.msg, " is in "))) {
        svc_field_error(j, "/amount/currency", "%s", err.msg);
        svc_fields_failed(j, 422);
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        svc_ok(j, 200, view);
        view = NULL;
    }
    json_decref(view);
    svc_idem_end(j, j->param);
    return 0;
}

static json_t *row(const struct ag_rm_row *st)
{
    return account_json(ag_rm_text(st, 0), ag_rm_int64(st, 1), ag_rm_text(st, 2), ag_rm_text(st, 3),
                        ag_rm_int64(st, 4), ag_rm_text(st, 5));
}

#define COLS "SELECT id, balance, currency, status, tx_count, last_activity FROM accounts"

static int get(struct svc_job *j)
{
    static const struct svc_one one = {RM_ACCOUNTS,
                                       COLS " WHERE id=?1 AND (?2 IS NULL OR customer_id=?2)",
                                       row,
                                       "account",
                                       "Account not found",
                                       "no account with id"};
    return svc_get_one(j, &one, j->param, svc_owner_filter(j));
}

/* GET /api/v1/accounts?minBalance=N&limit&cursor: accounts with balance ≥ N; a
 * customer sees only its own. */
static int list(struct svc_job *j)
{
    int limit;
    int64_t min = 0;
    if (j->q[0] && (ag_parse_i64(j->q[0], &min) || min < 0))
        svc_field_error(j, "/minBalance",
                        "minBalance must be a non-negative integer (minor units)");
    svc_limit(j, j->q[1], &limit);
    if (svc_fields_failed(j, 400)) return 0;
    char lim[16], minb[32];
    snprintf(lim, sizeof lim, "%d", limit + 1);
    snprintf(minb, sizeof minb, "%lld", (long long)min);
    const char *args[] = {minb, j->q[2] ? j->q[2] : "", lim, svc_owner_filter(j)};
    json_t *rows = svc_rm_query(j->env, RM_ACCOUNTS,
                                COLS " WHERE balance >= ?1 AND id > ?2 AND (?4 IS NULL OR"
                                     " customer_id=?4) ORDER BY id LIMIT ?3",
                                args, 4, row);
    if (!rows) return AG_EIO;
    j->rm_position = ag_projector_position(j->env->projector);
    return svc_ok(j, 200, svc_page(rows, limit));
}

static const struct svc_route routes[] = {
    {"POST", "/api/v1/accounts/{id}/deposits", SVC_OWNER, deposit, "id", "account", {NULL}},
    {"GET", "/api/v1/accounts/{id}", SVC_OWNER, get, "id", "account", {NULL}},
    {"GET", "/api/v1/accounts", SVC_OWNER, list, NULL, NULL, {"minBalance", "limit", "cursor"}},
};

const struct svc_context svc_payments_context = {
    "payments", routes, sizeof routes / sizeof routes[0], svc_payments_projection, RM_ACCOUNTS};
