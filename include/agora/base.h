/*
 * agora base library: allocation (with failure injection, which jansson's
 * allocations go through too), growable buffers, string helpers, the HOST:PORT
 * parser, an injectable clock and RNG, UUIDv7, a structured JSON logger and XXH3
 * hashing. Everything above `base` builds on these; nothing here does I/O except
 * the logger (stderr by default) and ag_file_read.
 *
 * Ownership: functions returning `char *` or a pointer from ag_malloc return owned
 * memory the caller frees with ag_free unless the comment says "borrowed".
 */
#ifndef AGORA_BASE_H
#define AGORA_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#include "agora/error.h"

#define AG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define AG_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define AG_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define AG_UNUSED(x)     ((void)(x))
#define AG_LIKELY(x)     __builtin_expect(!!(x), 1)
#define AG_UNLIKELY(x)   __builtin_expect(!!(x), 0)

/* ---- allocation ---- */

/* All agora allocation goes through these so tests can inject failures. */
AG_EXTERN void *ag_malloc(size_t n);
AG_EXTERN void *ag_calloc(size_t count, size_t size);
AG_EXTERN void *ag_realloc(void *p, size_t n);
AG_EXTERN void ag_free(void *p);
AG_EXTERN char *ag_strdup(const char *s);
AG_EXTERN char *ag_strndup(const char *s, size_t n);
/* Make the Nth allocation from now (1-based) and every later one fail; 0 disables.
 * Process-wide, thread-safe. */
AG_EXTERN void ag_alloc_fail_at(long n);
/* Number of allocations attempted since the process started (for torture loops). */
AG_EXTERN long ag_alloc_count(void);

/* The process heap (glibc's malloc; elsewhere, and under a sanitizer's allocator,
 * the figures are 0 and the calls do nothing). glibc keeps what a program frees in
 * its arenas (one per thread that met contention, up to 8 per core) for reuse; a
 * long-running server that frees as much as it allocates sees its RSS creep up
 * with the arenas' high-water marks, not with what it holds. */
struct ag_heap_stats {
    size_t in_use; /* bytes allocated (mmap'd blocks included) */
    size_t free;   /* bytes the arenas hold free: slack and fragmentation */
};
AG_EXTERN void ag_heap_stats(struct ag_heap_stats *out);
/* Give the arenas' free pages back to the system (malloc_trim): RSS drops by about
 * `free`, the free chunks stay usable. Takes each arena's lock in turn while it
 * walks its free chunks (a few ms for tens of MB); returns 1 if memory was
 * released. */
AG_EXTERN int ag_heap_trim(void);
/* Whether a process whose heap is `s`, last trimmed at `last_ms` (0 = never), should
 * trim at `now_ms`: when the arenas hold more than `slack` bytes free and more
 * than a quarter of what is in use, at most every `every_ms`. */
AG_EXTERN bool ag_heap_trim_due(const struct ag_heap_stats *s, size_t slack, int64_t last_ms,
                                int64_t now_ms, int64_t every_ms);
/* Cap glibc's arenas at n (call before threads start); n <= 0 leaves the default.
 * Fewer arenas: less slack, a little more lock contention between threads. */
AG_EXTERN void ag_heap_limit_arenas(int n);
/* Make jansson allocate through ag_malloc/ag_free, so failure injection reaches
 * JSON code too. Done by the base library at process start (a constructor, before
 * main); calling it again is harmless. ag_free is free(), so values jansson made
 * before either way are freed correctly. */
AG_EXTERN void ag_json_init(void);

/* ---- growable byte buffer ---- */

struct ag_buf {
    char *data; /* owned; NUL-terminated when len < cap */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
};

