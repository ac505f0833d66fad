/*
 * Durable orchestrated sagas.
 *
 * A saga definition is a list of steps, each an action and a compensation. A saga
 * instance is a stream `saga-<id>` in the event store: SagaStarted {type, data},
 * then StepSucceeded / StepFailed {step, name, error}, CompensationSucceeded /
 * CompensationFailed {step, name, error, failedStep}, and one terminal event:
 * SagaCompleted, SagaCompensated {reason} or SagaFailed {reason, error,
 * failedCompensations: [{step, name, error}]}. A failed saga may be re-opened by
 * SagaRetried {attempt, failedCompensations} (ag_saga_retry), after which it
 * compensates again and ends with a new terminal event. Because the state is in
 * the store, a process killed mid-saga resumes every unfinished saga when its
 * engine starts.
 *
 * Steps run on the engine's few worker threads; a saga holds one only while its
 * step runs (the saga's own events are appended asynchronously, and the saga
 * moves on when the append completes). A step with an asynchronous action does
 * not even hold the worker: the participant finishes the call later, and may
 * commit its effect and the step's record in one multi-stream append. Each action gets the
 * idempotency key
 * "<sagaId>:<step>" and each compensation "<sagaId>:<step>:compensate", and must
 * honour it: a resumed saga re-runs the step whose success was not yet recorded,
 * so the participant must recognise the repeat (agora's aggregates key
 * reservations, charges and shipments by order). Actions run through the
 * definition's resilience pipeline (retry, timeout, breaker); when an action
 * finally fails, it and the completed steps are compensated in reverse order. A
 * compensation that keeps failing (comp_attempts) is recorded as
 * CompensationFailed, logged at error level, and the compensations before it
 * STILL run: one broken participant never leaves stock reserved or money held
 * elsewhere. The saga then ends Failed, naming every failed compensation, until
 * an operator retries it.
 *
 * Metadata. Every saga event has {correlationId: the saga id, causationId,
 * actor: {sub: "saga:<type>", roles: ["system"], onBehalfOf: the actor of the
 * event that started the saga}, traceparent, requestId} (the last two when that
 * event had them). SagaStarted's causationId is the starting event's id, every
 * later event's the saga event before it. Stored compactly (issue 19): the
 * saga-wide part and the cause on SagaStarted only; the correlation id nowhere
 * (it is the stream's) and no later event's causationId (the id of the event
 * before it in the stream), so a later event stores no metadata at all; readers
 * get the whole of it from ag_saga_event_meta_at / ag_saga_event_meta_read.
 *
 * Fault injection (for demos and chaos tests): per step, an error rate and an added
 * latency for the action and for the compensation.
 *
 * The engine lives in src/saga/: engine.c (queue, threads, API), run.c (driving
 * one saga), log.c (the stream and the state it folds into).
 */
#ifndef AGORA_SAGA_H
#define AGORA_SAGA_H

#include <jansson.h>

#include "agora/es.h"
#include "agora/obs.h"
#include "agora/resil.h"
#include "agora/store.h"

/* An action or a compensation: 0 or an AG_E* code with `err` filled. `data` is the
 * saga's data (SagaStarted), `reason` the failure being compensated (NULL for
 * actions). Runs on a worker thread; may block. */
typedef int (*ag_saga_fn)(void *ud, const json_t *data, const char *key, const char *reason,
                          struct ag_err *err);

/* An action or compensation that completes later: start the participant call and
 * return; finish it exactly once with ag_saga_call_done, from any thread (before
 * returning too). `reason` as for ag_saga_fn; it and `data` stay valid until then.
 * Runs on a worker, or on the recorder thread (cfg.inline_moves): it must not
 * block beyond a local read. See struct ag_saga_step's `action_async`. */
struct ag_saga_call;
typedef void (*ag_saga_async_fn)(void *ud, const json_t *data, const char *key, const char *reason,
                                 struct ag_saga_call *call);

struct ag_saga_fault {
    double error_rate;      /* probability an action fails with AG_EUPSTREAM */
    uint32_t latency_ms;    /* added before the action */
    double comp_error_rate; /* probability a compensation fails */
};

struct ag_saga_step {
    const char *name;                 /* "ReserveInventory" */
    ag_saga_fn action;                /* required */
    ag_saga_fn compensate;            /* NULL: nothing to undo */
    struct ag_saga_fault fault;       /* zero = none */
    const struct ag_pipeline *policy; /* this step's policy; NULL = the definition's */
    /* Optional, beside `action` (still required): the same action without
     * blocking a worker. The engine uses it for a forward move when the step has
     * no injected fault, its policy has no limiter, bulkhead or fallback, and its
     * breaker is closed (the call is admitted and recorded by it); a worker starts
     * the call and takes the next saga. A failure is not recorded as such: the
     * engine runs `action` synchronously through the policy (its retries, then
     * StepFailed), so `action` must recognise the async attempt's effect by the
     * idempotency key, as it does after a crash. */
    ag_saga_async_fn action_async;
    /* Optional, beside `compensate`: the same, without blocking a worker (no
     * injected compensation fault). Its success records CompensationSucceeded
     * (ag_saga_call_record gives that part); a failure runs `compensate`
     * synchronously with its attempts, as above. */
    ag_saga_async_fn compensate_async;
};

