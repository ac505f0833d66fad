/* Helpers for the domain tests: run a decide function against the current state,
 * evolve the state with what it decided, and check errors and snapshots.
 *
 *   dt_begin(&ag_order_aggregate, &order);
 *   cr_assert_eq(dt_ok(D(ag_order_create, {"o1", "c1", "USD"})), 1);
 *   dt_fail(D(ag_order_place, {NULL}), AG_EDOMAIN, "empty order");
 *
 * D(fn, {...}) calls fn(state, &(struct fn){...}, &events, &err): every decide
 * function's command struct has the function's name. The events of the latest call
 * stay in T.ev (for checking their data) until the next D().
 */
#ifndef AGORA_TEST_DOM_H
#define AGORA_TEST_DOM_H

#include <criterion/criterion.h>
#include <string.h>

#include "agora/domain.h"

struct dt {
    const struct ag_dom_aggregate *agg; /* the aggregate under test */
    void *st;                           /* its state (owned by the test) */
    struct ag_dom_events ev;            /* events of the latest decide */
    struct ag_err err;                  /* error of the latest decide */
};
static struct dt T;

static inline void dt_begin(const struct ag_dom_aggregate *agg, void *st)
{
    T.agg = agg;
    T.st = st;
    agg->init(st);
    ag_dom_events_init(&T.ev);
    memset(&T.err, 0, sizeof T.err);
}

static inline void dt_end(void)
{
    ag_dom_events_free(&T.ev);
    T.agg->free(T.st);
}

static inline void dt_prep(void)
{
    ag_dom_events_free(&T.ev);
    memset(&T.err, 0, sizeof T.err);
}

#define D(fn, ...) (dt_prep(), fn(T.st, &(struct fn)__VA_ARGS__, &T.ev, &T.err))
/* A decide without a command struct (ag_customer_erase). */
#define D0(fn) (dt_prep(), fn(T.st, &T.ev, &T.err))

/* The decide succeeded: evolve the state with its events; returns how many. */
static inline size_t dt_ok(int rc)
{
    cr_assert_eq(rc, 0, "decide failed: %s (%s)", T.err.msg, ag_errname(rc));
    for (size_t i = 0; i < T.ev.n; i++) {
        int erc = T.agg->evolve(T.st, T.ev.v[i].type, T.ev.v[i].data);
        cr_assert_eq(erc, 0, "evolve %s: %s", T.ev.v[i].type, ag_errname(erc));
    }
    return T.ev.n;
}

/* The decide failed with `code`, emitted nothing, and the message has `substr`. */
static inline void dt_fail(int rc, int code, const char *substr)
{
    cr_assert_eq(rc, code, "expected %s, got %s (%s)", ag_errname(code), ag_errname(rc), T.err.msg);
    cr_assert_eq(T.err.code, code);
    cr_assert_eq(T.ev.n, 0, "no events on error");
    cr_assert(strstr(T.err.msg, substr), "message \"%s\" lacks \"%s\"", T.err.msg, substr);
}

/* Event i of the latest decide has this type. */
static inline json_t *dt_ev(size_t i, const char *type)
{
    cr_assert_lt(i, T.ev.n);
    cr_assert_str_eq(T.ev.v[i].type, type);
    cr_assert(json_is_object(T.ev.v[i].data));
    return T.ev.v[i].data;
}

static inline json_int_t jint(const json_t *o, const char *path0, const char *path1)
{
    const json_t *v = json_object_get(o, path0);
    if (path1) v = json_object_get(v, path1);
    cr_assert(json_is_integer(v), "%s/%s is not an integer", path0, path1 ? path1 : "");
    return json_integer_value(v);
}

static inline const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    cr_assert(s, "%s is not a string", key);
    return s;
}

/* Apply a recorded event given as JSON text. */
static inline int dt_apply(const char *type, const char *json)
{
    json_error_t je;
    json_t *d = json_loads(json, 0, &je);
    cr_assert(d, "bad test JSON: %s", je.text);
    int rc = T.agg->evolve(T.st, type, d);
    json_decref(d);
    return rc;
}

/* snapshot → text → restore into a fresh state → snapshot again: equal. The
 * restored state is left in `copy` (state_size bytes) for field checks; the caller
 * frees it with T.agg->free. */
static inline void dt_roundtrip(void *copy)
{
    json_t *s1 = T.agg->snapshot(T.st);
    cr_assert(s1);
    char *text = json_dumps(s1, JSON_COMPACT);
    json_t *parsed = json_loads(text, 0, NULL);
    T.agg->init(copy);
    cr_assert_eq(T.agg->restore(copy, parsed), 0, "restore %s", text);
    json_t *s2 = T.agg->snapshot(copy);
    cr_assert(json_equal(s1, s2), "snapshots differ: %s", text);
    json_decref(s1);
    json_decref(s2);
    json_decref(parsed);
    free(text);
}

#define USD(x) ((struct ag_money){(x), "USD"})
#define EUR(x) ((struct ag_money){(x), "EUR"})

#define ADDR  ((struct ag_address){"1 Main St", "Springfield", "IL", "62701", "US"})
#define ADDR2 ((struct ag_address){"2 Side Rd", "Shelbyville", "IL", "62565", "US"})

#endif
