/* Admin endpoints: /admin/upstreams (every cluster with its endpoints' health,
 * ejections, in-flight counts and breaker), /admin/circuit-breakers (just the
 * breakers), /admin/config (generation and routes of the running snapshot,
 * with their timeouts and rate limits), /admin/cluster (the members of the
 * `agora cluster up` this gateway fronts: the supervisor's DIR/status.json, which
 * it rewrites every second; read here per request, a few KB from the page cache,
 * with its age added, so a hung supervisor shows as stale; with a discovery
 * registry also its members under "registry"; without a supervisor the registry's
 * members alone),
 * and who may read them and /metrics: a caller whose token has the admin role.
 * A gateway with no jwt section has no principals: its admin endpoints answer
 * loopback (and Unix-socket) peers only. Refusals are logged and counted in
 * agora_authz_denied_total{reason}. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/internal.h"

static bool local_peer(struct ag_http_req *req)
{
    const char *peer = ag_http_req_peer(req);
    return peer &&
           (!strncmp(peer, "127.", 4) || !strncmp(peer, "[::1]", 5) || !strcmp(peer, "unix"));
}

static int refuse(struct ag_gateway *gw, struct ag_http_req *req, int status, const char *reason,
                  const char *sub)
{
    if (gw->denied) {
        struct ag_obs_series *s = NULL;
        const char *values[] = {reason};
        if (ag_obs_series_get(gw->denied, values, &s) == 0) ag_obs_counter_inc(s);
    }
    AG_WARN("authz.denied", AG_LS("sub", sub ? sub : "anonymous"),
            AG_LS("path", ag_http_req_path(req)), AG_LS("reason", reason), AG_LI("status", status));
    if (status == 401) ag_http_resp_header(req, "WWW-Authenticate", "Bearer");
    ag__gw_problem(req, status,
                   status == 401 ? "a bearer token is required"
                                 : "this operation needs the admin role");
    return 1;
}

void ag__gw_count_denied(struct ag_gateway *gw, const char *reason)
{
    struct ag_obs_series *s = NULL;
    const char *values[] = {reason};
    if (gw->denied && ag_obs_series_get(gw->denied, values, &s) == 0) ag_obs_counter_inc(s);
}

int ag__gw_require_admin(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    struct gw_loop *l = ag__gw_loop_get(gw, req);
    if (!l) return ag__gw_problem(req, 503, "the gateway is shutting down"), 1;
    void *token;
    struct gw_conf *conf = ag__gw_loop_acquire(l, &token);
    if (!conf) return ag__gw_problem(req, 503, "out of memory"), 1;
    int rc = 0;
    if (!conf->jwt.nissuers) {
        if (!local_peer(req)) rc = refuse(gw, req, 403, "not_local", NULL);
    } else {
        struct gw_principal who;
        bool has = false, admin = false;
        if (ag__gw_authenticate(gw, l, conf, req, &who, &has)) {
            ag__gw_count_denied(gw, "invalid_token");
            rc = 1; /* answered 401 */
        } else if (!has) {
            rc = refuse(gw, req, 401, "anonymous", NULL);
        } else {
            for (size_t i = 0; i < who.nroles; i++) admin |= !strcmp(who.roles[i], "admin");
            if (!admin) rc = refuse(gw, req, 403, "not_admin", who.sub);
        }
    }
    ag__gw_loop_release(l, token);
    return rc;
}

static struct gw_conf *conf_ref(struct ag_gateway *gw)
{
    pthread_mutex_lock(&gw->conf_lock);
    struct gw_conf *c = gw->conf;
    ag__gw_conf_ref(c);
    pthread_mutex_unlock(&gw->conf_lock);
    return c;
}

int ag__gw_admin_upstreams(struct ag_http_req *req, void *ud)
{
    if (ag__gw_require_admin(req, ud)) return 0;
    struct gw_conf *c = conf_ref(ud);
    json_t *arr = json_array();
    for (size_t i = 0; i < c->nclusters; i++)
        json_array_append_new(arr, ag_mesh_cluster_json(c->clusters[i]));
    json_t *body =
        json_pack("{s:I, s:o}", "generation", (json_int_t)c->generation, "upstreams", arr);
    ag__gw_conf_unref(c);
    return ag_http_respond_json(req, 200, body);
}

