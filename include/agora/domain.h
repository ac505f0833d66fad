/*
 * agora's commerce domain: value objects (Money, Address), the six aggregates
 * (Customer, Product, Order, StockItem, Account, Shipment) and the domain services
 * (pricing, transfers between accounts). Pure code: no I/O, no clocks (times come
 * in as `now_ms` arguments), no allocation outside ag_malloc and jansson.
 *
 * Every aggregate is a state struct plus
 *   - `init`/`free`            an empty state / release what the state owns;
 *   - `evolve(state, type, data)` apply one recorded event (unknown types are
 *                               ignored and return 0; malformed data → AG_EINVAL;
 *                               AG_ENOMEM when a growing state cannot grow).
 *                               Events are facts: evolve checks their shape, not
 *                               the business rules decide already applied;
 *   - `snapshot`/`restore`     the state as a JSON object and back;
 *   - decide functions         `ag_<agg>_<verb>(st, &cmd, out, err)`: check the
 *                               command against the state and append the new
 *                               events to `out` (none when the command is an
 *                               idempotent no-op). They never change `st`: the
 *                               caller records the events and evolves the state.
 * Decide functions return 0, AG_EDOMAIN (a business rule says no), AG_EINVAL (the
 * command itself is malformed) or AG_ENOMEM, with a message in `err`. On error
 * nothing is appended to `out`.
 *
 * Event data are jansson objects with camelCase field names (docs/domain.md lists
 * them all); the event type strings are the AG_EV_* macros below.
 *
 * Ownership: command structs and their strings are borrowed for the call. Events
 * appended to `out` own their `data` (freed by ag_dom_events_free). `*_snapshot`
 * and `*_to_json` return a new reference the caller releases with json_decref.
 * `restore` expects an initialised state and releases its previous contents.
 */
#ifndef AGORA_DOMAIN_H
#define AGORA_DOMAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agora/base.h"

#define AG_DOM_ID_MAX 40 /* bytes of an id buffer (UUID text is 36 + NUL) */

/* ---- value objects ---- */

/* An amount of money: integer minor units (cents) in one ISO 4217 currency. */
struct ag_money {
    int64_t amount;   /* minor units; may be negative in arithmetic results */
    char currency[4]; /* three upper-case letters, NUL-terminated */
};

/* True when `s` is three upper-case ASCII letters. */
AG_EXTERN bool ag_currency_valid(const char *s);
/* Zero in `currency` (which must be valid; otherwise the currency is left empty). */
AG_EXTERN struct ag_money ag_money_zero(const char *currency);
/* Parse {"amount": integer, "currency": "USD"}. On error AG_EINVAL with err->msg
 * "<pointer>: must be an object", "<pointer>/amount: must be an integer" or
 * "<pointer>/currency: must be a 3-letter ISO 4217 code". `pointer` may be NULL ("").
 * Negative amounts are accepted here; decide functions check signs. */
AG_EXTERN int ag_money_from_json(const json_t *j, struct ag_money *out /* OUT */,
                                 const char *pointer, struct ag_err *err);
/* {"amount": ..., "currency": ...}; new reference, NULL on out of memory. */
AG_EXTERN json_t *ag_money_to_json(const struct ag_money *m);
/* a + b / a - b: AG_EDOMAIN when the currencies differ, AG_EINVAL on int64 overflow.
 * `out` may alias an input. */
AG_EXTERN int ag_money_add(const struct ag_money *a, const struct ag_money *b,
                           struct ag_money *out /* OUT */, struct ag_err *err);
AG_EXTERN int ag_money_sub(const struct ag_money *a, const struct ag_money *b,
                           struct ag_money *out /* OUT */, struct ag_err *err);
/* a × k: AG_EINVAL on overflow. */
AG_EXTERN int ag_money_mul(const struct ag_money *a, int64_t k, struct ag_money *out /* OUT */,
                           struct ag_err *err);
/* <0, 0, >0 comparing amounts; the currencies are assumed equal. */
AG_EXTERN int ag_money_cmp(const struct ag_money *a, const struct ag_money *b);
/* True when both amount and currency are equal. */
AG_EXTERN bool ag_money_eq(const struct ag_money *a, const struct ag_money *b);
/* Human-readable money for messages: "19.99 USD", "500 JPY", "1.250 KWD" (the
 * ISO 4217 minor-unit exponent of common currencies; 2 for any other code).
 * Returns `buf`. */
AG_EXTERN const char *ag_money_format(const struct ag_money *m, char buf[48]);
/* a × basis_points / 10000 rounded half away from zero (half-up for the usual
 * non-negative amounts): 1999 × 10% = 199.9 → 200; 5 × 10% = 0.5 → 1.
 * AG_EINVAL when the result does not fit in int64. */
AG_EXTERN int ag_money_percent(const struct ag_money *a, int64_t basis_points,
                               struct ag_money *out /* OUT */);

/* A postal address. Every field is required and non-empty. */
struct ag_address {
    char street[128];  /* street and number */
    char city[64];     /* city */
    char state[64];    /* state, province or region */
    char zip_code[16]; /* postal code ("zipCode" in JSON) */
    char country[3];   /* ISO 3166-1 alpha-2, two upper-case letters */
};

/* Parse {"street","city","state","zipCode","country"}. Each must be a non-empty
 * string that fits its buffer; country two upper-case letters. AG_EINVAL naming the
 * field: "<pointer>/zipCode: must be a non-empty string of at most 15 bytes". */
AG_EXTERN int ag_address_from_json(const json_t *j, struct ag_address *out /* OUT */,
                                   const char *pointer, struct ag_err *err);
