/*
 * Commands over two aggregates at once (issue 19): an account and the order's
 * payment, a stock item and the order's reservation. svc_exec2 runs a domain
 * decision over both states and appends both lists of events in one
 * multi-stream append, each stream at the exact version decided on
 * (ag_es_execute_multi), so the pair is recorded whole or not at all.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

const struct ag_es_type svc_payment_type = {
    "payment",         sizeof(struct ag_payment), ag_payment_init,    ag_payment_free,
    ag_payment_evolve, ag_payment_snapshot,       ag_payment_restore,
};

const struct ag_es_type svc_reservation_type = {
    "reservation",          sizeof(struct ag_reservation), ag_reservation_init,
    ag_reservation_free,    ag_reservation_evolve,         ag_reservation_snapshot,
    ag_reservation_restore,
};

struct pair_call {
    svc_dom2_fn fn;
    const void *cmd;
};

static int move_events(struct ag_dom_events *evs, struct ag_es_batch *out)
{
    int rc = 0;
    for (size_t i = 0; i < evs->n && !rc; i++) {
        rc = ag_es_batch_push(out, evs->v[i].type, evs->v[i].data);
        evs->v[i].data = NULL; /* moved (push releases it on failure) */
    }
    return rc;
}

static int run_pair(void *const *states, const int64_t *versions, void *ud,
                    struct ag_es_batch *outs, struct ag_err *err)
{
    AG_UNUSED(versions);
    struct pair_call *c = ud;
    struct ag_dom_events a, b;
    ag_dom_events_init(&a);
    ag_dom_events_init(&b);
    int rc = c->fn(states[0], states[1], c->cmd, &a, &b, err);
    if (!rc) rc = move_events(&a, &outs[0]);
    if (!rc) rc = move_events(&b, &outs[1]);
    if (rc == AG_ENOMEM && !err->msg[0]) ag_err_set(err, AG_ENOMEM, "out of memory");
    ag_dom_events_free(&a);
    ag_dom_events_free(&b);
    return rc;
}

int svc_exec2(struct svc_env *p, const struct svc_cmd2 *c, struct ag_err *err)
{
    char sa[AG_STORE_STREAM_MAX + 1], sb[AG_STORE_STREAM_MAX + 1];
    if (ag_es_stream(c->type_a, c->id_a, sa, sizeof sa))
        return ag_err_set(err, AG_EINVAL, "%s id is too long", c->type_a->name);
    if (ag_es_stream(c->type_b, c->id_b, sb, sizeof sb))
        return ag_err_set(err, AG_EINVAL, "%s id is too long", c->type_b->name);
    struct pair_call pc = {c->decide, c->cmd};
    const struct ag_es_part parts[2] = {{c->type_a, sa}, {c->type_b, sb}};
    struct ag_es_multi_cmd mc = {parts, 2, run_pair, &pc, c->meta};
    return ag_es_execute_multi(p->repo, &mc, NULL, err);
}
