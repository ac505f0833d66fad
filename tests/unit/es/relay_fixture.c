/* The outbox relay tests' fixture (relay_fixture.h): the store and bus setup and
 * the helpers test_relay.c and test_relay_pipe.c share. Criterion asserts here fail
 * the calling test as they would in its own file (each test runs in its own
 * process). */
#include "relay_fixture.h"

#include "es_fixture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A store at uri (no fsync), asserted. */
static struct ag_store *open_store(const char *uri)
{
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    cr_assert_eq(ag_store_open(uri, &o, &s, NULL), 0, "cannot open %s", uri);
    return s;
}

void relay_fx_open(struct relay_fx *fx, const char *name, unsigned shards, bool own_bus_store)
{
    memset(fx, 0, sizeof *fx);
    fx_tmpdir(fx->dir, name);
    char uri[512];
    snprintf(uri, sizeof uri, "%s", shards ? "shards:" : fx->dir);
    for (unsigned i = 0; i < shards; i++) {
        size_t at = strlen(uri);
        snprintf(uri + at, sizeof uri - at, "%sfile:%s/s%u", i ? "," : "", fx->dir, i);
    }
    fx->store = open_store(uri);
    if (own_bus_store) {
        snprintf(uri, sizeof uri, "%s/broker", fx->dir);
        fx->bus_store = open_store(uri);
    }
    struct ag_bus_options bo = {.store = fx->bus_store ? fx->bus_store : fx->store};
    cr_assert_eq(ag_bus_open("local:", &bo, &fx->bus, NULL), 0);
}

void relay_fx_close(struct relay_fx *fx)
{
    ag_bus_close(fx->bus);
    if (fx->bus_store) ag_store_close(fx->bus_store);
    ag_store_close(fx->store);
    fx_rmdir(fx->dir);
}

void relay_fx_append(const struct relay_fx *fx, const char *stream, const char *type, int n)
{
    char data[32];
    snprintf(data, sizeof data, "{\"n\":%d}", n);
    struct ag_event_data ev = {
        .type = type, .type_len = strlen(type), .data = data, .data_len = strlen(data)};
    cr_assert_eq(
        ag_store_append(fx->store, stream, strlen(stream), AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
}

uint64_t relay_fx_head(const struct relay_fx *fx)
{
    struct ag_store_stats st;
    ag_store_stats(fx->store, &st);
    return st.events;
}

/* The next page of what consumer c has now (n 0: none left). */
static struct ag_bus_delivery **next_page(struct ag_bus_consumer *c, size_t *n)
{
    struct ag_bus_delivery **ds = NULL;
    cr_assert_eq(ag_bus_fetch(c, 64, 0, &ds, n, NULL), 0);
    return ds;
}

size_t relay_fx_drain(const struct relay_fx *fx, const char *name, int *ns, size_t cap)
{
    struct ag_bus_consumer_config cfg = {.name = name};
    struct ag_bus_consumer *c;
    cr_assert_eq(ag_bus_consumer_open(fx->bus, &cfg, &c, NULL), 0);
    size_t got = 0, n;
    struct ag_bus_delivery **ds;
    while ((ds = next_page(c, &n)) && n) {
        for (size_t i = 0; i < n; i++) {
            const char *p = strstr(ds[i]->msg.data, "\"n\":");
            if (got < cap) ns[got] = p ? (int)strtol(p + 4, NULL, 10) : -1;
            got++;
            ag_bus_ack(c, ds[i], NULL);
            ag_bus_delivery_free(c, ds[i]);
        }
        ag_free(ds);
    }
    ag_bus_consumer_close(c);
    return got;
}

int relay_fx_map(void *ud, struct ag_store *s, const struct ag_event *ev, struct ag_relay_msg *out)
{
    AG_UNUSED(s);
    if (ev->type_len != 7 || memcmp(ev->type, "Shipped", 7) != 0) return 0;
    const char *prefix = ud;
    size_t skip = 0;
    if (prefix && strlen(prefix) <= ev->stream_len &&
        memcmp(ev->stream, prefix, strlen(prefix)) == 0)
        skip = strlen(prefix);
    snprintf(out->topic, sizeof out->topic, "agora.shipping.Shipped");
    snprintf(out->type, sizeof out->type, "agora.shipping.Shipped");
    snprintf(out->source, sizeof out->source, "/agora/shipping");
    snprintf(out->subject, sizeof out->subject, "%.*s", (int)(ev->stream_len - skip),
             ev->stream + skip);
    out->data = ag_malloc(ev->data_len + 1);
    memcpy(out->data, ev->data, ev->data_len);
    out->data[ev->data_len] = 0;
    return 1;
}
