/*
 * A saga's log: the stream saga-<id> and the state it folds into.
 *
 * The event types are the AG_SAGA_EV_* names of include/agora/saga.h; here each is
 * a `enum saga_ev` with its length computed once, so the engine compares kinds,
 * never strings. Folding (evolve) is a pure function of the events: the forward
 * position `next`, and while compensating the bit sets `to_undo` (compensations still
 * to run: StepFailed sets the failed step and every step before it) and `failed`
 * (compensations that failed after their attempts). A compensation outcome takes
 * its step out of `to_undo`; SagaRetried moves `failed` back into `to_undo`. Because the
 * state is only ever rebuilt from the stream, a process killed anywhere resumes
 * exactly where its last recorded event left the saga.
 *
 * Appending (saga_record) uses the exact expected version, so two drivers of one
 * saga (two processes, or a retry racing a worker) cannot both write: the loser
 * gets AG_ECONFLICT. Each event gets its id here (UUIDv7 from the injected clock
 * and RNG), which the next event names as its causationId. Since issue 19 the
 * saga-wide metadata (actor, traceparent, requestId) is stored once, on
 * SagaStarted with its cause; a later event stores no metadata at all: its
 * causationId is the id of the event before it in the stream (exact expected
 * versions make that so), and no event stores the correlation id (the saga id,
 * the stream's). ag_saga_event_meta_at gives every reader the whole metadata
 * back, the same as when each event carried it all (logs written before keep
 * their stored metadata, {causationId} or whole, and read unchanged).
 * Payloads and metadata are encoded into a buffer the state keeps (ag_malloc'd,
 * not jansson's), reused across the saga's events.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define EV(k, name) [k] = {(name), sizeof(name) - 1}
static const struct {
    const char *name;
    size_t len;
} ev_names[] = {
    EV(SAGA_EV_STARTED, AG_SAGA_EV_STARTED),
    EV(SAGA_EV_STEP_SUCCEEDED, AG_SAGA_EV_STEP_SUCCEEDED),
    EV(SAGA_EV_STEP_FAILED, AG_SAGA_EV_STEP_FAILED),
    EV(SAGA_EV_COMP_SUCCEEDED, AG_SAGA_EV_COMP_SUCCEEDED),
    EV(SAGA_EV_COMP_FAILED, AG_SAGA_EV_COMP_FAILED),
    EV(SAGA_EV_RETRIED, AG_SAGA_EV_RETRIED),
    EV(SAGA_EV_COMPLETED, AG_SAGA_EV_COMPLETED),
    EV(SAGA_EV_COMPENSATED, AG_SAGA_EV_COMPENSATED),
    EV(SAGA_EV_FAILED, AG_SAGA_EV_FAILED),
};
#undef EV
#define NKINDS (sizeof ev_names / sizeof ev_names[0])

enum saga_ev saga_ev_kind(const char *type, size_t len)
{
    for (size_t k = 1; k < NKINDS; k++)
        if (ev_names[k].len == len && memcmp(ev_names[k].name, type, len) == 0)
            return (enum saga_ev)k;
    return SAGA_EV_UNKNOWN;
}

const char *saga_end_name(enum saga_end end)
{
    switch (end) {
    case SAGA_END_COMPLETED:
        return "completed";
    case SAGA_END_COMPENSATED:
        return "compensated";
    case SAGA_END_FAILED:
        return "failed";
    default:
        return "running";
    }
}

const struct ag_saga_def *saga_find_def(const struct saga_env *env, const char *type)
{
    for (size_t i = 0; i < env->ndefs; i++)
        if (strcmp(env->defs[i].type, type) == 0) return &env->defs[i];
    return NULL;
}

void saga_stream_of(char out[SAGA_STREAM_MAX + 8], const char *id)
{
    snprintf(out, SAGA_STREAM_MAX + 8, SAGA_PREFIX "%s", id);
}

static int dump_cb(const char *p, size_t n, void *ud)
{
    return ag_buf_append(ud, p, n) ? -1 : 0;
}

/* Append `j` as compact JSON to `b`. */
static int dump(const json_t *j, struct ag_buf *b)
{
    return j && json_dump_callback(j, dump_cb, b, JSON_COMPACT) == 0 ? 0 : AG_ENOMEM;
}

/* ---- folding ---- */