/* The store loop an asynchronous action may submit its appends to (the engine's:
 * their completions run on its recorder thread). */
AG_EXTERN struct ag_store_loop *ag_saga_call_loop(struct ag_saga_call *call);
/* The call's success record (StepSucceeded, or CompensationSucceeded for a
 * compensation, on saga-<id> at its exact version) as a
 * part for the participant's own multi-stream append, so that its effect and the
 * record commit as one unit; NULL when the store has no async multi-stream
 * append (then the engine records the step itself). The part is borrowed until
 * ag_saga_call_done. */
AG_EXTERN const struct ag_append_part *ag_saga_call_record(struct ag_saga_call *call);
/* The outcome of an asynchronous action: 0 or an AG_E* code (`err`); `recorded`
 * when the part from ag_saga_call_record was committed with the effect (rc 0). */
AG_EXTERN void ag_saga_call_done(struct ag_saga_call *call, int rc, const struct ag_err *err,
                                 bool recorded);

struct ag_saga_def {
    const char *type;                 /* "PlaceOrder" */
    const struct ag_saga_step *steps; /* borrowed */
    size_t nsteps;                    /* at most 64 */
    void *ud;                         /* passed to every step */
    const struct ag_pipeline *policy; /* per action attempt policy; NULL = one attempt */
    unsigned comp_attempts;           /* compensation attempts before giving up (0 → 5) */
    uint64_t comp_backoff_ns;         /* wait between them (0 → 50 ms) */
};

struct ag_saga_engine;

/* The events of a saga stream; their payloads are described at the top. */
#define AG_SAGA_EV_STARTED        "SagaStarted"
#define AG_SAGA_EV_STEP_SUCCEEDED "StepSucceeded"
#define AG_SAGA_EV_STEP_FAILED    "StepFailed"
#define AG_SAGA_EV_COMP_SUCCEEDED "CompensationSucceeded"
#define AG_SAGA_EV_COMP_FAILED    "CompensationFailed"
#define AG_SAGA_EV_RETRIED        "SagaRetried"
#define AG_SAGA_EV_COMPLETED      "SagaCompleted"
#define AG_SAGA_EV_COMPENSATED    "SagaCompensated"
#define AG_SAGA_EV_FAILED         "SagaFailed"

struct ag_saga_engine_config {
    struct ag_store *store;         /* borrowed */
    const struct ag_saga_def *defs; /* borrowed; must outlive the engine */
    size_t ndefs;
    unsigned threads; /* workers running steps (a saga holds one only inside a step); 0 → 4 */
    const struct ag_clock *clock; /* NULL → ag_clock_system(): event ids, retry times */
    const struct ag_rng *rng;     /* NULL → ag_rng_system(); called from every worker */
    /* Fault latency and compensation backoff; NULL → nanosleep. */
    void (*sleep)(void *ctx, uint64_t ns);
    void *sleep_ctx;
    /* NULL, or where agora_saga_step_duration_seconds{saga,step} goes (borrowed;
     * must outlive the engine): one series per action and per compensation
     * ("<Step>/compensate"), the time the participant call took. */
    struct ag_obs_registry *metrics;
    /* Do not resume unfinished sagas at start: another process may be driving
     * them (`agora serve`); ag_saga_engine_resume does it once this one owns them. */
    bool defer_resume;
    /* Run a saga's next move on the recorder thread (where the store completes its
     * last append) when that move cannot block: starting an asynchronous action or
     * compensation, or recording the terminal event. Saves a hand-off to a worker
     * per step; meant for a store whose reads do not wait on a network (the
     * asynchronous actions read their aggregates on the thread that starts them). */
    bool inline_moves;
};

/* Start the workers and resume every unfinished saga found in the store. */
AG_EXTERN int ag_saga_engine_start(const struct ag_saga_engine_config *cfg,
                                   struct ag_saga_engine **out, struct ag_err *err);
/* Queue every unfinished saga found in the store (those queued or running
 * already are left as they are); returns how many were queued. For a process
 * that has just become the owner of the sagas (cfg.defer_resume). */
AG_EXTERN size_t ag_saga_engine_resume(struct ag_saga_engine *e);
/* Stop: workers finish the step they are in; unfinished sagas resume next start. */
AG_EXTERN void ag_saga_engine_stop(struct ag_saga_engine *e);
/* Wait until the engine has nothing to do now: no saga queued or running, and
 * none waiting to be run again whose time (on the engine's clock) has come.
 * 0, or AG_ETIMEDOUT. For tests and orderly shutdowns. */
