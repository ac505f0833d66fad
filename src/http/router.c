/*
 * The router: a trie of path segments and the middleware chain.
 *
 * Each trie node has literal children (a sibling list) and at most one parameter
 * child ("{name}"); a node carries the routes (one per method) of the patterns
 * ending there. Matching walks the path's segments, trying the literal child
 * before the parameter child and backtracking, so "/orders/search" beats
 * "/orders/{id}". A path that matches a node with routes but none for its method
 * is a 405 whose Allow lists the node's methods; no node is a 404.
 *
 * Dispatch: route -> built-in on_request (request id, trace, metrics) -> user
 * on_request in order -> handler. on_response runs once per answer: user
 * middleware in reverse, then the built-ins (metrics, access log).
 */
#include <string.h>

#include "http/internal.h"

#define MAX_MW 16

struct ag__route {
    struct ag__route *next;                       /* next route on the node */
    char *method;                                 /* "GET", ... */
    char *pattern;                                /* as registered */
    ag_http_handler_fn fn;                        /* handler */
    void *ud;                                     /* borrowed */
    const char *param_names[AG__HTTP_MAX_PARAMS]; /* names in order, into pattern copies */
    char *names_mem;                              /* owned copy backing param_names */
    size_t nparams;                               /* parameters in the pattern */
    void *_Atomic metrics;                        /* observe.c's per-route cache (owned) */
};

struct rnode {
    char *seg;                /* literal segment; NULL for the parameter child */
    struct rnode *sib;        /* next literal sibling */
    struct rnode *kids;       /* literal children */
    struct rnode *param;      /* parameter child */
    struct ag__route *routes; /* routes ending here */
};

struct ag_http_router {
    struct rnode root;                    /* "/" */
    struct ag_http_middleware mw[MAX_MW]; /* user middleware */
    size_t nmw;                           /* in use */
    struct ag__observe *observe;          /* built-ins, or NULL */
    struct ag__route unmatched;           /* pseudo-route for metrics of 404/405 */
};

int ag_http_router_new(struct ag_http_router **out)
{
    struct ag_http_router *r = ag_calloc(1, sizeof *r);
    if (!r) return AG_ENOMEM;
    r->unmatched.method = "ANY";
    r->unmatched.pattern = "unmatched";
    *out = r;
    return 0;
}

static void route_free(struct ag__route *rt)
{
    ag_free(rt->method);
    ag_free(rt->pattern);
    ag_free(rt->names_mem);
    ag_free(rt->metrics);
    ag_free(rt);
}

static void node_free_children(struct rnode *n)
{
    while (n->routes) {
        struct ag__route *next = n->routes->next;
        route_free(n->routes);
        n->routes = next;
    }
    while (n->kids) {
        struct rnode *k = n->kids;
        n->kids = k->sib;
        node_free_children(k);
        ag_free(k->seg);
        ag_free(k);
    }
    if (n->param) {
        node_free_children(n->param);
        ag_free(n->param);
    }
}

void ag_http_router_free(struct ag_http_router *r)
{
    if (!r) return;
    node_free_children(&r->root);
    ag_free(r->unmatched.metrics);
    ag__http_observe_free(r->observe);
    ag_free(r);
}

const char *ag__http_route_pattern(const struct ag__route *rt)
{
    return rt->pattern;
}
void *_Atomic *ag__http_route_metrics_slot(struct ag__route *rt)
{
    return &rt->metrics;
}
const char *ag__http_route_method(const struct ag__route *rt)
{
    return rt->method;
}
struct ag__observe *ag__http_router_observer(struct ag_http_router *r)
{
    return r->observe;
}

/* ---- registration ---- */

static struct rnode *child_for(struct rnode *n, const char *seg, size_t len, bool param)
{
    if (param) {
        if (!n->param) n->param = ag_calloc(1, sizeof *n->param);
        return n->param;
    }
    for (struct rnode *k = n->kids; k; k = k->sib)
        if (strlen(k->seg) == len && memcmp(k->seg, seg, len) == 0) return k;
    struct rnode *k = ag_calloc(1, sizeof *k);
    if (!k) return NULL;
    if (!(k->seg = ag_strndup(seg, len))) {
        ag_free(k);
        return NULL;
    }
    k->sib = n->kids;
    n->kids = k;
    return k;
}

