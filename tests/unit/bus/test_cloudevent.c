/*
 * The CloudEvent writer (ag_bus_cloudevent_json, src/bus/bus.c): the relay's one
 * copy of every message's attributes. Held to jansson writing the same members in
 * the same order — with and without subject and traceparent, with values that
 * need escapes (the writer's member-by-member path) and without (its one-copy
 * path) — and read back by ag_bus_cloudevent_parse.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "agora/bus.h"

static char *ours(const struct ag_bus_msg *m)
{
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_bus_cloudevent_json(m, &b), 0);
    cr_assert_eq(strlen(b.data), b.len, "NUL-terminated, no NUL inside");
    return ag_buf_steal(&b, NULL);
}

static char *jansson(const struct ag_bus_msg *m, const char *time)
{
    json_t *ce = json_pack("{s:s, s:s, s:s, s:s}", "specversion", "1.0", "id", m->id, "source",
                           m->source, "type", m->type);
    if (m->subject) json_object_set_new(ce, "subject", json_string(m->subject));
    json_object_set_new(ce, "time", json_string(time));
    json_object_set_new(ce, "datacontenttype", json_string("application/json"));
    if (m->traceparent && *m->traceparent)
        json_object_set_new(ce, "traceparent", json_string(m->traceparent));
    json_object_set_new(ce, "data",
                        m->data ? json_loadb(m->data, m->data_len, 0, NULL) : json_object());
    char *s = json_dumps(ce, JSON_COMPACT);
    json_decref(ce);
    return s;
}

Test(cloudevent, the_writer_writes_what_jansson_writes)
{
    const char *subjects[] = {NULL, "o-1", "caf\xc3\xa9 \"quoted\" \\ back/slash\n\ttab\x01"};
    const char *tps[] = {NULL, "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                         "odd \"trace\""};
    const char *datas[] = {NULL, "{\"a\":1,\"b\":[\"x\",{\"c\":null}]}", "{}"};
    const char *sources[] = {"/agora/ordering", "/agora/\"odd\""};
    for (size_t s = 0; s < 3; s++)
        for (size_t t = 0; t < 4; t++)
            for (size_t d = 0; d < 3; d++)
                for (size_t o = 0; o < 2; o++) {
                    struct ag_bus_msg m = {.topic = "agora.ordering.OrderConfirmed",
                                           .id = "0194f3a0-0000-7000-8000-000000000001",
                                           .source = sources[o],
                                           .type = "agora.ordering.OrderConfirmed",
                                           .subject = subjects[s],
                                           .traceparent = tps[t],
                                           .data = datas[d],
                                           .data_len = datas[d] ? strlen(datas[d]) : 0,
                                           .time_ns = 1796018400123456000ull};
                    char *a = ours(&m), *b = jansson(&m, "2026-11-30T06:00:00.123456Z");
                    cr_expect_str_eq(a, b, "subject %zu traceparent %zu data %zu source %zu", s, t,
                                     d, o);
                    struct ag_bus_delivery del = {0};
                    void *mem = NULL;
                    cr_expect_eq(ag_bus_cloudevent_parse(a, strlen(a), m.topic, &del, &mem, NULL),
                                 0);
                    cr_expect_str_eq(del.msg.id, m.id);
                    if (m.subject) cr_expect_str_eq(del.msg.subject, m.subject);
                    ag_free(mem);
                    ag_free(a);
                    ag_free(b);
                }
}

Test(cloudevent, the_buffer_is_appended_to)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_puts(&b, "before:");
    struct ag_bus_msg m = {.topic = "t.x", .id = "i", .source = "/s", .type = "t", .time_ns = 1};
    cr_assert_eq(ag_bus_cloudevent_json(&m, &b), 0);
    cr_expect_str_eq(b.data,
                     "before:{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"/s\",\"type\":"
                     "\"t\",\"time\":\"1970-01-01T00:00:00.000000Z\",\"datacontenttype\":"
                     "\"application/json\",\"data\":{}}");
    ag_buf_free(&b);
}
