/*
 * Driving one saga: from the state its log folds into (log.c), run the next
 * action or compensation, record the outcome, and so on until a terminal event.
 * The engine (engine.c) calls saga_run on a worker thread; nothing here knows
 * about threads or queues. Waits (fault latency, compensation backoff) go through
 * the injected sleep, randomness (injected faults) through the injected RNG.
 *
 * A failed step is compensated too, not only the steps before it. Its outcome is
 * uncertain: a process killed after the action took effect but before
 * StepSucceeded was recorded re-runs the action on resume, and if that re-run
 * fails (a transient error, an injected fault) the effect of the first run is
 * still there. Compensations are idempotent and do nothing when their action had
 * no effect, so compensating the failed step is always safe. A compensation of
 * the failed step that answers AG_EEXISTS says the action did take effect and
 * cannot be undone (a pivot such as ConfirmOrder): the step is then recorded as
 * succeeded and the saga goes forward again (forward recovery), which is only
 * allowed before any other compensation has run.
 *
 * Compensation never stops half-way. The highest step in `to_undo` runs next; its
 * outcome, CompensationSucceeded or CompensationFailed, takes it out of `to_undo`.
 * So a compensation that keeps failing is recorded and the ones before it still
 * run (release the stock, cancel the order): a saga never strands stock or money
 * behind one broken participant. Only when `to_undo` is empty does the saga end,
 * SagaCompensated, or SagaFailed naming every failed compensation. Both sets are
 * rebuilt from the log, so a crash mid-compensation resumes with the next one.
 *
 * saga_reopen (ag_saga_retry) records SagaRetried on a failed saga, which puts
 * the failed compensations back into `to_undo` (with any an older engine never ran);
 * the next saga_run runs them with their original idempotency keys.
 *
 * A step or compensation that fails because the store cannot write
 * (AG_EUNAVAILABLE: a full disk, an I/O error) did not fail for a business
 * reason: saga_run returns it without recording anything, and the engine runs the
 * saga again later, from where it was.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct step_call {
    const struct saga_env *env;
    const struct ag_saga_def *def;
    const struct ag_saga_step *step;
    const json_t *data;
    const char *key;
    const char *reason;
    bool compensation;
};

static int injected(const struct step_call *c, struct ag_err *err)
{
    const struct ag_saga_step *st = c->step;
    if (!c->compensation && st->fault.latency_ms)
        c->env->sleep(c->env->sleep_ctx, (uint64_t)st->fault.latency_ms * 1000000ull);
    double rate = c->compensation ? st->fault.comp_error_rate : st->fault.error_rate;
    if (rate > 0 && ag_rng_double(c->env->rng) < rate)
        return ag_err_set(err, AG_EUPSTREAM, "injected fault in %s%s",
                          c->compensation ? "compensation of " : "", st->name);
    return 0;
}

static int step_op(void *arg, struct ag_resil_ctx *ctx)
{
    struct step_call *c = arg;
    int rc = injected(c, ctx->err);
    if (rc) return rc;
    ag_saga_fn fn = c->compensation ? c->step->compensate : c->step->action;
    return fn(c->def->ud, c->data, c->key, c->reason, ctx->err);
}

static int run_action(const struct saga_env *env, const struct saga_state *s, const char *key,
                      struct ag_err *err)
{
    struct step_call c = {env, s->def, &s->def->steps[s->next], s->data, key, NULL, false};
    struct ag_resil_ctx ctx = {.err = err};
    const struct ag_pipeline *policy = c.step->policy ? c.step->policy : s->def->policy;
    if (!policy) return step_op(&c, &ctx);
    return ag_pipeline_run(policy, step_op, &c, &ctx);
}

/* Up to comp_attempts tries, the backoff doubling (at most 16 times the first). */
static int run_compensation(const struct saga_env *env, const struct saga_state *s, size_t i,
                            const char *key, struct ag_err *err)
{
    const struct ag_saga_step *st = &s->def->steps[i];
    if (!st->compensate) return 0;
    struct step_call c = {env, s->def, st, s->data, key, s->reason, true};
    unsigned attempts = s->def->comp_attempts ? s->def->comp_attempts : 5;
    uint64_t backoff = s->def->comp_backoff_ns ? s->def->comp_backoff_ns : 50000000ull;
    int rc = 0;
    for (unsigned a = 0; a < attempts; a++) {
        struct ag_resil_ctx ctx = {.attempt = a + 1, .err = err};
        ag_err_clear(err);
        if ((rc = step_op(&c, &ctx)) == 0 || rc == AG_EEXISTS) return rc; /* EEXISTS: see the top */
        if (a + 1 < attempts) env->sleep(env->sleep_ctx, backoff << (a < 4 ? a : 4));
    }
    return rc;
}

