/*
 * Who may do what (ARCHITECTURE §8), enforced where the data is.
 *
 * Identity. The gateway verifies the caller's JWT, strips every identity header
 * the client sent, and passes its own: x-user-id (the token's sub) and
 * x-user-roles. The services listen only on a Unix socket inside the data
 * directory (0600), so those headers can only come from the gateway. An `agora
 * serve` instance listens on TCP instead, so there the platform has a mesh key
 * and the headers count only with the gateway's x-user-sig (an HMAC of them, the
 * method and the target under that key, at most 60 s off: src/http/usersig.c);
 * without a valid one the caller is anonymous, logged and counted as
 * bad_signature. Without a
 * gateway (`agora run --no-gateway`, loopback only, announced loudly) a request
 * without identity headers is the local operator: an admin.
 *
 * Access. Every route is registered with its access (svc_route): public, owner,
 * admin or carrier (admin or the carrier role: a delivery company reporting a
 * delivery); the check runs before the handler is queued. Anonymous callers of a
 * non-public route get 401, non-admins of an admin route 403 (and callers with
 * neither admin nor carrier of a carrier route); both are logged and
 * counted in agora_authz_denied_total{reason}. A service route (issue 14: POST
 * /internal/v1/steps, the orchestrator's calls to participants in another
 * instance) takes only a principal "service:..." with role service signed with
 * the mesh key: the gateway never passes that role from a token, and an instance
 * without a mesh key believes no service. Ownership is the handlers' part:
 * they filter reads to the caller's customer and answer 404 for someone else's
 * resource (not 403, so ids cannot be probed).
 *
 * Principals and customers. A principal registers one customer; the binding is
 * the stream `principal-<128-bit hash of sub>` holding PrincipalBound {sub,
 * customerId}. Claims (this binding, unique emails, SKUs) share one helper: a
 * claim whose owner never got registered (a store that crashed between the claim
 * and the owner's events, before registration became one append) is taken over
 * once its lease has passed. svc_claim_prepare decides a claim without writing
 * it, so the claim commits in the same multi-stream append as its owner's events
 * (registration, product creation): both or neither.
 *
 * Ids. Every id agora mints is a UUID: a path parameter of another shape answers
 * 404 before any store lookup, so an internal stream (`customer-email-…`) can
 * never be reached as an aggregate. (Dead letters' ids, `<kind>:<list>:<n>`, are
 * checked by svc_dlq_id_ok instead: they name no stream. The console's
 * /admin/streams/{name} and /admin/projections/{name}/rebuild take names, checked
 * by svc_name_ok; both routes are admin-only, and a name reaches only the log's
 * read or the projector's table.)
 *
 * The gateway answers GET /admin/cluster itself (src/gateway/admin.c, outside this
 * table): admin-only, checked there (`agora cluster`'s members; 404 elsewhere).
 *
 * The operator console (src/gateway/console.c) adds three routes at the gateway,
 * outside this table: GET /console and GET /console/{file} are public (the page's
 * files hold no data; every data call it makes carries an admin token), and POST
 * /admin/console/session is public too but answers 401 unless its body carries an
 * unused, unexpired one-time code from `agora console-url` (made on the machine,
 * in the data directory), which it trades for a short-lived admin token.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "services/internal.h"

#define CLAIM_LEASE_MS 30000

struct svc_binding {
    struct svc_env *env; /* the route's context */
    const struct svc_route *r;
    struct svc_binding *next;
};

bool svc_uuid_ok(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (shape[i] == '-' ? c != '-' : !hex) return false;
    }
    return s[sizeof shape - 1] == '\0';
}

/* ---- the caller ---- */

static bool has_role(const char *csv, const char *role)
{
    size_t n = strlen(role);
    for (const char *p = csv; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t l = strcspn(p, ", ");
        if (l == n && strncmp(p, role, n) == 0) return true;
        p += l;
    }
    return false;
}

static void count_denial(struct svc_env *p, const char *reason);

/* With a mesh key: whether x-user-sig signs these identity headers on this
 * request, made within AG_USER_SIG_SKEW_S of now. */
