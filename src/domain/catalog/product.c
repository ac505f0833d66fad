/*
 * The Product aggregate (catalog).
 *
 * Events: ProductAdded {productId, sku, name, price}, ProductPriceChanged {price,
 * previousPrice}, ProductDiscontinued {reason?}.
 *
 * Invariants: added once; sku and name non-empty; price >= 0 and its currency fixed
 * at ProductAdded (one currency per product); only an active product changes price;
 * discontinuing is final (a second discontinue is a no-op).
 *
 * The snapshot is the ProductAdded shape plus "exists" and "active".
 */
#include <string.h>

#include "domain/internal.h"

void ag_product_init(void *state)
{
    memset(state, 0, sizeof(struct ag_product));
}

void ag_product_free(void *state)
{
    ag_product_init(state);
}

/* ---- evolve ---- */

static int on_added(struct ag_product *p, const json_t *d)
{
    if (ag__dom_get_str(d, "productId", p->id, sizeof p->id) ||
        ag__dom_get_str(d, "sku", p->sku, sizeof p->sku) ||
        ag__dom_get_str(d, "name", p->name, sizeof p->name) ||
        ag__dom_get_money(d, "price", &p->price))
        return AG_EINVAL;
    p->exists = p->active = true;
    return 0;
}

int ag_product_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_product *p = state;
    if (strcmp(type, AG_EV_PRODUCT_ADDED) == 0) return on_added(p, data);
    if (strcmp(type, AG_EV_PRODUCT_PRICE_CHANGED) == 0)
        return ag__dom_get_money(data, "price", &p->price);
    if (strcmp(type, AG_EV_PRODUCT_DISCONTINUED) == 0) p->active = false;
    return 0;
}

/* ---- snapshot ---- */

json_t *ag_product_snapshot(const void *state)
{
    const struct ag_product *p = state;
    if (!p->exists) return json_pack("{s:b}", "exists", 0);
    return json_pack("{s:b,s:b,s:s,s:s,s:s,s:o}", "exists", 1, "active", p->active, "productId",
                     p->id, "sku", p->sku, "name", p->name, "price", ag_money_to_json(&p->price));
}

int ag_product_restore(void *state, const json_t *snap)
{
    struct ag_product *p = state;
    bool exists, active;
    ag_product_free(p);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    if (on_added(p, snap) || ag__dom_get_bool(snap, "active", &active)) {
        ag_product_init(p);
        return AG_EINVAL;
    }
    p->active = active;
    return 0;
}

/* ---- decide ---- */

static int check_price(const struct ag_money *price, struct ag_err *err)
{
    if (!ag_currency_valid(price->currency))
        return ag_err_set(err, AG_EINVAL, "price currency must be a 3-letter ISO 4217 code");
    if (price->amount < 0)
        return ag_err_set(err, AG_EINVAL, "price must not be negative (got %lld)",
                          (long long)price->amount);
    return 0;
}

int ag_product_add(const struct ag_product *st, const struct ag_product_add *cmd,
                   struct ag_dom_events *out, struct ag_err *err)
{
    struct ag_product p;
    int rc;
    if (st->exists) return ag_err_set(err, AG_EDOMAIN, "product %s already exists", st->id);
    if ((rc = ag__dom_need(p.id, sizeof p.id, cmd->id, "product id", err)) ||
        (rc = ag__dom_need(p.sku, sizeof p.sku, cmd->sku, "sku", err)) ||
        (rc = ag__dom_need(p.name, sizeof p.name, cmd->name, "name", err)) ||
        (rc = check_price(&cmd->price, err)))
        return rc;
    json_t *d = json_pack("{s:s,s:s,s:s,s:o}", "productId", p.id, "sku", p.sku, "name", p.name,
                          "price", ag_money_to_json(&cmd->price));
    return ag__dom_emit(out, AG_EV_PRODUCT_ADDED, d, err);
}

int ag_product_change_price(const struct ag_product *st, const struct ag_product_change_price *cmd,
                            struct ag_dom_events *out, struct ag_err *err)
{
    int rc;
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "product does not exist");
    if (!st->active) return ag_err_set(err, AG_EDOMAIN, "product %s is discontinued", st->id);
    if ((rc = check_price(&cmd->price, err))) return rc;
    if (strcmp(cmd->price.currency, st->price.currency) != 0)
        return ag_err_set(err, AG_EDOMAIN, "product %s is priced in %s, not %s", st->id,
                          st->price.currency, cmd->price.currency);
    if (cmd->price.amount == st->price.amount) return 0;
    json_t *d = json_pack("{s:o,s:o}", "price", ag_money_to_json(&cmd->price), "previousPrice",
                          ag_money_to_json(&st->price));
    return ag__dom_emit(out, AG_EV_PRODUCT_PRICE_CHANGED, d, err);
}

int ag_product_discontinue(const struct ag_product *st, const struct ag_product_discontinue *cmd,
                           struct ag_dom_events *out, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "product does not exist");
    if (!st->active) return 0;
    json_t *d = json_object();
    if (d && cmd && cmd->reason && cmd->reason[0]) {
        if (!ag_utf8_valid(cmd->reason, strlen(cmd->reason))) {
            json_decref(d);
            return ag_err_set(err, AG_EINVAL, "reason must be UTF-8");
        }
        json_object_set_new(d, "reason", json_string(cmd->reason));
    }
    return ag__dom_emit(out, AG_EV_PRODUCT_DISCONTINUED, d, err);
}

const struct ag_dom_aggregate ag_product_aggregate = {
    "Product",         sizeof(struct ag_product), ag_product_init,    ag_product_free,
    ag_product_evolve, ag_product_snapshot,       ag_product_restore,
};