int ag__gw_admin_breakers(struct ag_http_req *req, void *ud)
{
    if (ag__gw_require_admin(req, ud)) return 0;
    struct gw_conf *c = conf_ref(ud);
    json_t *arr = json_array();
    for (size_t i = 0; i < c->nclusters; i++) {
        struct ag_cb *cb = ag_mesh_cluster_breaker(c->clusters[i]);
        if (!cb) {
            json_array_append_new(arr,
                                  json_pack("{s:s, s:s}", "name",
                                            ag_mesh_cluster_name(c->clusters[i]), "state", "off"));
            continue;
        }
        struct ag_cb_stats st;
        ag_cb_stats(cb, &st);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I}", "name",
                                             ag_mesh_cluster_name(c->clusters[i]), "state",
                                             ag_cb_state_name(st.state), "consecutiveFailures",
                                             (json_int_t)st.consecutive_failures, "timesOpened",
                                             (json_int_t)st.times_opened));
    }
    ag__gw_conf_unref(c);
    return ag_http_respond_json(req, 200, json_pack("{s:o}", "breakers", arr));
}

void ag__gw_breakers_collect(void *ud)
{
    struct ag_gateway *gw = ud;
    struct gw_conf *c = conf_ref(gw);
    for (size_t i = 0; i < c->nclusters; i++) {
        struct ag_cb *cb = ag_mesh_cluster_breaker(c->clusters[i]);
        if (cb)
            ag_obs_breaker_state(gw->metrics, "gateway", ag_mesh_cluster_name(c->clusters[i]),
                                 (int)ag_cb_state(cb));
    }
    ag__gw_conf_unref(c);
}

int ag__gw_admin_config(struct ag_http_req *req, void *ud)
{
    if (ag__gw_require_admin(req, ud)) return 0;
    struct gw_conf *c = conf_ref(ud);
    json_t *routes = json_array();
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct gw_route *r = &c->routes[i];
        json_t *d = json_array();
        for (size_t k = 0; k < r->ndests; k++)
            json_array_append_new(d, json_pack("{s:s, s:i}", "host",
                                               ag_mesh_cluster_name(r->dests[k].cluster), "weight",
                                               (int)r->dests[k].weight));
        json_t *route = json_pack("{s:s, s:o, s:b, s:I}", "name", r->name, "destinations", d,
                                  "auth", r->auth_required, "timeoutMs", (json_int_t)r->timeout_ms);
        if (r->limiter) /* the console's resilience page shows it */
            json_object_set_new(route, "rateLimit",
                                json_pack("{s:I, s:I, s:i}", "requests", (json_int_t)r->rate.limit,
                                          "perMs", (json_int_t)(r->rate.period_ns / 1000000),
                                          "burst", (int)r->rate.burst));
        json_array_append_new(routes, route);
    }
    json_t *body =
        json_pack("{s:I, s:o}", "generation", (json_int_t)c->generation, "routes", routes);
    ag__gw_conf_unref(c);
    return ag_http_respond_json(req, 200, body);
}

#define CLUSTER_STATUS_MAX (1u << 20)
#define CLUSTER_STALE_MS   5000

/* The status file's JSON, or NULL with *status / detail saying why. */
static json_t *read_cluster_status(const char *path, uint64_t now_ns, int *status, char *why,
                                   size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size > (off_t)CLUSTER_STATUS_MAX) {
        snprintf(why, n, "the cluster's status (%s) cannot be read: %s", path,
                 fd < 0 ? strerror(errno) : "too large");
        if (fd >= 0) close(fd);
        *status = 503;
        return NULL;
    }
    char *buf = ag_malloc((size_t)st.st_size + 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    json_t *j = got >= 0 ? json_loadb(buf, (size_t)got, 0, NULL) : NULL;
    ag_free(buf);
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(why, n, "the cluster's status (%s) is being written or damaged", path);
        *status = 503;
        return NULL;
    }
    uint64_t mtime_ms =
        (uint64_t)st.st_mtim.tv_sec * 1000u + (uint64_t)st.st_mtim.tv_nsec / 1000000u;
    uint64_t now_ms = now_ns / 1000000u, age = now_ms > mtime_ms ? now_ms - mtime_ms : 0;
    json_object_set_new(j, "ageMs", json_integer((json_int_t)age));
    json_object_set_new(j, "stale", json_boolean(age > CLUSTER_STALE_MS));
    return j;
}

int ag__gw_admin_cluster(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    if (ag__gw_require_admin(req, ud)) return 0;
    if (!gw->opts.cluster_status && !gw->disc)
        return ag__gw_problem(req, 404,
                              "this gateway fronts no `agora cluster` (agora cluster up starts "
                              "its gateway with --cluster-status) and no destinationRule uses "
                              "discovery");
    if (!gw->opts.cluster_status) /* the registry's members alone */
        return ag_http_respond_json(req, 200, ag_disc_members_json(gw->disc));
    int status = 0;
    char why[1200];
    json_t *j = read_cluster_status(gw->opts.cluster_status, ag_clock_now(gw->clock), &status, why,
                                    sizeof why);
    if (!j) return ag__gw_problem(req, status, why);
    if (gw->disc) json_object_set_new(j, "registry", ag_disc_members_json(gw->disc));
    return ag_http_respond_json(req, 200, j);
}