/* Walk/extend the trie along `pattern`, recording parameter names in rt. */
static int insert_path(struct ag_http_router *r, const char *pattern, struct ag__route *rt,
                       struct rnode **out)
{
    struct rnode *n = &r->root;
    const char *p = pattern + 1;
    char *names = rt->names_mem;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        bool param = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        if (len == 0 || (!param && memchr(p, '{', len)) || (param && len == 2)) return AG_EINVAL;
        if (param) {
            if (rt->nparams == AG__HTTP_MAX_PARAMS) return AG_EINVAL;
            memcpy(names, p + 1, len - 2);
            names[len - 2] = '\0';
            rt->param_names[rt->nparams++] = names;
            names += len - 1;
        }
        if (!(n = child_for(n, p, len, param))) return AG_ENOMEM;
        p += len + (slash ? 1 : 0);
        if (slash && !*p) return AG_EINVAL; /* trailing slash */
    }
    *out = n;
    return 0;
}

int ag_http_route(struct ag_http_router *r, const char *method, const char *pattern,
                  ag_http_handler_fn fn, void *ud)
{
    if (!r || !method || !*method || !pattern || pattern[0] != '/' || !fn) return AG_EINVAL;
    struct ag__route *rt = ag_calloc(1, sizeof *rt);
    if (!rt) return AG_ENOMEM;
    rt->method = ag_strdup(method);
    rt->pattern = ag_strdup(pattern);
    rt->names_mem = ag_malloc(strlen(pattern) + 1);
    rt->fn = fn;
    rt->ud = ud;
    struct rnode *n = NULL;
    int rc =
        (rt->method && rt->pattern && rt->names_mem) ? insert_path(r, pattern, rt, &n) : AG_ENOMEM;
    for (struct ag__route *o = n ? n->routes : NULL; !rc && o; o = o->next)
        if (strcmp(o->method, method) == 0) rc = AG_EEXISTS;
    if (rc) {
        route_free(rt);
        return rc;
    }
    rt->next = n->routes;
    n->routes = rt;
    return 0;
}

int ag_http_router_use(struct ag_http_router *r, const struct ag_http_middleware *mw)
{
    if (!r || !mw) return AG_EINVAL;
    if (r->nmw == MAX_MW) return AG_ETOOBIG;
    r->mw[r->nmw++] = *mw;
    return 0;
}

int ag_http_router_observe(struct ag_http_router *r, const struct ag_http_observe *o)
{
    if (!r || !o || r->observe) return AG_EINVAL;
    return ag__http_observe_init(r, o, &r->observe);
}

/* ---- matching ---- */

struct match {
    const char *seg[AG__HTTP_MAX_PARAMS]; /* parameter values (undecoded) */
    size_t len[AG__HTTP_MAX_PARAMS];      /* their lengths */
    size_t n;                             /* bound so far */
    struct rnode *any;                    /* first node with routes for another method */
};

static struct ag__route *route_for(struct rnode *n, const char *method, bool head)
{
    struct ag__route *get = NULL;
    for (struct ag__route *rt = n->routes; rt; rt = rt->next) {
        if (strcmp(rt->method, method) == 0) return rt;
        if (head && strcmp(rt->method, "GET") == 0) get = rt;
    }
    return get;
}

static struct ag__route *match(struct rnode *n, const char *p, const char *method, bool head,
                               struct match *m)
{
    if (!*p) {
        struct ag__route *rt = route_for(n, method, head);
        if (!rt && n->routes && !m->any) m->any = n;
        return rt;
    }
    const char *slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - p) : strlen(p);
    const char *rest = slash ? slash + 1 : p + len;
    if (slash && !*rest) return NULL; /* trailing slash matches nothing */
    for (struct rnode *k = n->kids; k; k = k->sib) {
        if (strlen(k->seg) != len || memcmp(k->seg, p, len) != 0) continue;
        struct ag__route *rt = match(k, rest, method, head, m);
        if (rt) return rt;
    }
    if (!n->param || len == 0 || m->n == AG__HTTP_MAX_PARAMS) return NULL;
    m->seg[m->n] = p, m->len[m->n] = len, m->n++;
    struct ag__route *rt = match(n->param, rest, method, head, m);
    if (!rt) m->n--;
    return rt;
}

