/*
 * Backends for frontends: GET /bff/web/home and /bff/mobile/home.
 *
 * The caller must present a valid token (the user is its sub). Three calls go
 * out in parallel through the mesh — customers (the user), catalog
 * (recommendations) and ordering (recent orders) — each with its own timeout.
 * When one fails the answer still comes, with that part replaced by a fallback
 * (null or []), "partial": true and the failed parts listed in "degraded". The
 * web answer is richer (email, 10 products, 5 orders with item counts); the
 * mobile one smaller (5 products, 3 orders).
 */
#include <stdio.h>
#include <string.h>

#include "gateway/internal.h"

enum { CUSTOMERS, CATALOG, ORDERING, NCALLS };
static const char *const call_names[NCALLS] = {"customers", "catalog", "ordering"};

struct bctx {
    struct ag_gateway *gw;
    struct gw_loop *loop;
    void *conf_token;
    struct ag_http_req *req;
    bool mobile;
    int pending;           /* calls not answered yet */
    json_t *parts[NCALLS]; /* parsed answers; NULL = failed */
    struct ag_mesh_call calls[NCALLS];
    char paths[NCALLS][512];
};

/* Expand {user} and {limit} in a path template. */
static void expand(char *out, size_t cap, const char *tpl, const char *user, int limit)
{
    size_t o = 0;
    while (*tpl && o + 1 < cap) {
        if (!strncmp(tpl, "{user}", 6)) {
            for (const char *u = user; *u && o + 4 < cap; u++) {
                unsigned char ch = (unsigned char)*u;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || strchr("-._~", ch))
                    out[o++] = (char)ch;
                else
                    o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
            }
            tpl += 6;
        } else if (!strncmp(tpl, "{limit}", 7)) {
            o += (size_t)snprintf(out + o, cap - o, "%d", limit);
            tpl += 7;
        } else {
            out[o++] = *tpl++;
        }
    }
    out[o < cap ? o : cap - 1] = '\0';
}

static json_t *pick(json_t *o, const char *const *keys, size_t n)
{
    json_t *r = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (v) json_object_set(r, keys[i], v);
    }
    return r;
}

static json_t *shape_list(json_t *src, const char *const *keys, size_t nkeys, size_t max)
{
    json_t *items = json_is_array(src) ? src : json_object_get(src, "items");
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(items, i, v)
    {
        if (i >= max) break;
        json_t *e = pick(v, keys, nkeys);
        json_t *its = json_object_get(v, "items");
        if (json_is_array(its) && nkeys > 3)
            json_object_set_new(e, "itemCount", json_integer((json_int_t)json_array_size(its)));
        json_array_append_new(out, e);
    }
    return out;
}

static json_t *shape(struct bctx *b)
{
    static const char *const web_user[] = {"id", "name", "email", "tier"}, *const mob_user[] = {
                                                                               "id", "name"};
    static const char *const prod[] = {"id", "name", "price", "sku"};
    static const char *const web_ord[] = {"id", "status", "total", "createdAt"},
                             *const mob_ord[] = {"id", "status", "total"};
    json_t *degraded = json_array();
    for (int i = 0; i < NCALLS; i++)
        if (!b->parts[i]) json_array_append_new(degraded, json_string(call_names[i]));
    json_t *user = b->parts[CUSTOMERS] ? pick(b->parts[CUSTOMERS], b->mobile ? mob_user : web_user,
                                              b->mobile ? 2 : 4)
                                       : json_null();
    json_t *rec = b->parts[CATALOG]
                      ? shape_list(b->parts[CATALOG], prod, b->mobile ? 3 : 4, b->mobile ? 5 : 10)
                      : json_array();
    json_t *ord = b->parts[ORDERING] ? shape_list(b->parts[ORDERING], b->mobile ? mob_ord : web_ord,
                                                  b->mobile ? 3 : 4, b->mobile ? 3 : 5)
                                     : json_array();
    bool partial = json_array_size(degraded) > 0;
    return json_pack("{s:s, s:o, s:o, s:o, s:b, s:o}", "client", b->mobile ? "mobile" : "web",
                     "user", user, "recommendations", rec, "recentOrders", ord, "partial", partial,
                     "degraded", degraded);
}

