/*
 * The Customer aggregate.
 *
 * Events: CustomerRegistered {customerId, email, name, tier, accountId},
 * CustomerTierChanged {tier}, AddressAdded {addressId, address} (schema
 * version 2: version 1 had no addressId; the services' upcaster derives one from
 * the event's id, so the domain only sees version 2), CustomerErased
 * {customerId}. Tier is "standard" or "premium" on the wire and a bool in the
 * state. Email, name and addresses are personal data: the services seal them
 * with the customer's data key before they reach the log (src/services/pii.c),
 * so the domain sees plain values. CustomerErased carries none: it marks the
 * customer erased (its key destroyed) and the state's personal fields then read
 * "[erased]"; an erased customer takes no further commands.
 *
 * Invariants: registered once; the email has one '@', a non-empty local part and a
 * dot inside the domain, at most 254 bytes; the name is non-empty; at most eight
 * addresses, without duplicates. Email uniqueness across customers needs a view of
 * all customers, so the service checks it before calling register.
 *
 * The snapshot is the CustomerRegistered shape plus "exists", "erased",
 * "addresses" and "addressIds" (parallel to addresses; a snapshot without it, from
 * before address ids, is refused so the repository folds the events instead), so
 * restore reuses the event's reader.
 */
#include <stdio.h>
#include <string.h>

#include "domain/internal.h"

#define EMAIL_MAX 254

const char *ag_customer_tier_name(bool premium)
{
    return premium ? "premium" : "standard";
}

static int parse_tier(const json_t *o, bool *premium)
{
    const char *t = json_string_value(json_object_get(o, "tier"));
    if (!t) return AG_EINVAL;
    if (strcmp(t, "premium") == 0)
        *premium = true;
    else if (strcmp(t, "standard") == 0)
        *premium = false;
    else
        return AG_EINVAL;
    return 0;
}

void ag_customer_init(void *state)
{
    memset(state, 0, sizeof(struct ag_customer));
}

void ag_customer_free(void *state)
{
    ag_customer_init(state);
}

/* ---- evolve ---- */

static int on_registered(struct ag_customer *c, const json_t *d)
{
    if (ag__dom_get_str(d, "customerId", c->id, sizeof c->id) ||
        ag__dom_get_str(d, "email", c->email, sizeof c->email) ||
        ag__dom_get_str(d, "name", c->name, sizeof c->name) ||
        ag__dom_get_str_opt(d, "accountId", c->account_id, sizeof c->account_id) ||
        parse_tier(d, &c->premium))
        return AG_EINVAL;
    c->exists = true;
    return 0;
}

static int on_address(struct ag_customer *c, const json_t *d)
{
    if (c->naddresses >= AG_CUSTOMER_MAX_ADDRESSES) return AG_EINVAL;
    if (ag__dom_get_address(d, "address", &c->addresses[c->naddresses]) ||
        ag__dom_get_str(d, "addressId", c->address_ids[c->naddresses], sizeof c->address_ids[0]))
        return AG_EINVAL;
    c->naddresses++;
    return 0;
}

/* Personal fields → the erased marker; id, tier and account stay. */
static void on_erased(struct ag_customer *c)
{
    snprintf(c->email, sizeof c->email, "%s", AG_CUSTOMER_ERASED);
    snprintf(c->name, sizeof c->name, "%s", AG_CUSTOMER_ERASED);
    memset(c->addresses, 0, sizeof c->addresses);
    memset(c->address_ids, 0, sizeof c->address_ids);
    c->naddresses = 0;
    c->erased = true;
}

int ag_customer_evolve(void *state, const char *type, const json_t *data)
{
    struct ag_customer *c = state;
    if (strcmp(type, AG_EV_CUSTOMER_ERASED) == 0) {
        on_erased(c);
        return 0;
    }
    if (strcmp(type, AG_EV_CUSTOMER_REGISTERED) == 0) return on_registered(c, data);
    if (strcmp(type, AG_EV_CUSTOMER_TIER_CHANGED) == 0) return parse_tier(data, &c->premium);
    if (strcmp(type, AG_EV_ADDRESS_ADDED) == 0) return on_address(c, data);
    return 0;
}

/* ---- snapshot ---- */

json_t *ag_customer_snapshot(const void *state)
{
    const struct ag_customer *c = state;
    if (!c->exists) return json_pack("{s:b}", "exists", 0);
    json_t *addrs = json_array(), *ids = json_array();
    for (size_t i = 0; addrs && ids && i < c->naddresses; i++)
        if (json_array_append_new(addrs, ag_address_to_json(&c->addresses[i])) ||
            json_array_append_new(ids, json_string(c->address_ids[i]))) {
            json_decref(addrs);
            addrs = NULL;
        }
    if (!addrs || !ids) {
        json_decref(addrs);
        json_decref(ids);
        return NULL;
    }
    return json_pack("{s:b,s:b,s:s,s:s,s:s,s:s,s:s,s:o,s:o}", "exists", 1, "erased", c->erased,
                     "customerId", c->id, "email", c->email, "name", c->name, "tier",
                     ag_customer_tier_name(c->premium), "accountId", c->account_id, "addresses",
                     addrs, "addressIds", ids);
}

