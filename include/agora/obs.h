/*
 * agora observability: a metrics registry rendered in the Prometheus text format
 * 0.0.4, W3C trace context (`traceparent`), request ids and health checks.
 *
 * Metrics. A registry holds families (a name, a help text, label names and a
 * type); a family holds series (one per set of label values). Updating a series is
 * lock-free and cheap: each series keeps one cache-line-sized slot per shard, and
 * each thread writes only to its own shard (relaxed atomics, no contention), so an
 * HTTP worker loop never waits on another. A scrape sums the shards. Looking a
 * series up by label values takes the registry lock: do it once and keep the
 * pointer. Families and series live until the registry is freed; every pointer the
 * registry hands out is borrowed and valid until then.
 *
 * Trace context. `struct ag_obs_trace` is a parsed `traceparent`
 * (version 00: 16-byte trace id, 8-byte parent id, flags).
 *
 * Health. A set of named checks, each marked liveness or readiness. Checks run on
 * the caller's thread (an event loop), so they must not block: report a cached state.
 */
#ifndef AGORA_OBS_H
#define AGORA_OBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"

/* ---- metrics ---- */

enum ag_obs_type { AG_OBS_COUNTER, AG_OBS_GAUGE, AG_OBS_HISTOGRAM };

#define AG_OBS_MAX_LABELS  8  /* label names per family */
#define AG_OBS_MAX_BUCKETS 32 /* histogram upper bounds (without +Inf) */

struct ag_obs_registry;
struct ag_obs_family;
struct ag_obs_series;

/* A new, empty registry; caller frees with ag_obs_registry_free. */
AG_EXTERN int ag_obs_registry_new(struct ag_obs_registry **out);
/* Frees the registry, its families and series. No thread may still update them. */
AG_EXTERN void ag_obs_registry_free(struct ag_obs_registry *r);

/* What a metric family is. Everything is borrowed for the call (and copied). */
struct ag_obs_family_spec {
    enum ag_obs_type type;
    const char *name;          /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;          /* NULL = "" */
    size_t nlabels;            /* label names, at most AG_OBS_MAX_LABELS */
    const char *const *labels; /* each [a-zA-Z_][a-zA-Z0-9_]* */
    const double *bounds;      /* histograms: strictly increasing finite upper bounds; */
    size_t nbounds;            /* NULL means ag_obs_default_buckets */
};

/* Define a family, or return the existing one when a family with the same name,
 * type and label names exists (AG_EEXISTS when the name is taken by another shape).
 * AG_EINVAL for a malformed name, label or bounds. *out is borrowed from the
 * registry. */
AG_EXTERN int ag_obs_family_define(struct ag_obs_registry *r, const struct ag_obs_family_spec *spec,
                                   struct ag_obs_family **out);
/* The positional form, kept while the callers in src/services move to the spec
 * (a macro, not a function: no function takes more than 8 parameters). */
#define ag_obs_family_new(r, type, name, help, nlabels, labels, bounds, nbounds, out)              \
    ag_obs_family_define((r),                                                                      \
                         &(const struct ag_obs_family_spec){(type), (name), (help), (nlabels),     \
                                                            (labels), (bounds), (nbounds)},        \
                         (out))
/* Latency buckets in seconds: 0.5 ms to 10 s (13 bounds). */
extern AG_EXTERN const double ag_obs_default_buckets[13];

/* The series for `values` (one per label name; copied), created on first use.
 * Takes the registry lock: call once, keep the borrowed pointer. */
AG_EXTERN int ag_obs_series_get(struct ag_obs_family *f, const char *const *values,
                                struct ag_obs_series **out);

/* Hot-path updates: lock-free, any thread. Calls on a series of the wrong type are
 * ignored. */
AG_EXTERN void ag_obs_counter_add(struct ag_obs_series *s, uint64_t n);
static inline void ag_obs_counter_inc(struct ag_obs_series *s)
{
    ag_obs_counter_add(s, 1);
}
AG_EXTERN void ag_obs_gauge_add(struct ag_obs_series *s, double d);
/* Set the gauge; meant for a gauge with a single writer (a set racing with adds
 * from other threads may lose those adds). */
AG_EXTERN void ag_obs_gauge_set(struct ag_obs_series *s, double v);
AG_EXTERN void ag_obs_histogram_observe(struct ag_obs_series *s, double v);

