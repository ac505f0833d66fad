/*
 * The saga engine's private seams. Three files share them:
 *
 *   log.c     a saga's event stream: the event kinds and their names, the payload
 *             and metadata of each event, appending one at the exact expected
 *             version, and folding a stream into a `struct saga_state`.
 *   run.c     driving one saga from its state: actions forward, compensations
 *             backward, the terminal event, re-opening a failed saga. No threads.
 *   engine.c  the queue, the worker and retry threads, and the public API.
 *
 * `struct saga_env` is what the engine borrows from its caller (the store, the
 * definitions, the clock, the RNG and the sleep); log.c and run.c only see it.
 */
#ifndef AGORA_SAGA_INTERNAL_H
#define AGORA_SAGA_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "agora/obs.h"
#include "agora/saga.h"

#define SAGA_PREFIX     "saga-" /* a saga's stream is saga-<id> */
#define SAGA_PREFIX_LEN (sizeof SAGA_PREFIX - 1)
#define SAGA_STREAM_MAX 128 /* prefix + id + NUL */
/* The longest saga id: its stream fits SAGA_STREAM_MAX. */
#define SAGA_ID_MAX    (SAGA_STREAM_MAX - SAGA_PREFIX_LEN - 1)
#define SAGA_STEPS_MAX 64 /* steps per definition: the compensation sets are uint64_t */

struct saga_env {
    struct ag_store *store;
    const struct ag_saga_def *defs;
    size_t ndefs;
    const struct ag_clock *clock; /* event ids (wall), retry times (monotonic) */
    const struct ag_rng *rng;     /* event ids, injected faults */
    void (*sleep)(void *ctx, uint64_t ns);
    void *sleep_ctx;
    /* How long action (or compensation, `back`) `step` of `def` took; NULL: not
     * observed (the engine feeds agora_saga_step_duration_seconds). */
    void (*step_seconds)(void *ctx, const struct ag_saga_def *def, size_t step, bool back,
                         double seconds);
    void *step_ctx;
};

/* The events of a saga stream (names in include/agora/saga.h). */
enum saga_ev {
    SAGA_EV_UNKNOWN,
    SAGA_EV_STARTED,
    SAGA_EV_STEP_SUCCEEDED,
    SAGA_EV_STEP_FAILED,
    SAGA_EV_COMP_SUCCEEDED,
    SAGA_EV_COMP_FAILED,
    SAGA_EV_RETRIED,
    SAGA_EV_COMPLETED,
    SAGA_EV_COMPENSATED,
    SAGA_EV_FAILED,
};

enum saga_end { SAGA_END_NONE, SAGA_END_COMPLETED, SAGA_END_COMPENSATED, SAGA_END_FAILED };

/* The saga as its events say. */
struct saga_state {
    const struct ag_saga_def *def;
    char id[SAGA_STREAM_MAX];
    char stream[SAGA_STREAM_MAX + 8];
    json_t *data;           /* from SagaStarted (owned) */
    int64_t version;        /* stream version */
    struct ag_uuid last_id; /* the last event: the cause of the next one (not stored) */
    struct ag_buf buf;      /* encoding scratch for the next event */
    size_t next;            /* next step to run forward; while compensating, the failed step */
    bool compensating;      /* a step failed: running compensations */
    bool comp_ran;          /* a compensation outcome was recorded since StepFailed */
    uint64_t to_undo;       /* bit i: step i's compensation is still to run */
    uint64_t failed;        /* bit i: step i's compensation failed (after its attempts) */
    json_t *errors;         /* step name -> last compensation error (owned) */
    unsigned retries;       /* SagaRetried events so far */
    bool terminal;
    enum saga_end end;         /* the terminal event, when terminal */
    char reason[512];          /* the failure being compensated */
    struct ag_obs_trace trace; /* SagaStarted's traceparent: the steps' parent span */
    bool has_trace;            /* trace valid */
};

