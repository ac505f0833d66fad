/*
 * The gateway of an `agora cluster up` (opts.cluster_status set) exports the
 * supervisor's autoscaling and restarts on its own /metrics (admin, like the rest):
 *
 *   agora_cluster_instances{context}                  gauge: instances in rotation
 *   agora_cluster_utilisation{context}                gauge: load / (instances * target)
 *   agora_cluster_scale_decisions_total{context,direction}  counter: up / down
 *   agora_cluster_member_restarts_total{member}       counter: starts after the first
 *
 * `context` is the group of the --contexts spec as written (one context's name when
 * it runs alone, "customers+catalog" for a group): decisions are taken per group.
 *
 * Why the gateway and not the supervisor: the supervisor serves no HTTP (it writes
 * DIR/status.json each second, cmd_cluster.c says why), the gateway already answers
 * GET /admin/cluster from that file under the same admin check as /metrics, and it
 * is the one address a cluster's scraper needs. So this is a registry collector:
 * at each scrape it reads status.json and copies the figures into series.
 *
 * Counters. The supervisor counts since it started; a new supervisor (another
 * supervisor.pid in the file) counts from 0 again. The series here only grow: each
 * scrape adds what the supervisor's count grew by since the last one, counting a
 * new supervisor's figures from 0. (The gateway is a member: a new supervisor also
 * starts a new gateway, so in practice its counters restart with it.)
 */
#include <jansson.h>
#include <string.h>

#include "gateway/internal.h"

#define SEEN_MAX 256

struct clm_seen {
    struct ag_obs_series *s;
    double last; /* the supervisor's figure at the last scrape */
};

struct gw_cluster_metrics {
    struct ag_obs_registry *reg;
    const char *path; /* borrowed: the gateway's options */
    struct ag_obs_family *instances, *util, *decisions, *restarts;
    json_int_t supervisor; /* the pid whose figures `seen` holds */
    struct clm_seen seen[SEEN_MAX];
    size_t nseen;
};

/* advance counter s to the supervisor's figure v */
static void counter_to(struct gw_cluster_metrics *m, struct ag_obs_series *s, double v)
{
    struct clm_seen *e = NULL;
    for (size_t i = 0; i < m->nseen && !e; i++)
        if (m->seen[i].s == s) e = &m->seen[i];
    if (!e && m->nseen < SEEN_MAX) e = &m->seen[m->nseen++], e->s = s, e->last = 0;
    if (!e || v < 0) return;
    double d = v >= e->last ? v - e->last : v; /* less than before: counted from 0 again */
    if (d > 0) ag_obs_counter_add(s, (uint64_t)d);
    e->last = v;
}

static struct ag_obs_series *series(struct ag_obs_family *f, const char *a, const char *b)
{
    const char *values[] = {a, b};
    struct ag_obs_series *s = NULL;
    return f && ag_obs_series_get(f, values, &s) == 0 ? s : NULL;
}

static void groups(struct gw_cluster_metrics *m, json_t *st)
{
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(st, "groups"), i, g)
    {
        const char *name = json_string_value(json_object_get(g, "name"));
        if (!name) continue;
        struct ag_obs_series *s = series(m->instances, name, NULL);
        if (s) ag_obs_gauge_set(s, json_number_value(json_object_get(g, "instances")));
        if ((s = series(m->util, name, NULL)))
            ag_obs_gauge_set(s, json_number_value(json_object_get(g, "utilisation")));
        if ((s = series(m->decisions, name, "up")))
            counter_to(m, s, json_number_value(json_object_get(g, "scaleUps")));
        if ((s = series(m->decisions, name, "down")))
            counter_to(m, s, json_number_value(json_object_get(g, "scaleDowns")));
    }
}

static void collect(void *ud)
{
    struct gw_cluster_metrics *m = ud;
    json_t *st = json_load_file(m->path, 0, NULL);
    if (!json_is_object(st)) {
        json_decref(st); /* being written, or no supervisor yet: the last figures stay */
        return;
    }
    json_int_t sup = json_integer_value(json_object_get(json_object_get(st, "supervisor"), "pid"));
    if (sup != m->supervisor)
        for (size_t i = 0; i < m->nseen; i++) m->seen[i].last = 0;
    m->supervisor = sup;
    groups(m, st);
    size_t i;
    json_t *mem;
    json_array_foreach(json_object_get(st, "members"), i, mem)
    {
        const char *name = json_string_value(json_object_get(mem, "name"));
        struct ag_obs_series *s = name ? series(m->restarts, name, NULL) : NULL;
        if (s) counter_to(m, s, json_number_value(json_object_get(mem, "restarts")));
    }
    json_decref(st);
}

static int define(struct gw_cluster_metrics *m)
{
    static const char *const ctx[] = {"context", "direction"}, *const member[] = {"member"};
    static const struct ag_obs_family_spec
        instances = {AG_OBS_GAUGE, "agora_cluster_instances",
                     "agora cluster: instances of a group of contexts in rotation (not parked).", 1,
                     ctx},
        util = {AG_OBS_GAUGE, "agora_cluster_utilisation",
                "agora cluster: a group's smoothed in-flight load over its instances times "
                "--target-inflight (over 1: it scales up).",
                1, ctx},
        decisions = {AG_OBS_COUNTER, "agora_cluster_scale_decisions_total",
                     "agora cluster: autoscaling decisions, by group and direction (up, down).", 2,
                     ctx},
        restarts = {AG_OBS_COUNTER, "agora_cluster_member_restarts_total",
                    "agora cluster: members started again by the supervisor after they exited.", 1,
                    member};
    int rc = ag_obs_family_define(m->reg, &instances, &m->instances);
    if (!rc) rc = ag_obs_family_define(m->reg, &util, &m->util);
    if (!rc) rc = ag_obs_family_define(m->reg, &decisions, &m->decisions);
    if (!rc) rc = ag_obs_family_define(m->reg, &restarts, &m->restarts);
    return rc;
}

int ag__gw_cluster_metrics_start(struct ag_gateway *gw)
{
    if (!gw->opts.cluster_status || !gw->metrics) return 0;
    struct gw_cluster_metrics *m = ag_calloc(1, sizeof *m);
    if (!m) return AG_ENOMEM;
    m->reg = gw->metrics;
    m->path = gw->opts.cluster_status;
    int rc = define(m);
    if (!rc) rc = ag_obs_registry_collector(gw->metrics, collect, m);
    if (rc) return ag_free(m), rc;
    gw->cluster_metrics = m;
    return 0;
}

void ag__gw_cluster_metrics_stop(struct ag_gateway *gw)
{
    struct gw_cluster_metrics *m = gw->cluster_metrics;
    if (!m) return;
    ag_obs_registry_collector_remove(gw->metrics, collect, m);
    ag_free(m);
    gw->cluster_metrics = NULL;
}
