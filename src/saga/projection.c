/*
 * The saga read model: one row per saga with its status, current step and the
 * status of every step, projected from the `saga-<id>` streams.
 *
 * A step's entry is {"name","status","error"?,"compensationError"?}: the error of
 * its failed action, and that of its compensation while it is failed. The step that failed stays
 * "failed" once its compensation succeeds (CompensationSucceeded says so with failedStep; older
 * logs: it was "failed" before). A failed saga's reason is the failure followed
 * by the compensations that failed, so `/admin/sagas?status=failed` says what an
 * operator has to look at; SagaRetried makes the saga running again.
 *
 * Stored compact (issue 19): `steps` is [[name, status, error, compensationError],
 * ...] without trailing nulls, a step that succeeded (without errors) being its
 * name alone (ag_saga_steps_json gives the objects back), times
 * are Unix nanoseconds (INTEGER), and only sagas not completed are indexed by
 * status (`sagas_open`, a partial index: the sagas an operator lists are the
 * failed and running ones, a few among millions of completed). A rowid table
 * (issue 19): sagas are appended as they start, so the step updates of running
 * sagas hit the table's tail, not a random leaf each (a converted `WITHOUT ROWID`
 * read model: prev_schema, migrate); the saga id, the primary key's unique index,
 * is a 16-byte BLOB when it is a UUID (ag_rm_id_arg; the API reads it with ag_rm_id).
 */
#include <stdio.h>
#include <string.h>

#include "agora/saga.h"
#include "saga/internal.h"

struct defs_ud {
    const struct ag_saga_def *defs;
    size_t n;
};

#define SAGAS_COLUMNS                                                                              \
    "("                                                                                            \
    " id BLOB PRIMARY KEY, type TEXT NOT NULL, status TEXT NOT NULL, current_step TEXT,"           \
    " reason TEXT, steps TEXT NOT NULL, started_at INTEGER, updated_at INTEGER NOT NULL)"
#define SAGAS_INDEX                                                                                \
    "CREATE INDEX IF NOT EXISTS sagas_open ON sagas(status, id) WHERE status <> 'completed';"

static const char schema[] = "CREATE TABLE IF NOT EXISTS sagas" SAGAS_COLUMNS ";" SAGAS_INDEX;

/* The schema before issue 19's rowid tables, and its conversion (rows in the
 * order the sagas started). */
static const char prev_schema[] =
    "CREATE TABLE IF NOT EXISTS sagas" SAGAS_COLUMNS " WITHOUT ROWID;" SAGAS_INDEX;
static const char migrate[] =
    "CREATE TABLE sagas_v2" SAGAS_COLUMNS ";"
    "INSERT INTO sagas_v2 SELECT * FROM sagas ORDER BY COALESCE(started_at, updated_at);"
    "DROP TABLE sagas;"
    "ALTER TABLE sagas_v2 RENAME TO sagas;";

static const char *const types[] = {AG_SAGA_EV_STARTED,     AG_SAGA_EV_STEP_SUCCEEDED,
                                    AG_SAGA_EV_STEP_FAILED, AG_SAGA_EV_COMP_SUCCEEDED,
                                    AG_SAGA_EV_COMP_FAILED, AG_SAGA_EV_COMPLETED,
                                    AG_SAGA_EV_COMPENSATED, AG_SAGA_EV_FAILED,
                                    AG_SAGA_EV_RETRIED,     NULL};

static const char *const step_keys[] = {"name", "status", "error", "compensationError"};

json_t *ag_saga_steps_json(const char *column)
{
    json_t *rows = column ? json_loads(column, 0, NULL) : NULL, *out = json_array(), *r;
    size_t i;
    json_array_foreach(rows, i, r)
    {
        if (json_is_string(r)) { /* a step that succeeded: its name alone */
            json_array_append_new(out, json_pack("{s:O, s:s}", "name", r, "status", "succeeded"));
            continue;
        }
        json_t *o = json_object();
        for (size_t k = 0; k < 4; k++) {
            json_t *v = json_array_get(r, k);
            if (json_is_string(v)) json_object_set(o, step_keys[k], v);
        }
        json_array_append_new(out, o);
    }
    json_decref(rows);
    return out;
}

