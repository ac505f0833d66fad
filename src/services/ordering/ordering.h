/* Private to the ordering context (api.c: one-step placement and reads;
 * drafts.c: draft orders): the parts both placements share. */
#ifndef AGORA_SERVICES_ORDERING_H
#define AGORA_SERVICES_ORDERING_H

#include "services/internal.h"

#define ORD_MAX_ITEMS 100
#define ORD_MAX_QTY   10000

/* Where an order ships: an inline shippingAddress, or shippingAddressId naming
 * one of the customer's saved addresses (resolved by ord_read_customer). */
struct ord_ship {
    struct ag_address address;      /* inline, or the resolved saved address */
    char address_id[AG_DOM_ID_MAX]; /* shippingAddressId, "" when inline */
};

/* What placing needs from the customer. */
struct ord_customer {
    bool premium;                   /* the tier's discount applies */
    char account_id[AG_DOM_ID_MAX]; /* the wallet, which must exist */
    bool address_found;             /* ship->address_id is one of its addresses */
    struct ord_ship *ship;          /* in/out: the saved address is copied in */
};

/* The body's customerId (a customer-role caller's own when absent), checked:
 * NULL after recording a field error. */
const char *ord_parse_customer(struct svc_job *j);
/* One {productId, quantity} at JSON pointer `at` into out (quantity and product
 * id; the price is the caller's): true when usable, field errors recorded. */
bool ord_parse_item(struct svc_job *j, const json_t *it, const char *at, struct ag_price_line *out);
/* The body's items (at most ORD_MAX_ITEMS) into lines: their count. */
size_t ord_parse_items(struct svc_job *j, bool required, struct ag_price_line *lines);
/* Parse the body's shippingAddress / shippingAddressId into `s` (exactly one of
 * them), recording field errors. */
void ord_parse_ship(struct svc_job *j, struct ord_ship *s);
/* Read customer `id`: tier, account, and the saved address `s->address_id` (if
 * any) into s->address; records 422 field errors (/customerId for a missing
 * account, /shippingAddressId for an address that is not the customer's). */
void ord_read_customer(struct svc_job *j, const char *id, struct ord_customer *c);

/* Draft orders (drafts.c): POST /api/v1/orders with "draft": true, items added
 * and removed, then placed. */
int ord_draft_create(struct svc_job *j);
int ord_draft_add_item(struct svc_job *j);
int ord_draft_remove_item(struct svc_job *j);
int ord_draft_place(struct svc_job *j);

#endif
