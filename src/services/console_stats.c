/*
 * One snapshot of the numbers the operator console's overview draws:
 * GET /admin/stats (admin), and whatever streams it (the stats SSE route calls
 * svc_console_stats once a second). Cheap enough for that: no read-model query.
 *
 * Where each number comes from:
 *   sagas.*        the saga engine's counters as the monitor publishes them in
 *                  /metrics (agora_saga_sagas{outcome}, agora_saga_queued);
 *   projections[]  the projector's figures behind agora_projection_lag_*;
 *   store.*        the store's (agora_store_events, _streams, _bytes);
 *   orders.placed  agora_http_requests_total{method="POST",route="/api/v1/orders",
 *                  status="202"|"201"} (orders accepted through the API since start);
 *   orders.perSecond and confirmLatencyMs: /metrics has no per-order latency, so
 *                  they come from the tail of the log: the last STATS_WINDOW
 *                  events of $all. perSecond counts OrderPlaced events committed
 *                  in the last RATE_SECONDS (or since the window's oldest event,
 *                  if that is younger); confirmLatencyMs are the percentiles of
 *                  OrderConfirmed's commit time minus its order's OrderPlaced's,
 *                  over the orders both of whose events are in the window — a
 *                  slow order whose OrderPlaced fell out of the window is not
 *                  counted, so under heavy load the high percentiles lean low.
 */
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

#define STATS_WINDOW 4096 /* events of $all read from the end */
#define RATE_SECONDS 5
#define MAX_PLACED   2048

static struct ag_obs_series *gauge(struct ag_obs_registry *r, const char *name, const char *label,
                                   const char *value)
{
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    const char *labels[] = {label};
    const char *values[] = {value};
    struct ag_obs_family_spec spec = {AG_OBS_GAUGE, name, NULL, label ? 1 : 0, labels};
    if (r && ag_obs_family_define(r, &spec, &f) == 0)
        ag_obs_series_get(f, label ? values : NULL, &s);
    return s;
}

static double gauge_value(struct ag_obs_registry *r, const char *name, const char *label,
                          const char *value)
{
    struct ag_obs_series *s = gauge(r, name, label, value);
    return s ? ag_obs_gauge_value(s) : 0;
}

static uint64_t orders_accepted(struct ag_obs_registry *r)
{
    static const char *const red[] = {"method", "route", "status"};
    struct ag_obs_family_spec spec = {AG_OBS_COUNTER, "agora_http_requests_total",
                                      "HTTP requests answered, by method, route and status.", 3,
                                      red};
    struct ag_obs_family *f;
    if (!r || ag_obs_family_define(r, &spec, &f)) return 0;
    uint64_t n = 0;
    static const char *const statuses[] = {"201", "202"};
    for (size_t i = 0; i < AG_ARRAY_SIZE(statuses); i++) {
        const char *values[] = {"POST", "/api/v1/orders", statuses[i]};
        struct ag_obs_series *s = NULL;
        if (ag_obs_series_get(f, values, &s) == 0 && s) n += ag_obs_counter_value(s);
    }
    return n;
}

static json_t *sagas_json(struct ag_obs_registry *r)
{
    static const char *const outcomes[] = {"started", "completed", "compensated", "failed"};
    json_t *o = json_object();
    for (size_t i = 0; i < AG_ARRAY_SIZE(outcomes); i++)
        json_object_set_new(
            o, outcomes[i],
            json_integer((json_int_t)gauge_value(r, "agora_saga_sagas", "outcome", outcomes[i])));
    json_object_set_new(o, "queued",
                        json_integer((json_int_t)gauge_value(r, "agora_saga_queued", NULL, NULL)));
    return o;
}

