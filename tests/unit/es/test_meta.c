/* Metadata stored once per command and stream (src/es/meta.c): a command's events
 * on one stream store its metadata on the last of them and the marker
 * AG_ES_META_NEXT on the others; ag_es_event_meta gives every event the whole
 * metadata back (from the events at hand or from the store), the same as when
 * each stored it; a versioned type's events keep theirs (the schema version must
 * stay readable without a store); events written before read unchanged. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/es.h"
#include "agora/store_log.h"

#include "es/internal.h" /* ag__es_meta_share */

#include "es_fixture.h"

static void t_init(void *s)
{
    memset(s, 0, sizeof(int));
}
static void t_free(void *s)
{
    AG_UNUSED(s);
}
static int t_evolve(void *s, const char *type, const json_t *d)
{
    AG_UNUSED(type), AG_UNUSED(d);
    ++*(int *)s;
    return 0;
}
static json_t *t_snapshot(const void *s)
{
    AG_UNUSED(s);
    return NULL;
}
static int t_restore(void *s, const json_t *j)
{
    AG_UNUSED(s), AG_UNUSED(j);
    return AG_EINVAL;
}
static const struct ag_es_type tag_type = {"tag",    sizeof(int), t_init,   t_free,
                                           t_evolve, t_snapshot,  t_restore};

static const struct ag_es_schema current[] = {{"Noted", 2}};
static const struct ag_es_schemas schemas = {current, 1, NULL, 0};

static struct es_fx fx; /* a temporary log store and a repository over it */

static void setup(void)
{
    es_fx_open(&fx, "esmeta", (struct ag_es_repo_config){.snapshot_every = 1000});
    ag_es_schemas_set(&schemas);
}

static void teardown(void)
{
    ag_es_schemas_set(NULL);
    es_fx_close(&fx);
}

TestSuite(es_meta, .init = setup, .fini = teardown);

/* ud: the type of the three events to push */
static int decide_three(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                        struct ag_err *err)
{
    AG_UNUSED(state), AG_UNUSED(version), AG_UNUSED(err);
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) rc = ag_es_batch_push(out, ud, json_pack("{s:i}", "i", i));
    return rc;
}

static const char META[] = "{\"actor\":{\"sub\":\"c-1\",\"roles\":[\"customer\"]},"
                           "\"requestId\":\"r-1\",\"traceparent\":"
                           "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}";

static void run(const char *stream, const char *type)
{
    cr_assert_eq(ag_es_execute(fx.repo,
                               &(struct ag_es_cmd){&tag_type, stream, decide_three, (void *)type,
                                                   META, NULL, NULL},
                               NULL, NULL),
                 0);
}

static void read_all(const char *stream, struct ag_event_page *pg)
{
    cr_assert_eq(
        ag_store_read_stream(fx.store, stream, strlen(stream), 0, AG_READ_FORWARD, 10, pg, NULL),
        0);
    cr_assert_eq(pg->count, 3);
}

static void assert_meta_is(json_t *m, const char *want)
{
    json_t *w = json_loads(want, 0, NULL);
    cr_assert(json_equal(m, w), "%s", json_dumps(m, JSON_COMPACT));
    json_decref(w);
    json_decref(m);
}

Test(es_meta, a_commands_events_store_its_metadata_once_per_stream)
{
    run("tag-1", "Tagged");
    struct ag_event_page pg;
    read_all("tag-1", &pg);
    for (size_t i = 0; i < 2; i++) {
        cr_assert(ag_es_meta_is_next(&pg.events[i]), "event %zu stores the marker", i);
        cr_assert_eq(pg.events[i].metadata_len, sizeof AG_ES_META_NEXT - 1);
    }
    cr_assert_not(ag_es_meta_is_next(&pg.events[2]));
    cr_assert_eq(pg.events[2].metadata_len, strlen(META));
    cr_assert_eq(memcmp(pg.events[2].metadata, META, strlen(META)), 0, "the last stores it whole");
    for (size_t i = 0; i < 3; i++) {
        assert_meta_is(ag_es_event_meta(fx.store, &pg.events[i], pg.events, pg.count), META);
        assert_meta_is(ag_es_event_meta(fx.store, &pg.events[i], NULL, 0),
                       META); /* from the store */
        assert_meta_is(ag_es_event_meta(NULL, &pg.events[i], pg.events + i, pg.count - i), META);
    }
    ag_event_page_free(&pg);
}

Test(es_meta, a_versioned_types_events_keep_theirs)
{
    run("tag-2", "Noted");
    struct ag_event_page pg;
    read_all("tag-2", &pg);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_not(ag_es_meta_is_next(&pg.events[i]));
        cr_assert_eq(ag_es_event_version(&pg.events[i]), 2);
        json_t *m = ag_es_event_meta(NULL, &pg.events[i], NULL, 0);
        cr_assert_str_eq(json_string_value(json_object_get(m, "requestId")), "r-1");
        json_decref(m);
    }
    ag_event_page_free(&pg);
}

/* Written before (each event whole) or without metadata: read as stored. */
Test(es_meta, events_written_before_read_unchanged)
{
    struct ag_event_data e[3];
    for (int i = 0; i < 3; i++)
        e[i] = (struct ag_event_data){.type = "Tagged",
                                      .type_len = 6,
                                      .data = "{}",
                                      .data_len = 2,
                                      .metadata = i < 2 ? META : NULL,
                                      .metadata_len = i < 2 ? strlen(META) : 0};
    cr_assert_eq(ag_store_append(fx.store, "tag-3", 5, AG_STORE_NO_STREAM, e, 3, NULL, NULL), 0);
    struct ag_event_page pg;
    read_all("tag-3", &pg);
    assert_meta_is(ag_es_event_meta(fx.store, &pg.events[0], NULL, 0), META);
    assert_meta_is(ag_es_event_meta(fx.store, &pg.events[1], NULL, 0), META);
    assert_meta_is(ag_es_event_meta(fx.store, &pg.events[2], NULL, 0), "{}");
    ag_event_page_free(&pg);
}

/* Only an event whose text is byte-for-byte the next one's shares it. */
Test(es_meta, only_identical_neighbours_share)
{
    const char *in[] = {"{\"a\":1}", "{\"a\":1}", "{\"a\":2}", "{\"a\":2}",
                        NULL,        NULL,        "{\"b\":1}"};
    const char *want[] = {AG_ES_META_NEXT, "{\"a\":1}", AG_ES_META_NEXT, "{\"a\":2}", NULL, NULL,
                          "{\"b\":1}"};
    struct ag_event_data e[7];
    for (size_t i = 0; i < 7; i++)
        e[i] = (struct ag_event_data){.type = "Tagged",
                                      .type_len = 6,
                                      .metadata = in[i],
                                      .metadata_len = in[i] ? strlen(in[i]) : 0};
    ag__es_meta_share(e, 7);
    for (size_t i = 0; i < 7; i++) {
        if (!want[i]) {
            cr_assert_eq(e[i].metadata_len, 0, "event %zu", i);
            continue;
        }
        cr_assert_eq(e[i].metadata_len, strlen(want[i]), "event %zu", i);
        cr_assert_eq(memcmp(e[i].metadata, want[i], e[i].metadata_len), 0, "event %zu", i);
    }
}
