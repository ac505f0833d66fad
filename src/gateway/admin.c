/* Admin endpoints: /admin/upstreams (every cluster with its endpoints' health,
 * ejections, in-flight counts and breaker), /admin/circuit-breakers (just the
 * breakers), /admin/config (generation and routes of the running snapshot,
 * with their timeouts and rate limits), /admin/cluster (the registry's members
 * when a destinationRule uses discovery),
 * and who may read them and /metrics: a caller whose token has the admin role.
 * A gateway with no jwt section has no principals: its admin endpoints answer
 * loopback (and Unix-socket) peers only. Refusals are logged and counted in
 * agora_authz_denied_total{reason}. */
#include <string.h>

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

int ag__gw_admin_cluster(struct ag_http_req *req, void *ud)
{
    if (ag__gw_require_admin(req, ud)) return 0;
    struct ag_gateway *gw = ud;
    if (!gw->disc)
        return ag__gw_problem(req, 404,
                              "no destinationRule uses discovery: this gateway reads no registry"),
               0;
    return ag_http_respond_json(req, 200, ag_disc_members_json(gw->disc));
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
