/* Event schema versions and upcasters (src/es/upcast.c): the repository writes a
 * versioned type's events with "schemaVersion" in their metadata; every reader (the
 * repository's fold, a projection, ag_es_event_data) sees an older event in the
 * current shape; an event newer than the table is refused, never misread. A toy
 * type stands in for the domain: Noted v1 {text} → v2 {text, words}. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/es.h"
#include "agora/store_log.h"

#include "es_fixture.h"

struct note {
    int notes;
    long long words; /* Σ words: only v2 events carry them */
};

static void n_init(void *s)
{
    memset(s, 0, sizeof(struct note));
}
static void n_free(void *s)
{
    AG_UNUSED(s);
}
static int n_evolve(void *s, const char *type, const json_t *d)
{
    struct note *n = s;
    if (strcmp(type, "Noted") != 0) return 0;
    if (!json_is_integer(json_object_get(d, "words"))) return AG_EINVAL; /* the v2 shape only */
    n->notes++;
    n->words += json_integer_value(json_object_get(d, "words"));
    return 0;
}
static json_t *n_snapshot(const void *s)
{
    AG_UNUSED(s);
    return NULL;
}
static int n_restore(void *s, const json_t *j)
{
    AG_UNUSED(s), AG_UNUSED(j);
    return AG_EINVAL;
}
static const struct ag_es_type note_type = {"note",   sizeof(struct note), n_init,   n_free,
                                            n_evolve, n_snapshot,          n_restore};

/* v1 → v2: count the words of "text" */
static int noted_v1(json_t *d, const struct ag_event *ev)
{
    AG_UNUSED(ev);
    const char *t = json_string_value(json_object_get(d, "text"));
    if (!t) return AG_EINVAL;
    long long w = 0;
    for (const char *p = t; *p; p++)
        if (*p != ' ' && (p == t || p[-1] == ' ')) w++;
    return json_object_set_new(d, "words", json_integer(w)) ? AG_ENOMEM : 0;
}
static const struct ag_es_schema current[] = {{"Noted", 2}};
static const struct ag_es_upcaster ups[] = {{"Noted", 1, noted_v1}};
static const struct ag_es_schemas schemas = {current, 1, ups, 1};

static struct es_fx fx; /* a temporary log store and a repository over it */

static void setup(void)
{
    es_fx_open(&fx, "upcast", (struct ag_es_repo_config){.snapshot_every = 1000});
    ag_es_schemas_set(&schemas);
}

static void teardown(void)
{
    ag_es_schemas_set(NULL);
    es_fx_close(&fx);
}

TestSuite(upcast, .init = setup, .fini = teardown);

static int decide_note(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                       struct ag_err *err)
{
    AG_UNUSED(state), AG_UNUSED(version), AG_UNUSED(err);
    return ag_es_batch_push(out, "Noted",
                            json_pack("{s:s, s:i}", "text", (const char *)ud, "words", 2));
}

/* A stored event of the previous shape (as an older agora wrote it: no version). */
static void append_raw(const char *stream, const char *data, const char *meta)
{
    struct ag_event_data e = {.type = "Noted",
                              .type_len = 5,
                              .data = data,
                              .data_len = strlen(data),
                              .metadata = meta,
                              .metadata_len = meta ? strlen(meta) : 0};
    cr_assert_eq(ag_store_append(fx.store, stream, strlen(stream), AG_STORE_ANY, &e, 1, NULL, NULL),
                 0);
}

static void view_note(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(struct note *)ud = *(const struct note *)state;
}

Test(upcast, versions_are_written_in_the_metadata)
{
    cr_assert_eq(ag_es_schema_version("Noted", 5), 2);
    cr_assert_eq(ag_es_schema_version("Other", 5), 1);
    cr_assert_eq(ag_es_execute(fx.repo,
                               &(struct ag_es_cmd){&note_type, "note-1", decide_note, "two words",
                                                   "{\"actor\":\"x\"}", NULL, NULL},
                               NULL, NULL),
                 0);
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_stream(fx.store, "note-1", 6, 0, AG_READ_FORWARD, 10, &pg, NULL), 0);
    cr_assert_eq(pg.count, 1);
    json_t *m = json_loadb(pg.events[0].metadata, pg.events[0].metadata_len, 0, NULL);
    cr_assert_eq(json_integer_value(json_object_get(m, "schemaVersion")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(m, "actor")), "x",
                     "the command's metadata kept");
    cr_assert_eq(ag_es_event_version(&pg.events[0]), 2);
    json_decref(m);
    ag_event_page_free(&pg);
}