char *ag_saga_steps_text(const json_t *steps)
{
    json_t *rows = json_array(), *s;
    size_t i;
    json_array_foreach(steps, i, s)
    {
        json_t *name = json_object_get(s, "name");
        const char *st = json_string_value(json_object_get(s, "status"));
        if (json_is_string(name) && st && strcmp(st, "succeeded") == 0 &&
            !json_object_get(s, "error") && !json_object_get(s, "compensationError")) {
            json_array_append(rows, name); /* the commonest step, as its name alone */
            continue;
        }
        json_t *r = json_array();
        size_t last = 0;
        for (size_t k = 0; k < 4; k++)
            if (json_is_string(json_object_get(s, step_keys[k]))) last = k;
        for (size_t k = 0; k <= last; k++) {
            json_t *v = json_object_get(s, step_keys[k]);
            json_array_append(r, json_is_string(v) ? v : json_null());
        }
        json_array_append_new(rows, r);
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    return text;
}

static int steps_row(const struct ag_rm_row *row, void *ud)
{
    *(json_t **)ud = ag_saga_steps_json(ag_rm_text(row, 0));
    return 1;
}

static json_t *load_steps(struct ag_rm *db, const char *id)
{
    json_t *steps = NULL;
    uint8_t idb[16];
    struct ag_rm_arg arg = ag_rm_id_arg(id, idb);
    ag_rm_query(db, "SELECT steps FROM sagas WHERE id=?1", &arg, 1, steps_row, &steps, NULL);
    return steps;
}

/* ---- the common events without a JSON round trip of `steps` (issue 11) ----
 *
 * A saga that succeeds writes its row seven times; each StepSucceeded used to
 * parse the compact `steps`, expand it to objects, change one, compact and dump
 * it again. The compact form is the canonical output of ag_saga_steps_text, so
 * the common changes are made on the text itself, exactly as that function
 * would write them: SagaStarted's all-pending list, a pending step that
 * succeeds (`["Name","pending"]` becomes `"Name"`), and SagaCompleted (no step
 * changes). Anything else — a name that JSON would escape, a step with an error,
 * a row in another shape — takes the general path. */

static bool plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20) return false;
    return true;
}

/* [["A","pending"],["B","pending"],...] for `def`; NULL: take the general path. */
static char *pending_text(const struct ag_saga_def *def)
{
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_buf_putc(&b, '[');
    for (size_t i = 0; i < def->nsteps && !rc; i++) {
        const char *n = def->steps[i].name;
        if (!plain(n, strlen(n))) rc = AG_EINVAL;
        if (!rc) rc = ag_buf_printf(&b, "%s[\"%s\",\"pending\"]", i ? "," : "", n);
    }
    if (!rc) rc = ag_buf_putc(&b, ']');
    if (rc) {
        ag_buf_free(&b);
        return NULL;
    }
    return ag_buf_steal(&b, NULL);
}

/* The end of the top-level element of a compact array starting at s[i] (a
 * string or an array), or 0. */
static size_t elem_end(const char *s, size_t i)
{
    if (s[i] != '"' && s[i] != '[') return 0;
    int depth = 0;
    bool str = false;
    for (; s[i]; i++) {
        char c = s[i];
        if (str && c == '\\' && s[i + 1]) {
            i++;
        } else if (str) {
            str = c != '"';
            if (!str && depth == 0) return i + 1;
        } else {
            str = c == '"';
            if (c == '[' || c == '{') depth++;
            if ((c == ']' || c == '}') && --depth == 0) return i + 1;
        }
    }
    return 0;
}