/* Merged values (sum over shards), for tests and admin endpoints. */
AG_EXTERN uint64_t ag_obs_counter_value(const struct ag_obs_series *s);
AG_EXTERN double ag_obs_gauge_value(const struct ag_obs_series *s);
/* Histogram: `buckets` (nbounds + 1 entries, the last is +Inf) receives the
 * cumulative counts; *sum and *count the totals. Any OUT pointer may be NULL. */
AG_EXTERN void ag_obs_histogram_value(const struct ag_obs_series *s, uint64_t *buckets /* OUT */,
                                      double *sum /* OUT */, uint64_t *count /* OUT */);

/* A collector copies a source's own figures into series when they are read (pull,
 * for sources that keep plain counters and know nothing of the registry). Every
 * render first runs the collectors, one at a time, outside the registry lock (they
 * may define families and look series up). At most 8; `ud` is borrowed and must
 * outlive every render. AG_ETOOBIG when full. */
typedef void (*ag_obs_collect_fn)(void *ud);
AG_EXTERN int ag_obs_registry_collector(struct ag_obs_registry *r, ag_obs_collect_fn fn, void *ud);

/* Append every family in the Prometheus text exposition format 0.0.4
 * (content type AG_OBS_PROM_CONTENT_TYPE) to `out`. */
AG_EXTERN int ag_obs_registry_render(struct ag_obs_registry *r, struct ag_buf *out);
#define AG_OBS_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- trace context (W3C traceparent) ---- */

struct ag_obs_trace {
    uint8_t trace_id[16]; /* never all zero */
    uint8_t span_id[8];   /* the parent-id field: never all zero */
    uint8_t flags;        /* trace-flags; bit 0 = sampled */
};
#define AG_OBS_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */

/* Parse a traceparent header value (surrounding blanks allowed). Follows the W3C
 * rules: lower-case hex, version ff invalid, version 00 exactly 55 characters,
 * later versions may carry more fields after a '-'; zero ids invalid. AG_EINVAL
 * when malformed. */
AG_EXTERN int ag_obs_trace_parse(const char *s, size_t n, struct ag_obs_trace *out /* OUT */);
/* A new root context (random ids, sampled). NULL rng = ag_rng_system(). */
AG_EXTERN void ag_obs_trace_new(struct ag_obs_trace *out /* OUT */, const struct ag_rng *rng);
/* A child context: the parent's trace id and flags, a new span id. */
AG_EXTERN void ag_obs_trace_child(const struct ag_obs_trace *parent,
                                  struct ag_obs_trace *out /* OUT */, const struct ag_rng *rng);
/* Format as version 00 into out[56] (NUL-terminated). */
AG_EXTERN void ag_obs_trace_format(const struct ag_obs_trace *t,
                                   char out[AG_OBS_TRACEPARENT_LEN + 1]);

/* ---- request ids ---- */

#define AG_OBS_REQUEST_ID_MAX 128
/* True when a client-sent X-Request-ID is safe to keep: 1..128 printable ASCII
 * characters, no spaces, quotes or backslashes. */
AG_EXTERN bool ag_obs_request_id_valid(const char *s, size_t n);
/* A fresh request id (a UUIDv7) into out[37]. */
AG_EXTERN void ag_obs_request_id_new(char out[AG_UUID_STRLEN + 1]);

/* ---- health ---- */

enum ag_obs_probe { AG_OBS_LIVE, AG_OBS_READY };

/* A check returns 0 when healthy and a negative AG_E* code when not; it may append
 * a short human-readable detail to `detail`. It must not block. */
typedef int (*ag_obs_check_fn)(void *ud, struct ag_buf *detail);

struct ag_obs_health;

AG_EXTERN int ag_obs_health_new(struct ag_obs_health **out);
AG_EXTERN void ag_obs_health_free(struct ag_obs_health *h);
/* Register a check for a probe; `name` is copied, `ud` borrowed. Not thread-safe
 * against a concurrent render: register checks before serving. */
AG_EXTERN int ag_obs_health_add(struct ag_obs_health *h, enum ag_obs_probe probe, const char *name,
                                ag_obs_check_fn fn, void *ud);
/* Run the probe's checks and append the JSON body
 * {"status":"up"|"down","checks":[{"name":..,"status":..,"detail":..}]} to `out`.
 * Returns 1 when every check passed, 0 when one failed, negative on error. */
AG_EXTERN int ag_obs_health_render(struct ag_obs_health *h, enum ag_obs_probe probe,
                                   struct ag_buf *out);

#endif
