/*
 * The payments context's API: customer wallet accounts — deposits, withdrawals,
 * closing and transfers (the owner's or an admin's), reads, and "balance ≥ X" lists
 * from the accounts read model (projection.c). Charges and refunds are the
 * PlaceOrder saga's (sagas/placeorder.c).
 *
 * A transfer (the seeds' TransferService) decides MoneyWithdrawn on the source and
 * MoneyDeposited on the target together (ag_account_transfer) and appends both in
 * one atomic multi-stream append (svc_exec2): it is never half-done, a crash leaves
 * either both or neither. Only the source's owner may transfer; the target may be
 * anyone's account (its id is all the caller needs, as for a bank transfer).
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

/* The caller's (or, for an admin, any) account j->param: 0, or 1 after answering 404. */
static int own_account(struct svc_job *j)
{
    char owner[AG_DOM_ID_MAX] = "";
    if (svc_stream_exists(j->env, "account", j->param))
        svc_read(j->env, &svc_account_type, j->param, view_owner, owner, NULL);
    if (owner[0] && svc_owns(j, owner)) return 0;
    svc_problem(j, 404, "Account not found", "no account with id %s", j->param);
    return 1;
}

/* A positive `amount` of the body (recorded errors otherwise). */
static void parse_amount(struct svc_job *j, const char *const *fields, struct ag_money *amount)
{
    if (!j->body) svc_field_error(j, "", "the body must be a JSON object");
    svc_body_object(j, fields);
    if (!svc_money_field(j, "amount", true, amount) && amount->amount <= 0)
        svc_field_error(j, "/amount/amount", "the amount must be greater than zero");
}

/* Answer a payments command: the account view (200), or the domain's refusal. */
static void answer(struct svc_job *j, int rc, struct ag_err *err, json_t **view)
{
    if (rc == AG_EDOMAIN && (strstr(err->msg, "currency") || strstr(err->msg, " is in "))) {
        svc_field_error(j, "/amount/currency", "%s", err->msg);
        svc_fields_failed(j, 422);
    } else if (rc == AG_EDOMAIN && strstr(err->msg, "insufficient funds")) {
        svc_field_error(j, "/amount/amount", "%s", err->msg);
        svc_fields_failed(j, 422);
        snprintf(j->title, sizeof j->title, "Insufficient funds");
    } else if (rc == AG_EDOMAIN) {
        svc_problem(j, 409, "Account cannot do this", "%s", err->msg);
    } else if (rc) {
        svc_error(j, rc, err);
    } else {
        svc_ok(j, 200, *view);
        *view = NULL;
    }
}

static int dom_withdraw(const void *st, const void *cmd, struct ag_dom_events *out,
                        struct ag_err *err)
{
    return ag_account_withdraw(st, cmd, out, err);
}

/* POST /api/v1/accounts/{id}/withdrawals {amount}: the owner's; no overdraft (422). */
static int withdraw(struct svc_job *j)
{
    static const char *const fields[] = {"amount", NULL};
    struct ag_account_withdraw w = {.now_ms = svc_now_ms()};
    parse_amount(j, fields, &w.amount);
    char scope[160]; /* not the deposits' scope: the same key and body must not replay one */
    snprintf(scope, sizeof scope, "withdrawals-%s", j->param);
    if (svc_fields_failed(j, 400) || own_account(j) || svc_idem_begin(j, scope)) return 0;
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_account_type, j->param, dom_withdraw, &w, j->meta,
                                        view_account, &view},
                      &err);
    answer(j, rc, &err, &view);
    json_decref(view);
    svc_idem_end(j, scope);
    return 0;
}

static int dom_close(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_account_close(st, cmd, out, err);
}

/* POST /api/v1/accounts/{id}/close: the owner's; a positive balance is a 409. */
static int close_account(struct svc_job *j)
{
    static const char *const none[] = {NULL};
    svc_body_object(j, none);
    if (svc_fields_failed(j, 400) || own_account(j)) return 0;
    struct ag_account_close c = {svc_now_ms()};
    struct ag_err err;
    ag_err_clear(&err);
    json_t *view = NULL;
    int rc = svc_exec(
        j->env,
        &(struct svc_cmd){&svc_account_type, j->param, dom_close, &c, j->meta, view_account, &view},
        &err);
    answer(j, rc, &err, &view);
    json_decref(view);
    return 0;
}

struct transfer {
    struct ag_money amount;
    int64_t now_ms;
};

static int dom_transfer(const void *from, const void *to, const void *cmd,
                        struct ag_dom_events *out_from, struct ag_dom_events *out_to,
                        struct ag_err *err)
{
    const struct transfer *t = cmd;
    return ag_account_transfer(from, to, &t->amount, t->now_ms, out_from, out_to, err);
}

/* POST /api/v1/accounts/{id}/transfers {toAccountId, amount}: the source's owner's;
 * both legs in one atomic append. Answers the source account as the write left it. */
static int transfer(struct svc_job *j)
{
    static const char *const fields[] = {"toAccountId", "amount", NULL};
    struct transfer t = {.now_ms = svc_now_ms()};
    parse_amount(j, fields, &t.amount);
    const char *to = json_string_value(json_object_get(j->body, "toAccountId"));
    if (!to) svc_field_error(j, "/toAccountId", "toAccountId is required and must be a string");
    if (svc_fields_failed(j, 400) || own_account(j)) return 0;
    if (!svc_uuid_ok(to) || !svc_stream_exists(j->env, "account", to)) {
        svc_field_error(j, "/toAccountId", "unknown account %.64s", to);
        return svc_fields_failed(j, 422), 0;
    }
    if (strcmp(to, j->param) == 0) {
        svc_field_error(j, "/toAccountId", "cannot transfer from an account to itself");
        return svc_fields_failed(j, 422), 0;
    }
    char scope[160];
    snprintf(scope, sizeof scope, "transfers-%s", j->param);
    if (svc_idem_begin(j, scope)) return 0;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = svc_exec2(j->env,
                       &(struct svc_cmd2){&svc_account_type, j->param, &svc_account_type, to,
                                          dom_transfer, &t, j->meta},
                       &err);
    json_t *view = NULL;
    if (!rc) svc_read(j->env, &svc_account_type, j->param, view_account, &view, NULL);
    if (!rc && !view) rc = AG_ENOMEM;
    answer(j, rc, &err, &view);
    json_decref(view);
    svc_idem_end(j, scope);
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
    j->rm_read = true;
    return svc_ok(j, 200, svc_page(rows, limit));
}

static const struct svc_route routes[] = {
    {"POST", "/api/v1/accounts/{id}/deposits", SVC_OWNER, deposit, "id", "account", {NULL}},
    {"POST", "/api/v1/accounts/{id}/withdrawals", SVC_OWNER, withdraw, "id", "account", {NULL}},
    {"POST", "/api/v1/accounts/{id}/close", SVC_OWNER, close_account, "id", "account", {NULL}},
    {"POST", "/api/v1/accounts/{id}/transfers", SVC_OWNER, transfer, "id", "account", {NULL}},
    {"GET", "/api/v1/accounts/{id}", SVC_OWNER, get, "id", "account", {NULL}},
    {"GET", "/api/v1/accounts", SVC_OWNER, list, NULL, NULL, {"minBalance", "limit", "cursor"}},
};

const struct svc_context svc_payments_context = {
    "payments", routes, sizeof routes / sizeof routes[0], svc_payments_projection, RM_ACCOUNTS};