static bool signed_ok(const struct svc_env *p, struct ag_http_req *req, const char *sub,
                      const char *roles)
{
    const char *path = ag_http_req_path(req), *q = ag_http_req_query(req);
    size_t pl = strlen(path), ql = strlen(q);
    char *target = ag_http_req_alloc(req, pl + ql + 2);
    if (!target) return false;
    memcpy(target, path, pl);
    if (ql) target[pl++] = '?', memcpy(target + pl, q, ql), pl += ql;
    target[pl] = '\0';
    const struct ag_clock *c = p->clock ? p->clock : ag_clock_system();
    int64_t now = (int64_t)(ag_clock_now(c) / 1000000000u);
    return ag_http_user_sig_ok(p->mesh_key, ag_http_req_header(req, "x-user-sig"), now, sub, roles,
                               ag_http_req_method(req), target);
}

static void principal_of(struct svc_env *p, struct ag_http_req *req, struct svc_principal *who)
{
    memset(who, 0, sizeof *who);
    const char *sub = ag_http_req_header(req, "x-user-id");
    const char *roles = ag_http_req_header(req, "x-user-roles");
    if (p->mesh_key && (sub || roles) && !signed_ok(p, req, sub, roles)) {
        /* not the gateway's (or too old): anonymous, and said so */
        count_denial(p, "bad_signature");
        AG_WARN("authz.denied", AG_LS("sub", sub ? sub : ""),
                AG_LS("method", ag_http_req_method(req)), AG_LS("path", ag_http_req_path(req)),
                AG_LS("reason", "bad_signature"));
        return;
    }
    if (sub && *sub && strlen(sub) < sizeof who->sub) {
        snprintf(who->sub, sizeof who->sub, "%s", sub);
        who->authenticated = true;
        who->admin = roles && has_role(roles, "admin");
        who->carrier = roles && has_role(roles, "carrier");
        /* only another instance has the key: a token's `service` role never gets
         * here signed (the gateway drops it), and without a key nothing is signed */
        who->service =
            p->mesh_key && roles && has_role(roles, "service") && strncmp(sub, "service:", 8) == 0;
    } else if (!p->behind_gateway) { /* --no-gateway: the local operator */
        snprintf(who->sub, sizeof who->sub, "local");
        who->authenticated = who->admin = true;
    }
}

static void count_denial(struct svc_env *p, const char *reason)
{
    struct ag_obs_series *s = NULL;
    const char *values[] = {reason};
    if (p->denied && ag_obs_series_get(p->denied, values, &s) == 0) ag_obs_counter_inc(s);
}

/* Log and count a refusal; answers `status` with `detail`. */
static int deny(struct svc_env *p, struct ag_http_req *req, const struct svc_principal *who,
                int status, const char *reason)
{
    count_denial(p, reason);
    AG_WARN("authz.denied", AG_LS("sub", who->authenticated ? who->sub : "anonymous"),
            AG_LS("method", ag_http_req_method(req)), AG_LS("path", ag_http_req_path(req)),
            AG_LS("reason", reason), AG_LI("status", status));
    if (status == 401) ag_http_resp_header(req, "WWW-Authenticate", "Bearer");
    const char *detail =
        status == 401                        ? "a bearer token is required"
        : strcmp(reason, "not_service") == 0 ? "only the mesh's services may call this"
        : strcmp(reason, "not_carrier") == 0 ? "this operation needs the admin or carrier role"
                                             : "this operation needs the admin role";
    return ag_http_respond_problem(req, status, NULL, NULL, detail, NULL);
}

int svc_require_admin(struct svc_job *j)
{
    if (j->who.admin) return 0;
    count_denial(j->env, j->who.authenticated ? "not_admin" : "anonymous");
    AG_WARN("authz.denied", AG_LS("sub", j->who.authenticated ? j->who.sub : "anonymous"),
            AG_LS("reason", "not_admin"));
    int status = j->who.authenticated ? 403 : 401;
    svc_problem(j, status, NULL, "%s",
                status == 401 ? "a bearer token is required"
                              : "this operation needs the admin role");
    return 1;
}

/* ---- routes ---- */

