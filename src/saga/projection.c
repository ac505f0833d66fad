/*
 * The saga read model: one row per saga with its status, current step and the
 * status of every step, projected from the `saga-<id>` streams.
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

static const char *const types[] = {"SagaStarted",           "StepSucceeded",      "StepFailed",
                                    "CompensationSucceeded", "CompensationFailed", "SagaCompleted",
                                    "SagaCompensated",       "SagaFailed",         NULL};

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

/* Set step `idx`'s status and the saga's status/current step. */
static int update(sqlite3 *db, const char *id, int idx, const char *step_status, const char *status,
                  bool next_is_current, const char *reason, const char *ts)
{
    json_t *steps = load_steps(db, id);
    if (!steps) return 0; /* SagaStarted not seen (projection began later) */
    json_t *s = idx >= 0 ? json_array_get(steps, (size_t)idx) : NULL;
    const char *was = s ? json_string_value(json_object_get(s, "status")) : NULL;
    bool keep_failed =
        was && strcmp(was, "failed") == 0 && step_status && strcmp(step_status, "compensated") == 0;
    if (s && step_status && !keep_failed) /* the step that failed stays "failed" once undone */
        json_object_set_new(s, "status", json_string(step_status));
    json_t *cur = next_is_current ? json_array_get(steps, (size_t)idx + 1) : s;
    const char *current = cur ? json_string_value(json_object_get(cur, "name")) : NULL;
    char *text = json_dumps(steps, JSON_COMPACT);
    const char *args[] = {text, status, current, reason, ts, id};
    int rc = exec(db,
                  "UPDATE sagas SET steps=?, status=COALESCE(?, status), current_step=?,"
                  " reason=COALESCE(?, reason), updated_at=? WHERE id=?",
                  args, 6);
    free(text);
    json_decref(steps);
    return rc;
}

static int apply(sqlite3 *db, const struct ag_event *ev, const json_t *d, void *ud)
{
    if (ev->stream_len < 6 || memcmp(ev->stream, "saga-", 5) != 0) return 0;
    char id[256], type[64], ts[32];
    snprintf(id, sizeof id, "%.*s", (int)ev->stream_len - 5, ev->stream + 5);
    snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
    ag_time_rfc3339(ev->time_ns, ts);
    int idx = (int)json_integer_value(json_object_get(d, "step"));
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *error = json_string_value(json_object_get(d, "error"));
    if (strcmp(type, "SagaStarted") == 0) return started(db, ud, id, d, ts);
    if (strcmp(type, "StepSucceeded") == 0)
        return update(db, id, idx, "succeeded", NULL, true, NULL, ts);
    if (strcmp(type, "StepFailed") == 0)
        return update(db, id, idx, "failed", NULL, false, error, ts);
    if (strcmp(type, "CompensationSucceeded") == 0)
        return update(db, id, idx, "compensated", NULL, false, NULL, ts);
    if (strcmp(type, "CompensationFailed") == 0)
        return update(db, id, idx, "compensation_failed", NULL, false, NULL, ts);
    if (strcmp(type, "SagaCompleted") == 0)
        return update(db, id, -1, NULL, "completed", false, NULL, ts);
    if (strcmp(type, "SagaCompensated") == 0)
        return update(db, id, -1, NULL, "compensated", false, reason, ts);
    if (strcmp(type, "SagaFailed") == 0)
        return update(db, id, -1, NULL, "failed", false, reason, ts);
    return 0;
}

void ag_saga_projection(const struct ag_saga_def *defs, size_t n, struct ag_projection *out)
{
    static struct defs_ud u; /* one saga projection per process */
    u.defs = defs;
    u.n = n;
    *out = (struct ag_projection){
        .name = "sagas", .schema = schema, .types = types, .apply = apply, .ud = &u};
}