/* Element `k` of the compact array `s`: [*a, *b). False when there is none. */
static bool elem_at(const char *s, size_t k, size_t *a, size_t *b)
{
    if (s[0] != '[') return false;
    size_t i = 1;
    for (size_t n = 0; s[i] && s[i] != ']'; n++) {
        size_t e = elem_end(s, i);
        if (!e) return false;
        if (n == k) {
            *a = i, *b = e;
            return true;
        }
        i = s[e] == ',' ? e + 1 : e;
    }
    return false;
}

/* The step name an element starts with ("Name" or ["Name",...]), plain; 0: none. */
static size_t elem_name(const char *s, size_t a, size_t b, size_t *at)
{
    size_t i = a + (s[a] == '[');
    if (i >= b || s[i] != '"') return 0;
    const char *q = memchr(s + i + 1, '"', b - i - 1);
    if (!q || !plain(s + i + 1, (size_t)(q - s - i - 1))) return 0;
    *at = i + 1;
    return (size_t)(q - s - i - 1);
}

static int text_row(const struct ag_rm_row *row, void *ud)
{
    const char *t = ag_rm_text(row, 0);
    *(char **)ud = t ? ag_strdup(t) : NULL;
    return 1;
}

/* StepSucceeded of pending step `idx` on the text: 1 done, 0 take the general
 * path, < 0 an error. */
static int step_succeeded_fast(struct ag_rm *db, const char *id, int idx, const char *ts)
{
    char *text = NULL;
    uint8_t idb[16];
    struct ag_rm_arg key = ag_rm_id_arg(id, idb);
    int rc = ag_rm_query(db, "SELECT steps FROM sagas WHERE id=?1", &key, 1, text_row, &text, NULL);
    if (rc || !text) {
        ag_free(text);
        return rc ? 0 : 1; /* no row: SagaStarted not seen, as the general path */
    }
    static const char pend[] = "\",\"pending\"]";
    size_t a = 0, b = 0, na = 0, nn = 0, ca = 0, cn = 0;
    bool ok = idx >= 0 && elem_at(text, (size_t)idx, &a, &b) && text[a] == '[' &&
              (nn = elem_name(text, a, b, &na)) && b - a == nn + 2 + sizeof pend - 1 &&
              memcmp(text + na + nn, pend, sizeof pend - 1) == 0;
    size_t c1, c2;
    if (ok && elem_at(text, (size_t)idx + 1, &c1, &c2)) {
        cn = elem_name(text, c1, c2, &ca);
        ok = cn > 0 && cn < 128;
    }
    struct ag_buf nb;
    ag_buf_init(&nb);
    if (ok &&
        (ag_buf_append(&nb, text, a) || ag_buf_putc(&nb, '"') ||
         ag_buf_append(&nb, text + na, nn) || ag_buf_putc(&nb, '"') || ag_buf_puts(&nb, text + b)))
        rc = AG_ENOMEM;
    char current[128] = "";
    if (ok && cn) snprintf(current, sizeof current, "%.*s", (int)cn, text + ca);
    if (ok && !rc) {
        struct ag_rm_arg args[] = {AG_RM_TEXT(nb.data), AG_RM_TEXT(cn ? current : NULL),
                                   AG_RM_TEXT(ts), key};
        rc = ag_rm_exec(db, "UPDATE sagas SET steps=?1, current_step=?2, updated_at=?3 WHERE id=?4",
                        args, 4, NULL);
    }
    ag_buf_free(&nb);
    ag_free(text);
    return rc ? rc : ok;
}