/* The next forward move: run action `next` and say what to record. */
static int next_forward(const struct saga_env *env, struct saga_state *s, struct saga_rec *rec,
                        struct ag_err *err)
{
    if (s->next >= s->def->nsteps) {
        *rec = (struct saga_rec){SAGA_EV_COMPLETED, json_object(), SIZE_MAX};
        return 0;
    }
    char key[SAGA_STREAM_MAX + 64];
    const struct ag_saga_step *st = &s->def->steps[s->next];
    snprintf(key, sizeof key, "%s:%s", s->id, st->name);
    struct ag_err serr;
    ag_err_clear(&serr);
    int rc = run_action(env, s, key, &serr);
    if (rc == AG_EUNAVAILABLE) return ag_err_set(err, rc, "%s", ag_err_msg(&serr, rc));
    if (rc == 0) {
        *rec = (struct saga_rec){SAGA_EV_STEP_SUCCEEDED, saga_step_json(s->next, st->name, NULL),
                                 s->next};
        return 0;
    }
    const char *why = ag_err_msg(&serr, rc);
    AG_INFO("saga.step_failed", AG_LS("saga", s->id), AG_LS("step", st->name), AG_LS("error", why));
    /* StepFailed starts the compensation, of this step too (see the top) */
    *rec = (struct saga_rec){SAGA_EV_STEP_FAILED, saga_step_json(s->next, st->name, why), s->next};
    return 0;
}

/* The failed step's compensation found its effect in place for good: record the
 * step as succeeded and go forward (only before any other compensation ran). */
static void recover_forward(struct saga_state *s, const char *why, struct saga_rec *rec)
{
    const struct ag_saga_step *st = &s->def->steps[s->next];
    AG_WARN("saga.step_recovered", AG_LS("saga", s->id), AG_LS("step", st->name),
            AG_LS("detail", why));
    json_t *j = saga_step_json(s->next, st->name, NULL);
    if (j) json_object_set_new(j, "recovered", json_true());
    *rec = (struct saga_rec){SAGA_EV_STEP_SUCCEEDED, j, s->next};
}

/* The terminal event once no compensation is left to run. */
static void finish_backward(struct saga_state *s, struct saga_rec *rec)
{
    if (!s->failed) {
        *rec = (struct saga_rec){SAGA_EV_COMPENSATED, json_pack("{s:s}", "reason", s->reason),
                                 SIZE_MAX};
        return;
    }
    json_t *list = saga_failed_list(s);
    const char *first = json_string_value(json_object_get(json_array_get(list, 0), "error"));
    json_t *d = json_pack("{s:s, s:s, s:o}", "reason", s->reason, "error",
                          first ? first : "compensation failed", "failedCompensations", list);
    *rec = (struct saga_rec){SAGA_EV_FAILED, d, SIZE_MAX};
}

static size_t highest_bit(uint64_t m)
{
    return (size_t)(63 - __builtin_clzll(m));
}

/* The outcome of compensation `i` (`rc`, why in `cerr`). */
static void comp_outcome(struct saga_state *s, size_t i, int rc, const struct ag_err *cerr,
                         struct saga_rec *rec)
{
    const struct ag_saga_step *st = &s->def->steps[i];
    json_t *j = saga_step_json(i, st->name, rc ? ag_err_msg(cerr, rc) : NULL);
    if (j && i == s->next) json_object_set_new(j, "failedStep", json_true());
    if (rc)
        AG_ERROR("saga.compensation_failed", AG_LS("saga", s->id), AG_LS("step", st->name),
                 AG_LS("error", ag_err_msg(cerr, rc)));
    *rec = (struct saga_rec){rc ? SAGA_EV_COMP_FAILED : SAGA_EV_COMP_SUCCEEDED, j, i};
}