static inline uint64_t saga_step_bit(size_t i)
{
    return i < SAGA_STEPS_MAX ? 1ull << i : 0;
}

/* ---- log.c ---- */

const struct ag_saga_def *saga_find_def(const struct saga_env *env, const char *type);
/* The kind of an event type; SAGA_EV_UNKNOWN for anything else. */
enum saga_ev saga_ev_kind(const char *type, size_t len);
const char *saga_end_name(enum saga_end end);

/* Fold stream saga-<id> into `s` (always initialised: saga_state_free it).
 * AG_ENOTFOUND when there is no such saga or its type is unknown. */
int saga_load(const struct saga_env *env, const char *id, struct saga_state *s, struct ag_err *err);
void saga_state_free(struct saga_state *s);
/* Append one event at the exact expected version, caused by the last one, and fold
 * it into `s`. Takes `data`. */
int saga_record(const struct saga_env *env, struct saga_state *s, enum saga_ev ev, json_t *data,
                struct ag_err *err);
/* The two halves of saga_record, for an asynchronous append: encode the next
 * event into `s->buf` (`*ev` points into it and gets its id; append it to
 * `s->stream` at `s->version`), then, once it is durable, fold it into `s`. */
int saga_encode(const struct saga_env *env, struct saga_state *s, enum saga_ev kind,
                const json_t *data, struct ag_event_data *ev);
void saga_applied(const struct saga_env *env, struct saga_state *s, enum saga_ev kind,
                  const json_t *data, const struct ag_uuid *id);
void saga_stream_of(char out[SAGA_STREAM_MAX + 8], const char *id);

/* {step, name, error?}: the payload of the step and compensation events. */
json_t *saga_step_json(size_t i, const char *name, const char *error);
/* Every failed compensation, highest step first: [{step, name, error}]. */
json_t *saga_failed_list(const struct saga_state *s);

/* A SagaStarted not yet recorded: its payload and metadata (owned). */
struct saga_start {
    char *data, *meta;
};
/* Encode the start of saga `id` of `type` caused by `cause` (NULL: none). */
int saga_start_encode(const char *type, const char *id, const json_t *data,
                      const struct ag_event *cause, struct saga_start *out);
/* Record it as the stream's first event; 0 too when the saga was started before. */
int saga_start_append(const struct saga_env *env, const char *id, const struct saga_start *st,
                      struct ag_err *err);
void saga_start_free(struct saga_start *st);
/* The SagaStarted event of `st` (borrowing it), with a new id; append it to
 * saga-<id> with AG_STORE_NO_STREAM (a conflict means it was started before). */
void saga_start_event(const struct saga_env *env, const struct saga_start *st,
                      struct ag_event_data *ev);

/* Call `fn` with the id of every saga whose last event is not terminal. */
int saga_each_unfinished(const struct saga_env *env, void (*fn)(void *ud, const char *id),
                         void *ud);

/* ---- run.c ---- */

/* What one move of a saga asks to record: `kind` with payload `data` (owned);
 * `step` is the action or compensation that ran (SIZE_MAX: none). */
struct saga_rec {
    enum saga_ev kind;
    json_t *data;
    size_t step;
};
/* Run the saga's next action or compensation (blocking in the step) and say what
 * to record; `s` must not be terminal. An error is an interruption: nothing is to
 * be recorded, run the saga again later from its log. */
int saga_next(const struct saga_env *env, struct saga_state *s, struct saga_rec *rec,
              struct ag_err *err);

/* Drive saga `id` until a terminal event (0, `*end` says which; SAGA_END_NONE when it
 * had ended before or cannot run) or an interruption (an error: run it again
 * later). */
int saga_run(const struct saga_env *env, const char *id, enum saga_end *end);
/* Record SagaRetried for a failed saga (see ag_saga_retry); `*attempt` is its
 * number. */
int saga_reopen(const struct saga_env *env, const char *id, unsigned *attempt, struct ag_err *err);

#endif