static void answer_405(struct ag_http_req *req, struct rnode *n)
{
    struct ag_buf allow;
    ag_buf_init(&allow);
    bool get = false, head = false;
    for (struct ag__route *rt = n->routes; rt; rt = rt->next) {
        if (allow.len) ag_buf_puts(&allow, ", ");
        ag_buf_puts(&allow, rt->method);
        get = get || strcmp(rt->method, "GET") == 0;
        head = head || strcmp(rt->method, "HEAD") == 0;
    }
    if (get && !head) ag_buf_puts(&allow, ", HEAD");
    if (allow.data) ag_http_resp_header(req, "Allow", allow.data);
    ag_buf_free(&allow);
    ag_http_respond_problem(req, 405, NULL, NULL, "the method is not allowed on this resource",
                            NULL);
}

/* A path parameter whose decoded form holds a control character (%00..%1F, %7F):
 * a NUL would silently cut the value short ("{id}%00junk" read as "{id}"). */
static bool control_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++)
        if (s[i] == '%' && (s[i + 1] == '0' || s[i + 1] == '1' ||
                            (s[i + 1] == '7' && (s[i + 2] == 'f' || s[i + 2] == 'F'))))
            return true;
    return false;
}

/* Returns the matched route, or NULL after answering 404/405. */
static struct ag__route *route_request(struct ag_http_router *r, struct ag_http_req *req,
                                       struct rnode **miss, bool *bad)
{
    struct match m = {0};
    const char *path = req->path;
    struct ag__route *rt = match(&r->root, path + 1, req->method, req->head, &m);
    *miss = m.any;
    if (!rt) return NULL;
    for (size_t i = 0; i < m.n; i++) {
        if (control_escape(m.seg[i], m.len[i])) return *bad = true, NULL;
        req->params[i].name = rt->param_names[i];
        req->params[i].value = ag__http_decode(req, m.seg[i], m.len[i]);
        if (!req->params[i].value) return NULL;
    }
    req->nparams = m.n;
    return rt;
}

/* ---- dispatch ---- */

static int run_on_request(struct ag_http_router *r, struct ag_http_req *req)
{
    if (r->observe) ag__http_observe_request(r->observe, req);
    for (size_t i = 0; i < r->nmw; i++) {
        if (!r->mw[i].on_request) continue;
        int rc = r->mw[i].on_request(req, r->mw[i].ud);
        if (rc != 0) return rc;
    }
    return 0;
}

void ag__http_run_on_response(struct ag_http_req *req)
{
    if (!req->mw_started) return;
    req->mw_started = false;
    struct ag_http_router *r = req->conn->ctx->router;
    for (size_t i = r->nmw; i-- > 0;)
        if (r->mw[i].on_response) r->mw[i].on_response(req, r->mw[i].ud);
    if (r->observe) ag__http_observe_response(r->observe, req);
}

void ag__http_dispatch(struct ag_http_req *req)
{
    struct ag_http_router *r = req->conn->ctx->router;
    req->refs += 2; /* the answer's and this call's */
    struct rnode *miss = NULL;
    bool bad = false;
    struct ag__route *rt = route_request(r, req, &miss, &bad);
    req->route = rt ? rt : &r->unmatched;
    req->routed = rt != NULL;
    req->mw_started = true;
    int rc = run_on_request(r, req);
    if (rc < 0 && !req->status) ag_http_respond_error(req, rc, NULL);
    if (rc > 0 && !req->status)
        ag_http_respond_problem(req, 500, NULL, NULL, "a middleware stopped without answering",
                                NULL);
    if (rc == 0 && !rt) {
        if (bad)
            ag_http_respond_problem(req, 400, NULL, "Invalid path parameter",
                                    "a path parameter holds a control character", NULL);
        else if (miss)
            answer_405(req, miss);
        else
            ag_http_respond_problem(req, 404, NULL, NULL, "no resource at this path", NULL);
    } else if (rc == 0) {
        rc = rt->fn(req, rt->ud);
        if (rc < 0 && !req->status) ag_http_respond_error(req, rc, NULL);
    }
    ag__http_req_unref(req);
}