static int dispatch(struct ag_http_req *req, void *ud)
{
    struct svc_binding *b = ud;
    const struct svc_route *r = b->r;
    struct svc_principal who;
    principal_of(b->env, req, &who);
    if (r->access != SVC_PUBLIC && !who.authenticated)
        return deny(b->env, req, &who, 401, "anonymous");
    if (r->access == SVC_ADMIN && !who.admin) return deny(b->env, req, &who, 403, "not_admin");
    if (r->access == SVC_CARRIER && !who.admin && !who.carrier)
        return deny(b->env, req, &who, 403, "not_carrier");
    if (r->access == SVC_SERVICE && !who.service)
        return deny(b->env, req, &who, 403, "not_service");
    const char *id = r->param ? ag_http_req_param(req, r->param) : NULL;
    bool dl = r->noun && strcmp(r->noun, "dead letter") == 0; /* not a UUID: svc_dlq_id_ok */
    /* streams and projections are named, not UUIDs (the console's routes) */
    bool named = r->noun && (!strcmp(r->noun, "stream") || !strcmp(r->noun, "projection"));
    if (id && !(dl ? svc_dlq_id_ok(id) : named ? svc_name_ok(id) : svc_uuid_ok(id))) {
        char detail[256];
        snprintf(detail, sizeof detail, "no %s with id %.160s", r->noun ? r->noun : "resource", id);
        return ag_http_respond_problem(req, 404, NULL, "Not found", detail, NULL);
    }
    return svc_job_start(b->env, req, r, &who);
}

int svc_routes(struct ag_platform *p, struct svc_env *env, const struct svc_route *routes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct svc_binding *b = ag_calloc(1, sizeof *b);
        if (!b) return AG_ENOMEM;
        *b = (struct svc_binding){env, &routes[i], p->bindings};
        p->bindings = b;
        int rc = ag_http_route(p->router, routes[i].method, routes[i].path, dispatch, b);
        if (rc) return rc;
    }
    return 0;
}

void svc_routes_free(struct ag_platform *p)
{
    while (p->bindings) {
        struct svc_binding *b = p->bindings;
        p->bindings = b->next;
        ag_free(b);
    }
}

/* ---- claims ---- */

struct claim {
    char owner[40];
    int64_t at;
    int64_t version;
};

static int read_claim(struct svc_env *p, const char *stream, struct claim *c, struct ag_err *err)
{
    struct ag_event_page pg;
    int rc =
        ag_store_read_stream(p->store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &pg, err);
    if (rc) return rc;
    if (!pg.count) return ag_event_page_free(&pg), AG_ENOTFOUND;
    json_t *d = json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL);
    const char *owner = json_string_value(json_object_get(d, "customerId"));
    snprintf(c->owner, sizeof c->owner, "%s", owner ? owner : "");
    c->at = json_integer_value(json_object_get(d, "at"));
    c->version = pg.events[0].version;
    json_decref(d);
    ag_event_page_free(&pg);
    return 0;
}

static const char *claim_type(const char *stream)
{
    return strncmp(stream, "principal-", 10) == 0     ? "PrincipalBound"
           : strncmp(stream, "product-sku-", 12) == 0 ? "SkuClaimed"
                                                      : "EmailClaimed";
}

int svc_claim_prepare(struct svc_env *p, const char *stream, const char *owner_id,
                      const char *owner_prefix, char holder[40], struct svc_claim_part *out,
                      struct ag_err *err)
{
    memset(out, 0, sizeof *out);
    if (strlen(stream) >= sizeof out->stream || strlen(owner_id) >= 40)
        return ag_err_set(err, AG_EINVAL, "claim %.64s: name or owner too long", stream);
    snprintf(out->stream, sizeof out->stream, "%s", stream);
    snprintf(out->data, sizeof out->data, "{\"customerId\":\"%s\",\"at\":%lld}", owner_id,
             (long long)svc_now_ms());
    const char *type = claim_type(stream);
    out->ev = (struct ag_event_data){
        .type = type, .type_len = strlen(type), .data = out->data, .data_len = strlen(out->data)};
    int64_t expected = AG_STORE_NO_STREAM;
    struct claim c;
    int rc = read_claim(p, stream, &c, err);
    if (rc && rc != AG_ENOTFOUND) return AG_EIO;
    if (!rc) {
        if (strcmp(c.owner, owner_id) == 0) return out->held = true, 0;
        bool orphan = c.owner[0] && !svc_stream_exists(p, owner_prefix, c.owner) &&
                      svc_now_ms() - c.at > CLAIM_LEASE_MS;
        if (c.owner[0] && !orphan) { /* no owner: released (svc_release_claim) */
            if (holder) snprintf(holder, 40, "%s", c.owner);
            return ag_err_set(err, AG_EEXISTS, "already claimed by %s", c.owner);
        }
        expected = c.version; /* take over the released or abandoned claim */
    }
    out->part = (struct ag_append_part){out->stream, strlen(out->stream), expected, &out->ev, 1};
    return 0;
}

