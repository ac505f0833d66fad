/*
 * Test helper: the throwaway PostgreSQL that tests/lib/pgtmp.sh started.
 *
 * ag_test_pg_uri(tag, out, cap) writes AGORA_TEST_PG_URI plus `&schema=<tag>` (a
 * schema of its own per test, so tests that run in parallel processes never share
 * tables); 0, or -1 when the variable is not set (the caller skips). `tag` must be
 * a lower-case identifier. ag_test_pg_conninfo gives the plain libpq URI, for a
 * test that opens its own raw connection.
 */
#ifndef AGORA_TESTS_PGTEST_H
#define AGORA_TESTS_PGTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline const char *ag_test_pg_conninfo(void)
{
    const char *u = getenv("AGORA_TEST_PG_URI");
    return u && *u ? u : NULL;
}

static inline int ag_test_pg_uri(const char *tag, char *out, size_t cap)
{
    const char *u = ag_test_pg_conninfo();
    if (!u) return -1;
    int n = snprintf(out, cap, "%s%cschema=%s", u, strchr(u, '?') ? '&' : '?', tag);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* A schema name from a mkdtemp-style directory: "t" + the hex of its last 6 bytes. */
static inline void ag_test_pg_tag(const char *dir, char out[16])
{
    size_t n = strlen(dir);
    const char *p = n >= 6 ? dir + n - 6 : dir;
    snprintf(out, 16, "t");
    for (size_t i = 0; p[i] && i < 6; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", (unsigned char)p[i]);
}

#endif
