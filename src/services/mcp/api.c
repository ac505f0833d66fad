/*
 * The mcp context: the Model Context Protocol (ARCHITECTURE §9) over streamable
 * HTTP at /mcp, and in-process for `agora mcp` over stdio (ag_platform_mcp).
 *
 * POST /mcp (access: owner — any principal; anonymous is 401 with
 * WWW-Authenticate: Bearer, before anything else). One JSON-RPC message per POST;
 * the answer is application/json (never an SSE stream: no tool streams), or 202
 * with no body for a notification or a client's response.
 *
 * Origin. A browser page must not drive an agent's tools (DNS rebinding): a
 * request with an Origin header outside the allow-list is 403. The list is
 * AGORA_MCP_ALLOWED_ORIGINS (comma-separated origins, e.g.
 * "https://console.example.com,http://localhost:5173"); without it, loopback
 * origins (http/https on localhost, 127.0.0.1, [::1], any port). No Origin header
 * (a non-browser client) is allowed.
 *
 * Sessions (Mcp-Session-Id). A successful initialize creates a session (128
 * random bits, hex) bound to the principal that made it and answers its id in
 * the Mcp-Session-Id header. Every later request must carry it: without it 400,
 * with an id that is unknown, expired (idle over an hour, or evicted, oldest
 * first, beyond 4096) or another principal's, 404 — the client then initializes
 * again. DELETE /mcp with the header ends the session (204). server/discover is
 * sessionless (2026-07-28). GET /mcp is the router's 405 (Allow: POST,
 * DELETE): the server sends no unsolicited messages, so it offers no SSE stream. An
 * MCP-Protocol-Version header this server does not speak is 400. Sessions are process memory,
 * shared by every worker thread under a mutex; a restart forgets them and clients initialize again,
 * as the spec provides.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "agora/platform.h"
#include "services/mcp/mcp.h"

/* ---- sessions ---- */

#define MCP_SESSIONS        4096
#define MCP_SESSION_IDLE_MS (3600LL * 1000)

struct session {
    char id[33];   /* "" when free */
    char sub[128]; /* its principal */
    int64_t last_ms;
};

static struct {
    pthread_mutex_t lock;
    struct session v[MCP_SESSIONS];
} sessions = {PTHREAD_MUTEX_INITIALIZER, {{{0}}}};

static int session_new(const char *sub, char id[33])
{
    uint8_t raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return AG_EIO;
    for (size_t i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", raw[i]);
    int64_t now = svc_now_ms();
    pthread_mutex_lock(&sessions.lock);
    struct session *slot = &sessions.v[0];
    for (size_t i = 0; i < MCP_SESSIONS; i++) { /* a free one, else the least recent */
        struct session *s = &sessions.v[i];
        if (!s->id[0] || now - s->last_ms > MCP_SESSION_IDLE_MS) {
            slot = s;
            break;
        }
        if (s->last_ms < slot->last_ms) slot = s;
    }
    snprintf(slot->id, sizeof slot->id, "%s", id);
    snprintf(slot->sub, sizeof slot->sub, "%s", sub);
    slot->last_ms = now;
    pthread_mutex_unlock(&sessions.lock);
    return 0;
}

/* Touch (or, with `end`, remove) session `id` of `sub`: false when there is none. */
static bool session_use(const char *id, const char *sub, bool end)
{
    bool found = false;
    int64_t now = svc_now_ms();
    pthread_mutex_lock(&sessions.lock);
    for (size_t i = 0; i < MCP_SESSIONS && !found; i++) {
        struct session *s = &sessions.v[i];
        if (!s->id[0] || strcmp(s->id, id) != 0) continue;
        found = strcmp(s->sub, sub) == 0 && now - s->last_ms <= MCP_SESSION_IDLE_MS;
        if (found) s->last_ms = now;
        if (found && end) s->id[0] = '\0';
        break;
    }
    pthread_mutex_unlock(&sessions.lock);
    return found;
}

/* ---- Origin ---- */

static bool loopback_origin(const char *o)
{
    const char *h = strncmp(o, "http://", 7) == 0    ? o + 7
                    : strncmp(o, "https://", 8) == 0 ? o + 8
                                                     : NULL;
    if (!h) return false;
    static const char *const hosts[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < AG_ARRAY_SIZE(hosts); i++) {
        size_t n = strlen(hosts[i]);
        if (strncasecmp(h, hosts[i], n) != 0) continue;
        const char *rest = h + n;
        if (!*rest) return true;
        if (*rest != ':' || !rest[1]) continue;
        bool digits = true;
        for (const char *p = rest + 1; *p; p++) digits = digits && *p >= '0' && *p <= '9';
        if (digits) return true;
    }
    return false;
}

static bool origin_allowed(const char *o)
{
    if (!o) return true; /* not a browser */
    const char *list = getenv("AGORA_MCP_ALLOWED_ORIGINS");
    if (!list || !*list) return loopback_origin(o);
    size_t n = strlen(o);
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ') p++;
        size_t l = strcspn(p, ", ");
        if (l && l == n && strncasecmp(p, o, n) == 0) return true;
        p += l;
    }
    return false;
}

/* ---- POST /mcp ---- */

/* What the handler needs from the request (copied on the loop thread). */
struct mcp_http {
    char *body; /* the message */
    size_t len;
    char session[80];     /* Mcp-Session-Id, "" when none */
    bool session_given;   /* the header was sent */
    char new_session[33]; /* set by a successful initialize: answered in the header */
};

static int answer_rpc_error(struct ag_http_req *req, int status, int code, const char *msg)
{
    json_t *e = mcp_error(NULL, code, msg);
    return ag_http_respond_json(req, status, e);
}

