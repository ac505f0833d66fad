/*
 * The platform's monitor: twice a second it turns the projector's, the saga
 * engine's and the store's figures into Prometheus metrics (the sources keep
 * plain counters; only this thread touches the gauges it sets).
 *   agora_projection_lag_events{projection}    events not yet projected
 *   agora_projection_lag_seconds{projection}   age of the oldest unprojected event
 *   agora_projection_checkpoint{projection}    next position it will read
 *   agora_saga_sagas{outcome}                  started/completed/compensated/failed since start
 *   agora_saga_queued                          sagas waiting for a worker
 *   agora_store_events, agora_store_streams, agora_store_commits, agora_store_bytes
 *   agora_store_index_bytes, agora_store_index_tables   stream index memory, on-disk tables
 *   agora_store_index_flush_waits               commits held by a memtable flush (back-pressure)
 *   agora_es_cache_bytes, agora_es_cache_entries        the aggregate cache
 *   agora_process_heap_bytes{state}             malloc's heap (glibc mallinfo2): `in_use`
 *       (allocated, mmap'd blocks included) and `free` (held by the arenas: the
 *       slack of per-thread arenas and fragmentation)
 *   agora_process_heap_trims_total              times the monitor gave free pages back
 *   agora_process_heap_pause_seconds{op}        how long each heap read / trim took
 *
 * Heap trimming (issue 19). What agora holds is bounded (the stream index, the
 * aggregate cache, the read models' page caches all have caps), yet glibc keeps
 * what is freed in its arenas, so RSS would follow each arena's high-water mark
 * and creep up over a long run. When the arenas hold more than HEAP_SLACK free
 * and more than a quarter of what is in use, the monitor trims (malloc_trim: the
 * free pages go back to the system), at most every HEAP_TRIM_EVERY_MS. The heap
 * is read (mallinfo2) every HEAP_READ_EVERY_MS only, not on every tick: it walks
 * every arena's free lists under that arena's lock, and twice a second it was 1%
 * of the server's CPU under load (issue 11's profile), stalling allocators too;
 * how long each read and trim took is exported.
 *   agora_waiting_requests                     GETs parked by Prefer: wait (wait.c)
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "services/internal.h"

#define MAX_PROJ           16
#define HEAP_SLACK         ((size_t)8 << 20)
#define HEAP_TRIM_EVERY_MS 30000
/* mallinfo2 walks every arena's bins under its lock: 10-50 ms with ~100 MB free
 * in the arenas in the soak (agora_process_heap_pause_seconds{op="read"}), which
 * every 5 s held ~1% of the orders behind it, right at the p99; every 30 s it is
 * ~0.15% */
#define HEAP_READ_EVERY_MS 30000

struct gauges {
    struct ag_obs_series *lag_events[MAX_PROJ], *lag_seconds[MAX_PROJ], *checkpoint[MAX_PROJ];
    struct ag_obs_series *sagas[4], *queued;
    struct ag_obs_series *store[4];
    struct ag_obs_series *index[3], *cache[2];
    struct ag_obs_series *heap[2], *trims, *pause[2];
    int64_t trimmed_ms;   /* monotonic ms of the last trim (0 = never) */
    int64_t heap_read_ms; /* of the last heap reading (0 = never) */
    struct ag_obs_series *waiting;
};

static struct ag_obs_series *series(struct ag_obs_registry *r, const char *name, const char *help,
                                    const char *label, const char *value)
{
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    const char *labels[] = {label};
    const char *values[] = {value};
    struct ag_obs_family_spec spec = {AG_OBS_GAUGE, name, help, label ? 1 : 0, labels};
    if (ag_obs_family_define(r, &spec, &f) == 0) ag_obs_series_get(f, label ? values : NULL, &s);
    return s;
}

