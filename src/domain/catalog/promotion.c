/*
 * The Promotion aggregate: one code customers put in an order (`promotionCodes`),
 * managed by the admin. Its stream is named after the code, so looking a code up
 * needs no index.
 *
 * Events: PromotionCreated {code, kind: "percent"|"fixed", value, currency?,
 * validFrom, validUntil?, usageLimit?, stackable}; PromotionRedeemed {orderId, at}.
 *
 * Invariants: created once; a percentage is 1..10000 basis points, a fixed amount
 * > 0 minor units in one currency (only orders in that currency may use it); the
 * window is [validFrom, validUntil) (no end when validUntil is absent); at most
 * usageLimit redemptions (unlimited when absent) — the limit holds under
 * concurrency because every redemption is an append at the version it decided on.
 * A redemption by an order among the last AG_PROMO_RECENT ones is a no-op, so a
 * retried placement never spends a second use.
 *
 * The snapshot is the PromotionCreated shape plus "exists", "used" and "recent".
 */
#include <stdio.h>
#include <string.h>

#include "domain/internal.h"

void ag_promo_init(void *state)
{
    memset(state, 0, sizeof(struct ag_promo_code));
}

void ag_promo_free(void *state)
{
    ag_promo_init(state);
}

bool ag_promo_code_ok(const char *code)
{
    size_t n = code ? strlen(code) : 0;
    if (n == 0 || n >= AG_PROMO_CODE_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = code[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- evolve ---- */

static int opt_i64(const json_t *d, const char *key, int64_t *out)
{
    json_t *v = json_object_get(d, key);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    return ag__dom_get_i64(d, key, out);
}

static int on_created(struct ag_promo_code *p, const json_t *d)
{
    char kind[16];
    if (ag__dom_get_str(d, "code", p->promo.code, sizeof p->promo.code) ||
        ag__dom_get_str(d, "kind", kind, sizeof kind) ||
        ag__dom_get_i64(d, "value", &p->promo.value) ||
        ag__dom_get_str_opt(d, "currency", p->currency, sizeof p->currency) ||
        ag__dom_get_i64(d, "validFrom", &p->valid_from_ms) ||
        opt_i64(d, "validUntil", &p->valid_until_ms) || opt_i64(d, "usageLimit", &p->usage_limit) ||
        ag__dom_get_bool(d, "stackable", &p->stackable))
        return AG_EINVAL;
    if (strcmp(kind, "percent") == 0)
        p->promo.kind = AG_PROMO_PERCENT;
    else if (strcmp(kind, "fixed") == 0)
        p->promo.kind = AG_PROMO_FIXED;
    else
        return AG_EINVAL;
    p->exists = true;
    return 0;
}

static void remember(struct ag_promo_code *p, const char *order_id)
{
    snprintf(p->recent[p->nrecent % AG_PROMO_RECENT], AG_DOM_ID_MAX, "%s", order_id);
    p->nrecent++;
}

int ag_promo_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_promo_code *p = state;
    if (strcmp(type, AG_EV_PROMOTION_CREATED) == 0) return on_created(p, data);
    if (strcmp(type, AG_EV_PROMOTION_REDEEMED) == 0) {
        char order[AG_DOM_ID_MAX];
        if (ag__dom_get_str(data, "orderId", order, sizeof order)) return AG_EINVAL;
        p->used++;
        remember(p, order);
    }
    return 0;
}

/* ---- snapshot ---- */

static json_t *created_json(const struct ag_promo_code *p)
{
    json_t *d = json_pack("{s:s,s:s,s:I,s:I,s:b}", "code", p->promo.code, "kind",
                          p->promo.kind == AG_PROMO_PERCENT ? "percent" : "fixed", "value",
                          (json_int_t)p->promo.value, "validFrom", (json_int_t)p->valid_from_ms,
                          "stackable", p->stackable);
    if (!d) return NULL;
    if (p->currency[0]) json_object_set_new(d, "currency", json_string(p->currency));
    if (p->valid_until_ms)
        json_object_set_new(d, "validUntil", json_integer((json_int_t)p->valid_until_ms));
    if (p->usage_limit)
        json_object_set_new(d, "usageLimit", json_integer((json_int_t)p->usage_limit));
    return d;
}

json_t *ag_promo_snapshot(const void *state)
{
    const struct ag_promo_code *p = state;
    if (!p->exists) return json_pack("{s:b}", "exists", 0);
    json_t *s = created_json(p), *recent = json_array();
    size_t n = p->nrecent < AG_PROMO_RECENT ? p->nrecent : AG_PROMO_RECENT;
    for (size_t i = 0; recent && i < n; i++) /* oldest first, so restore replays the ring */
        json_array_append_new(recent,
                              json_string(p->recent[(p->nrecent - n + i) % AG_PROMO_RECENT]));
    if (!s || !recent) {
        json_decref(s);
        json_decref(recent);
        return NULL;
    }
    json_object_set_new(s, "exists", json_true());
    json_object_set_new(s, "used", json_integer((json_int_t)p->used));
    json_object_set_new(s, "recent", recent);
    return s;
}

int ag_promo_restore(void *state, const json_t *snap)
{
    struct ag_promo_code *p = state;
    bool exists;
    ag_promo_free(p);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    int64_t used;
    json_t *recent = json_object_get(snap, "recent");
    if (on_created(p, snap) || ag__dom_get_i64(snap, "used", &used) || !json_is_array(recent)) {
        ag_promo_init(p);
        return AG_EINVAL;
    }
    size_t i;
    json_t *v;
    json_array_foreach(recent, i, v)
    {
        if (!json_is_string(v) || strlen(json_string_value(v)) >= AG_DOM_ID_MAX) {
            ag_promo_init(p);
            return AG_EINVAL;
        }
        remember(p, json_string_value(v));
    }
    p->used = used;
    return 0;
}

/* ---- decide ---- */

static int check_create(const struct ag_promo_create *c, struct ag_err *err)
{
    if (!ag_promo_code_ok(c->code))
        return ag_err_set(err, AG_EINVAL, "code: 1 to 31 characters of A-Z, 0-9, - and _");
    if (c->kind == AG_PROMO_PERCENT && (c->value < 1 || c->value > 10000))
        return ag_err_set(err, AG_EINVAL, "value: a percentage is 1 to 10000 basis points");
    if (c->kind == AG_PROMO_FIXED && c->value < 1)
        return ag_err_set(err, AG_EINVAL, "value: a fixed amount is at least 1 minor unit");
    if (c->kind == AG_PROMO_FIXED && !ag_currency_valid(c->currency))
        return ag_err_set(err, AG_EINVAL, "currency: a fixed amount needs an ISO 4217 code");
    if (c->kind == AG_PROMO_PERCENT && c->currency)
        return ag_err_set(err, AG_EINVAL, "currency: only a fixed amount has a currency");
    if (c->valid_from_ms < 0) return ag_err_set(err, AG_EINVAL, "validFrom: must not be negative");
    if (c->valid_until_ms && c->valid_until_ms <= c->valid_from_ms)
        return ag_err_set(err, AG_EINVAL, "validUntil: must be after validFrom");
    if (c->usage_limit < 0) return ag_err_set(err, AG_EINVAL, "usageLimit: must be at least 1");
    return 0;
}

int ag_promo_create(const struct ag_promo_code *st, const struct ag_promo_create *cmd,
                    struct ag_dom_events *out, struct ag_err *err)
{
    if (st->exists)
        return ag_err_set(err, AG_EEXISTS, "promotion code %s already exists", st->promo.code);
    int rc = check_create(cmd, err);
    if (rc) return rc;
    struct ag_promo_code p;
    ag_promo_init(&p);
    snprintf(p.promo.code, sizeof p.promo.code, "%s", cmd->code);
    p.promo.kind = cmd->kind;
    p.promo.value = cmd->value;
    if (cmd->currency) snprintf(p.currency, sizeof p.currency, "%s", cmd->currency);
    p.valid_from_ms = cmd->valid_from_ms;
    p.valid_until_ms = cmd->valid_until_ms;
    p.usage_limit = cmd->usage_limit;
    p.stackable = cmd->stackable;
    return ag__dom_emit(out, AG_EV_PROMOTION_CREATED, created_json(&p), err);
}

int ag_promo_usable(const struct ag_promo_code *st, const char *code, const char *currency,
                    int64_t now_ms, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_ENOTFOUND, "unknown promotion code %s", code);
    if (now_ms < st->valid_from_ms)
        return ag_err_set(err, AG_EDOMAIN, "promotion code %s is not valid yet", st->promo.code);
    if (st->valid_until_ms && now_ms >= st->valid_until_ms)
        return ag_err_set(err, AG_EDOMAIN, "promotion code %s expired", st->promo.code);
    if (st->usage_limit && st->used >= st->usage_limit)
        return ag_err_set(err, AG_EDOMAIN, "promotion code %s is exhausted (%lld uses)",
                          st->promo.code, (long long)st->usage_limit);
    if (st->currency[0] && currency && strcmp(st->currency, currency) != 0)
        return ag_err_set(err, AG_EDOMAIN, "promotion code %s is in %s, the order in %s",
                          st->promo.code, st->currency, currency);
    return 0;
}

int ag_promo_redeem(const struct ag_promo_code *st, const struct ag_promo_redeem *cmd,
                    struct ag_dom_events *out, struct ag_err *err)
{
    size_t n = st->nrecent < AG_PROMO_RECENT ? st->nrecent : AG_PROMO_RECENT;
    for (size_t i = 0; st->exists && cmd->order_id && i < n; i++)
        if (strcmp(st->recent[i], cmd->order_id) == 0) return 0;
    int rc = ag_promo_usable(st, "", cmd->currency, cmd->now_ms, err);
    if (rc) return rc;
    char order[AG_DOM_ID_MAX];
    if ((rc = ag__dom_need(order, sizeof order, cmd->order_id, "order id", err))) return rc;
    return ag__dom_emit(out, AG_EV_PROMOTION_REDEEMED,
                        json_pack("{s:s,s:I}", "orderId", order, "at", (json_int_t)cmd->now_ms),
                        err);
}

const struct ag_dom_aggregate ag_promo_aggregate = {
    "Promotion",      sizeof(struct ag_promo_code),
    ag_promo_init,    ag_promo_free,
    ag_promo_evolve,  ag_promo_snapshot,
    ag_promo_restore,
};
