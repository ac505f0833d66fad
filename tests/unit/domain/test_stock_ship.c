/* StockShipped: reserved units leave the warehouse with their order. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/domain.h"

static void apply(struct ag_stock *s, struct ag_dom_events *evs)
{
    for (size_t i = 0; i < evs->n; i++)
        cr_assert_eq(ag_stock_evolve(s, evs->v[i].type, evs->v[i].data), 0);
    ag_dom_events_free(evs);
}

Test(stock_ship, shipping_takes_reserved_units_off_hand_once)
{
    struct ag_stock s;
    memset(&s, 0, sizeof s);
    ag_stock_init(&s);
    struct ag_dom_events evs;
    ag_dom_events_init(&evs);
    struct ag_stock_add add = {"p1", 10};
    cr_assert_eq(ag_stock_add(&s, &add, &evs, NULL), 0);
    apply(&s, &evs);
    struct ag_stock_reserve r = {"o1", 3, "p1"};
    cr_assert_eq(ag_stock_reserve(&s, &r, &evs, NULL), 0);
    apply(&s, &evs);
    struct ag_stock_ship sh = {"o1"};
    cr_assert_eq(ag_stock_ship(&s, &sh, &evs, NULL), 0);
    cr_assert_eq(evs.n, 1);
    cr_assert_str_eq(evs.v[0].type, AG_EV_STOCK_SHIPPED);
    cr_assert_eq(json_integer_value(json_object_get(evs.v[0].data, "quantity")), 3);
    apply(&s, &evs);
    cr_assert_eq(s.on_hand, 7);
    cr_assert_eq(s.reserved, 0);
    cr_assert_eq(ag_stock_available(&s), 7);
    cr_assert_eq(ag_stock_ship(&s, &sh, &evs, NULL), 0, "shipping again is a no-op");
    cr_assert_eq(evs.n, 0);
    struct ag_stock_release rel = {"o1", NULL};
    cr_assert_eq(ag_stock_release(&s, &rel, &evs, NULL), 0);
    cr_assert_eq(evs.n, 0, "a shipped order has nothing left to release");
    ag_dom_events_free(&evs);
    ag_stock_free(&s);
}
