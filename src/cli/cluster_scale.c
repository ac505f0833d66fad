/*
 * `agora cluster`: autoscaling (the seeds' AutoScaler). A group of the --contexts
 * spec written `=MIN..MAX` has MAX instance slots (their ports in cluster.json);
 * MIN run at the start, the others are parked.
 *
 * The signal. Once a second the supervisor reads /metrics of each ready instance
 * (of every group: status.json shows the members' and groups' load), signed as the
 * gateway signs (x-user-sig under the mesh key): the requests being worked on are
 * agora_http_requests_in_flight less the scrape itself, the requests parked by
 * Prefer: wait (agora_waiting_requests: a long poll waits, it does not work) and
 * the event streams open (agora_sse_streams). It adds them up per group and
 * smooths the sum (load = (load + sum) / 2). The utilisation is load / (instances
 * * target), target being --target-inflight.
 *
 * The decisions, at most one per group per --cooldown: utilisation over 1 with
 * fewer than MAX instances starts a parked one (the gateway's endpoints are
 * rewritten and the gateway reloaded, SIGHUP, when it is ready); the load fitting
 * in one instance fewer at 70 % or less, with more than MIN, drains the last one:
 * it leaves the gateway's endpoints first (rewrite + SIGHUP: the gateway finishes
 * the requests it has with it), gets SIGTERM 2 s later (it drains what it still
 * has) and is parked when it exits. Decisions are JSON log lines (cluster.scale
 * with the group, from, to and why) and counted in status.json (groups[]: ups,
 * downs, load, utilisation, the last decision), which GET /admin/cluster exports
 * and the gateway turns into Prometheus series on its /metrics
 * (src/gateway/cluster_metrics.c: agora_cluster_instances, _utilisation,
 * _scale_decisions_total, _member_restarts_total).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/http.h"
#include "cli/cluster.h"

#define DRAIN_MS      2000u
#define DOWN_HEADROOM 0.7
#define METRICS_MAX   ((size_t)512 * 1024)

void cl_gateway_reload(struct cl_cluster *c)
{
    char *yaml = cl_gateway_yaml(c);
    int rc = yaml ? cl_write_file(c, "gateway.yaml", yaml, strlen(yaml)) : AG_ENOMEM;
    ag_free(yaml);
    for (size_t i = 0; i < c->n && !rc; i++) {
        struct cl_member *m = &c->m[i];
        if (m->role != CL_GATEWAY) continue;
        /* SIGHUP only once it serves (its handler is in place); else when it is ready */
        c->gw_reload = m->pid && !m->ready;
        if (m->pid && m->ready) kill(m->pid, SIGHUP);
    }
    if (rc) AG_WARN("cluster.gateway_not_reloaded", AG_LS("error", ag_strerror(rc)));
}

/* the value of an unlabelled series in a Prometheus text page, or -1 */
static double series(const char *page, const char *name)
{
    size_t n = strlen(name);
    for (const char *at = strstr(page, name); at; at = strstr(at + 1, name))
        if (at > page && at[-1] == '\n' && at[n] == ' ') return strtod(at + n + 1, NULL);
    return -1;
}

/* requests being worked on at instance m, or -1: in flight, less the scrape itself,
 * the requests parked by Prefer: wait (long polls) and the event streams open */
static double inflight(const struct cl_cluster *c, const struct cl_member *m, char *buf)
{
    char sig[AG_USER_SIG_MAX], headers[256];
    if (ag_http_user_sig(c->mesh, (int64_t)(cl_now_ms() / 1000u), "agora-cluster", "admin", "GET",
                         "/metrics", sig))
        return -1;
    snprintf(headers, sizeof headers,
             "x-user-id: agora-cluster\r\nx-user-roles: admin\r\nx-user-sig: %s\r\n", sig);
    if (cl_member_get(c, m, "/metrics", headers, buf, METRICS_MAX) != 200) return -1; /* mTLS */
    double v = series(buf, "agora_http_requests_in_flight");
    if (v < 0) return -1;
    double waiting = series(buf, "agora_waiting_requests"), sse = series(buf, "agora_sse_streams");
    v -= 1 + (waiting > 0 ? waiting : 0) + (sse > 0 ? sse : 0);
    return v > 0 ? v : 0;
}

