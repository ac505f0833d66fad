/*
 * Allocation wrappers. Every allocation in agora goes through here so tests can
 * fail the Nth allocation (curl's torture runs, SQLite's OOM tests) and prove that
 * no path crashes or leaks when memory runs out. jansson's allocations too: a
 * constructor installs ag_malloc/ag_free as its allocator before main runs (and
 * before any JSON value exists), so those tests reach the JSON paths as well.
 *
 * The process heap: glibc's figures (mallinfo2), trimming (malloc_trim) and the
 * arena cap (mallopt M_ARENA_MAX), for a long-running server whose RSS would
 * otherwise follow the arenas' high-water marks (issue 19). Under ASan the
 * sanitizer's allocator serves malloc: the figures are 0, trimming is a no-op.
 */
#include <jansson.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

void ag_json_init(void)
{
    json_set_alloc_funcs(ag_malloc, ag_free);
}

__attribute__((constructor)) static void json_alloc_at_start(void)
{
    ag_json_init();
}

static atomic_long alloc_count;   /* allocations attempted so far */
static atomic_long fail_at_count; /* 0 = off; else fail when alloc_count reaches it */

void ag_alloc_fail_at(long n)
{
    atomic_store(&fail_at_count, n > 0 ? atomic_load(&alloc_count) + n : 0);
}

long ag_alloc_count(void)
{
    return atomic_load(&alloc_count);
}

static bool should_fail(void)
{
    long n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    long f = atomic_load_explicit(&fail_at_count, memory_order_relaxed);
    return AG_UNLIKELY(f != 0 && n >= f);
}

void *ag_malloc(size_t n)
{
    if (should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *ag_calloc(size_t count, size_t size)
{
    if (should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *ag_realloc(void *p, size_t n)
{
    if (should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void ag_free(void *p)
{
    free(p);
}

char *ag_strndup(const char *s, size_t n)
{
    char *d = ag_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ag_strdup(const char *s)
{
    return ag_strndup(s, strlen(s));
}

/* ---- the process heap ---- */

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#define AG_GLIBC_HEAP 1
#endif

void ag_heap_stats(struct ag_heap_stats *out)
{
    memset(out, 0, sizeof *out);
#ifdef AG_GLIBC_HEAP
    struct mallinfo2 mi = mallinfo2();
    out->in_use = mi.uordblks + mi.hblkhd;
    out->free = mi.fordblks;
#endif
}

int ag_heap_trim(void)
{
#ifdef AG_GLIBC_HEAP
    return malloc_trim(0);
#else
    return 0;
#endif
}

bool ag_heap_trim_due(const struct ag_heap_stats *s, size_t slack, int64_t last_ms, int64_t now_ms,
                      int64_t every_ms)
{
    if (last_ms && now_ms - last_ms < every_ms) return false;
    return s->free > slack && s->free > s->in_use / 4;
}

void ag_heap_limit_arenas(int n)
{
#ifdef AG_GLIBC_HEAP
    if (n > 0) mallopt(M_ARENA_MAX, n);
#else
    (void)n;
#endif
}