static int prepare_post(struct svc_job *j, struct ag_http_req *req)
{
    if (!origin_allowed(ag_http_req_header(req, "Origin")))
        return answer_rpc_error(req, 403, MCP_INVALID_REQUEST, "Forbidden: Origin not allowed"), 1;
    const char *pv = ag_http_req_header(req, "MCP-Protocol-Version");
    if (pv && !mcp_version_ok(pv))
        return answer_rpc_error(req, 400, MCP_INVALID_REQUEST,
                                "Bad Request: unsupported MCP-Protocol-Version"),
               1;
    struct mcp_http *h = ag_calloc(1, sizeof *h);
    size_t len = 0;
    const char *body = ag_http_req_body(req, &len);
    if (!h || !(h->body = ag_malloc(len + 1))) {
        ag_free(h);
        return AG_ENOMEM;
    }
    memcpy(h->body, body, len);
    h->body[len] = '\0';
    h->len = len;
    const char *sid = ag_http_req_header(req, "Mcp-Session-Id");
    h->session_given = sid != NULL;
    if (sid) snprintf(h->session, sizeof h->session, "%s", sid);
    j->ext = h;
    return 0;
}

static void finish_post(struct svc_job *j, struct ag_http_req *req)
{
    struct mcp_http *h = j->ext;
    if (!h) return;
    if (h->new_session[0]) ag_http_resp_header(req, "Mcp-Session-Id", h->new_session);
    ag_free(h->body);
    ag_free(h);
    j->ext = NULL;
}

/* The method of a message, when it is an object with a string method. */
static const char *method_of(json_t *msg)
{
    return json_string_value(json_object_get(msg, "method"));
}

static int post(struct svc_job *j)
{
    struct mcp_http *h = j->ext;
    struct mcp_caller c = {.env = j->env, .who = j->who};
    memcpy(c.meta, j->meta, sizeof c.meta);
    json_error_t je;
    json_t *msg = json_loadb(h->body, h->len, JSON_REJECT_DUPLICATES, &je);
    if (!msg) return svc_ok(j, 400, mcp_error(NULL, MCP_PARSE_ERROR, "Parse error"));
    const char *m = method_of(msg);
    bool sessionless = m && (strcmp(m, "initialize") == 0 || strcmp(m, "server/discover") == 0);
    int rc = 0;
    if (!sessionless && !h->session_given) {
        rc = svc_ok(j, 400,
                    mcp_error(json_object_get(msg, "id"), MCP_INVALID_REQUEST,
                              "Bad Request: Mcp-Session-Id header is required"));
    } else if (!sessionless && !session_use(h->session, j->who.sub, false)) {
        rc = svc_ok(j, 404,
                    mcp_error(json_object_get(msg, "id"), MCP_INVALID_REQUEST,
                              "Session not found: initialize again"));
    } else {
        struct mcp_outcome oc;
        json_t *reply = mcp_handle(&c, msg, &oc);
        if (oc.initialized && session_new(j->who.sub, h->new_session)) h->new_session[0] = '\0';
        if (reply) {
            bool invalid = json_object_get(reply, "error") &&
                           json_integer_value(json_object_get(json_object_get(reply, "error"),
                                                              "code")) == MCP_INVALID_REQUEST;
            rc = svc_ok(j, invalid ? 400 : 200, reply);
        } else {
            j->status = 202; /* a notification or a response: accepted, no body */
        }
    }
    json_decref(msg);
    return rc;
}

/* ---- DELETE /mcp (answered on the loop thread) ---- */

static int prepare_delete(struct svc_job *j, struct ag_http_req *req)
{
    const char *sid = ag_http_req_header(req, "Mcp-Session-Id");
    int status = !origin_allowed(ag_http_req_header(req, "Origin")) ? 403
                 : !sid                                             ? 400
                 : !session_use(sid, j->who.sub, true)              ? 404
                                                                    : 204;
    const char *detail = status == 403   ? "the Origin header is not allowed"
                         : status == 400 ? "the Mcp-Session-Id header is required"
                                         : "no such MCP session";
    if (status == 204) return ag_http_respond(req, 204, NULL, NULL, 0), 1;
    return ag_http_respond_problem(req, status, NULL, NULL, detail, NULL), 1;
}

static int never(struct svc_job *j)
{
    return svc_problem(j, 500, NULL, "not reached");
}

static const struct svc_route routes[] = {
    {"POST", "/mcp", SVC_OWNER, post, NULL, NULL, {NULL}, prepare_post, finish_post},
    {"DELETE", "/mcp", SVC_OWNER, never, NULL, NULL, {NULL}, prepare_delete, NULL},
};

const struct svc_context svc_mcp_context = {"mcp", routes, sizeof routes / sizeof routes[0], NULL,
                                            RM_COUNT};

/* ---- in process (agora mcp over stdio) ---- */

int ag_platform_mcp(struct ag_platform *p, const char *sub, bool admin, const char *msg, size_t len,
                    char **reply)
{
    *reply = NULL;
    struct svc_env *env = NULL;
    for (size_t i = 0; i < SVC_MAX_CONTEXTS && !env; i++)
        if (p->envs[i].name && strcmp(p->envs[i].name, "mcp") == 0) env = &p->envs[i];
    if (!env) return AG_ENOTFOUND;
    struct mcp_caller c = {.env = env};
    if (sub && *sub) {
        snprintf(c.who.sub, sizeof c.who.sub, "%s", sub);
        c.who.authenticated = true;
        c.who.admin = admin;
    }
    mcp_caller_meta(&c);
    struct mcp_outcome oc;
    json_t *r = mcp_handle_text(&c, msg, len, &oc);
    if (!r) return 0;
    char *s = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    if (!s) return AG_ENOMEM;
    *reply = ag_strdup(s);
    free(s);
    return *reply ? 0 : AG_ENOMEM;
}