/* New reference, NULL on out of memory. */
AG_EXTERN json_t *ag_address_to_json(const struct ag_address *a);
/* True when every field is equal. */
AG_EXTERN bool ag_address_eq(const struct ag_address *a, const struct ag_address *b);

/* ---- new events ---- */

/* One event produced by a decide function. */
struct ag_dom_event {
    const char *type; /* static string (an AG_EV_* macro) */
    json_t *data;     /* owned reference: the event payload, a JSON object */
};

/* A growable list of new events. */
struct ag_dom_events {
    struct ag_dom_event *v; /* owned array */
    size_t n;               /* events in v */
    size_t cap;             /* slots allocated */
};

AG_EXTERN void ag_dom_events_init(struct ag_dom_events *e);
/* Append; steals `data` (released even on failure). AG_ENOMEM, or AG_EINVAL when
 * data is NULL (a failed json_pack upstream) — the caller reports out of memory. */
AG_EXTERN int ag_dom_events_push(struct ag_dom_events *e, const char *type, json_t *data);
/* Release every event's data and the array; leaves an empty list. */
AG_EXTERN void ag_dom_events_free(struct ag_dom_events *e);

/* ---- a map order id → (amount, flag), used by StockItem and Account ---- */

/* One slot; an empty key marks a free slot. */
struct ag_dom_idmap_slot {
    char key[AG_DOM_ID_MAX]; /* the order id; "" = free */
    int64_t value;           /* quantity reserved / amount charged */
    bool flag;               /* Account: refunded; StockItem: unused */
};

/* Open addressing with linear probing (XXH3 of the key), backward-shift delete;
 * O(1) expected lookups; the table shrinks again when it empties (a burst of
 * entries does not keep its high-water size). Treat as opaque; read it through
 * the aggregates. */
struct ag_dom_idmap {
    struct ag_dom_idmap_slot *slots; /* owned; cap slots, power of two (or NULL) */
    size_t n;                        /* occupied slots */
    size_t cap;                      /* slots allocated */
};

/* Heap bytes a map holds (its slot table, with malloc's per-block overhead). */
AG_EXTERN size_t ag_dom_idmap_bytes(const struct ag_dom_idmap *m);
/* What malloc uses for a block of n bytes (glibc: n + 8 rounded up to 16, at
 * least 32; 0 for n == 0): how the size functions below count. */
AG_EXTERN size_t ag_dom_heap_block(size_t n);

/* Event type names. */
#define AG_EV_CUSTOMER_REGISTERED   "CustomerRegistered"
#define AG_EV_CUSTOMER_TIER_CHANGED "CustomerTierChanged"
#define AG_EV_ADDRESS_ADDED         "AddressAdded"
#define AG_EV_CUSTOMER_ERASED       "CustomerErased"
#define AG_EV_PRODUCT_ADDED         "ProductAdded"
#define AG_EV_PRODUCT_PRICE_CHANGED "ProductPriceChanged"
#define AG_EV_PRODUCT_DISCONTINUED  "ProductDiscontinued"
#define AG_EV_PROMOTION_CREATED     "PromotionCreated"
#define AG_EV_PROMOTION_REDEEMED    "PromotionRedeemed"
#define AG_EV_ORDER_CREATED         "OrderCreated"
#define AG_EV_ITEM_ADDED            "ItemAdded"
#define AG_EV_ITEM_REMOVED          "ItemRemoved"
#define AG_EV_ORDER_PLACED          "OrderPlaced"
#define AG_EV_ORDER_CONFIRMED       "OrderConfirmed"
#define AG_EV_ORDER_CANCELLED       "OrderCancelled"
#define AG_EV_ORDER_SHIPPED         "OrderShipped"
#define AG_EV_ORDER_DELIVERED       "OrderDelivered"
#define AG_EV_STOCK_ADDED           "StockAdded"
#define AG_EV_STOCK_RESERVED        "StockReserved"
#define AG_EV_STOCK_RELEASED        "StockReleased"
#define AG_EV_STOCK_SHIPPED         "StockShipped"
#define AG_EV_ACCOUNT_OPENED        "AccountOpened"
#define AG_EV_MONEY_DEPOSITED       "MoneyDeposited"
#define AG_EV_MONEY_WITHDRAWN       "MoneyWithdrawn"
#define AG_EV_PAYMENT_CAPTURED      "PaymentCaptured"
#define AG_EV_PAYMENT_REFUNDED      "PaymentRefunded"
#define AG_EV_ACCOUNT_CLOSED        "AccountClosed"
/* The per-order streams (issue 19): a charge is AccountCharged on the account with
 * ChargeCaptured on payment-<orderId>; a reservation is StockHeld on the stock
 * item with ReservationMade on reservation-<orderId>, each pair in one append. */
#define AG_EV_ACCOUNT_CHARGED      "AccountCharged"
#define AG_EV_ACCOUNT_REFUNDED     "AccountRefunded"
#define AG_EV_CHARGE_CAPTURED      "ChargeCaptured"
#define AG_EV_CHARGE_REFUNDED      "ChargeRefunded"
#define AG_EV_STOCK_HELD           "StockHeld"
#define AG_EV_STOCK_FREED          "StockFreed"
#define AG_EV_STOCK_DISPATCHED     "StockDispatched"
#define AG_EV_RESERVATION_MADE     "ReservationMade"
#define AG_EV_RESERVATION_RELEASED "ReservationReleased"
#define AG_EV_RESERVATION_SHIPPED  "ReservationShipped"
#define AG_EV_SHIPMENT_ARRANGED    "ShipmentArranged"
#define AG_EV_SHIPMENT_CANCELLED   "ShipmentCancelled"
#define AG_EV_SHIPMENT_DISPATCHED  "ShipmentDispatched"
#define AG_EV_SHIPMENT_DELIVERED   "ShipmentDelivered"