/* Bits 0..i. */
static inline uint64_t steps_upto(size_t i)
{
    return i + 1 >= SAGA_STEPS_MAX ? ~0ull : (1ull << (i + 1)) - 1;
}

/* A compensation outcome for step `d.step`: out of `to_undo`, into or out of `failed`. */
static void comp_outcome(struct saga_state *s, const json_t *d, const char *error)
{
    json_int_t i = json_integer_value(json_object_get(d, "step"));
    const char *name = json_string_value(json_object_get(d, "name"));
    uint64_t bit = i >= 0 ? saga_step_bit((size_t)i) : 0;
    s->to_undo &= ~bit;
    s->comp_ran = true;
    if (error) {
        s->failed |= bit;
        if (name && s->errors) json_object_set_new(s->errors, name, json_string(error));
    } else {
        s->failed &= ~bit;
        if (name && s->errors) json_object_del(s->errors, name);
    }
}

static void ended(struct saga_state *s, enum saga_end end, const char *reason)
{
    s->terminal = true;
    s->end = end;
    if (reason) snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static void step_failed(struct saga_state *s, const char *error)
{
    s->compensating = true;
    s->comp_ran = false;
    s->to_undo = steps_upto(s->next); /* the failed step itself first (see run.c) */
    s->failed = 0;
    snprintf(s->reason, sizeof s->reason, "%s", error ? error : "step failed");
}

static void retried(struct saga_state *s)
{
    s->terminal = false;
    s->end = SAGA_END_NONE;
    s->compensating = true;
    s->comp_ran = true; /* no forward recovery once compensations ran */
    s->to_undo |= s->failed;
    s->failed = 0;
    s->retries++;
}

static void evolve(const struct saga_env *env, struct saga_state *s, enum saga_ev ev,
                   const json_t *d)
{
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *error = json_string_value(json_object_get(d, "error"));
    switch (ev) {
    case SAGA_EV_STARTED:
        s->def = saga_find_def(env, json_string_value(json_object_get(d, "type")) ?: "");
        json_decref(s->data);
        s->data = json_incref(json_object_get(d, "data"));
        break;
    case SAGA_EV_STEP_SUCCEEDED:
        if (s->compensating) { /* forward recovery of the failed step (see run.c) */
            s->compensating = false;
            s->to_undo = s->failed = 0;
        }
        s->next++;
        break;
    case SAGA_EV_STEP_FAILED:
        step_failed(s, error);
        break;
    case SAGA_EV_COMP_SUCCEEDED:
        comp_outcome(s, d, NULL);
        break;
    case SAGA_EV_COMP_FAILED:
        comp_outcome(s, d, error ? error : "compensation failed");
        break;
    case SAGA_EV_RETRIED:
        retried(s);
        break;
    case SAGA_EV_COMPLETED:
        ended(s, SAGA_END_COMPLETED, reason);
        break;
    case SAGA_EV_COMPENSATED:
        ended(s, SAGA_END_COMPENSATED, reason);
        break;
    case SAGA_EV_FAILED:
        ended(s, SAGA_END_FAILED, reason);
        break;
    default:
        break;
    }
}

/* ---- metadata ---- */

/* {"sub":"saga:<type>","roles":["system"],"onBehalfOf":<who>} (a new reference). */
static json_t *saga_actor(const char *type, json_t *who)
{
    char sub[160];
    snprintf(sub, sizeof sub, "saga:%s", type);
    json_t *a = json_pack("{s:s, s:[s]}", "sub", sub, "roles", "system");
    if (a && json_is_object(who)) json_object_set(a, "onBehalfOf", who);
    return a;
}

static void copy_string(json_t *to, const json_t *from, const char *key)
{
    json_t *v = json_object_get(from, key);
    if (json_is_string(v)) json_object_set(to, key, v);
}

/* SagaStarted's metadata: the saga-wide part (actor, traceparent, requestId) and
 * the cause; the correlation id is the saga id, the stream's, so not stored. */
static int start_meta(const char *type, const struct ag_event *cause, struct ag_buf *b)
{
    json_t *cm = cause && cause->metadata_len
                     ? json_loadb(cause->metadata, cause->metadata_len, 0, NULL)
                     : NULL;
    json_t *m = json_object();
    if (m && cause) {
        char cid[AG_UUID_STRLEN + 1];
        ag_uuid_format(&cause->id, cid);
        json_object_set_new(m, "causationId", json_string(cid));
    }
    if (m) json_object_set_new(m, "actor", saga_actor(type, json_object_get(cm, "actor")));
    copy_string(m, cm, "traceparent");
    copy_string(m, cm, "requestId");
    int rc = dump(m, b);
    json_decref(m);
    json_decref(cm);
    return rc;
}

static bool is_saga_stream(const struct ag_event *ev)
{
    size_t n = sizeof SAGA_PREFIX - 1;
    return ev->stream && ev->stream_len > n && memcmp(ev->stream, SAGA_PREFIX, n) == 0;
}

static bool is_started(const struct ag_event *ev)
{
    return ev && saga_ev_kind(ev->type, ev->type_len) == SAGA_EV_STARTED;
}

static bool same_stream(const struct ag_event *a, const struct ag_event *b)
{
    return a->stream_len == b->stream_len && memcmp(a->stream, b->stream, a->stream_len) == 0;
}

/* The causationId a later event does not store: the id of the event before it. */
static void prev_cause(json_t *m, const struct ag_event *ev, const struct ag_event *prev)
{
    if (ev->version <= 0 || !prev || prev->version != ev->version - 1 || !same_stream(ev, prev) ||
        json_object_get(m, "causationId"))
        return;
    char cid[AG_UUID_STRLEN + 1];
    ag_uuid_format(&prev->id, cid);
    json_object_set_new(m, "causationId", json_string(cid));
}

json_t *ag_saga_event_meta(const struct ag_event *ev, const struct ag_event *started)
{
    return ag_saga_event_meta_at(ev, started, NULL);
}

json_t *ag_saga_event_meta_at(const struct ag_event *ev, const struct ag_event *started,
                              const struct ag_event *prev)
{
    json_t *m = ev->metadata_len ? json_loadb(ev->metadata, ev->metadata_len, 0, NULL) : NULL;
    if (!json_is_object(m)) json_decref(m), m = json_object();
    if (!m || !is_saga_stream(ev)) return m;
    if (is_started(ev)) started = ev;
    if (!is_started(ev)) prev_cause(m, ev, prev);
    if (!json_object_get(m, "correlationId")) {
        size_t n = sizeof SAGA_PREFIX - 1;
        json_object_set_new(m, "correlationId", json_stringn(ev->stream + n, ev->stream_len - n));
    }
    if (json_object_get(m, "actor") || !is_started(started)) return m; /* whole, or unknown */
    json_t *sm = started != ev && started->metadata_len
                     ? json_loadb(started->metadata, started->metadata_len, 0, NULL)
                     : NULL;
    json_t *actor = json_object_get(sm, "actor");
    if (json_is_object(actor)) {
        json_object_set(m, "actor", actor);
    } else { /* a log written before saga metadata: the saga acts on its own */
        json_t *d = json_loadb(started->data, started->data_len, 0, NULL);
        json_object_set_new(m, "actor",
                            saga_actor(json_string_value(json_object_get(d, "type")) ?: "", NULL));
        json_decref(d);
    }
    if (!json_object_get(m, "traceparent")) copy_string(m, sm, "traceparent");
    if (!json_object_get(m, "requestId")) copy_string(m, sm, "requestId");
    json_decref(sm);
    return m;
}

int ag_saga_event_meta_read(struct ag_store *store, const struct ag_event *ev, json_t **out,
                            struct ag_err *err)
{
    *out = NULL;
    if (!is_saga_stream(ev)) {
        *out = ag_es_event_meta(store, ev, NULL, 0);
        return *out ? 0 : AG_ENOMEM;
    }
    struct ag_event_page p = {0}, q = {0};
    int rc = 0;
    if (!is_started(ev))
        rc =
            ag_store_read_stream(store, ev->stream, ev->stream_len, 0, AG_READ_FORWARD, 1, &p, err);
    if (!rc && ev->version > 1 &&
        !(ev->metadata_len && memmem(ev->metadata, ev->metadata_len, "\"causationId\"", 13)))
        rc = ag_store_read_stream(store, ev->stream, ev->stream_len, ev->version - 1,
                                  AG_READ_FORWARD, 1, &q, err);
    const struct ag_event *started = p.count ? &p.events[0] : NULL;
    if (!rc) *out = ag_saga_event_meta_at(ev, started, q.count ? &q.events[0] : started);
    ag_event_page_free(&p);
    ag_event_page_free(&q);
    return rc ? rc : *out ? 0 : AG_ENOMEM;
}

/* ---- loading and recording ---- */

static void state_init(struct saga_state *s, const char *id)
{
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    saga_stream_of(s->stream, id);
    s->version = -1;
    s->errors = json_object();
    ag_buf_init(&s->buf);
}

void saga_state_free(struct saga_state *s)
{
    json_decref(s->data);
    json_decref(s->errors);
    s->data = s->errors = NULL;
    ag_buf_free(&s->buf);
}

static void apply_event(const struct saga_env *env, struct saga_state *s, const struct ag_event *ev)
{
    enum saga_ev kind = saga_ev_kind(ev->type, ev->type_len);
    if (kind == SAGA_EV_STARTED) { /* the trace the saga's steps belong to */
        static const char key[] = "\"traceparent\":\"";
        const char *p =
            ev->metadata_len ? memmem(ev->metadata, ev->metadata_len, key, sizeof key - 1) : NULL;
        if (p) p += sizeof key - 1;
        s->has_trace = p &&
                       (size_t)(ev->metadata + ev->metadata_len - p) >= AG_OBS_TRACEPARENT_LEN &&
                       ag_obs_trace_parse(p, AG_OBS_TRACEPARENT_LEN, &s->trace) == 0;
    }
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    evolve(env, s, kind, d);
    json_decref(d);
    s->version = ev->version;
    s->last_id = ev->id;
}

int saga_load(const struct saga_env *env, const char *id, struct saga_state *s, struct ag_err *err)
{
    state_init(s, id);
    for (;;) {
        struct ag_event_page p;
        int rc = ag_store_read_stream(env->store, s->stream, strlen(s->stream), s->version + 1,
                                      AG_READ_FORWARD, 256, &p, err);
        if (rc) return rc;
        for (size_t i = 0; i < p.count; i++) apply_event(env, s, &p.events[i]);
        bool end = p.end || p.count == 0;
        ag_event_page_free(&p);
        if (end) break;
    }
    if (s->version < 0) return ag_err_set(err, AG_ENOTFOUND, "no saga %s", id);
    if (!s->def) return ag_err_set(err, AG_ENOTFOUND, "%s: no known saga type", s->stream);
    return 0;
}

/* A later event stores no metadata: its cause is the event before it (s->last_id,
 * at version s->version, which the exact expected version of its append checks),
 * the rest is SagaStarted's (ag_saga_event_meta_at). */
int saga_encode(const struct saga_env *env, struct saga_state *s, enum saga_ev kind,
                const json_t *data, struct ag_event_data *ev)
{
    ag_buf_reset(&s->buf);
    if (dump(data, &s->buf)) return AG_ENOMEM;
    *ev = (struct ag_event_data){.type = ev_names[kind].name,
                                 .type_len = ev_names[kind].len,
                                 .data = s->buf.data,
                                 .data_len = s->buf.len};
    ag_uuid_v7(&ev->id, env->clock, env->rng);
    return 0;
}

void saga_applied(const struct saga_env *env, struct saga_state *s, enum saga_ev kind,
                  const json_t *data, const struct ag_uuid *id)
{
    s->version++;
    s->last_id = *id;
    evolve(env, s, kind, data);
}

int saga_record(const struct saga_env *env, struct saga_state *s, enum saga_ev kind, json_t *data,
                struct ag_err *err)
{
    struct ag_event_data ev;
    if (saga_encode(env, s, kind, data, &ev)) {
        json_decref(data);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    int rc =
        ag_store_append(env->store, s->stream, strlen(s->stream), s->version, &ev, 1, NULL, err);
    if (!rc) saga_applied(env, s, kind, data, &ev.id);
    json_decref(data);
    return rc;
}

json_t *saga_step_json(size_t i, const char *name, const char *error)
{
    json_t *j = json_pack("{s:I, s:s}", "step", (json_int_t)i, "name", name);
    if (j && error) json_object_set_new(j, "error", json_string(error));
    return j;
}

json_t *saga_failed_list(const struct saga_state *s)
{
    json_t *a = json_array();
    for (size_t i = s->def->nsteps; i-- > 0;) {
        if (!(s->failed & saga_step_bit(i))) continue;
        const char *name = s->def->steps[i].name;
        const char *why = json_string_value(json_object_get(s->errors, name));
        json_array_append_new(a, saga_step_json(i, name, why ? why : "compensation failed"));
    }
    return a;
}

/* ---- starting ---- */

int saga_start_encode(const char *type, const char *id, const json_t *data,
                      const struct ag_event *cause, struct saga_start *out)
{
    AG_UNUSED(id); /* the correlation id: the stream's */
    out->data = out->meta = NULL;
    json_t *d = json_pack("{s:s, s:O}", "type", type, "data", data);
    struct ag_buf b, m;
    ag_buf_init(&b);
    ag_buf_init(&m);
    int rc = dump(d, &b);
    json_decref(d);
    if (!rc) rc = start_meta(type, cause, &m);
    if (!rc) {
        out->data = ag_buf_steal(&b, NULL);
        out->meta = ag_buf_steal(&m, NULL);
        return 0;
    }
    ag_buf_free(&b);
    ag_buf_free(&m);
    return AG_ENOMEM;
}

void saga_start_free(struct saga_start *st)
{
    ag_free(st->data);
    ag_free(st->meta);
    st->data = st->meta = NULL;
}

void saga_start_event(const struct saga_env *env, const struct saga_start *st,
                      struct ag_event_data *ev)
{
    *ev = (struct ag_event_data){.type = AG_SAGA_EV_STARTED,
                                 .type_len = sizeof AG_SAGA_EV_STARTED - 1,
                                 .data = st->data,
                                 .data_len = strlen(st->data),
                                 .metadata = st->meta,
                                 .metadata_len = strlen(st->meta)};
    ag_uuid_v7(&ev->id, env->clock, env->rng);
}

int saga_start_append(const struct saga_env *env, const char *id, const struct saga_start *st,
                      struct ag_err *err)
{
    char stream[SAGA_STREAM_MAX + 8];
    saga_stream_of(stream, id);
    struct ag_event_data ev;
    saga_start_event(env, st, &ev);
    int rc =
        ag_store_append(env->store, stream, strlen(stream), AG_STORE_NO_STREAM, &ev, 1, NULL, err);
    if (rc == AG_ECONFLICT) rc = 0, ag_err_clear(err); /* started before */
    return rc;
}

/* ---- resuming ---- */

struct names {
    char **v;
    size_t n, cap;
};

static int collect_saga(void *ud, const char *name, size_t len, int64_t version)
{
    AG_UNUSED(version);
    struct names *ns = ud;
    if (len <= SAGA_PREFIX_LEN || len >= SAGA_STREAM_MAX ||
        memcmp(name, SAGA_PREFIX, SAGA_PREFIX_LEN) != 0)
        return 0;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        char **v = ag_realloc(ns->v, cap * sizeof *v);
        if (!v) return AG_ENOMEM;
        ns->v = v, ns->cap = cap;
    }
    if (!(ns->v[ns->n] = ag_strndup(name + SAGA_PREFIX_LEN, len - SAGA_PREFIX_LEN)))
        return AG_ENOMEM;
    ns->n++;
    return 0;
}

/* True when the saga's last event is terminal (or its stream cannot be read). */
static bool is_terminal(const struct saga_env *env, const char *id)
{
    char stream[SAGA_STREAM_MAX + 8];
    saga_stream_of(stream, id);
    struct ag_event_page p;
    if (ag_store_read_stream(env->store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &p, NULL))
        return true;
    enum saga_ev k = p.count ? saga_ev_kind(p.events[0].type, p.events[0].type_len) : 0;
    ag_event_page_free(&p);
    return k == SAGA_EV_COMPLETED || k == SAGA_EV_COMPENSATED || k == SAGA_EV_FAILED;
}

int saga_each_unfinished(const struct saga_env *env, void (*fn)(void *ud, const char *id), void *ud)
{
    struct names ns = {0};
    int rc = ag_store_list_streams(env->store, collect_saga, &ns);
    for (size_t i = 0; i < ns.n; i++) {
        if (!is_terminal(env, ns.v[i])) fn(ud, ns.v[i]);
        ag_free(ns.v[i]);
    }
    ag_free(ns.v);
    return rc;
}