static void make_gauges(struct ag_platform *p, struct gauges *g)
{
    memset(g, 0, sizeof *g);
    struct ag_obs_registry *r = p->metrics;
    size_t n = ag_projector_count(p->projector);
    for (size_t i = 0; i < n && i < MAX_PROJ; i++) {
        struct ag_projection_stats st;
        ag_projector_stats(p->projector, i, &st);
        g->lag_events[i] = series(r, "agora_projection_lag_events", "Events not yet projected.",
                                  "projection", st.name);
        g->lag_seconds[i] = series(r, "agora_projection_lag_seconds",
                                   "Age of the oldest unprojected event.", "projection", st.name);
        g->checkpoint[i] =
            series(r, "agora_projection_checkpoint", "Next $all position the projection reads.",
                   "projection", st.name);
    }
    static const char *const outcomes[] = {"started", "completed", "compensated", "failed"};
    for (int i = 0; i < 4; i++)
        g->sagas[i] =
            series(r, "agora_saga_sagas", "Sagas by outcome since start.", "outcome", outcomes[i]);
    g->queued = series(r, "agora_saga_queued", "Sagas waiting for a worker.", NULL, NULL);
    g->store[0] = series(r, "agora_store_events", "Events in the store.", NULL, NULL);
    g->store[1] = series(r, "agora_store_streams", "Streams with events.", NULL, NULL);
    g->store[2] =
        series(r, "agora_store_commits", "Group commits (fdatasync) since open.", NULL, NULL);
    g->store[3] = series(r, "agora_store_bytes", "Bytes of event log.", NULL, NULL);
    g->index[0] = series(r, "agora_store_index_bytes", "Memory of the stream index.", NULL, NULL);
    g->index[1] = series(r, "agora_store_index_tables", "On-disk stream index tables.", NULL, NULL);
    g->index[2] =
        series(r, "agora_store_index_flush_waits",
               "Commits held while the previous memtable was still being written.", NULL, NULL);
    g->cache[0] =
        series(r, "agora_es_cache_bytes", "Estimated bytes of cached aggregates.", NULL, NULL);
    g->cache[1] = series(r, "agora_es_cache_entries", "Cached aggregates.", NULL, NULL);
    static const char *const heap_help = "Bytes of malloc's heap, allocated or free in its arenas.";
    g->heap[0] = series(r, "agora_process_heap_bytes", heap_help, "state", "in_use");
    g->heap[1] = series(r, "agora_process_heap_bytes", heap_help, "state", "free");
    struct ag_obs_family *f;
    struct ag_obs_family_spec trims = {AG_OBS_COUNTER, "agora_process_heap_trims_total",
                                       "Times free heap pages were given back to the system.", 0,
                                       NULL};
    if (ag_obs_family_define(r, &trims, &f) == 0) ag_obs_series_get(f, NULL, &g->trims);
    static const char *const op_label[] = {"op"}, *const ops[] = {"read", "trim"};
    struct ag_obs_family_spec pause = {
        AG_OBS_HISTOGRAM, "agora_process_heap_pause_seconds",
        "How long reading (mallinfo2) or trimming (malloc_trim) the heap took: both hold "
        "each malloc arena's lock while they walk it.",
        1, op_label};
    for (int i = 0; i < 2; i++)
        if (ag_obs_family_define(r, &pause, &f) == 0)
            ag_obs_series_get(f, (const char *const[]){ops[i]}, &g->pause[i]);
    g->waiting =
        series(r, "agora_waiting_requests",
               "Requests parked by Prefer: wait until their resource changes.", NULL, NULL);
}

/* Trim the heap when the arenas hold too much free (see the top of the file). */
static void heap_tick(struct gauges *g)
{
    int64_t now = (int64_t)(ag_clock_mono(ag_clock_system()) / 1000000);
    if (g->heap_read_ms && now - g->heap_read_ms < HEAP_READ_EVERY_MS) return;
    g->heap_read_ms = now ? now : 1;
    struct ag_heap_stats hs;
    uint64_t t0 = ag_clock_mono(ag_clock_system());
    ag_heap_stats(&hs);
    uint64_t t1 = ag_clock_mono(ag_clock_system());
    ag_obs_histogram_observe(g->pause[0], (double)(t1 - t0) / 1e9);
    if (ag_heap_trim_due(&hs, HEAP_SLACK, g->trimmed_ms, now, HEAP_TRIM_EVERY_MS)) {
        ag_heap_trim();
        ag_obs_histogram_observe(g->pause[1],
                                 (double)(ag_clock_mono(ag_clock_system()) - t1) / 1e9);
        g->trimmed_ms = now ? now : 1;
        ag_obs_counter_inc(g->trims);
    }
    ag_obs_gauge_set(g->heap[0], (double)hs.in_use);
    ag_obs_gauge_set(g->heap[1], (double)hs.free);
}

