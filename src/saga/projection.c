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
 */
#include <stdio.h>
#include <string.h>

#include "agora/saga.h"

struct defs_ud {
    const struct ag_saga_def *defs;
    size_t n;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS sagas("
    " id TEXT PRIMARY KEY, type TEXT NOT NULL, status TEXT NOT NULL, current_step TEXT,"
    " reason TEXT, steps TEXT NOT NULL, started_at TEXT, updated_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS sagas_status ON sagas(status, id);";

static const char *const types[] = {
    "SagaStarted",   "StepSucceeded",   "StepFailed", "CompensationSucceeded", "CompensationFailed",
    "SagaCompleted", "SagaCompensated", "SagaFailed", "SagaRetried",           NULL};

static int exec(sqlite3 *db, const char *sql, const char *const *args, size_t n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return AG_EIO;
    for (size_t i = 0; i < n; i++) sqlite3_bind_text(st, (int)i + 1, args[i], -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : AG_EIO;
    sqlite3_finalize(st);
    return rc;
}

static json_t *load_steps(sqlite3 *db, const char *id)
{
    sqlite3_stmt *st;
    json_t *steps = NULL;
    if (sqlite3_prepare_v2(db, "SELECT steps FROM sagas WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        steps = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
    sqlite3_finalize(st);
    return steps;
}

static int started(sqlite3 *db, const struct defs_ud *u, const char *id, const json_t *d,
                   const char *ts)
{
    const char *type = json_string_value(json_object_get(d, "type"));
    const struct ag_saga_def *def = NULL;
    for (size_t i = 0; type && i < u->n; i++)
        if (strcmp(u->defs[i].type, type) == 0) def = &u->defs[i];
    json_t *steps = json_array();
    for (size_t i = 0; def && i < def->nsteps; i++)
        json_array_append_new(
            steps, json_pack("{s:s, s:s}", "name", def->steps[i].name, "status", "pending"));
    char *text = json_dumps(steps, JSON_COMPACT);
    json_decref(steps);
    const char *first = def && def->nsteps ? def->steps[0].name : NULL;
    const char *args[] = {id, type ? type : "?", first, text, ts, ts};
    int rc = exec(db,
                  "INSERT OR IGNORE INTO sagas(id, type, status, current_step, steps, started_at,"
                  " updated_at) VALUES(?, ?, 'running', ?, ?, ?, ?)",
                  args, 6);
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
static int update(sqlite3 *db, const char *id, const struct change *c, const char *ts)
{
    json_t *steps = load_steps(db, id);
    if (!steps) return 0; /* SagaStarted not seen (projection began later) */
    json_t *s = c->idx >= 0 ? json_array_get(steps, (size_t)c->idx) : NULL;
    if (s && c->step_status) set_step(s, c);
    json_t *cur = c->next_is_current ? json_array_get(steps, (size_t)c->idx + 1) : s;
    const char *current = cur ? json_string_value(json_object_get(cur, "name")) : NULL;
    char *text = json_dumps(steps, JSON_COMPACT);
    const char *args[] = {text, c->status, current, c->reason, ts, id};
    int rc = exec(db,
                  "UPDATE sagas SET steps=?, status=COALESCE(?, status), current_step=?,"
                  " reason=COALESCE(?, reason), updated_at=? WHERE id=?",
                  args, 6);
    free(text);
    json_decref(steps);
    return rc;
}

/* "<reason>; compensation failed: Name (error), ..." for SagaFailed. */
static int saga_failed(sqlite3 *db, const char *id, const json_t *d, const char *ts)
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

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    if (ev->stream_len < 6 || memcmp(ev->stream, "saga-", 5) != 0) return 0;
    char id[256], type[64], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 5, ev->stream + 5);
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    ag_time_rfc3339(ev->time_ns, ts);
    struct change c = {.idx = (int)json_integer_value(json_object_get(d, "step"))};
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *error = json_string_value(json_object_get(d, "error"));
    c.failed_step = json_is_true(json_object_get(d, "failedStep"));
    if (strcmp(type, "SagaStarted") == 0) return started(db, ud, id, d, ts);
    if (strcmp(type, "StepSucceeded") == 0) {
        c.step_status = "succeeded", c.next_is_current = true;
    } else if (strcmp(type, "StepFailed") == 0) {
        c.step_status = "failed", c.step_error = error, c.reason = error;
    } else if (strcmp(type, "CompensationSucceeded") == 0) {
        c.step_status = "compensated";
    } else if (strcmp(type, "CompensationFailed") == 0) {
        c.step_status = "compensation_failed", c.comp_error = error ? error : "failed";
    } else if (strcmp(type, "SagaRetried") == 0) { /* running again, from the first to retry */
        json_t *first = json_array_get(json_object_get(d, "failedCompensations"), 0);
        c.idx = first ? (int)json_integer_value(json_object_get(first, "step")) : -1;
        c.status = "running";
    } else if (strcmp(type, "SagaFailed") == 0) {
        return saga_failed(db, id, d, ts);
    } else if (strcmp(type, "SagaCompleted") == 0) {
        c.idx = -1, c.status = "completed";
    } else if (strcmp(type, "SagaCompensated") == 0) {
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
    *out = (struct ag_projection){
        .name = "sagas", .schema = schema, .types = types, .apply = apply, .ud = &u};
}
