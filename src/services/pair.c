/*
 * Commands over two aggregates at once (issue 19): an account and the order's
 * payment, a stock item and the order's reservation. svc_exec2 runs a domain
 * decision over both states and appends both lists of events in one
 * multi-stream append, each stream at the exact version decided on
 * (ag_es_execute_multi), so the pair is recorded whole or not at all.
 * svc_exec2_async does the same without blocking (ag_es_execute_multi_async),
 * with a saga's step record as an extra part of that one append.
 */
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

const struct ag_es_type svc_payment_type = {
    "payment",         sizeof(struct ag_payment), ag_payment_init,    ag_payment_free,
    ag_payment_evolve, ag_payment_snapshot,       ag_payment_restore, NULL, /* no heap */
};

const struct ag_es_type svc_reservation_type = {
    "reservation",          sizeof(struct ag_reservation), ag_reservation_init,
    ag_reservation_free,    ag_reservation_evolve,         ag_reservation_snapshot,
    ag_reservation_restore, ag_reservation_bytes,
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

/* An svc_exec2 in flight: what the repository borrows until it is done. */
struct exec2_async {
    struct pair_call pc;
    struct ag_es_part parts[2];
    svc_done_fn done;
    void *ud;
    char sa[AG_STORE_STREAM_MAX + 1], sb[AG_STORE_STREAM_MAX + 1];
    char meta[]; /* a copy of the metadata ("" when none) */
};

static void exec2_async_done(void *ud, int rc, const struct ag_es_result *res,
                             const struct ag_err *err)
{
    AG_UNUSED(res);
    struct exec2_async *x = ud;
    x->done(x->ud, rc, err);
    ag_free(x);
}

int svc_exec2_async(struct svc_env *p, const struct svc_cmd2 *c, const struct svc_async *a)
{
    size_t mlen = c->meta ? strlen(c->meta) : 0;
    struct exec2_async *x = ag_malloc(sizeof *x + mlen + 1);
    if (!x) return AG_ENOMEM;
    if (ag_es_stream(c->type_a, c->id_a, x->sa, sizeof x->sa) ||
        ag_es_stream(c->type_b, c->id_b, x->sb, sizeof x->sb)) {
        ag_free(x);
        return AG_EINVAL;
    }
    x->pc = (struct pair_call){c->decide, c->cmd};
    x->parts[0] = (struct ag_es_part){c->type_a, x->sa};
    x->parts[1] = (struct ag_es_part){c->type_b, x->sb};
    x->done = a->done;
    x->ud = a->ud;
    memcpy(x->meta, c->meta ? c->meta : "", mlen + 1);
    struct ag_es_multi_cmd mc = {x->parts, 2, run_pair, &x->pc, c->meta ? x->meta : NULL};
    struct ag_es_async as = {a->loop, a->extra, a->extra ? 1 : 0, exec2_async_done, x};
    int rc = ag_es_execute_multi_async(p->repo, &mc, &as);
    if (rc) ag_free(x);
    return rc;
}
