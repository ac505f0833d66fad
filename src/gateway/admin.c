/* Admin endpoints: /admin/upstreams (every cluster with its endpoints' health,
 * ejections, in-flight counts and breaker), /admin/circuit-breakers (just the
 * breakers) and /admin/config (generation and routes of the running snapshot). */
#include "gateway/internal.h"

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

int ag__gw_admin_config(struct ag_http_req *req, void *ud)
{
    struct gw_conf *c = conf_ref(ud);
    json_t *routes = json_array();
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct gw_route *r = &c->routes[i];
        json_t *d = json_array();
        for (size_t k = 0; k < r->ndests; k++)
            json_array_append_new(d, json_pack("{s:s, s:i}", "host",
                                               ag_mesh_cluster_name(r->dests[k].cluster), "weight",
                                               (int)r->dests[k].weight));
        json_array_append_new(routes, json_pack("{s:s, s:o, s:b, s:I}", "name", r->name,
                                                "destinations", d, "auth", r->auth_required,
                                                "timeoutMs", (json_int_t)r->timeout_ms));
    }
    json_t *body =
        json_pack("{s:I, s:o}", "generation", (json_int_t)c->generation, "routes", routes);
    ag__gw_conf_unref(c);
    return ag_http_respond_json(req, 200, body);
}