static int started(struct ag_rm *db, const struct defs_ud *u, const char *id, const json_t *d,
                   const char *ts)
{
    const char *type = json_string_value(json_object_get(d, "type"));
    const struct ag_saga_def *def = NULL;
    for (size_t i = 0; type && i < u->n; i++)
        if (strcmp(u->defs[i].type, type) == 0) def = &u->defs[i];
    char *text = def ? pending_text(def) : NULL;
    if (!text) {
        json_t *steps = json_array();
        for (size_t i = 0; def && i < def->nsteps; i++)
            json_array_append_new(
                steps, json_pack("{s:s, s:s}", "name", def->steps[i].name, "status", "pending"));
        text = ag_saga_steps_text(steps);
        json_decref(steps);
    }
    const char *first = def && def->nsteps ? def->steps[0].name : NULL;
    uint8_t idb[16];
    struct ag_rm_arg args[] = {ag_rm_id_arg(id, idb), AG_RM_TEXT(type ? type : "?"),
                               AG_RM_TEXT(first), AG_RM_TEXT(text), AG_RM_TEXT(ts)};
    int rc = ag_rm_exec(db,
                        "INSERT INTO sagas(id, type, status, current_step, steps, started_at,"
                        " updated_at) VALUES(?1, ?2, 'running', ?3, ?4, ?5, ?5)"
                        " ON CONFLICT DO NOTHING",
                        args, 5, NULL);
    free(text);
    return rc;
}

/* What one event changes in a saga's row. */
struct change {
    int idx;                 /* the step it is about, -1: none */
    const char *step_status; /* the step's new status, NULL: unchanged */
    const char *step_error;  /* its action's error, NULL: unchanged */
    const char *comp_error;  /* its compensation's error, NULL: none (any more) */
    bool failed_step;        /* the step is the one whose action failed */
    const char *status;      /* the saga's new status, NULL: unchanged */
    bool next_is_current;    /* the current step is the one after idx */
    const char *reason;      /* the saga's new reason, NULL: unchanged */
};

static void set_step(json_t *s, const struct change *c)
{
    const char *was = json_string_value(json_object_get(s, "status"));
    const char *st = c->step_status;
    /* the step that failed stays "failed" once undone */
    if (strcmp(st, "compensated") == 0 && (c->failed_step || (was && strcmp(was, "failed") == 0)))
        st = "failed";
    json_object_set_new(s, "status", json_string(st));
    if (c->step_error) json_object_set_new(s, "error", json_string(c->step_error));
    if (c->comp_error)
        json_object_set_new(s, "compensationError", json_string(c->comp_error));
    else
        json_object_del(s, "compensationError");
}

/* Apply `c` to saga `id`'s row. */
static int update(struct ag_rm *db, const char *id, const struct change *c, const char *ts)
{
    json_t *steps = load_steps(db, id);
    if (!steps) return 0; /* SagaStarted not seen (projection began later) */
    json_t *s = c->idx >= 0 ? json_array_get(steps, (size_t)c->idx) : NULL;
    if (s && c->step_status) set_step(s, c);
    json_t *cur = c->next_is_current ? json_array_get(steps, (size_t)c->idx + 1) : s;
    const char *current = cur ? json_string_value(json_object_get(cur, "name")) : NULL;
    char *text = ag_saga_steps_text(steps);
    uint8_t idb[16];
    struct ag_rm_arg args[] = {AG_RM_TEXT(text),      AG_RM_TEXT(c->status), AG_RM_TEXT(current),
                               AG_RM_TEXT(c->reason), AG_RM_TEXT(ts),        ag_rm_id_arg(id, idb)};
    int rc = ag_rm_exec(db,
                        "UPDATE sagas SET steps=?1, status=COALESCE(?2, status), current_step=?3,"
                        " reason=COALESCE(?4, reason), updated_at=?5 WHERE id=?6",
                        args, 6, NULL);
    free(text);
    json_decref(steps);
    return rc;
}