/* ---- the aggregate table (what the event-sourcing kernel calls) ---- */

struct ag_dom_aggregate {
    const char *name;  /* "Order", "Account", ... */
    size_t state_size; /* sizeof the state struct */
    void (*init)(void *state);
    void (*free)(void *state);
    int (*evolve)(void *state, const char *type, const json_t *data);
    json_t *(*snapshot)(const void *state);
    int (*restore)(void *state, const json_t *snap);
};

/* ---- pricing (domain service) ---- */

/* A priced line: also the order line type. */
struct ag_price_line {
    char product_id[AG_DOM_ID_MAX]; /* the product */
    int64_t quantity;               /* > 0 */
    struct ag_money unit_price;     /* >= 0, price per unit when added */
};

enum ag_promo_kind {
    AG_PROMO_PERCENT, /* value in basis points (1000 = 10%), 0..10000 */
    AG_PROMO_FIXED,   /* value in minor units of the lines' currency, >= 0 */
};

struct ag_promotion {
    enum ag_promo_kind kind; /* how value is read */
    int64_t value;           /* basis points or minor units */
    char code[32];           /* the promotion's code, for the record */
};

struct ag_price_quote {
    struct ag_money subtotal; /* Σ quantity × unit price */
    struct ag_money discount; /* subtotal - total, >= 0 */
    struct ag_money total;    /* what the customer pays, >= 0 */
};

#define AG_PRICING_PREMIUM_BP     1000 /* premium customers: 10% off */
#define AG_PRICING_MAX_PERCENT_BP 5000 /* percentage discounts together: at most 50% */

/* Price lines for a customer. Stacking rule:
 *   1. subtotal = Σ quantity × unit price (all lines in one currency, else AG_EDOMAIN);
 *   2. percentage discounts add up — premium 10% plus every AG_PROMO_PERCENT promo —
 *      capped at 50% in total, and are applied once to the subtotal, rounded half-up
 *      on minor units (so 10% + 15% of 1999 = 499.75 → 500);
 *   3. then every AG_PROMO_FIXED amount is subtracted;
 *   4. the total never goes below zero (discount = min(subtotal, percent + fixed)).
 * AG_EDOMAIN: no lines ("cannot price an empty order"), mixed currencies.
 * AG_EINVAL: quantity <= 0, negative price, promo value out of range, overflow. */
AG_EXTERN int ag_pricing_quote(const struct ag_price_line *lines, size_t n, bool premium,
                               const struct ag_promotion *promos, size_t npromos,
                               struct ag_price_quote *out /* OUT */, struct ag_err *err);

/* ==== Promotion (a code customers put in an order) ==== */

#define AG_PROMO_CODE_MAX 32 /* bytes of a code buffer: 1..31 of A-Z 0-9 - _ */
#define AG_PROMO_RECENT   8  /* the last orders redeemed, for idempotent retries */

struct ag_promo_code {
    bool exists;                                 /* PromotionCreated seen */
    struct ag_promotion promo;                   /* kind, value, code: what pricing applies */
    char currency[4];                            /* a fixed amount's currency; "" for percent */
    int64_t valid_from_ms;                       /* usable from (Unix ms) */
    int64_t valid_until_ms;                      /* usable before (Unix ms); 0 = no end */
    int64_t usage_limit;                         /* redemptions allowed; 0 = unlimited */
    int64_t used;                                /* redemptions so far */
    bool stackable;                              /* may be combined with other codes */
    char recent[AG_PROMO_RECENT][AG_DOM_ID_MAX]; /* ring of the last redeeming orders */
    size_t nrecent;                              /* redemptions recorded in the ring */
};

struct ag_promo_create {
    const char *code; /* 1..31 of A-Z 0-9 - _ */
    enum ag_promo_kind kind;
    int64_t value;          /* percent: 1..10000 bp; fixed: > 0 minor units */
    const char *currency;   /* fixed: ISO 4217; percent: NULL */
    int64_t valid_from_ms;  /* >= 0 */
    int64_t valid_until_ms; /* 0 = no end; else > valid_from_ms */
    int64_t usage_limit;    /* 0 = unlimited; else >= 1 */
    bool stackable;
};
struct ag_promo_redeem {
    const char *order_id; /* already redeemed by this order (recently) → no events */
    const char *currency; /* the order's currency */
    int64_t now_ms;
};

AG_EXTERN void ag_promo_init(void *state);
AG_EXTERN void ag_promo_free(void *state);
AG_EXTERN int ag_promo_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_promo_snapshot(const void *state);
AG_EXTERN int ag_promo_restore(void *state, const json_t *snap);
/* True when `code` is a well-formed promotion code. */
AG_EXTERN bool ag_promo_code_ok(const char *code);
/* PromotionCreated {code, kind ("percent"|"fixed"), value, currency?, validFrom,
 * validUntil?, usageLimit?, stackable}; exists → AG_EEXISTS; bad fields → AG_EINVAL
 * naming the field ("validUntil: ..."). */
AG_EXTERN int ag_promo_create(const struct ag_promo_code *st, const struct ag_promo_create *cmd,
                              struct ag_dom_events *out, struct ag_err *err);