static unsigned active(const struct cl_cluster *c, size_t gi)
{
    unsigned n = 0;
    for (size_t i = 0; i < c->n; i++)
        n +=
            c->m[i].role == CL_INSTANCE && c->m[i].gi == gi && !c->m[i].parked && !c->m[i].draining;
    return n;
}

/* the group's load now: the sum over its ready instances, or -1 when none answered */
static double group_sum(struct cl_cluster *c, size_t gi, char *buf)
{
    double sum = -1;
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        if (m->role != CL_INSTANCE || m->gi != gi) continue;
        m->inflight = m->ready ? inflight(c, m, buf) : -1;
        if (m->inflight >= 0 && !m->draining) sum = (sum < 0 ? 0 : sum) + m->inflight;
    }
    return sum;
}

static void decide(struct cl_cluster *c, size_t gi, int dir, unsigned n, uint64_t now)
{
    struct cl_group *g = &c->g[gi];
    struct cl_member *pick = NULL;
    for (size_t i = 0; i < c->n; i++) { /* up: the first parked slot; down: the last active */
        struct cl_member *m = &c->m[i];
        if (m->role != CL_INSTANCE || m->gi != gi) continue;
        if (dir > 0 && m->parked && !m->pid && !pick) pick = m;
        if (dir < 0 && !m->parked && !m->draining && !m->seed) pick = m;
    }
    if (!pick) return;
    snprintf(g->last, sizeof g->last, "%s %s: %u -> %u instances (load %.1f, target %.1f each)",
             dir > 0 ? "up" : "down", pick->name, n, dir > 0 ? n + 1 : n - 1, g->load, c->target);
    AG_INFO("cluster.scale", AG_LS("group", g->name), AG_LS("direction", dir > 0 ? "up" : "down"),
            AG_LS("member", pick->name), AG_LU("from", n), AG_LU("to", dir > 0 ? n + 1 : n - 1),
            AG_LD("load", g->load), AG_LD("target", c->target));
    g->changed_ms = now;
    if (dir > 0) {
        pick->parked = false; /* start_due starts it; it joins the gateway when ready */
        pick->next_start_ms = now;
        pick->started_ms = 0; /* a first start, not a restart */
        g->ups++;
    } else {
        pick->draining = true;
        pick->drain_ms = now + DRAIN_MS;
        g->downs++;
        cl_gateway_reload(c);
    }
}

void cl_autoscale(struct cl_cluster *c, uint64_t now)
{
    char *buf = NULL;
    for (size_t gi = 0; gi < c->ng; gi++) {
        struct cl_group *g = &c->g[gi];
        if (!buf && !(buf = ag_malloc(METRICS_MAX))) return;
        double sum = group_sum(c, gi, buf); /* every group's: status.json shows the load */
        if (sum < 0) continue;
        g->load = (g->load + sum) / 2;
        unsigned n = active(c, gi);
        g->util = n ? g->load / (n * c->target) : 0; /* agora_cluster_utilisation */
        if (g->min == g->max) continue;
        if (!n || now - g->changed_ms < c->cooldown_ms) continue;
        if (g->load > n * c->target && n < g->max)
            decide(c, gi, +1, n, now);
        else if (n > g->min && g->load <= (n - 1) * c->target * DOWN_HEADROOM)
            decide(c, gi, -1, n, now);
    }
    ag_free(buf);
}

void cl_drain_due(struct cl_cluster *c, uint64_t now)
{
    for (size_t i = 0; i < c->n; i++) {
        struct cl_member *m = &c->m[i];
        if (!m->draining || !m->drain_ms || now < m->drain_ms) continue;
        m->drain_ms = 0;
        m->parked = true; /* not started again when it exits */
        if (m->pid)
            kill(m->pid, SIGTERM);
        else
            m->draining = false;
    }
}
