/*
 * The store conformance suites (tests/unit/store/test_store.c, test_multi.c) run
 * unchanged against every adapter: compiled as they are they test the embedded
 * log; compiled with AG_TEST_STORE_PG defined (tests/unit/store_pg/) they open the
 * PostgreSQL adapter on the throwaway server of tests/lib/pgtmp.sh, one schema per
 * test, named after the test's temporary directory. Tests of what only the log has
 * (segment files, its index checkpoint, the directory lock) say LOG_ONLY().
 * With AG_TEST_STORE_SHARDS (tests/unit/store_shards/) they run on two logs behind
 * the shard router; tests that count on one gapless $all say ONE_ALL(), exact
 * positions are POS_EQ (not checked there) and events are counted with
 * conformance_events (the router's own streams left out).
 */
#ifndef AGORA_TESTS_STORE_CONFORMANCE_H
#define AGORA_TESTS_STORE_CONFORMANCE_H

#include "agora/store_log.h"

#ifdef AG_TEST_STORE_PG
#include <criterion/criterion.h>

#include "lib/pgtest.h"

static inline int conformance_open(const char *dir, const struct ag_store_options *o,
                                   struct ag_store **out, struct ag_err *err)
{
    char tag[16], uri[1024];
    ag_test_pg_tag(dir, tag);
    if (ag_test_pg_uri(tag, uri, sizeof uri))
        cr_skip_test("AGORA_TEST_PG_URI is not set (run through tests/lib/pgtmp.sh)");
    strncat(uri, "&pool_size=2", sizeof uri - strlen(uri) - 1);
    return ag_store_open(uri, o, out, err);
}
#define LOG_ONLY()                cr_skip_test("the embedded log only")
#define ONE_ALL()                 ((void)0)
#define POS_EQ(a, b)              cr_assert_eq(a, b)
#define CONF_SHARDED              0
#define conformance_events(st, n) ((void)(st), (n))
#elif defined AG_TEST_STORE_SHARDS
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

/* Two embedded logs, DIR/s0 and DIR/s1, behind the shard router. */
static inline int conformance_open(const char *dir, const struct ag_store_options *o,
                                   struct ag_store **out, struct ag_err *err)
{
    char uri[600];
    snprintf(uri, sizeof uri, "shards:file:%s/s0,file:%s/s1", dir, dir);
    return ag_store_open(uri, o, out, err);
}
#define LOG_ONLY()   cr_skip_test("the embedded log only")
#define ONE_ALL()    cr_skip_test("one gapless $all: a sharded store orders $all per shard")
#define POS_EQ(a, b) ((void)(a), (void)(b)) /* positions are per shard */
#define CONF_SHARDED 1

/* Events the test wrote: $all without the router's own streams (`_shards`, the
 * layout, and `_xshard-<k>`, the intents of cross-shard units). */
static inline uint64_t conformance_events(struct ag_store *st, uint64_t stats_events)
{
    (void)stats_events;
    uint64_t n = 0, from = 0;
    for (bool end = false; !end;) {
        struct ag_event_page p;
        cr_assert_eq(ag_store_read_all(st, from, AG_READ_FORWARD, 512, &p, NULL), 0);
        for (size_t i = 0; i < p.count; i++)
            n += !(p.events[i].stream_len >= 7 && (memcmp(p.events[i].stream, "_shards", 7) == 0 ||
                                                   memcmp(p.events[i].stream, "_xshard", 7) == 0));
        end = p.end || !p.count;
        from = p.next_position;
        ag_event_page_free(&p);
    }
    return n;
}
#else
#define conformance_open          ag_store_log_open
#define LOG_ONLY()                ((void)0)
#define ONE_ALL()                 ((void)0)
#define POS_EQ(a, b)              cr_assert_eq(a, b)
#define CONF_SHARDED              0
#define conformance_events(st, n) ((void)(st), (n))
#endif

#endif