AG_EXTERN int ag_saga_engine_wait_idle(struct ag_saga_engine *e, int timeout_ms);

/* Record SagaStarted for `saga_id` (idempotent: starting it again only makes sure
 * it runs) and queue it. `data` is borrowed. `cause` (NULL: none) is the event
 * that started the saga: its id is SagaStarted's causationId, and its metadata's
 * actor, traceparent and requestId go on every event of the saga (see the top). */
AG_EXTERN int ag_saga_start(struct ag_saga_engine *e, const char *type, const char *saga_id,
                            const json_t *data, const struct ag_event *cause, struct ag_err *err);

/* Queue the start of a saga without waiting: a worker records SagaStarted and runs
 * it. `data` and what it needs of `cause` are copied. Pair with
 * ag_saga_wait_starts before relying on the start being durable (e.g. before a
 * projection commits past the triggering event). */
AG_EXTERN int ag_saga_start_async(struct ag_saga_engine *e, const char *type, const char *saga_id,
                                  const json_t *data, const struct ag_event *cause,
                                  struct ag_err *err);
/* Wait until every start queued so far is durable. AG_ETIMEDOUT, or AG_EIO when a
 * start could not be recorded since the last wait (it is not queued any more);
 * AG_EUNAVAILABLE when that was because the store could not write (retry later). */
AG_EXTERN int ag_saga_wait_starts(struct ag_saga_engine *e, int timeout_ms);

/* Retry a failed saga: record SagaRetried and queue it; a worker re-runs the
 * compensations that failed (with their idempotency keys, so one that did take
 * effect is a no-op), then records SagaCompensated, or SagaFailed again when one
 * still fails. Returns once SagaRetried is durable (0), AG_ENOTFOUND (no such
 * saga), AG_EREJECTED (the saga is running, completed or compensated: only a
 * failed saga can be retried; `err` says its status) or AG_ECONFLICT (another
 * retry recorded first). */
AG_EXTERN int ag_saga_retry(struct ag_saga_engine *e, const char *saga_id, struct ag_err *err);

/* The whole metadata of event `ev` (see the top) as a new JSON object: its stored
 * metadata completed, for an event of a saga stream, with the correlation id and
 * the saga-wide part of `started` (the stream's SagaStarted; NULL when not at hand,
 * or when `ev` is SagaStarted). Any other event's metadata is returned as stored
 * ({} when none). NULL only when out of memory. */
AG_EXTERN json_t *ag_saga_event_meta(const struct ag_event *ev, const struct ag_event *started);
/* The same, and the causationId of an event that does not store it (every saga
 * event after SagaStarted since issue 19): the id of `prev`, the event before
 * `ev` in its stream (ignored unless it is that one; NULL: not at hand). */
AG_EXTERN json_t *ag_saga_event_meta_at(const struct ag_event *ev, const struct ag_event *started,
                                        const struct ag_event *prev);
/* The same, reading SagaStarted and the event before `ev` from `store` when `ev`
 * needs them (one or two reads of one event); any other event's metadata through
 * ag_es_event_meta (a command's events stored once per stream). */
AG_EXTERN int ag_saga_event_meta_read(struct ag_store *store, const struct ag_event *ev,
                                      json_t **out, struct ag_err *err);

struct ag_saga_engine_stats {
    uint64_t started, completed, compensated, failed; /* since start */
    uint64_t resumed;                                 /* unfinished sagas found at start */
    uint64_t queued;                                  /* waiting for a worker now */
};
AG_EXTERN void ag_saga_engine_stats(struct ag_saga_engine *e, struct ag_saga_engine_stats *out);

/* The saga read model: table sagas(id, type, status, current_step, reason, steps,
 * updated_at) where steps is a JSON array [{"name","status","error"?,
 * "compensationError"?}]; statuses running / completed / compensated / failed (a
 * retried saga is running again); step statuses pending / succeeded / failed /
 * compensated / compensation_failed, with the error of a failed action and of a
 * failed compensation. A failed saga's reason names
 * the failure and every compensation that failed. `defs` gives step names
 * (borrowed). */
AG_EXTERN void ag_saga_projection(const struct ag_saga_def *defs, size_t n,
                                  struct ag_projection *out);
/* The sagas read model's `steps` column (compact: [[name, status, error,
 * compensationError], ...], trailing nulls left out, a succeeded step as its
 * name alone) as the API's array of
 * {"name","status","error"?,"compensationError"?}. New reference; [] for NULL or
 * text that is not such an array. */
AG_EXTERN json_t *ag_saga_steps_json(const char *column);

/* The other way: an array of step objects as the `steps` column stores them
 * (malloc'd text; NULL when out of memory). A succeeded step without errors is
 * stored as its name alone (a string instead of an array). */
AG_EXTERN char *ag_saga_steps_text(const json_t *steps);

#endif
