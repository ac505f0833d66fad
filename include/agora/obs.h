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
 *
 * Spans. Fixed-size span records in a process-wide ring of recent spans, read by
 * the admin trace routes and by an OTLP/HTTP JSON exporter thread (src/obs/span.c;
 * see "spans" below).
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
/* Remove the collector (fn, ud) before `ud` goes away; no-op when not there. Waits
 * for a render that is running collectors. */
AG_EXTERN void ag_obs_registry_collector_remove(struct ag_obs_registry *r, ag_obs_collect_fn fn,
                                                void *ud);
/* agora_breaker_open{scope,name}: 1 open (or forced open), 0.5 half-open, 0 closed
 * (or disabled), for a collector to set from a breaker's state (the enum
 * ag_cb_state value: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open). */
AG_EXTERN void ag_obs_breaker_state(struct ag_obs_registry *r, const char *scope, const char *name,
                                    int cb_state);

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

/* ---- spans (a recent-span buffer and OTLP/HTTP JSON export) ----
 *
 * A span is a fixed-size record (struct ag_span) the caller fills on its own stack
 * or in its request state: no allocation. ag_span_end (or ag_span_record, for a
 * span whose times the caller set) copies it into a process-wide ring of recent
 * spans (ag_span_setup: capacity, oldest overwritten), where the admin routes find
 * a trace's spans and the exporter thread reads them for OTLP. Before ag_span_setup
 * (or with capacity 0) every call here is a cheap no-op: ag_span_begin marks the
 * span inactive. Attribute keys must be string literals (stored as pointers);
 * string values are copied and cut at AG_SPAN_STR_MAX - 1 bytes. */

enum ag_span_kind { AG_SPAN_INTERNAL = 1, AG_SPAN_SERVER = 2, AG_SPAN_CLIENT = 3 };
enum ag_span_status { AG_SPAN_UNSET = 0, AG_SPAN_OK = 1, AG_SPAN_ERROR = 2 };

#define AG_SPAN_NAME_MAX  48
#define AG_SPAN_STR_MAX   47 /* "shipment-<uuid>" fits */
#define AG_SPAN_MAX_ATTRS 6

struct ag_span_attr {
    const char *key; /* a string literal */
    int64_t i;       /* the value when is_int */
    char s[AG_SPAN_STR_MAX];
    bool is_int; /* i holds the value, else s */
};

struct ag_span {
    struct ag_obs_trace ctx; /* this span: trace id, span id, flags */
    uint8_t parent[8];       /* the parent span id; all zero for a root */
    uint8_t kind;            /* enum ag_span_kind; 0 = inactive (tracing off) */
    uint8_t status;          /* enum ag_span_status */
    uint8_t nattrs;          /* attrs in use */
    char name[AG_SPAN_NAME_MAX];
    uint64_t start_ns, end_ns; /* Unix time, ns */
    struct ag_span_attr attrs[AG_SPAN_MAX_ATTRS];
};

/* What ag_span_setup configures. */
struct ag_span_config {
    size_t capacity;           /* spans kept in the ring (rounded up to a power of 2); 0 = off */
    const char *service_name;  /* OTLP resource service.name (copied); NULL = "agora" */
    const char *otlp_endpoint; /* http://HOST:PORT[/PATH]: POST PATH/v1/traces; NULL = none */
    size_t batch_spans;        /* spans per export request; 0 = 512 */
    unsigned batch_ms;         /* export at least this often when spans wait; 0 = 1000 */
    struct ag_obs_registry *metrics; /* agora_trace_spans_{recorded,exported,dropped}_total */
};

/* Start recording (and exporting when otlp_endpoint is set: its own thread). Once
 * per process; AG_EEXISTS when already set up, AG_EINVAL for a bad endpoint. */
AG_EXTERN int ag_span_setup(const struct ag_span_config *cfg);
/* Export what is left (one attempt), stop the exporter and stop recording (the
 * ring itself stays until the process ends: a late thread may still read it). */
AG_EXTERN void ag_span_shutdown(void);
/* True when spans are being recorded. */
AG_EXTERN bool ag_span_enabled(void);

/* Begin a span named `name` (cut to fit): a child of `parent` (a new trace when
 * NULL), start time now. Inactive (kind 0) when tracing is off. */
AG_EXTERN void ag_span_begin(struct ag_span *sp, const char *name, enum ag_span_kind kind,
                             const struct ag_obs_trace *parent);
/* Begin a span whose own context is already chosen (`self`, e.g. a server span
 * whose id went out in traceparent), with parent span id `parent` (NULL: root). */
AG_EXTERN void ag_span_begin_as(struct ag_span *sp, const char *name, enum ag_span_kind kind,
                                const struct ag_obs_trace *self, const uint8_t *parent);
AG_EXTERN void ag_span_attr_str(struct ag_span *sp, const char *key, const char *value);
AG_EXTERN void ag_span_attr_int(struct ag_span *sp, const char *key, int64_t value);
/* Stamp the end time now and record the span (no-op for an inactive span). */
AG_EXTERN void ag_span_end(struct ag_span *sp);
/* Record the span as it is (start_ns and end_ns set by the caller). */
AG_EXTERN void ag_span_record(const struct ag_span *sp);
/* Unix time in ns (CLOCK_REALTIME), the clock spans use. */
AG_EXTERN uint64_t ag_span_now(void);

/* The calling thread's current span context, the implicit parent of spans made
 * below it (the store's append span): set before calling down, cleared after.
 * ag_span_current returns false when none is set. */
AG_EXTERN void ag_span_set_current(const struct ag_obs_trace *t /* NULL clears */);
AG_EXTERN bool ag_span_current(struct ag_obs_trace *out /* OUT */);

/* Append {"traceId","spans":[{spanId,parentSpanId,name,kind,startUnixNano,
 * endUnixNano,status,attributes}]} for every span of `trace_id` in the ring,
 * oldest first. AG_ENOTFOUND when none is there. */
AG_EXTERN int ag_span_trace_json(const uint8_t trace_id[16], struct ag_buf *out);

/* Counters since setup (also exported as metrics). */
struct ag_span_stats {
    uint64_t recorded, exported, dropped;
};
AG_EXTERN void ag_span_stats(struct ag_span_stats *out /* OUT */);

#endif