/* Whether the code may be used now for an order in `currency`: AG_ENOTFOUND
 * "unknown promotion code C", AG_EDOMAIN "promotion code C is not valid yet" /
 * "... expired" / "... is exhausted" / "... is in EUR, the order in USD". */
AG_EXTERN int ag_promo_usable(const struct ag_promo_code *st, const char *code,
                              const char *currency, int64_t now_ms, struct ag_err *err);
/* PromotionRedeemed {orderId, at}: ag_promo_usable first; an order among the recent
 * redemptions → no events (a retried placement). */
AG_EXTERN int ag_promo_redeem(const struct ag_promo_code *st, const struct ag_promo_redeem *cmd,
                              struct ag_dom_events *out, struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_promo_aggregate;

/* ==== Customer ==== */

#define AG_CUSTOMER_MAX_ADDRESSES 8

struct ag_customer {
    bool exists;            /* CustomerRegistered seen */
    bool erased;            /* CustomerErased seen: personal data gone, no further commands */
    char id[AG_DOM_ID_MAX]; /* customer id */
    char email[256];        /* as registered (≤ 254 bytes) */
    char name[256];         /* display name */
    char account_id[AG_DOM_ID_MAX];                         /* the customer's wallet account */
    bool premium;                                           /* tier: premium (true) or standard */
    size_t naddresses;                                      /* addresses used */
    struct ag_address addresses[AG_CUSTOMER_MAX_ADDRESSES]; /* in the order added */
    char address_ids[AG_CUSTOMER_MAX_ADDRESSES][AG_DOM_ID_MAX]; /* addresses[i]'s id */
};

struct ag_customer_register {
    const char *id;         /* new customer id */
    const char *email;      /* one '@', non-empty local part, a dot in the domain */
    const char *name;       /* non-empty, ≤ 255 bytes */
    bool premium;           /* starting tier */
    const char *account_id; /* the wallet account opened with the customer (required) */
};
struct ag_customer_change_tier {
    bool premium; /* the new tier; the current tier → no events */
};
struct ag_customer_add_address {
    const char *id;                   /* the new address's id (a UUID the service mints) */
    const struct ag_address *address; /* an address equal to a known one → no events */
};

AG_EXTERN void ag_customer_init(void *state);
AG_EXTERN void ag_customer_free(void *state);
AG_EXTERN int ag_customer_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_customer_snapshot(const void *state);
AG_EXTERN int ag_customer_restore(void *state, const json_t *snap);
/* "standard" or "premium". */
AG_EXTERN const char *ag_customer_tier_name(bool premium);
/* CustomerRegistered {customerId, email, name, tier, accountId}. */
AG_EXTERN int ag_customer_register(const struct ag_customer *st,
                                   const struct ag_customer_register *cmd,
                                   struct ag_dom_events *out, struct ag_err *err);
/* CustomerTierChanged {tier}. */
AG_EXTERN int ag_customer_change_tier(const struct ag_customer *st,
                                      const struct ag_customer_change_tier *cmd,
                                      struct ag_dom_events *out, struct ag_err *err);
/* AddressAdded {addressId, address} (schema version 2; version 1 had no
 * addressId: the services' upcaster derives it from the event's id). */
AG_EXTERN int ag_customer_add_address(const struct ag_customer *st,
                                      const struct ag_customer_add_address *cmd,
                                      struct ag_dom_events *out, struct ag_err *err);
/* CustomerErased {customerId} (no personal data): the customer's data key is
 * destroyed by the service; the state keeps id, tier and account, and its
 * personal fields read AG_CUSTOMER_ERASED. Erased already → no events. */
AG_EXTERN int ag_customer_erase(const struct ag_customer *st, struct ag_dom_events *out,
                                struct ag_err *err);
/* What a personal field of an erased customer reads. */
#define AG_CUSTOMER_ERASED "[erased]"
AG_EXTERN extern const struct ag_dom_aggregate ag_customer_aggregate;

/* The index of customer `st`'s address `id`, or -1. */
AG_EXTERN int ag_customer_address_index(const struct ag_customer *st, const char *id);

/* ==== Product ==== */

struct ag_product {
    bool exists;            /* ProductAdded seen */
    bool active;            /* not discontinued */
    char id[AG_DOM_ID_MAX]; /* product id */
    char sku[64];           /* stock keeping unit, non-empty */
    char name[256];         /* display name, non-empty */
    struct ag_money price;  /* current price, >= 0; the currency never changes */
};

struct ag_product_add {
    const char *id;        /* new product id */
    const char *sku;       /* non-empty, ≤ 63 bytes */
    const char *name;      /* non-empty, ≤ 255 bytes */
    struct ag_money price; /* >= 0 */
};
struct ag_product_change_price {
    struct ag_money price; /* >= 0, same currency; the current price → no events */
};
struct ag_product_discontinue {
    const char *reason; /* optional (NULL) */
};

AG_EXTERN void ag_product_init(void *state);
AG_EXTERN void ag_product_free(void *state);
AG_EXTERN int ag_product_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_product_snapshot(const void *state);
AG_EXTERN int ag_product_restore(void *state, const json_t *snap);
/* ProductAdded {productId, sku, name, price}. */
AG_EXTERN int ag_product_add(const struct ag_product *st, const struct ag_product_add *cmd,
                             struct ag_dom_events *out, struct ag_err *err);
/* ProductPriceChanged {price, previousPrice}; only an active product. */
AG_EXTERN int ag_product_change_price(const struct ag_product *st,
                                      const struct ag_product_change_price *cmd,
                                      struct ag_dom_events *out, struct ag_err *err);
/* ProductDiscontinued {reason?}; already discontinued → no events. */
AG_EXTERN int ag_product_discontinue(const struct ag_product *st,
                                     const struct ag_product_discontinue *cmd,
                                     struct ag_dom_events *out, struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_product_aggregate;

/* ==== Order ==== */

enum ag_order_status {
    AG_ORDER_DRAFT,     /* "draft": being filled, the only state that changes lines */
    AG_ORDER_PENDING,   /* "pending": placed, the saga is processing it */
    AG_ORDER_CONFIRMED, /* "confirmed": reserved, paid, shipment arranged */
    AG_ORDER_SHIPPED,   /* "shipped" */
    AG_ORDER_CANCELLED, /* "cancelled" (with a reason) */
    AG_ORDER_DELIVERED, /* "delivered": the carrier handed it over (after shipped) */
};

struct ag_order {
    bool exists;                             /* OrderCreated seen */
    enum ag_order_status status;             /* lifecycle */
    char id[AG_DOM_ID_MAX];                  /* order id */
    char customer_id[AG_DOM_ID_MAX];         /* who ordered */
    char currency[4];                        /* every line and amount is in this currency */
    struct ag_price_line *lines;             /* owned; one line per product, in the order added */
    size_t nlines;                           /* lines used */
    size_t cap;                              /* lines allocated */
    bool has_address;                        /* shipping_address is set (at OrderPlaced) */
    struct ag_address shipping_address;      /* where to ship */
    char shipping_address_id[AG_DOM_ID_MAX]; /* the customer's address it came from, or "" */
    struct ag_money subtotal;                /* Σ lines (kept current while draft) */
    struct ag_money discount;                /* set by OrderPlaced; 0 before */
    struct ag_money total;                   /* subtotal - discount */
    char cancellation_reason[256];           /* set by OrderCancelled */
    char tracking_number[64];                /* set by OrderConfirmed */
    char saga_id[AG_DOM_ID_MAX];             /* the PlaceOrder saga, set by OrderPlaced */
};

struct ag_order_create {
    const char *id;          /* new order id */
    const char *customer_id; /* the customer */
    const char *currency;    /* ISO 4217 */
};
struct ag_order_add_item {
    const char *product_id;     /* the product */
    int64_t quantity;           /* > 0; adds to the line of the same product */
    struct ag_money unit_price; /* >= 0, order currency; equal to the line's price
                                   when the product is already in the order */
};
struct ag_order_remove_item {
    const char *product_id; /* not in the order → no events */
};
struct ag_order_place {
    const struct ag_address *shipping_address; /* required (NULL → AG_EDOMAIN) */
    struct ag_price_quote quote;               /* from ag_pricing_quote on the lines */
    const char *saga_id;                       /* the saga that will process the order */
    const char *shipping_address_id; /* optional: the customer's address it is (NULL none) */
};
struct ag_order_confirm {
    const char *tracking_number; /* from the shipment; NULL or "" allowed */
};
struct ag_order_cancel {
    const char *reason; /* NULL → "cancelled" */
};
struct ag_order_ship {
    int64_t now_ms; /* recorded as shippedAt */
};
struct ag_order_deliver {
    int64_t now_ms; /* recorded as deliveredAt */
};

AG_EXTERN void ag_order_init(void *state);
AG_EXTERN void ag_order_free(void *state);
/* Heap bytes the state holds beyond sizeof(struct ag_order) (the aggregate cache's
 * budget counts them). The other aggregates hold no heap. */
AG_EXTERN size_t ag_order_bytes(const void *state);
AG_EXTERN int ag_order_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_order_snapshot(const void *state);
AG_EXTERN int ag_order_restore(void *state, const json_t *snap);
/* "draft", "pending", "confirmed", "shipped", "cancelled", "delivered" ("unknown"
 * otherwise). */
AG_EXTERN const char *ag_order_status_name(enum ag_order_status s);
/* The status named `name`; AG_EINVAL when unknown. */
AG_EXTERN int ag_order_status_parse(const char *name, enum ag_order_status *out /* OUT */);
/* The line for `product_id` (borrowed from st) or NULL. */
AG_EXTERN const struct ag_price_line *ag_order_line(const struct ag_order *st,
                                                    const char *product_id);
/* OrderCreated {orderId, customerId, currency}. */
AG_EXTERN int ag_order_create(const struct ag_order *st, const struct ag_order_create *cmd,
                              struct ag_dom_events *out, struct ag_err *err);
/* ItemAdded {productId, quantity, unitPrice}. */
AG_EXTERN int ag_order_add_item(const struct ag_order *st, const struct ag_order_add_item *cmd,
                                struct ag_dom_events *out, struct ag_err *err);
/* ItemRemoved {productId}. */
AG_EXTERN int ag_order_remove_item(const struct ag_order *st,
                                   const struct ag_order_remove_item *cmd,
                                   struct ag_dom_events *out, struct ag_err *err);
/* OrderPlaced {shippingAddress, subtotal, discount, total, sagaId}. */
AG_EXTERN int ag_order_place(const struct ag_order *st, const struct ag_order_place *cmd,
                             struct ag_dom_events *out, struct ag_err *err);
/* OrderConfirmed {trackingNumber}; already confirmed or shipped → no events. */
AG_EXTERN int ag_order_confirm(const struct ag_order *st, const struct ag_order_confirm *cmd,
                               struct ag_dom_events *out, struct ag_err *err);
/* OrderCancelled {reason}; from draft or pending; already cancelled → no events. */
AG_EXTERN int ag_order_cancel(const struct ag_order *st, const struct ag_order_cancel *cmd,
                              struct ag_dom_events *out, struct ag_err *err);
/* OrderShipped {shippedAt}; from confirmed; already shipped → no events. */
AG_EXTERN int ag_order_ship(const struct ag_order *st, const struct ag_order_ship *cmd,
                            struct ag_dom_events *out, struct ag_err *err);
/* OrderDelivered {deliveredAt}; from shipped; already delivered → no events. */
AG_EXTERN int ag_order_deliver(const struct ag_order *st, const struct ag_order_deliver *cmd,
                               struct ag_dom_events *out, struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_order_aggregate;

/* ==== StockItem ==== */

struct ag_stock {
    bool exists;                      /* StockAdded seen */
    char product_id[AG_DOM_ID_MAX];   /* the product this stock is of */
    int64_t on_hand;                  /* units in the warehouse */
    int64_t reserved;                 /* units held for orders; Σ reservations ≤ on_hand */
    struct ag_dom_idmap reservations; /* active reservations: order id → quantity */
};

struct ag_stock_add {
    const char *product_id; /* required on the first add; must match afterwards */
    int64_t quantity;       /* > 0 */
};
struct ag_stock_reserve {
    const char *order_id;   /* one reservation per order: again → no events */
    int64_t quantity;       /* > 0 */
    const char *product_id; /* optional: names the product in errors when no stock exists */
};
struct ag_stock_release {
    const char *order_id; /* no active reservation → no events */
    const char *reason;   /* NULL → "released" */
};

AG_EXTERN void ag_stock_init(void *state);
AG_EXTERN void ag_stock_free(void *state);
/* Heap bytes the state holds beyond sizeof(struct ag_stock) (the aggregate cache's
 * budget counts them). The other aggregates hold no heap. */
AG_EXTERN size_t ag_stock_bytes(const void *state);
AG_EXTERN int ag_stock_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_stock_snapshot(const void *state);
AG_EXTERN int ag_stock_restore(void *state, const json_t *snap);
struct ag_stock_ship {
    const char *order_id; /* the order whose reserved units leave the warehouse */
};

/* on_hand - reserved. */
AG_EXTERN int64_t ag_stock_available(const struct ag_stock *st);
/* Units reserved for `order_id`, 0 when none. O(1). */
AG_EXTERN int64_t ag_stock_reservation(const struct ag_stock *st, const char *order_id);
/* Active reservations. */
AG_EXTERN size_t ag_stock_reservation_count(const struct ag_stock *st);
/* StockAdded {productId, quantity}. */
AG_EXTERN int ag_stock_add(const struct ag_stock *st, const struct ag_stock_add *cmd,
                           struct ag_dom_events *out, struct ag_err *err);
/* StockReserved {orderId, quantity}; AG_EDOMAIN
 * "insufficient stock for product P: requested N, available M". */
AG_EXTERN int ag_stock_reserve(const struct ag_stock *st, const struct ag_stock_reserve *cmd,
                               struct ag_dom_events *out, struct ag_err *err);
/* StockReleased {orderId, quantity, reason}. */
AG_EXTERN int ag_stock_release(const struct ag_stock *st, const struct ag_stock_release *cmd,
                               struct ag_dom_events *out, struct ag_err *err);
/* StockShipped {orderId, quantity}: the order's reserved units left the warehouse
 * (on hand and reserved both go down). No reservation → no events (idempotent). */
AG_EXTERN int ag_stock_ship(const struct ag_stock *st, const struct ag_stock_ship *cmd,
                            struct ag_dom_events *out, struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_stock_aggregate;

/* ==== Account ==== */

struct ag_account {
    bool exists;                     /* AccountOpened seen */
    bool closed;                     /* AccountClosed seen */
    char id[AG_DOM_ID_MAX];          /* account id */
    char customer_id[AG_DOM_ID_MAX]; /* owner */
    struct ag_money balance;         /* never negative */
    int64_t tx_count;                /* deposits + withdrawals + captures + refunds */
    int64_t last_activity_ms;        /* `at` of the latest event (Unix ms) */
    struct ag_dom_idmap charges;     /* order id → amount captured; flag = refunded */
};

struct ag_account_open {
    const char *id;          /* new account id */
    const char *customer_id; /* owner */
    const char *currency;    /* ISO 4217 */
    int64_t now_ms;          /* recorded as `at` */
};
struct ag_account_deposit {
    struct ag_money amount; /* > 0, account currency */
    int64_t now_ms;
};
struct ag_account_withdraw {
    struct ag_money amount; /* > 0, account currency, ≤ balance */
    int64_t now_ms;
};
struct ag_account_charge {
    const char *order_id;   /* one charge per order: again → no events */
    struct ag_money amount; /* > 0, account currency, ≤ balance */
    int64_t now_ms;
};
struct ag_account_refund {
    const char *order_id; /* not charged or already refunded → no events */
    int64_t now_ms;
};
struct ag_account_close {
    int64_t now_ms;
};

AG_EXTERN void ag_account_init(void *state);
AG_EXTERN void ag_account_free(void *state);
/* Heap bytes the state holds beyond sizeof(struct ag_account) (the aggregate cache's
 * budget counts them). The other aggregates hold no heap. */
AG_EXTERN size_t ag_account_bytes(const void *state);
AG_EXTERN int ag_account_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_account_snapshot(const void *state);
AG_EXTERN int ag_account_restore(void *state, const json_t *snap);
/* "open" or "closed". */
AG_EXTERN const char *ag_account_status_name(const struct ag_account *st);
/* Amount captured for `order_id` (0 when none); *refunded set when not NULL. */
AG_EXTERN int64_t ag_account_charged(const struct ag_account *st, const char *order_id,
                                     bool *refunded /* OUT, optional */);
/* AccountOpened {accountId, customerId, currency, at}. */
AG_EXTERN int ag_account_open(const struct ag_account *st, const struct ag_account_open *cmd,
                              struct ag_dom_events *out, struct ag_err *err);
/* MoneyDeposited {amount, balance, at}. */
AG_EXTERN int ag_account_deposit(const struct ag_account *st, const struct ag_account_deposit *cmd,
                                 struct ag_dom_events *out, struct ag_err *err);
/* MoneyWithdrawn {amount, balance, at}; AG_EDOMAIN "insufficient funds: balance X, requested Y". */
AG_EXTERN int ag_account_withdraw(const struct ag_account *st,
                                  const struct ag_account_withdraw *cmd, struct ag_dom_events *out,
                                  struct ag_err *err);
/* PaymentCaptured {orderId, amount, balance, at}. */
AG_EXTERN int ag_account_charge(const struct ag_account *st, const struct ag_account_charge *cmd,
                                struct ag_dom_events *out, struct ag_err *err);
/* PaymentRefunded {orderId, amount, balance, at}. */
AG_EXTERN int ag_account_refund(const struct ag_account *st, const struct ag_account_refund *cmd,
                                struct ag_dom_events *out, struct ag_err *err);
/* AccountClosed {at}; refused with a positive balance; already closed → no events. */
AG_EXTERN int ag_account_close(const struct ag_account *st, const struct ag_account_close *cmd,
                               struct ag_dom_events *out, struct ag_err *err);
/* Move `amount` between two accounts: MoneyWithdrawn {amount, balance, at,
 * toAccountId} into out_from and MoneyDeposited {amount, balance, at, fromAccountId}
 * into out_to. Same currency, both open, no overdraft, not the same account, > 0.
 * All or nothing: on error neither list changes. */
AG_EXTERN int ag_account_transfer(const struct ag_account *from, const struct ag_account *to,
                                  const struct ag_money *amount, int64_t now_ms,
                                  struct ag_dom_events *out_from, struct ag_dom_events *out_to,
                                  struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_account_aggregate;

/* ==== Payment (payment-<orderId>) ==== */

/* One order's charge: taken once from one account, refunded at most once. Its
 * state is a few fixed fields, so the Account no longer remembers its charges
 * (the charges map of an Account only holds those recorded before the payment
 * streams existed: PaymentCaptured/PaymentRefunded, which still replay). */
struct ag_payment {
    bool exists;                    /* ChargeCaptured seen */
    bool refunded;                  /* ChargeRefunded seen */
    char account_id[AG_DOM_ID_MAX]; /* the account charged */
    struct ag_money amount;         /* the amount charged */
};
struct ag_payment_charge {
    const char *order_id;   /* the payment's order (the stream's id) */
    struct ag_money amount; /* > 0, account currency, ≤ balance */
    int64_t now_ms;
};
struct ag_payment_refund {
    const char *order_id;
    int64_t now_ms;
};
AG_EXTERN void ag_payment_init(void *state);
AG_EXTERN void ag_payment_free(void *state);
AG_EXTERN int ag_payment_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_payment_snapshot(const void *state);
AG_EXTERN int ag_payment_restore(void *state, const json_t *snap);
/* Charge an order to an account: AccountCharged {orderId, amount, at} into
 * out_account and ChargeCaptured {accountId, amount, currency} into out_payment
 * (amounts in minor units of the account's currency). Already charged (the
 * payment exists, refunded or not, or the account's old charges map has the
 * order) → no events. Otherwise the rules of ag_account_charge. */
AG_EXTERN int ag_payment_charge(const struct ag_account *acct, const struct ag_payment *pay,
                                const struct ag_payment_charge *cmd,
                                struct ag_dom_events *out_account,
                                struct ag_dom_events *out_payment, struct ag_err *err);
/* Refund an order's charge: AccountRefunded {orderId, amount, at} + ChargeRefunded
 * {}; already refunded → no events; no payment stream → the old model's refund
 * (ag_account_refund, into out_account only: a charge made before the payment
 * streams). AG_EDOMAIN when the payment was taken from another account. */
AG_EXTERN int ag_payment_refund(const struct ag_account *acct, const struct ag_payment *pay,
                                const struct ag_payment_refund *cmd,
                                struct ag_dom_events *out_account,
                                struct ag_dom_events *out_payment, struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_payment_aggregate;

/* ==== Reservation (reservation-<orderId>) ==== */

/* One order's stock reservations, a line per product: held (quantity > 0),
 * released (0: reserving again holds anew, as a retried step must) or shipped
 * (-1: over for good). The StockItem keeps only counters; its old reservations
 * map holds only those recorded before (StockReserved, which still replays). */
#define AG_RESERVATION_RELEASED 0
#define AG_RESERVATION_SHIPPED  (-1)
struct ag_reservation {
    bool exists;
    struct ag_dom_idmap lines; /* product id → held quantity, or the two values above */
};
struct ag_reservation_hold {
    const char *order_id;
    const char *product_id;
    int64_t quantity; /* > 0 */
};
struct ag_reservation_release {
    const char *order_id;
    const char *product_id;
    const char *reason; /* NULL → "released" */
};
struct ag_reservation_ship {
    const char *order_id;
    const char *product_id;
};
AG_EXTERN void ag_reservation_init(void *state);
AG_EXTERN void ag_reservation_free(void *state);
/* Heap bytes the state holds beyond sizeof(struct ag_reservation) (the aggregate cache's
 * budget counts them). The other aggregates hold no heap. */
AG_EXTERN size_t ag_reservation_bytes(const void *state);
AG_EXTERN int ag_reservation_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_reservation_snapshot(const void *state);
AG_EXTERN int ag_reservation_restore(void *state, const json_t *snap);
/* The line's value for product_id: held quantity, AG_RESERVATION_RELEASED (also
 * when there is no line) or AG_RESERVATION_SHIPPED. */
AG_EXTERN int64_t ag_reservation_line(const struct ag_reservation *r, const char *product_id);
/* StockHeld {orderId, quantity} into out_stock + ReservationMade {productId,
 * quantity} into out_res. Held or shipped already (or an old reservation in the
 * stock item) → no events; else the rules of ag_stock_reserve. */
AG_EXTERN int ag_reservation_hold(const struct ag_stock *stock, const struct ag_reservation *res,
                                  const struct ag_reservation_hold *cmd,
                                  struct ag_dom_events *out_stock, struct ag_dom_events *out_res,
                                  struct ag_err *err);
/* StockFreed {orderId, quantity} + ReservationReleased {productId, reason} for a
 * held line; an old reservation → StockReleased (ag_stock_release) on the stock
 * only; nothing held → no events. */
AG_EXTERN int ag_reservation_release(const struct ag_stock *stock, const struct ag_reservation *res,
                                     const struct ag_reservation_release *cmd,
                                     struct ag_dom_events *out_stock, struct ag_dom_events *out_res,
                                     struct ag_err *err);
/* StockDispatched {orderId, quantity} + ReservationShipped {productId} for a held
 * line (on hand and reserved go down); an old reservation → StockShipped; else
 * no events. */
AG_EXTERN int ag_reservation_ship(const struct ag_stock *stock, const struct ag_reservation *res,
                                  const struct ag_reservation_ship *cmd,
                                  struct ag_dom_events *out_stock, struct ag_dom_events *out_res,
                                  struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_reservation_aggregate;

/* ==== Shipment ==== */

enum ag_shipment_status {
    AG_SHIPMENT_ARRANGED,   /* "arranged" */
    AG_SHIPMENT_CANCELLED,  /* "cancelled" */
    AG_SHIPMENT_DISPATCHED, /* "dispatched" */
    AG_SHIPMENT_DELIVERED,  /* "delivered": handed over to the customer */
};

struct ag_shipment {
    bool exists;                     /* ShipmentArranged seen */
    char id[AG_DOM_ID_MAX];          /* shipment id */
    char order_id[AG_DOM_ID_MAX];    /* one shipment per order */
    char customer_id[AG_DOM_ID_MAX]; /* whose address it is ("" in old events) */
    char tracking_number[64];        /* carrier tracking number */
    enum ag_shipment_status status;  /* lifecycle */
    struct ag_address address;       /* destination */
    char cancel_reason[256];         /* set by ShipmentCancelled */
};

struct ag_shipment_arrange {
    const char *id;                   /* new shipment id */
    const char *order_id;             /* already arranged for this order → no events */
    const struct ag_address *address; /* required */
    const char *tracking_number;      /* required, ≤ 63 bytes */
    const char *customer_id;          /* whose address (optional: NULL) */
};
struct ag_shipment_cancel {
    const char *reason; /* NULL → "cancelled" */
};
struct ag_shipment_dispatch {
    int64_t now_ms; /* recorded as dispatchedAt */
};
struct ag_shipment_deliver {
    int64_t now_ms; /* recorded as deliveredAt */
};

AG_EXTERN void ag_shipment_init(void *state);
AG_EXTERN void ag_shipment_free(void *state);
AG_EXTERN int ag_shipment_evolve(void *state, const char *type, const json_t *data);
AG_EXTERN json_t *ag_shipment_snapshot(const void *state);
AG_EXTERN int ag_shipment_restore(void *state, const json_t *snap);
/* "arranged", "cancelled", "dispatched", "delivered". */
AG_EXTERN const char *ag_shipment_status_name(enum ag_shipment_status s);
/* ShipmentArranged {shipmentId, orderId, address, trackingNumber, customerId?}. */
AG_EXTERN int ag_shipment_arrange(const struct ag_shipment *st,
                                  const struct ag_shipment_arrange *cmd, struct ag_dom_events *out,
                                  struct ag_err *err);
/* ShipmentCancelled {reason}; dispatched → AG_EDOMAIN; cancelled → no events. */
AG_EXTERN int ag_shipment_cancel(const struct ag_shipment *st, const struct ag_shipment_cancel *cmd,
                                 struct ag_dom_events *out, struct ag_err *err);
/* ShipmentDispatched {dispatchedAt}; only when arranged; dispatched → no events. */
AG_EXTERN int ag_shipment_dispatch(const struct ag_shipment *st,
                                   const struct ag_shipment_dispatch *cmd,
                                   struct ag_dom_events *out, struct ag_err *err);
/* ShipmentDelivered {deliveredAt}; only when dispatched; delivered → no events. */
AG_EXTERN int ag_shipment_deliver(const struct ag_shipment *st,
                                  const struct ag_shipment_deliver *cmd, struct ag_dom_events *out,
                                  struct ag_err *err);
AG_EXTERN extern const struct ag_dom_aggregate ag_shipment_aggregate;

#endif
