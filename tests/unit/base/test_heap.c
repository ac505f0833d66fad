/* The process heap (src/base/alloc.c, issue 19): when to trim, and that a trim
 * gives the arenas' free pages back (RssAnon drops) while what is allocated stays.
 * Under ASan the sanitizer's allocator serves malloc: the figures are 0 and that
 * test is skipped. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

Test(heap, trim_due_when_free_is_large_and_not_too_often)
{
    struct ag_heap_stats s = {.in_use = 40u << 20, .free = 30u << 20};
    size_t slack = 8u << 20;
    cr_assert(ag_heap_trim_due(&s, slack, 0, 1000, 2000), "never trimmed: due");
    cr_assert_not(ag_heap_trim_due(&s, slack, 500, 1000, 2000), "trimmed 0.5 s ago");
    cr_assert(ag_heap_trim_due(&s, slack, 500, 2500, 2000), "2 s later: due again");
    s.free = 4u << 20;
    cr_assert_not(ag_heap_trim_due(&s, slack, 0, 1000, 2000), "under the slack");
    s.in_use = 200u << 20, s.free = 20u << 20;
    cr_assert_not(ag_heap_trim_due(&s, slack, 0, 1000, 2000), "free under a quarter of in use");
}

static long rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

Test(heap, trim_returns_free_pages)
{
    struct ag_heap_stats s;
    ag_heap_stats(&s);
    if (s.in_use == 0) cr_skip_test("no glibc heap figures (sanitizer allocator)");
    enum { N = 4096, SIZE = 8192 }; /* 32 MiB in blocks below the mmap threshold */
    char **v = calloc(N, sizeof *v);
    cr_assert_not_null(v);
    for (int i = 0; i < N; i++) {
        cr_assert_not_null(v[i] = malloc(SIZE));
        memset(v[i], 1, SIZE);
    }
    for (int i = 0; i < N; i++) /* keep one in 16: the holes cannot go back as the top */
        if (i % 16) free(v[i]), v[i] = NULL;
    ag_heap_stats(&s);
    cr_assert_geq(s.free, (size_t)24 << 20, "the arena holds the freed blocks: %zu", s.free);
    long before = rss_anon_kb();
    ag_heap_trim();
    long after = rss_anon_kb();
    cr_assert_geq(before - after, 16 << 10, "RssAnon %ld kB -> %ld kB", before, after);
    for (int i = 0; i < N; i += 16) cr_assert_eq(v[i][SIZE - 1], 1, "kept blocks intact");
    for (int i = 0; i < N; i++) free(v[i]);
    free(v);
}