/* The next backward move: the highest compensation in `to_undo`, whose failure does
 * not stop the others (see the top), or the terminal event. */
static int next_backward(const struct saga_env *env, struct saga_state *s, struct saga_rec *rec,
                         struct ag_err *err)
{
    while (s->to_undo) {
        size_t i = highest_bit(s->to_undo);
        if (i >= s->def->nsteps) { /* a log from a longer definition: nothing to undo */
            s->to_undo &= ~saga_step_bit(i);
            continue;
        }
        char key[SAGA_STREAM_MAX + 64];
        snprintf(key, sizeof key, "%s:%s:compensate", s->id, s->def->steps[i].name);
        struct ag_err cerr;
        ag_err_clear(&cerr);
        int rc = run_compensation(env, s, i, key, &cerr);
        if (rc == AG_EEXISTS && i == s->next && !s->comp_ran) {
            recover_forward(s, ag_err_msg(&cerr, rc), rec);
            return 0;
        }
        if (rc == AG_EUNAVAILABLE) return ag_err_set(err, rc, "%s", ag_err_msg(&cerr, rc));
        comp_outcome(s, i, rc, &cerr, rec);
        return 0;
    }
    finish_backward(s, rec);
    return 0;
}

int saga_next(const struct saga_env *env, struct saga_state *s, struct saga_rec *rec,
              struct ag_err *err)
{
    /* Forward until completed or a step fails, backward until compensated/failed or
     * the failed step is recovered forward (see the top), which goes forward again. */
    *rec = (struct saga_rec){SAGA_EV_UNKNOWN, NULL, SIZE_MAX};
    uint64_t t0 = ag_clock_mono(env->clock);
    bool back = s->compensating;
    int rc = back ? next_backward(env, s, rec, err) : next_forward(env, s, rec, err);
    if (!rc && rec->step != SIZE_MAX && env->step_seconds)
        env->step_seconds(env->step_ctx, s->def, rec->step, back,
                          (double)(ag_clock_mono(env->clock) - t0) / 1e9);
    if (!rc && !rec->data) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    return rc;
}

int saga_run(const struct saga_env *env, const char *id, enum saga_end *end)
{
    struct saga_state s;
    struct ag_err err;
    ag_err_clear(&err);
    *end = SAGA_END_NONE;
    int rc = saga_load(env, id, &s, &err);
    bool was_terminal = s.terminal;
    while (!rc && !s.terminal) {
        struct saga_rec rec;
        rc = saga_next(env, &s, &rec, &err);
        if (!rc)
            rc = saga_record(env, &s, rec.kind, rec.data, &err);
        else
            json_decref(rec.data);
    }
    if (!rc && !was_terminal) *end = s.end;
    if (rc && rc != AG_ECLOSED)
        AG_WARN("saga.interrupted", AG_LS("saga", id), AG_LS("error", ag_err_msg(&err, rc)));
    saga_state_free(&s);
    return rc == AG_ENOTFOUND || rc == AG_ECONFLICT ? 0 : rc;
}

int saga_reopen(const struct saga_env *env, const char *id, unsigned *attempt, struct ag_err *err)
{
    struct saga_state s;
    int rc = saga_load(env, id, &s, err);
    if (!rc && s.end != SAGA_END_FAILED)
        rc = ag_err_set(err, AG_EREJECTED, "saga %s is %s: only a failed saga can be retried", id,
                        saga_end_name(s.end));
    json_t *d = rc ? NULL
                   : json_pack("{s:i, s:o}", "attempt", (int)s.retries + 1, "failedCompensations",
                               saga_failed_list(&s));
    if (!rc && !d) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) rc = saga_record(env, &s, SAGA_EV_RETRIED, d, err);
    if (rc == AG_ECONFLICT) /* another retry (or a worker) wrote first */
        ag_err_set(err, AG_ECONFLICT, "saga %s changed while being retried", id);
    *attempt = s.retries;
    saga_state_free(&s);
    return rc;
}
