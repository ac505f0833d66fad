/*
 * Demo data for the first start of `agora run`: a catalog of products with stock,
 * and customers with funded wallet accounts, so an order can be placed at once.
 * The seeded ids are logged (and the catalog is listed at /api/v1/products).
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

struct seed_product {
    const char *sku, *name;
    int64_t cents, stock;
};

static const struct seed_product products[] = {
    {"KB-01", "Mechanical keyboard", 8999, 50}, {"MS-02", "Wireless mouse", 2999, 100},
    {"MN-03", "27-inch monitor", 24999, 20},    {"HP-04", "Noise-cancelling headphones", 19999, 30},
    {"CB-05", "USB-C cable", 999, 500},         {"WC-06", "HD webcam", 4999, 3},
};

struct seed_customer {
    const char *email, *name;
    bool premium;
    int64_t cents;
};

static const struct seed_customer customers[] = {
    {"alice@example.com", "Alice Example", true, 100000},
    {"bob@example.com", "Bob Example", false, 50000},
    {"carol@example.com", "Carol Example", false, 1000},
};

static int d_product_add(const void *st, const void *cmd, struct ag_dom_events *out,
                         struct ag_err *err)
{
    return ag_product_add(st, cmd, out, err);
}

static int d_stock_add(const void *st, const void *cmd, struct ag_dom_events *out,
                       struct ag_err *err)
{
    return ag_stock_add(st, cmd, out, err);
}

static int seed_product(struct svc_env *p, const struct seed_product *sp, struct ag_err *err)
{
    char id[AG_UUID_STRLEN + 1];
    svc_new_id(id, NULL, NULL);
    struct ag_product_add a = {id, sp->sku, sp->name, {sp->cents, "USD"}};
    int rc = svc_exec(p,
                      &(struct svc_cmd){&svc_product_type, id, d_product_add, &a,
                                        "{\"actor\":\"seed\"}", NULL, NULL},
                      err);
    struct ag_stock_add s = {id, sp->stock};
    if (!rc)
        rc = svc_exec(p,
                      &(struct svc_cmd){&svc_stock_type, id, d_stock_add, &s,
                                        "{\"actor\":\"seed\"}", NULL, NULL},
                      err);
    if (!rc)
        AG_INFO("seed.product", AG_LS("id", id), AG_LS("sku", sp->sku), AG_LI("stock", sp->stock));
    return rc;
}

static int seed_customer(struct svc_env *p, const struct seed_customer *sc, struct ag_err *err)
{
    char id[AG_UUID_STRLEN + 1], account[40], existing[40];
    svc_new_id(id, NULL, NULL);
    const struct svc_registration reg = {id,       NULL,        sc->email,
                                         sc->name, sc->premium, "{\"actor\":\"seed\"}"};
    int rc = svc_register_customer(p, &reg, account, existing, err);
    struct ag_money m = {sc->cents, "USD"};
    if (!rc) rc = svc_deposit(p, account, &m, "{\"actor\":\"seed\"}", err);
    if (!rc)
        AG_INFO("seed.customer", AG_LS("id", id), AG_LS("email", sc->email),
                AG_LS("accountId", account), AG_LI("balance", sc->cents));
    return rc;
}

int svc_seed(struct svc_env *p, struct ag_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < sizeof products / sizeof products[0] && !rc; i++)
        rc = seed_product(p, &products[i], err);
    for (size_t i = 0; i < sizeof customers / sizeof customers[0] && !rc; i++)
        rc = seed_customer(p, &customers[i], err);
    return rc;
}