static void publish(struct ag_platform *p, struct gauges *g)
{
    size_t n = ag_projector_count(p->projector);
    for (size_t i = 0; i < n && i < MAX_PROJ; i++) {
        struct ag_projection_stats st;
        ag_projector_stats(p->projector, i, &st);
        ag_obs_gauge_set(g->lag_events[i], (double)st.lag_events);
        ag_obs_gauge_set(g->lag_seconds[i], st.lag_seconds);
        ag_obs_gauge_set(g->checkpoint[i], (double)st.checkpoint);
    }
    struct ag_saga_engine_stats ss;
    ag_saga_engine_stats(p->sagas, &ss);
    ag_obs_gauge_set(g->sagas[0], (double)ss.started);
    ag_obs_gauge_set(g->sagas[1], (double)ss.completed);
    ag_obs_gauge_set(g->sagas[2], (double)ss.compensated);
    ag_obs_gauge_set(g->sagas[3], (double)ss.failed);
    ag_obs_gauge_set(g->queued, (double)ss.queued);
    struct ag_store_stats st;
    ag_store_stats(p->store, &st);
    ag_obs_gauge_set(g->store[0], (double)st.events);
    ag_obs_gauge_set(g->store[1], (double)st.streams);
    ag_obs_gauge_set(g->store[2], (double)st.commits);
    ag_obs_gauge_set(g->store[3], (double)st.bytes);
    ag_obs_gauge_set(g->index[0], (double)st.index_bytes);
    ag_obs_gauge_set(g->index[1], (double)st.index_tables);
    ag_obs_gauge_set(g->index[2], (double)st.index_flush_waits);
    struct ag_es_repo_stats cs;
    ag_es_repo_stats(p->repo, &cs);
    ag_obs_gauge_set(g->cache[0], (double)cs.bytes);
    ag_obs_gauge_set(g->cache[1], (double)cs.entries);
    heap_tick(g);
    ag_obs_gauge_set(g->waiting, (double)svc_waiters_count(p->waiters));
}

static void *monitor_main(void *arg)
{
    struct ag_platform *p = arg;
    ag_thread_name("ag-monitor");
    struct gauges g;
    make_gauges(p, &g);
    pthread_mutex_lock(&p->monitor_lock);
    while (!p->monitor_stop) {
        pthread_mutex_unlock(&p->monitor_lock);
        publish(p, &g);
        pthread_mutex_lock(&p->monitor_lock);
        struct timespec ts;
        ag_deadline_mono_in_ms(&ts, 500);
        if (!p->monitor_stop) pthread_cond_timedwait(&p->monitor_cond, &p->monitor_lock, &ts);
    }
    pthread_mutex_unlock(&p->monitor_lock);
    return NULL;
}

int svc_monitor_start(struct ag_platform *p)
{
    pthread_mutex_init(&p->monitor_lock, NULL);
    ag_cond_init_mono(&p->monitor_cond); /* the tick is a duration */
    p->monitor_started = pthread_create(&p->monitor, NULL, monitor_main, p) == 0;
    return p->monitor_started ? 0 : AG_ENOMEM;
}

void svc_monitor_stop(struct ag_platform *p)
{
    if (!p->monitor_started) return;
    pthread_mutex_lock(&p->monitor_lock);
    p->monitor_stop = true;
    pthread_cond_signal(&p->monitor_cond);
    pthread_mutex_unlock(&p->monitor_lock);
    pthread_join(p->monitor, NULL);
    pthread_cond_destroy(&p->monitor_cond);
    pthread_mutex_destroy(&p->monitor_lock);
    p->monitor_started = false;
}