/* "<reason>; compensation failed: Name (error), ..." for SagaFailed. */
static int saga_failed(struct ag_rm *db, const char *id, const json_t *d, const char *ts)
{
    const char *reason = json_string_value(json_object_get(d, "reason"));
    json_t *list = json_object_get(d, "failedCompensations");
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(&b, "%s; compensation failed: ", reason ? reason : "step failed");
    size_t i;
    json_t *f;
    json_array_foreach(list, i, f)
    {
        ag_buf_printf(&b, "%s%s (%s)", i ? ", " : "",
                      json_string_value(json_object_get(f, "name")) ?: "?",
                      json_string_value(json_object_get(f, "error")) ?: "failed");
    }
    if (!json_array_size(list)) /* an older SagaFailed: the one error */
        ag_buf_puts(&b, json_string_value(json_object_get(d, "error")) ?: "unknown");
    struct change c = {.idx = -1, .status = "failed", .reason = b.len ? b.data : reason};
    int rc = update(db, id, &c, ts);
    ag_buf_free(&b);
    return rc;
}

static int apply(struct ag_rm *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    if (ev->stream_len <= SAGA_PREFIX_LEN || memcmp(ev->stream, SAGA_PREFIX, SAGA_PREFIX_LEN) != 0)
        return 0;
    char id[256], type[64], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)(ev->stream_len - SAGA_PREFIX_LEN),
             ev->stream + SAGA_PREFIX_LEN);
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)ev->time_ns); /* Unix ns, INTEGER */
    struct change c = {.idx = (int)json_integer_value(json_object_get(d, "step"))};
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *error = json_string_value(json_object_get(d, "error"));
    c.failed_step = json_is_true(json_object_get(d, "failedStep"));
    if (strcmp(type, AG_SAGA_EV_STARTED) == 0) return started(db, ud, id, d, ts);
    if (strcmp(type, AG_SAGA_EV_STEP_SUCCEEDED) == 0) {
        int fast = step_succeeded_fast(db, id, c.idx, ts);
        if (fast) return fast < 0 ? fast : 0;
        c.step_status = "succeeded", c.next_is_current = true;
    } else if (strcmp(type, AG_SAGA_EV_STEP_FAILED) == 0) {
        c.step_status = "failed", c.step_error = error, c.reason = error;
    } else if (strcmp(type, AG_SAGA_EV_COMP_SUCCEEDED) == 0) {
        c.step_status = "compensated";
    } else if (strcmp(type, AG_SAGA_EV_COMP_FAILED) == 0) {
        c.step_status = "compensation_failed", c.comp_error = error ? error : "failed";
    } else if (strcmp(type, AG_SAGA_EV_RETRIED) == 0) { /* running again, from the first to retry */
        json_t *first = json_array_get(json_object_get(d, "failedCompensations"), 0);
        c.idx = first ? (int)json_integer_value(json_object_get(first, "step")) : -1;
        c.status = "running";
    } else if (strcmp(type, AG_SAGA_EV_FAILED) == 0) {
        return saga_failed(db, id, d, ts);
    } else if (strcmp(type, AG_SAGA_EV_COMPLETED) == 0) { /* no step changes */
        uint8_t idb[16];
        struct ag_rm_arg args[] = {AG_RM_TEXT(ts), ag_rm_id_arg(id, idb)};
        return ag_rm_exec(db,
                          "UPDATE sagas SET status='completed', current_step=NULL, updated_at=?1"
                          " WHERE id=?2",
                          args, 2, NULL);
    } else if (strcmp(type, AG_SAGA_EV_COMPENSATED) == 0) {
        c.idx = -1, c.status = "compensated", c.reason = reason;
    } else {
        return 0;
    }
    return update(db, id, &c, ts);
}

void ag_saga_projection(const struct ag_saga_def *defs, size_t n, struct ag_projection *out)
{
    static struct defs_ud u; /* one saga projection per process */
    u.defs = defs;
    u.n = n;
    *out = (struct ag_projection){.name = "sagas",
                                  .schema = schema,
                                  .types = types,
                                  .apply = apply,
                                  .ud = &u,
                                  .prev_schema = prev_schema,
                                  .migrate = migrate};
}