int ag_customer_restore(void *state, const json_t *snap)
{
    struct ag_customer *c = state;
    bool exists;
    ag_customer_free(c);
    if (ag__dom_get_bool(snap, "exists", &exists)) return AG_EINVAL;
    if (!exists) return 0;
    json_t *addrs = json_object_get(snap, "addresses"), *ids = json_object_get(snap, "addressIds");
    if (on_registered(c, snap) || !json_is_array(addrs) ||
        json_array_size(addrs) > AG_CUSTOMER_MAX_ADDRESSES ||
        (json_array_size(addrs) && json_array_size(ids) != json_array_size(addrs)))
        goto out_invalid;
    for (size_t i = 0; i < json_array_size(addrs); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (ag_address_from_json(json_array_get(addrs, i), &c->addresses[i], "", NULL) || !id ||
            !id[0] || strlen(id) >= sizeof c->address_ids[i])
            goto out_invalid;
        snprintf(c->address_ids[i], sizeof c->address_ids[i], "%s", id);
    }
    c->naddresses = json_array_size(addrs);
    if (json_is_true(json_object_get(snap, "erased"))) on_erased(c);
    return 0;
out_invalid:
    ag_customer_init(c);
    return AG_EINVAL;
}

/* ---- decide ---- */

static bool email_valid(const char *e)
{
    size_t n = strlen(e);
    const char *at = strchr(e, '@');
    if (n > EMAIL_MAX || !at || at == e || strchr(at + 1, '@')) return false;
    for (const char *p = e; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return false;
    const char *dom = at + 1, *dot = strchr(dom, '.');
    size_t dn = strlen(dom);
    /* a dot strictly inside the domain: "a@b.c" yes, "a@.c", "a@b." no */
    return dot && dot != dom && dom[dn - 1] != '.';
}

int ag_customer_register(const struct ag_customer *st, const struct ag_customer_register *cmd,
                         struct ag_dom_events *out, struct ag_err *err)
{
    struct ag_customer c;
    int rc;
    if (st->exists) return ag_err_set(err, AG_EDOMAIN, "customer %s is already registered", st->id);
    memset(&c, 0, sizeof c);
    if ((rc = ag__dom_need(c.id, sizeof c.id, cmd->id, "customer id", err))) return rc;
    if (!cmd->email || !email_valid(cmd->email) || !ag_utf8_valid(cmd->email, strlen(cmd->email)))
        return ag_err_set(err, AG_EINVAL,
                          "invalid email: needs one '@', a non-empty local part and a dot in the "
                          "domain, at most 254 bytes");
    if (!cmd->name || !cmd->name[0]) return ag_err_set(err, AG_EINVAL, "name must not be empty");
    if ((rc = ag__dom_need(c.name, sizeof c.name, cmd->name, "name", err)) ||
        (rc = ag__dom_need(c.account_id, sizeof c.account_id, cmd->account_id, "account id", err)))
        return rc;
    json_t *d =
        json_pack("{s:s,s:s,s:s,s:s,s:s}", "customerId", c.id, "email", cmd->email, "name", c.name,
                  "tier", ag_customer_tier_name(cmd->premium), "accountId", c.account_id);
    return ag__dom_emit(out, AG_EV_CUSTOMER_REGISTERED, d, err);
}

static int need_customer(const struct ag_customer *st, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "customer is not registered");
    if (st->erased) return ag_err_set(err, AG_EDOMAIN, "customer %s was erased", st->id);
    return 0;
}

int ag_customer_erase(const struct ag_customer *st, struct ag_dom_events *out, struct ag_err *err)
{
    if (!st->exists) return ag_err_set(err, AG_EDOMAIN, "customer is not registered");
    if (st->erased) return 0;
    return ag__dom_emit(out, AG_EV_CUSTOMER_ERASED, json_pack("{s:s}", "customerId", st->id), err);
}

int ag_customer_change_tier(const struct ag_customer *st, const struct ag_customer_change_tier *cmd,
                            struct ag_dom_events *out, struct ag_err *err)
{
    int rc = need_customer(st, err);
    if (rc || st->premium == cmd->premium) return rc;
    json_t *d = json_pack("{s:s}", "tier", ag_customer_tier_name(cmd->premium));
    return ag__dom_emit(out, AG_EV_CUSTOMER_TIER_CHANGED, d, err);
}

int ag_customer_add_address(const struct ag_customer *st, const struct ag_customer_add_address *cmd,
                            struct ag_dom_events *out, struct ag_err *err)
{
    char id[AG_DOM_ID_MAX];
    int rc = need_customer(st, err);
    if (rc) return rc;
    if (!cmd->address) return ag_err_set(err, AG_EINVAL, "address is required");
    if ((rc = ag__dom_need(id, sizeof id, cmd->id, "address id", err))) return rc;
    if ((rc = ag__dom_address_check(cmd->address, "/address", err))) return rc;
    for (size_t i = 0; i < st->naddresses; i++)
        if (ag_address_eq(&st->addresses[i], cmd->address)) return 0;
    if (st->naddresses >= AG_CUSTOMER_MAX_ADDRESSES)
        return ag_err_set(err, AG_EDOMAIN, "customer %s already has the maximum of %d addresses",
                          st->id, AG_CUSTOMER_MAX_ADDRESSES);
    json_t *d =
        json_pack("{s:s,s:o}", "addressId", id, "address", ag_address_to_json(cmd->address));
    return ag__dom_emit(out, AG_EV_ADDRESS_ADDED, d, err);
}

int ag_customer_address_index(const struct ag_customer *st, const char *id)
{
    for (size_t i = 0; id && i < st->naddresses; i++)
        if (strcmp(st->address_ids[i], id) == 0) return (int)i;
    return -1;
}

const struct ag_dom_aggregate ag_customer_aggregate = {
    "Customer",         sizeof(struct ag_customer), ag_customer_init,    ag_customer_free,
    ag_customer_evolve, ag_customer_snapshot,       ag_customer_restore,
};