static void bff_finish(struct bctx *b)
{
    ag_http_respond_json(b->req, 200, shape(b));
    for (int i = 0; i < NCALLS; i++) json_decref(b->parts[i]);
    ag__gw_loop_release(b->loop, b->conf_token);
    ag_free(b);
}

struct bslot {
    struct bctx *b;
    int which;
};

static void on_part(const struct ag_mesh_result *res, void *ud)
{
    struct bslot *s = ud;
    struct bctx *b = s->b;
    if (res->rc == 0 && res->resp->status == 200)
        b->parts[s->which] =
            json_loadb(res->resp->body, res->resp->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (--b->pending == 0) bff_finish(b);
}

static void start_calls(struct bctx *b, const struct gw_conf *conf, const struct gw_principal *who)
{
    b->pending = 1; /* held while starting */
    for (int i = 0; i < NCALLS; i++) {
        const struct gw_bffcall *bc = &conf->bff[i];
        if (!bc->cluster) continue;
        int limit = i == CATALOG ? (b->mobile ? 5 : 10) : (b->mobile ? 3 : 5);
        expand(b->paths[i], sizeof b->paths[i], bc->path, who->sub, limit);
        struct bslot *s = ag_http_req_alloc(b->req, sizeof *s);
        if (!s) continue;
        *s = (struct bslot){b, i};
        struct ag_mesh_call *c = &b->calls[i];
        *c = (struct ag_mesh_call){.cluster = bc->cluster, .subset = -1};
        c->req.method = "GET";
        c->req.path = b->paths[i];
        c->req.timeout_ms = bc->timeout_ms;
        ag_http_propagate(b->req, &c->req);
        /* the verified identity, as the proxy passes it: the services filter by it */
        struct ag_http_header *h = ag_http_req_alloc(b->req, 3 * sizeof *h);
        char *sig = b->gw->opts.mesh_key ? ag_http_req_alloc(b->req, AG_USER_SIG_MAX) : NULL;
        if (h) {
            h[0] = (struct ag_http_header){"x-user-id", who->sub};
            h[1] = (struct ag_http_header){"x-user-roles", who->roles_csv};
            c->req.headers = h;
            c->req.nheaders = 2;
        }
        int64_t now = (int64_t)(ag_clock_now(b->gw->clock) / 1000000000u);
        if (h && sig &&
            !ag_http_user_sig(b->gw->opts.mesh_key, now, who->sub, who->roles_csv, "GET",
                              b->paths[i], sig))
            h[c->req.nheaders++] = (struct ag_http_header){"x-user-sig", sig};
        b->pending++;
        if (ag_mesh_call_start(ag__gw_loop_pools(b->loop), c, on_part, s)) b->pending--;
    }
    if (--b->pending == 0) bff_finish(b);
}

int ag__gw_bff(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    const char *client = ag_http_req_param(req, "client");
    bool mobile = client && !strcmp(client, "mobile");
    if (!mobile && (!client || strcmp(client, "web")))
        return ag__gw_problem(req, 404, "BFF clients are web and mobile");
    struct gw_loop *l = ag__gw_loop_get(gw, req);
    if (!l) return ag__gw_problem(req, 503, "the gateway is shutting down");
    struct bctx *b = ag_calloc(1, sizeof *b);
    if (!b) return ag__gw_problem(req, 503, "out of memory");
    *b = (struct bctx){.gw = gw, .loop = l, .req = req, .mobile = mobile};
    struct gw_conf *conf = ag__gw_loop_acquire(l, &b->conf_token);
    if (!conf) {
        ag_free(b);
        return ag__gw_problem(req, 503, "out of memory");
    }
    struct gw_principal who;
    bool has = false;
    if (ag__gw_authenticate(gw, l, conf, req, &who, &has) == 0 && !has) {
        ag_http_resp_header(req, "WWW-Authenticate", "Bearer");
        ag__gw_problem(req, 401, "a bearer token is required");
    }
    if (!has) {
        ag__gw_loop_release(l, b->conf_token);
        ag_free(b);
        return 0;
    }
    start_calls(b, conf, &who);
    return 0;
}
