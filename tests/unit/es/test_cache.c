/* The aggregate cache's byte budget (src/es/repo.c): entries count their struct,
 * name and state plus what the type's `bytes` hook reports; entries nobody holds
 * are evicted, least recently used first, while the total is over cache_bytes;
 * an evicted aggregate loads again from the store with its state intact. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/es.h"
#include "agora/store_log.h"

#include "es_fixture.h"

/* A state that holds `size` heap bytes (as a growing aggregate would). */
struct blob {
    char *p;
    size_t size;
};

static void b_init(void *s)
{
    memset(s, 0, sizeof(struct blob));
}
static void b_free(void *s)
{
    free(((struct blob *)s)->p);
}
static int b_evolve(void *s, const char *type, const json_t *d)
{
    struct blob *b = s;
    AG_UNUSED(type);
    size_t n = (size_t)json_integer_value(json_object_get(d, "n"));
    char *p = realloc(b->p, b->size + n);
    if (!p) return AG_ENOMEM;
    memset(p + b->size, 'x', n);
    b->p = p, b->size += n;
    return 0;
}
static json_t *b_snapshot(const void *s)
{
    AG_UNUSED(s);
    return NULL;
}
static int b_restore(void *s, const json_t *j)
{
    AG_UNUSED(s), AG_UNUSED(j);
    return AG_EINVAL;
}
static size_t b_bytes(const void *s)
{
    return ((const struct blob *)s)->size;
}
static const struct ag_es_type blob_type = {"blob",   sizeof(struct blob), b_init,    b_free,
                                            b_evolve, b_snapshot,          b_restore, b_bytes};

static struct es_fx fx; /* a temporary log store and a repository over it */

static void setup(void)
{
    es_fx_open(&fx, "cache",
               (struct ag_es_repo_config){.snapshot_every = 1000, .cache_bytes = 64 << 10});
}

static void teardown(void)
{
    es_fx_close(&fx);
}

TestSuite(cache, .init = setup, .fini = teardown);

static int decide_grow(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                       struct ag_err *err)
{
    AG_UNUSED(state), AG_UNUSED(version), AG_UNUSED(err);
    return ag_es_batch_push(out, "Grown", json_pack("{s:i}", "n", *(int *)ud));
}

static void view_size(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(size_t *)ud = ((const struct blob *)state)->size;
}

static void grow(const char *stream, int n)
{
    struct ag_es_cmd cmd = {&blob_type, stream, decide_grow, &n, NULL, NULL, NULL};
    cr_assert_eq(ag_es_execute(fx.repo, &cmd, NULL, NULL), 0);
}

Test(cache, bounded_in_bytes_not_entries)
{
    char name[32];
    for (int i = 0; i < 40; i++) { /* 40 aggregates of 8 KiB: 320 KiB against 64 KiB */
        snprintf(name, sizeof name, "blob-%d", i);
        grow(name, 4096);
        grow(name, 4096);
        struct ag_es_repo_stats st;
        ag_es_repo_stats(fx.repo, &st);
        cr_assert_leq(st.bytes, st.budget, "after %d: %zu bytes cached", i, st.bytes);
    }
    struct ag_es_repo_stats st;
    ag_es_repo_stats(fx.repo, &st);
    cr_assert_eq(st.budget, 64 << 10);
    cr_assert_gt(st.evictions, 0);
    cr_assert_lt(st.entries, 10, "8 KiB aggregates: fewer than 8 fit (%zu)", st.entries);
    cr_assert_gt(st.bytes, 4 * 8192, "the hook's bytes are counted (%zu)", st.bytes);
    /* the first one was evicted: it loads again from the store, whole */
    size_t size = 0;
    cr_assert_eq(ag_es_read(fx.repo, &blob_type, "blob-0", view_size, &size, NULL), 0);
    cr_assert_eq(size, 8192);
}

Test(cache, many_small_aggregates_fit)
{
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "blob-%d", i);
        grow(name, 16);
    }
    struct ag_es_repo_stats st;
    ag_es_repo_stats(fx.repo, &st);
    cr_assert_eq(st.entries, 100, "small entries are not evicted (%zu)", st.entries);
    cr_assert_eq(st.evictions, 0);
}

/* A type without the hook and with a tiny struct still counts what malloc spends
 * on it (two blocks: entry + name, state), so a cache of many tiny aggregates
 * stays under the budget in real memory too (issue 19). */
static void tiny_init(void *s)
{
    memset(s, 0, 1);
}
static void tiny_free(void *s)
{
    AG_UNUSED(s);
}
static int tiny_evolve(void *s, const char *type, const json_t *d)
{
    AG_UNUSED(s), AG_UNUSED(type), AG_UNUSED(d);
    return 0;
}
static const struct ag_es_type tiny_type = {"tiny",      1,          tiny_init, tiny_free,
                                            tiny_evolve, b_snapshot, b_restore, NULL};

Test(cache, tiny_states_count_their_blocks)
{
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "tiny-%d", i);
        int rc = ag_es_read(fx.repo, &tiny_type, name, NULL, NULL, NULL);
        cr_assert(rc == 0 || rc == AG_ENOTFOUND, "%s",
                  ag_errname(rc)); /* no events: cached empty */
        struct ag_es_repo_stats st;
        ag_es_repo_stats(fx.repo, &st);
        cr_assert_leq(st.bytes, st.budget);
    }
    struct ag_es_repo_stats st;
    ag_es_repo_stats(fx.repo, &st);
    cr_assert_gt(st.evictions, 0);
    cr_assert_geq(st.bytes / st.entries, 2 * 32, "two malloc blocks per entry at least (%zu)",
                  st.bytes / st.entries);
}