static json_t *projections_json(struct ag_projector *pr, uint64_t *max_lag)
{
    json_t *a = json_array();
    *max_lag = 0;
    for (size_t i = 0; pr && i < ag_projector_count(pr); i++) {
        struct ag_projection_stats s;
        ag_projector_stats(pr, i, &s);
        if (s.lag_events > *max_lag) *max_lag = s.lag_events;
        const char *status = s.failed                           ? "failed"
                             : ag_projector_usable(pr, i, NULL) ? "running"
                                                                : "rebuilding";
        json_array_append_new(a, json_pack("{s:s, s:I, s:f, s:s}", "name", s.name, "lagEvents",
                                           (json_int_t)s.lag_events, "lagSeconds", s.lag_seconds,
                                           "status", status));
    }
    return a;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-th percentile (nearest rank, p in 0..100) of sorted ns values, in ms. */
static double pct_ms(const uint64_t *sorted, size_t n, size_t p)
{
    size_t i = (n - 1) * p / 100;
    return (double)sorted[i] / 1e6;
}

struct placed {
    const char *stream; /* borrowed from the page */
    size_t len;
    uint64_t time_ns;
};

static bool type_is(const struct ag_event *e, const char *t)
{
    return e->type_len == strlen(t) && memcmp(e->type, t, e->type_len) == 0;
}

/* The log's tail: orders/s and confirm latency percentiles (see the top). */
static json_t *log_tail_json(struct ag_store *st, uint64_t now_ns, json_t **latency)
{
    struct ag_event_page pg = {0};
    double rate = 0;
    *latency = json_pack("{s:n, s:n, s:n, s:n, s:i}", "p50", "p90", "p99", "max", "samples", 0);
    if (ag_store_read_all(st, UINT64_MAX, AG_READ_BACKWARD, STATS_WINDOW, &pg, NULL) || !pg.count)
        return ag_event_page_free(&pg), json_real(0);
    struct placed *pl = ag_calloc(MAX_PLACED, sizeof *pl);
    uint64_t *lat = ag_calloc(MAX_PLACED, sizeof *lat);
    size_t np = 0, nl = 0, recent = 0;
    uint64_t since = now_ns - (uint64_t)RATE_SECONDS * 1000000000ull;
    uint64_t oldest = pg.events[pg.count - 1].time_ns; /* backward: the last is the oldest */
    if (pg.count == STATS_WINDOW && oldest > since) since = oldest;
    for (size_t i = pg.count; pl && lat && i-- > 0;) { /* oldest first */
        const struct ag_event *e = &pg.events[i];
        if (type_is(e, AG_EV_ORDER_PLACED)) {
            if (e->time_ns >= since) recent++;
            if (np < MAX_PLACED) pl[np++] = (struct placed){e->stream, e->stream_len, e->time_ns};
        } else if (type_is(e, AG_EV_ORDER_CONFIRMED) && nl < MAX_PLACED) {
            for (size_t k = np; k-- > 0;)
                if (pl[k].len == e->stream_len &&
                    memcmp(pl[k].stream, e->stream, e->stream_len) == 0) {
                    lat[nl++] = e->time_ns > pl[k].time_ns ? e->time_ns - pl[k].time_ns : 0;
                    break;
                }
        }
    }
    if (now_ns > since) rate = (double)recent / ((double)(now_ns - since) / 1e9);
    if (nl) {
        qsort(lat, nl, sizeof *lat, cmp_u64);
        json_decref(*latency);
        *latency = json_pack("{s:f, s:f, s:f, s:f, s:I}", "p50", pct_ms(lat, nl, 50), "p90",
                             pct_ms(lat, nl, 90), "p99", pct_ms(lat, nl, 99), "max",
                             pct_ms(lat, nl, 100), "samples", (json_int_t)nl);
    }
    ag_free(pl);
    ag_free(lat);
    ag_event_page_free(&pg);
    return json_real(rate);
}

json_t *svc_console_stats(struct svc_env *env)
{
    uint64_t now = ag_clock_now(env->clock ? env->clock : ag_clock_system());
    char when[40];
    ag_time_rfc3339(now, when);
    json_t *latency = NULL;
    json_t *rate = log_tail_json(env->store, now, &latency);
    struct ag_store_stats ss = {0};
    ag_store_stats(env->store, &ss);
    uint64_t max_lag = 0;
    json_t *projs = projections_json(env->projector, &max_lag);
    return json_pack("{s:s, s:I, s:{s:I, s:o}, s:o, s:o, s:o, s:I, s:{s:I, s:I, s:I}}", "time",
                     when, "timeUnixMs", (json_int_t)(now / 1000000), "orders", "placed",
                     (json_int_t)orders_accepted(env->metrics), "perSecond", rate,
                     "confirmLatencyMs", latency, "sagas", sagas_json(env->metrics), "projections",
                     projs, "maxLagEvents", (json_int_t)max_lag, "store", "events",
                     (json_int_t)ss.events, "streams", (json_int_t)ss.streams, "bytes",
                     (json_int_t)ss.bytes);
}

/* GET /admin/stats */
int svc_console_stats_get(struct svc_job *j)
{
    json_t *s = svc_console_stats(j->env);
    if (!s) return AG_ENOMEM;
    return svc_ok(j, 200, s);
}
