/* The in-process LRU + TTL cache (src/cache/lru.c): hits and misses, recency
 * order under the byte budget, TTL on an injected clock, refused stale fills,
 * invalidation, and its metrics. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "agora/cache.h"
#include "agora/obs.h"

static int put(struct ag_lru *c, const char *k, const char *v, uint64_t meta)
{
    struct ag_lru_item it = {k, strlen(k), v, strlen(v), meta};
    return ag_lru_put(c, &it, ag_lru_gen(c));
}

static bool has(struct ag_lru *c, const char *k, const char *want)
{
    char *v = NULL;
    size_t n = 0;
    uint64_t meta;
    if (ag_lru_get(c, k, strlen(k), &v, &n, &meta)) return false;
    bool ok = !want || (n == strlen(want) && memcmp(v, want, n) == 0 && v[n] == '\0');
    ag_free(v);
    return ok;
}

Test(lru, hit_miss_replace_meta)
{
    struct ag_lru *c;
    cr_assert_eq(ag_lru_new(&(struct ag_lru_config){.name = "t"}, &c), 0);
    cr_assert_not(has(c, "a", NULL));
    cr_assert_eq(put(c, "a", "one", 7), 0);
    cr_assert(has(c, "a", "one"));
    cr_assert_eq(put(c, "a", "uno", 9), 0);
    char *v;
    size_t n;
    uint64_t meta = 0;
    cr_assert_eq(ag_lru_get(c, "a", 1, &v, &n, &meta), 0);
    cr_assert_eq(meta, 9);
    cr_assert_str_eq(v, "uno");
    ag_free(v);
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    cr_assert_eq(s.hits, 2);
    cr_assert_eq(s.misses, 1);
    cr_assert_eq(s.entries, 1);
    ag_lru_free(c);
}

Test(lru, evicts_least_recently_used_within_budget)
{
    struct ag_lru *c;
    cr_assert_eq(ag_lru_new(&(struct ag_lru_config){.name = "t", .max_bytes = 8192}, &c), 0);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(put(c, key, big, 0), 0);
    }
    cr_assert(has(c, "k0", big)); /* k0 is now the most recent: k1 goes first */
    for (int i = 5; i < 12; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(put(c, key, big, 0), 0);
    }
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    cr_assert_leq(s.bytes, 8192);
    cr_assert_gt(s.evictions, 0);
    cr_assert(has(c, "k11", big));
    cr_assert_not(has(c, "k1", NULL));
    /* one value larger than half the budget is refused, nothing evicted for it */
    char huge[5000];
    memset(huge, 'y', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    cr_assert_eq(put(c, "huge", huge, 0), AG_ETOOBIG);
    cr_assert(has(c, "k11", big));
    ag_lru_free(c);
}

Test(lru, ttl_on_injected_clock)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1000);
    struct ag_lru *c;
    cr_assert_eq(ag_lru_new(&(struct ag_lru_config){.ttl_ms = 100, .clock = &fc.clock}, &c), 0);
    cr_assert_eq(put(c, "a", "1", 0), 0);
    ag_fake_clock_advance(&fc, 99 * 1000000ull);
    cr_assert(has(c, "a", "1"));
    ag_fake_clock_advance(&fc, 1 * 1000000ull);
    cr_assert_not(has(c, "a", NULL));
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    cr_assert_eq(s.expired, 1);
    cr_assert_eq(s.entries, 0);
    ag_lru_free(c);
}

Test(lru, stale_fill_refused_after_invalidation)
{
    struct ag_lru *c;
    cr_assert_eq(ag_lru_new(&(struct ag_lru_config){0}, &c), 0);
    uint64_t g = ag_lru_gen(c); /* a reader misses, takes the generation, reads the source */
    ag_lru_del(c, "p1", 2);     /* meanwhile the source changed and invalidated */
    struct ag_lru_item it = {"p1", 2, "old", 3, 1};
    cr_assert_eq(ag_lru_put(c, &it, g), AG_ECONFLICT);
    cr_assert_not(has(c, "p1", NULL));
    /* a fill that started after the invalidation is kept */
    cr_assert_eq(ag_lru_put(c, &(struct ag_lru_item){"p1", 2, "new", 3, 2}, ag_lru_gen(c)), 0);
    cr_assert(has(c, "p1", "new"));
    g = ag_lru_gen(c);
    ag_lru_clear(c);
    cr_assert_not(has(c, "p1", NULL));
    cr_assert_eq(ag_lru_put(c, &it, g), AG_ECONFLICT);
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    cr_assert_eq(s.refused, 2);
    ag_lru_free(c);
}

Test(lru, many_keys_grow_the_table)
{
    struct ag_lru *c;
    cr_assert_eq(ag_lru_new(&(struct ag_lru_config){.max_bytes = 4u << 20}, &c), 0);
    char k[32], v[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "value-%d", i);
        cr_assert_eq(put(c, k, v, (uint64_t)i), 0);
    }
    for (int i = 0; i < 5000; i += 97) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "value-%d", i);
        cr_assert(has(c, k, v));
    }
    struct ag_lru_stats s;
    ag_lru_stats(c, &s);
    cr_assert_eq(s.entries, 5000);
    cr_assert_eq(s.evictions, 0);
    ag_lru_free(c);
}

Test(lru, metrics_count_hits_misses_evictions)
{
    struct ag_obs_registry *reg;
    cr_assert_eq(ag_obs_registry_new(&reg), 0);
    struct ag_lru *c;
    cr_assert_eq(
        ag_lru_new(&(struct ag_lru_config){.name = "things", .max_bytes = 4096, .metrics = reg},
                   &c),
        0);
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    put(c, "a", big, 0);
    has(c, "a", NULL);
    has(c, "b", NULL);
    for (int i = 0; i < 10; i++) put(c, (char[]){(char)('c' + i), 0}, big, 0);
    ag_lru_publish(c);
    struct ag_buf out;
    ag_buf_init(&out);
    ag_obs_registry_render(reg, &out);
    cr_assert(strstr(out.data, "agora_cache_hits_total{cache=\"things\"} 1"), "%s", out.data);
    cr_assert(strstr(out.data, "agora_cache_misses_total{cache=\"things\"} 1"), "%s", out.data);
    cr_assert(strstr(out.data, "agora_cache_evictions_total{cache=\"things\"}"), "%s", out.data);
    cr_assert(strstr(out.data, "agora_cache_bytes{cache=\"things\"}"), "%s", out.data);
    ag_buf_free(&out);
    ag_lru_free(c);
    ag_obs_registry_free(reg);
}