int svc_claim(struct svc_env *p, const char *stream, const char *owner_id, const char *owner_prefix,
              char holder[40], struct ag_err *err)
{
    struct svc_claim_part c;
    for (int attempt = 0; attempt < 3; attempt++) { /* claimed or released meanwhile: again */
        int rc = svc_claim_prepare(p, stream, owner_id, owner_prefix, holder, &c, err);
        if (rc || c.held) return rc;
        rc = ag_store_append(p->store, c.part.stream, c.part.stream_len, c.part.expected_version,
                             &c.ev, 1, NULL, err);
        if (rc != AG_ECONFLICT) return rc;
    }
    return ag_err_set(err, AG_ECONFLICT, "too many concurrent claims");
}

int svc_release_claim(struct svc_env *p, const char *stream, const char *owner_id,
                      struct ag_err *err)
{
    char data[64];
    snprintf(data, sizeof data, "{\"at\":%lld}", (long long)svc_now_ms());
    static const char type[] = SVC_CLAIM_RELEASED;
    struct ag_event_data ev = {
        .type = type, .type_len = sizeof type - 1, .data = data, .data_len = strlen(data)};
    for (int attempt = 0; attempt < 3; attempt++) { /* claimed or released meanwhile: again */
        struct claim c;
        int rc = read_claim(p, stream, &c, err);
        if (rc == AG_ENOTFOUND || (!rc && strcmp(c.owner, owner_id) != 0)) return 0;
        if (rc) return rc;
        rc = ag_store_append(p->store, stream, strlen(stream), c.version, &ev, 1, NULL, err);
        if (rc != AG_ECONFLICT) return rc;
    }
    return ag_err_set(err, AG_ECONFLICT, "too many concurrent claims");
}

static void principal_stream(const char *sub, char out[64])
{
    size_t n = strlen(sub);
    uint64_t a = ag_xxh3_seed(sub, n, 0x70726e63), b = ag_xxh3_seed(sub, n, a);
    snprintf(out, 64, "principal-%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

int svc_bind_principal_prepare(struct svc_env *p, const char *sub, const char *id,
                               char existing[40], struct svc_claim_part *out, struct ag_err *err)
{
    char stream[64];
    principal_stream(sub, stream);
    return svc_claim_prepare(p, stream, id, "customer", existing, out, err);
}

int svc_principal_customer(struct svc_env *p, const char *sub, char out[40])
{
    char stream[64];
    principal_stream(sub, stream);
    struct claim c;
    int rc = read_claim(p, stream, &c, NULL);
    if (rc) return rc == AG_ENOTFOUND ? rc : AG_EIO;
    if (!c.owner[0] || !svc_stream_exists(p, "customer", c.owner)) return AG_ENOTFOUND;
    snprintf(out, 40, "%s", c.owner);
    return 0;
}

/* ---- ownership ---- */

const char *svc_caller_customer(struct svc_job *j)
{
    if (!j->cid_known) {
        j->cid_known = true;
        if (!j->who.authenticated || svc_principal_customer(j->env, j->who.sub, j->cid))
            j->cid[0] = '\0';
    }
    return j->cid[0] ? j->cid : NULL;
}

bool svc_owns(struct svc_job *j, const char *customer_id)
{
    if (j->who.admin) return true;
    const char *mine = svc_caller_customer(j);
    return mine && customer_id && strcmp(mine, customer_id) == 0;
}

const char *svc_owner_filter(struct svc_job *j)
{
    if (j->who.admin) return NULL;
    const char *mine = svc_caller_customer(j);
    return mine ? mine : "";
}