AG_EXTERN void ag_buf_init(struct ag_buf *b);
AG_EXTERN void ag_buf_free(struct ag_buf *b);
AG_EXTERN void ag_buf_reset(struct ag_buf *b); /* len = 0, keeps memory */
AG_EXTERN int ag_buf_reserve(struct ag_buf *b, size_t extra);
AG_EXTERN int ag_buf_append(struct ag_buf *b, const void *p, size_t n);
AG_EXTERN int ag_buf_puts(struct ag_buf *b, const char *s);
AG_EXTERN int ag_buf_putc(struct ag_buf *b, char c);
AG_EXTERN int ag_buf_printf(struct ag_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
AG_EXTERN int ag_buf_vprintf(struct ag_buf *b, const char *fmt, va_list ap);
/* Append `s` as a quoted JSON string with RFC 8259 escaping. */
AG_EXTERN int ag_buf_json_str(struct ag_buf *b, const char *s, size_t n);
/* Detach the data (caller frees with ag_free); the buffer is left empty. */
AG_EXTERN char *ag_buf_steal(struct ag_buf *b, size_t *len_out);

/* Read a whole file into a NUL-terminated owned buffer (*len excludes the NUL).
 * -errno when it cannot be opened or read, AG_ENOMEM. Caller frees with ag_free. */
AG_EXTERN int ag_file_read(const char *path, char **out, size_t *len);

/* ---- strings ---- */

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
AG_EXTERN bool ag_utf8_valid(const char *s, size_t n);
/* Parse a decimal int64 from the whole of s; AG_EINVAL when not a number. */
AG_EXTERN int ag_parse_i64(const char *s, int64_t *out);
AG_EXTERN int ag_parse_u64(const char *s, uint64_t *out);
/* Parse a byte size from the whole of s: digits with an optional binary suffix
 * K, M, G or T (also KB/KiB..., case-insensitive letter): "65536", "64M", "1GiB".
 * AG_EINVAL when malformed or out of range. */
AG_EXTERN int ag_parse_size(const char *s, uint64_t *out);

/* ---- network addresses ---- */

#define AG_HOSTPORT_PORT0    1u /* port 0 ("any free port") is allowed */
#define AG_HOSTPORT_NUMERIC  2u /* the host must be a numeric IPv4 or [IPv6] address */
#define AG_HOSTPORT_OPT_PORT 4u /* the port may be left out (*port is then left as it is) */
/* Parse "HOST:PORT", "[IPv6]:PORT" into `host` (brackets removed, NUL-terminated,
 * at most hostcap - 1 bytes) and `port` (1..65535 unless `flags` say otherwise).
 * An IPv6 address needs brackets. Names are not resolved; "unix:/path" is not a
 * HOST:PORT (callers that accept Unix sockets test for it first). 0, or AG_EINVAL
 * with a message naming the address and what is wrong with it. */
AG_EXTERN int ag_hostport_parse(const char *s, unsigned flags, char *host, size_t hostcap,
                                uint16_t *port, struct ag_err *err);

/* ---- clock ---- */

/* An injectable clock: wall time (Unix ns) and monotonic time (ns). */
struct ag_clock {
    uint64_t (*now_ns)(void *ctx);  /* wall clock, ns since the Unix epoch */
    uint64_t (*mono_ns)(void *ctx); /* monotonic, ns from an arbitrary origin */
    void *ctx;
};

/* The process's real clock (borrowed, static). */
AG_EXTERN const struct ag_clock *ag_clock_system(void);

/* A fake clock for tests: both wall and monotonic advance only when told. */
struct ag_fake_clock {
    struct ag_clock clock; /* pass &fc.clock wherever a clock is wanted */
    uint64_t now_ns;       /* current wall time */
    uint64_t mono_ns;      /* current monotonic time */
};
AG_EXTERN void ag_fake_clock_init(struct ag_fake_clock *fc, uint64_t start_wall_ns);
AG_EXTERN void ag_fake_clock_advance(struct ag_fake_clock *fc, uint64_t ns);

static inline uint64_t ag_clock_now(const struct ag_clock *c)
{
    return c->now_ns(c->ctx);
}
static inline uint64_t ag_clock_mono(const struct ag_clock *c)
{
    return c->mono_ns(c->ctx);
}
/* The CLOCK_REALTIME instant `ms` milliseconds from now, for pthread_cond_timedwait
 * on a condition variable with the default clock (`ts` is a struct timespec *;
 * kept as void * so this header needs no <time.h>). A wall-clock jump stretches or
 * cuts such a wait: for timeouts prefer the monotonic pair below. */
AG_EXTERN void ag_deadline_in_ms(void *ts, long ms);
/* Durations are measured on the monotonic clock: initialise a pthread_cond_t
 * (`cond`) whose timed waits use CLOCK_MONOTONIC (0 or AG_ENOMEM), and compute
 * its deadline `ms` from now with ag_deadline_mono_in_ms. Never mix the two
 * clocks on one condition variable. */
AG_EXTERN int ag_cond_init_mono(void *cond);
AG_EXTERN void ag_deadline_mono_in_ms(void *ts, long ms);
/* Format Unix ns as RFC 3339 UTC with microseconds ("2026-11-21T12:00:00.123456Z");
 * `out` must hold 32 bytes. Returns the length. */
AG_EXTERN size_t ag_time_rfc3339(uint64_t unix_ns, char out[32]);

/* ---- random numbers ---- */

/* An injectable RNG returning uniformly distributed 64-bit values. */
struct ag_rng {
    uint64_t (*next)(void *ctx);
    void *ctx;
};
/* xoshiro256** state; seed it with ag_xoshiro_seed for deterministic tests. */
struct ag_xoshiro {
    struct ag_rng rng; /* pass &x.rng wherever an RNG is wanted */
    uint64_t s[4];
};
AG_EXTERN void ag_xoshiro_seed(struct ag_xoshiro *x, uint64_t seed);
/* A thread-safe RNG seeded from the OS (borrowed, static; one state per thread). */
AG_EXTERN const struct ag_rng *ag_rng_system(void);
static inline uint64_t ag_rng_next(const struct ag_rng *r)
{
    return r->next(r->ctx);
}
/* Uniform double in [0, 1). */
AG_EXTERN double ag_rng_double(const struct ag_rng *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
AG_EXTERN uint64_t ag_rng_below(const struct ag_rng *r, uint64_t n);

/* ---- UUIDv7 (RFC 9562) ---- */

struct ag_uuid {
    uint8_t b[16];
};
#define AG_UUID_STRLEN 36
/* A new UUIDv7: 48-bit ms timestamp, then a 12-bit sequence that keeps ids
 * monotonic within one millisecond in this process, then 62 random bits.
 * NULL clock/rng mean the system ones. */
AG_EXTERN void ag_uuid_v7(struct ag_uuid *out, const struct ag_clock *clock,
                          const struct ag_rng *rng);
/* Lower-case canonical form into out[37] (NUL-terminated). */
AG_EXTERN void ag_uuid_format(const struct ag_uuid *u, char out[AG_UUID_STRLEN + 1]);
/* Parse the canonical 36-char form (either case); AG_EINVAL otherwise. */
AG_EXTERN int ag_uuid_parse(const char *s, size_t n, struct ag_uuid *out);
AG_EXTERN bool ag_uuid_is_nil(const struct ag_uuid *u);

/* ---- structured JSON logger ---- */

enum ag_log_level { AG_LOG_DEBUG, AG_LOG_INFO, AG_LOG_WARN, AG_LOG_ERROR, AG_LOG_OFF };

enum ag_log_kind { AG_LF_NONE, AG_LF_STR, AG_LF_INT, AG_LF_UINT, AG_LF_DBL, AG_LF_BOOL, AG_LF_RAW };
struct ag_log_field {
    const char *key; /* NULL marks an unused slot */
    int kind;        /* enum ag_log_kind */
    union {
        const char *s; /* AG_LF_STR (escaped), AG_LF_RAW (inserted as-is: valid JSON) */
        long long i;
        unsigned long long u;
        double d;
    } v;
};
#define AG_LS(k, x)   ((struct ag_log_field){(k), AG_LF_STR, {.s = (x)}})
#define AG_LI(k, x)   ((struct ag_log_field){(k), AG_LF_INT, {.i = (long long)(x)}})
#define AG_LU(k, x)   ((struct ag_log_field){(k), AG_LF_UINT, {.u = (unsigned long long)(x)}})
#define AG_LD(k, x)   ((struct ag_log_field){(k), AG_LF_DBL, {.d = (double)(x)}})
#define AG_LB(k, x)   ((struct ag_log_field){(k), AG_LF_BOOL, {.i = !!(x)}})
#define AG_LRAW(k, x) ((struct ag_log_field){(k), AG_LF_RAW, {.s = (x)}})

/* Writes one JSON object per line: {"ts":..., "level":..., "msg":..., fields...}. */
AG_EXTERN void ag_log_write(int level, const char *msg, const struct ag_log_field *f, size_t n);
AG_EXTERN void ag_log_set_level(int level);
AG_EXTERN int ag_log_get_level(void);
/* Redirect output (default: stderr). The fd is borrowed. */
AG_EXTERN void ag_log_set_fd(int fd);
/* Parse "debug|info|warn|error|off"; -1 when unknown. */
AG_EXTERN int ag_log_level_parse(const char *s);

#define AG_LOG(level, msg, ...)                                                                    \
    do {                                                                                           \
        if ((level) >= ag_log_get_level()) {                                                       \
            const struct ag_log_field ag_lf_[] = {{0}, __VA_ARGS__};                               \
            ag_log_write((level), (msg), ag_lf_, AG_ARRAY_SIZE(ag_lf_));                           \
        }                                                                                          \
    } while (0)
#define AG_DEBUG(msg, ...) AG_LOG(AG_LOG_DEBUG, msg, __VA_ARGS__)
#define AG_INFO(msg, ...)  AG_LOG(AG_LOG_INFO, msg, __VA_ARGS__)
#define AG_WARN(msg, ...)  AG_LOG(AG_LOG_WARN, msg, __VA_ARGS__)
#define AG_ERROR(msg, ...) AG_LOG(AG_LOG_ERROR, msg, __VA_ARGS__)

/* ---- JSON validation ---- */

/* Check that s[0..n) is one well-formed JSON value (RFC 8259: UTF-8, escapes,
 * numbers, depth ≤ 512, no duplicate keys in an object); with `object_only` it must
 * be an object. 0, or AG_EJSON with "what (line L, column C)" in msg. Allocates
 * nothing unless an object has more than 64 keys open at once. */
AG_EXTERN int ag_json_check(const char *s, size_t n, bool object_only, char *msg, size_t msg_len);

/* ---- JSON members without a tree (base/json_scan.c) ---- */

enum ag_json_kind {
    AG_JSON_ABSENT,
    AG_JSON_STRING,
    AG_JSON_NUMBER,
    AG_JSON_LITERAL,
    AG_JSON_NESTED
};

/* A member's value as it is written in the text. */
struct ag_json_span {
    const char *p; /* the value's first byte (a string's is its '"'); NULL: absent */
    size_t n;      /* its length, quotes and brackets included */
    enum ag_json_kind kind;
    bool escapes; /* a string with an escape or a control byte */
};

/* For the object in s[0..n) — text already well-formed (ag_json_check): the scan
 * finds its way, it does not validate — the values of its top-level members
 * keys[0..nkeys) into out[] (the last one when a key repeats). 0, or AG_EJSON
 * when the text is not an object or holds what the scan does not handle (a key
 * with an escape): then use a parser. */
AG_EXTERN int ag_json_members(const char *s, size_t n, const char *const *keys, size_t nkeys,
                              struct ag_json_span *out);

/* ---- hashing ---- */

AG_EXTERN uint64_t ag_xxh3(const void *p, size_t n);
AG_EXTERN uint64_t ag_xxh3_seed(const void *p, size_t n, uint64_t seed);

/* Names the calling thread `name` (ag_thread_name) and lowers its CPU priority
 * to nice_value (> 0) and, with idle_io, its I/O priority to the idle class: for
 * housekeeping threads that must not delay requests (src/base/thread.c). Best
 * effort. */
AG_EXTERN void ag_thread_background(const char *name, int nice_value, bool idle_io);
/* Names the calling thread (what top -H and perf show; cut to 15 bytes). */
AG_EXTERN void ag_thread_name(const char *name);

#endif