Test(upcast, the_repository_folds_old_events_in_the_current_shape)
{
    append_raw("note-2", "{\"text\":\"an old three-word note\"}", NULL); /* v1: 4 words */
    append_raw("note-2", "{\"text\":\"x\",\"words\":7}", "{\"schemaVersion\":2}");
    cr_assert_eq(ag_es_execute(fx.repo,
                               &(struct ag_es_cmd){&note_type, "note-2", decide_note, "new one",
                                                   NULL, NULL, NULL},
                               NULL, NULL),
                 0);
    struct note n;
    cr_assert_eq(ag_es_read(fx.repo, &note_type, "note-2", view_note, &n, NULL), 0);
    cr_assert_eq(n.notes, 3);
    cr_assert_eq(n.words, 4 + 7 + 2);
}

Test(upcast, a_newer_version_is_refused)
{
    append_raw("note-3", "{\"text\":\"from the future\",\"words\":3,\"mood\":1}",
               "{\"schemaVersion\":3}");
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_stream(fx.store, "note-3", 6, 0, AG_READ_FORWARD, 10, &pg, NULL), 0);
    struct ag_err err;
    cr_assert_null(ag_es_event_data(&pg.events[0], &err));
    cr_assert_eq(err.code, AG_EINVAL);
    cr_assert(strstr(err.msg, "version 3"), "%s", err.msg);
    ag_event_page_free(&pg);
    struct note n;
    cr_assert_neq(ag_es_read(fx.repo, &note_type, "note-3", view_note, &n, NULL), 0);
}

Test(upcast, without_a_table_events_pass_through)
{
    append_raw("note-4", "{\"text\":\"a b\"}", NULL);
    ag_es_schemas_set(NULL);
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_stream(fx.store, "note-4", 6, 0, AG_READ_FORWARD, 10, &pg, NULL), 0);
    json_t *d = ag_es_event_data(&pg.events[0], NULL);
    cr_assert_null(json_object_get(d, "words"));
    json_decref(d);
    ag_es_schemas_set(&schemas);
    d = ag_es_event_data(&pg.events[0], NULL);
    cr_assert_eq(json_integer_value(json_object_get(d, "words")), 2);
    json_decref(d);
    ag_event_page_free(&pg);
}

/* ---- projections see the current shape too ---- */

static int apply_words(struct ag_rm *rm, const struct ag_event *ev, const json_t *d, void *ud)
{
    AG_UNUSED(ev), AG_UNUSED(ud);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO w(n) VALUES(%lld)",
             (long long)json_integer_value(json_object_get(d, "words")));
    return json_is_integer(json_object_get(d, "words")) ? ag_rm_script(rm, sql, NULL) : AG_EINVAL;
}

static int sum_row(const struct ag_rm_row *r, void *ud)
{
    *(long long *)ud = ag_rm_int64(r, 0);
    return 1;
}

Test(upcast, projections_see_old_events_in_the_current_shape)
{
    static const char *const types[] = {"Noted", NULL};
    const struct ag_projection proj = {
        "words", "CREATE TABLE IF NOT EXISTS w(n INTEGER);", types, apply_words, NULL, NULL};
    append_raw("note-5", "{\"text\":\"one two three\"}", NULL);
    cr_assert_eq(ag_es_execute(fx.repo,
                               &(struct ag_es_cmd){&note_type, "note-5", decide_note, "x y", NULL,
                                                   NULL, NULL},
                               NULL, NULL),
                 0);
    char rm[128];
    snprintf(rm, sizeof rm, "%s/readmodels", fx.dir);
    cr_assert_eq(ag_projection_rebuild(fx.store, rm, &proj, NULL, NULL, NULL), 0);
    struct ag_rm *db;
    cr_assert_eq(ag_rm_open(rm, "words", AG_RM_READONLY, &db, NULL), 0);
    long long total = -1;
    cr_assert_eq(ag_rm_query(db, "SELECT SUM(n) FROM w", NULL, 0, sum_row, &total, NULL), 0);
    ag_rm_close(db);
    cr_assert_eq(total, 3 + 2);
}
