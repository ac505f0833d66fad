/*
 * The store conformance suites (tests/unit/store/test_store.c, test_multi.c) run
 * unchanged against every adapter: compiled as they are they test the embedded
 * log; compiled with AG_TEST_STORE_PG defined (tests/unit/store_pg/) they open the
 * PostgreSQL adapter on the throwaway server of tests/lib/pgtmp.sh, one schema per
 * test, named after the test's temporary directory. Tests of what only the log has
 * (segment files, its index checkpoint, the directory lock) say LOG_ONLY().
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
#define LOG_ONLY() cr_skip_test("the embedded log only")
#else
#define conformance_open ag_store_log_open
#define LOG_ONLY()       ((void)0)
#endif

#endif
