/*
 * What every context's HTTP handlers share: moving the work off the loop thread
 * (the libuv threadpool runs commands, which wait on group commit, and queries,
 * which run SQL), problem+json answers with field errors, running domain decide
 * functions through the repository, Idempotency-Key records, and read-model
 * queries.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "services/internal.h"

/* ---- aggregate types ---- */

/* `bytes`: the state's heap, for the aggregate cache's byte budget (NULL: none) */
#define SVC_TYPE(var, dom, bytes)                                                                  \
    const struct ag_es_type var = {#dom,                                                           \
                                   sizeof(struct ag_##dom),                                        \
                                   ag_##dom##_init,                                                \
                                   ag_##dom##_free,                                                \
                                   ag_##dom##_evolve,                                              \
                                   ag_##dom##_snapshot,                                            \
                                   ag_##dom##_restore,                                             \
                                   bytes}
SVC_TYPE(svc_product_type, product, NULL);
SVC_TYPE(svc_stock_type, stock, ag_stock_bytes);
SVC_TYPE(svc_account_type, account, ag_account_bytes);
/* svc_customer_type, svc_order_type, svc_shipment_type hold personal data: pii.c */

/* ---- ids and time ---- */

int64_t svc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void svc_new_id(char out[AG_UUID_STRLEN + 1], const char *scope, const char *key)
{
    struct ag_uuid u;
    if (!key || !*key) {
        ag_uuid_v7(&u, NULL, NULL);
    } else { /* UUIDv8 (RFC 9562 §5.8) from the scope and the key: retries map to one id */
        uint64_t a = ag_xxh3_seed(key, strlen(key), ag_xxh3(scope, strlen(scope)));
        uint64_t b = ag_xxh3_seed(key, strlen(key), a);
        memcpy(u.b, &a, 8);
        memcpy(u.b + 8, &b, 8);
        u.b[6] = (uint8_t)(0x80 | (u.b[6] & 0x0F));
        u.b[8] = (uint8_t)(0x80 | (u.b[8] & 0x3F));
    }
    ag_uuid_format(&u, out);
}

void svc_job_id(struct svc_job *j, const char *scope, char out[AG_UUID_STRLEN + 1])
{
    char scoped[256];
    snprintf(scoped, sizeof scoped, "%s\x1f%s", scope, j->who.sub);
    svc_new_id(out, scoped, j->idem_key);
}

void svc_stream(char *out, size_t n, const char *prefix, const char *id)
{
    snprintf(out, n, "%s-%s", prefix, id);
}

bool svc_stream_exists(struct svc_env *p, const char *prefix, const char *id)
{
    char stream[256];
    svc_stream(stream, sizeof stream, prefix, id);
    if (ag_store_check_stream(stream, strlen(stream), NULL)) return false;
    int64_t v;
    ag_store_stream_version(p->store, stream, strlen(stream), &v);
    return v >= 0;
}

/* ---- commands ---- */

struct dom_call {
    svc_dom_fn fn;
    const void *cmd;
    const struct ag_es_type *type; /* whose personal fields to seal */
};

/* The domain's decide, then the new events' personal fields sealed (pii.c). */
static int run_dom(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                   struct ag_err *err)
{
    struct dom_call *c = ud;
    struct ag_dom_events evs;
    ag_dom_events_init(&evs);
    size_t from = out->n;
    int rc = c->fn(state, c->cmd, &evs, err);
    for (size_t i = 0; i < evs.n && !rc; i++) {
        rc = ag_es_batch_push(out, evs.v[i].type, evs.v[i].data);
        evs.v[i].data = NULL; /* moved (push releases it on failure) */
    }
    ag_dom_events_free(&evs);
    if (!rc) rc = svc_pii_seal_events(c->type, version >= 0 ? state : NULL, out, from, err);
    return rc;
}

int svc_exec(struct svc_env *p, const struct svc_cmd *c, struct ag_err *err)
{
    return svc_exec_extra(p, c, NULL, 0, err);
}

int svc_exec_extra(struct svc_env *p, const struct svc_cmd *c, const struct ag_append_part *extra,
                   size_t nextra, struct ag_err *err)
{
    char stream[AG_STORE_STREAM_MAX + 1];
    if (ag_es_stream(c->type, c->id, stream, sizeof stream))
        return ag_err_set(err, AG_EINVAL, "%s id is too long", c->type->name);
    struct dom_call dc = {c->decide, c->cmd, c->type};
    struct ag_es_cmd ec = {c->type, stream, run_dom, &dc, c->meta, c->view, c->view_ud};
    return nextra ? ag_es_execute_extra(p->repo, &ec, extra, nextra, NULL, err)
                  : ag_es_execute(p->repo, &ec, NULL, err);
}

/* An svc_exec in flight: what the repository borrows until it is done. */
struct exec_async {
    struct dom_call dc;
    svc_done_fn done;
    void *ud;
    char stream[AG_STORE_STREAM_MAX + 1];
    char meta[]; /* a copy of the metadata ("" when none) */
};

static void exec_async_done(void *ud, int rc, const struct ag_es_result *res,
                            const struct ag_err *err)
{
    AG_UNUSED(res);
    struct exec_async *x = ud;
    x->done(x->ud, rc, err);
    ag_free(x);
}

int svc_exec_async(struct svc_env *p, const struct svc_cmd *c, const struct svc_async *a)
{
    size_t mlen = c->meta ? strlen(c->meta) : 0;
    struct exec_async *x = ag_malloc(sizeof *x + mlen + 1);
    if (!x) return AG_ENOMEM;
    if (ag_es_stream(c->type, c->id, x->stream, sizeof x->stream)) {
        ag_free(x);
        return AG_EINVAL;
    }
    x->dc = (struct dom_call){c->decide, c->cmd, c->type};
    x->done = a->done;
    x->ud = a->ud;
    memcpy(x->meta, c->meta ? c->meta : "", mlen + 1);
    struct ag_es_cmd ec = {c->type, x->stream, run_dom, &x->dc, c->meta ? x->meta : NULL,
                           c->view, c->view_ud};
    struct ag_es_async as = {a->loop, a->extra, a->extra ? 1 : 0, exec_async_done, x};
    int rc = ag_es_execute_async(p->repo, &ec, &as);
    if (rc) ag_free(x);
    return rc;
}

int svc_read(struct svc_env *p, const struct ag_es_type *t, const char *id, ag_es_view_fn view,
             void *ud, struct ag_err *err)
{
    char stream[AG_STORE_STREAM_MAX + 1];
    if (ag_es_stream(t, id, stream, sizeof stream))
        return ag_err_set(err, AG_EINVAL, "%s id is too long", t->name);
    return ag_es_read(p->repo, t, stream, view, ud, err);
}

/* ---- answers ---- */

int svc_ok(struct svc_job *j, int status, json_t *body)
{
    j->status = status;
    json_decref(j->resp);
    j->resp = body;
    j->problem = false;
    return 0;
}

int svc_problem(struct svc_job *j, int status, const char *title, const char *fmt, ...)
{
    j->status = status;
    j->problem = true;
    snprintf(j->title, sizeof j->title, "%s", title ? title : ag_http_reason(status));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->detail, sizeof j->detail, fmt, ap);
    va_end(ap);
    return 0;
}

int svc_error(struct svc_job *j, int code, const struct ag_err *err)
{
    int status = ag_http_status_for(code);
    const char *title = code == AG_EDOMAIN ? "Business rule violated" : NULL;
    if (code == AG_ECONFLICT) title = "Concurrent modification";
    if (code == AG_EUNAVAILABLE) title = "Event store unavailable";
    /* a store outage is logged once by the store, not once per request */
    if (status >= 500 && code != AG_EUNAVAILABLE)
        AG_ERROR("api.error", AG_LS("code", ag_errname(code)),
                 AG_LS("detail", ag_err_msg(err, code)));
    return svc_problem(j, status, title, "%s", ag_err_msg(err, code));
}

void svc_field_error(struct svc_job *j, const char *pointer, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    ag_http_problem_error_add(&j->errors, pointer, detail);
}

int svc_body_object(struct svc_job *j, const char *const *allowed)
{
    if (!j->body) return 0; /* no body: every field is absent */
    if (!json_is_object(j->body)) {
        svc_field_error(j, "", "the body must be a JSON object");
        return 1;
    }
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(j->body, key, v)
    {
        AG_UNUSED(v);
        bool known = false;
        for (size_t i = 0; allowed && allowed[i] && !known; i++) known = !strcmp(key, allowed[i]);
        if (!known) {
            char ptr[128] = "/";
            size_t o = 1;
            for (const char *c = key; *c && o + 3 < sizeof ptr; c++) { /* RFC 6901 escapes */
                if (*c == '~' || *c == '/')
                    ptr[o++] = '~', ptr[o++] = *c == '~' ? '0' : '1';
                else
                    ptr[o++] = *c;
            }
            ptr[o] = '\0';
            svc_field_error(j, ptr, "%.100s is not a field of this request", key);
            n++;
        }
    }
    return n;
}

int svc_money_field(struct svc_job *j, const char *name, bool required, struct ag_money *out)
{
    char ptr[64];
    snprintf(ptr, sizeof ptr, "/%s", name);
    json_t *m = json_is_object(j->body) ? json_object_get(j->body, name) : NULL;
    struct ag_err err;
    ag_err_clear(&err);
    if (!m) {
        if (required)
            svc_field_error(j, ptr, "%s is required: {\"amount\": 1000, \"currency\": \"USD\"}",
                            name);
        return required ? 1 : -1;
    }
    if (ag_money_from_json(m, out, ptr, &err)) {
        const char *colon = strstr(err.msg, ": ");
        char at[96];
        snprintf(at, sizeof at, "%.*s", colon ? (int)(colon - err.msg) : (int)strlen(ptr),
                 colon ? err.msg : ptr);
        svc_field_error(j, at, "%s", colon ? colon + 2 : err.msg);
        return 1;
    }
    return 0;
}

int svc_fields_failed(struct svc_job *j, int status)
{
    size_t n = json_array_size(j->errors);
    if (!n) return 0;
    const char *first = json_string_value(json_object_get(json_array_get(j->errors, 0), "detail"));
    svc_problem(j, status, status == 400 ? "Invalid request" : "Unprocessable request",
                n == 1 ? "%s" : "%s (and %zu more problems)", first ? first : "invalid field",
                n - 1);
    return 1;
}

int svc_limit(struct svc_job *j, const char *s, int *out)
{
    *out = 20;
    if (!s) return 0;
    int64_t v;
    if (ag_parse_i64(s, &v) || v < 1 || v > 100) {
        svc_field_error(j, "/limit", "limit must be an integer from 1 to 100");
        return AG_EINVAL;
    }
    *out = (int)v;
    return 0;
}

/* ---- running a job ---- */

static const char *const rm_label[RM_COUNT] = {"customers", "products",  "accounts", "stock",
                                               "orders",    "shipments", "sagas"};
/* The read model a query on this worker thread found damaged or rebuilding (-1:
 * none): the job then answers 503 "read model rebuilding", not 500. */
static _Thread_local int rm_unavailable = -1;
/* ... because its database could not be reached (not rebuilding) */
static _Thread_local bool rm_unreachable;

void svc_job_run(struct svc_job *j)
{
    int saved = rm_unavailable; /* a nested job (an MCP tool) keeps its caller's */
    rm_unavailable = -1;
    rm_unreachable = false;
    int rc = j->fn(j);
    if (rm_unavailable >= 0 && rm_unreachable && (rc || j->status >= 500)) {
        svc_problem(j, 503, "Read model unavailable",
                    "the %s read model's database cannot be reached; retry shortly",
                    rm_label[rm_unavailable]);
        return;
    }
    if (rm_unavailable >= 0 && (rc || j->status >= 500)) {
        svc_problem(j, 503, "Read model rebuilding",
                    "the %s read model is being rebuilt from the event log; retry shortly",
                    rm_label[rm_unavailable]);
    } else if (rc && !j->status) {
        struct ag_err err;
        ag_err_set(&err, rc, "%s", ag_strerror(rc));
        svc_error(j, rc, &err);
    }
    rm_unavailable = saved;
}

static void work_cb(uv_work_t *w)
{
    svc_job_run(w->data);
}

static void after_cb(uv_work_t *w, int status)
{
    struct svc_job *j = w->data;
    AG_UNUSED(status);
    if (j->park && j->park(j, j->req)) return; /* kept: answered later */
    svc_job_answer(j);
}

int svc_job_requeue(struct svc_job *j)
{
    j->status = 0;
    j->problem = false;
    json_decref(j->resp);
    json_decref(j->errors);
    j->resp = j->errors = NULL;
    ag_free(j->raw);
    j->raw = NULL;
    j->title[0] = j->detail[0] = j->location[0] = j->etag[0] = '\0';
    j->rm_read = false;
    return uv_queue_work(ag_http_req_loop(j->req), &j->work, work_cb, after_cb) ? AG_ENOMEM : 0;
}

static void job_respond(struct svc_job *j, struct ag_http_req *req)
{
    if (j->etag[0]) ag_http_resp_header(req, "ETag", j->etag);
    if (j->pref_applied[0]) ag_http_resp_header(req, "Preference-Applied", j->pref_applied);
    if (j->location[0]) ag_http_resp_header(req, "Location", j->location);
    if (j->replayed) ag_http_resp_header(req, "Idempotent-Replayed", "true");
    /* a 5xx of the services' own making: the gateway's breaker and outlier
     * detection must not take it for a failing upstream (see include/agora/mesh.h) */
    if (j->problem && j->status >= 500) ag_http_resp_header(req, "X-Agora-Error", "service");
    if (j->rm_read) { /* 0 too: a projection has not committed its first page yet */
        char pos[32];
        snprintf(pos, sizeof pos, "%llu", (unsigned long long)j->rm_position);
        ag_http_resp_header(req, "X-Projection-Position", pos);
    }
    if (j->status == 503) { /* when to try again: the store's next retry, else 1 s */
        struct ag_store_health h;
        ag_store_health(j->env->store, &h);
        unsigned long long secs = h.writable ? 1 : (h.retry_in_ms + 999) / 1000;
        char after[24];
        snprintf(after, sizeof after, "%llu", secs ? secs : 1);
        ag_http_resp_header(req, "Retry-After", after);
    }
    if (j->problem) {
        ag_http_respond_problem(req, j->status, NULL, j->title, j->detail, j->errors);
        j->errors = NULL;
    } else if (j->raw) { /* bytes from the read cache (readcache.c) */
        ag_http_respond(req, j->status ? j->status : 200, "application/json", j->raw, j->raw_len);
    } else if (j->resp) {
        ag_http_respond_json(req, j->status ? j->status : 200, j->resp);
        j->resp = NULL;
    } else {
        ag_http_respond(req, j->status ? j->status : 204, NULL, NULL, 0);
    }
}

/* Jobs are recycled: each is ~2.4 KB, and glibc consolidates its fast bins before
 * every allocation of that size; an order costs a POST and a blocking GET or
 * more (issue 11). A few are kept. */
enum { JOB_KEEP = 64 };
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static struct svc_job *job_spare[JOB_KEEP];
static size_t job_nspare;

static struct svc_job *job_alloc(void)
{
    pthread_mutex_lock(&job_mu);
    struct svc_job *j = job_nspare ? job_spare[--job_nspare] : NULL;
    pthread_mutex_unlock(&job_mu);
    if (!j && !(j = ag_malloc(sizeof *j))) return NULL;
    memset(j, 0, sizeof *j);
    return j;
}

static void job_release(struct svc_job *j)
{
    pthread_mutex_lock(&job_mu);
    if (job_nspare < JOB_KEEP) {
        job_spare[job_nspare++] = j;
        j = NULL;
    }
    pthread_mutex_unlock(&job_mu);
    ag_free(j);
}

void svc_job_answer(struct svc_job *j)
{
    if (j->finish) j->finish(j, j->req);
    if (!j->streamed) job_respond(j, j->req); /* a streamed answer: `finish` ended it */
    ag_free(j->raw);
    json_decref(j->body);
    json_decref(j->resp);
    json_decref(j->errors);
    for (int i = 0; i < 4; i++) ag_free((void *)j->q[i]);
    job_release(j);
}

/* Event metadata: who (the actor's sub and roles), the request id and the trace. */
static void copy_meta(struct svc_job *j, struct ag_http_req *req)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_puts(&b, "{\"actor\":{\"sub\":");
    const char *sub = j->who.authenticated ? j->who.sub : "anonymous";
    ag_buf_json_str(&b, sub, strlen(sub));
    ag_buf_printf(&b, ",\"roles\":[%s]}",
                  j->who.admin           ? "\"admin\""
                  : j->who.carrier       ? "\"carrier\""
                  : j->who.authenticated ? "\"customer\""
                                         : "");
    const char *rid = ag_http_req_id(req);
    const struct ag_obs_trace *t = ag_http_req_trace(req);
    if (rid) {
        ag_buf_puts(&b, ",\"requestId\":");
        ag_buf_json_str(&b, rid, strlen(rid));
    }
    if (t) {
        char tp[AG_OBS_TRACEPARENT_LEN + 1];
        ag_obs_trace_format(t, tp);
        ag_buf_printf(&b, ",\"traceparent\":\"%s\"", tp);
    }
    ag_buf_putc(&b, '}');
    if (b.data && b.len < sizeof j->meta)
        memcpy(j->meta, b.data, b.len + 1);
    else
        snprintf(j->meta, sizeof j->meta, "{}");
    ag_buf_free(&b);
}

int svc_job_start(struct svc_env *p, struct ag_http_req *req, const struct svc_route *r,
                  const struct svc_principal *who)
{
    struct svc_job *j = job_alloc();
    if (!j) return AG_ENOMEM;
    j->req = req;
    j->env = p;
    j->fn = r->fn;
    j->who = *who;
    j->work.data = j;
    if (ag_span_enabled()) { /* the server span says which context answered */
        char name[AG_SPAN_NAME_MAX];
        snprintf(name, sizeof name, "%s %s %s", p->name, r->method, r->path);
        ag_http_req_span_name(req, name);
    }
    const char *v = r->param ? ag_http_req_param(req, r->param) : NULL;
    if (v) snprintf(j->param, sizeof j->param, "%s", v);
    for (int i = 0; i < 4 && r->query[i]; i++) { /* ":name": a second path parameter */
        const char *q = r->query[i][0] == ':' ? ag_http_req_param(req, r->query[i] + 1)
                                              : ag_http_req_query_param(req, r->query[i]);
        j->q[i] = q ? ag_strdup(q) : NULL;
    }
    const char *key = ag_http_req_header(req, "Idempotency-Key");
    if (key) snprintf(j->idem_key, sizeof j->idem_key, "%s", key);
    copy_meta(j, req);
    size_t blen = 0;
    ag_http_req_body(req, &blen);
    j->finish = r->finish;
    j->park = r->park;
    if (r->prepare) { /* a route that reads the request itself (POST /mcp) */
        int answered = r->prepare(j, req);
        if (answered) {
            for (int i = 0; i < 4; i++) ag_free((void *)j->q[i]);
            job_release(j);
            return answered < 0 ? answered : 0;
        }
    } else if (strcmp(ag_http_req_method(req), "POST") == 0 && blen) {
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_http_req_json(req, &j->body, &err)) {
            for (int i = 0; i < 4; i++) ag_free((void *)j->q[i]);
            job_release(j);
            return ag_http_respond_problem(req, 400, NULL, "Malformed JSON", err.msg, NULL);
        }
    }
    if (uv_queue_work(ag_http_req_loop(req), &j->work, work_cb, after_cb) != 0) {
        if (j->finish) j->finish(j, req); /* frees j->ext */
        json_decref(j->body);
        for (int i = 0; i < 4; i++) ag_free((void *)j->q[i]);
        job_release(j);
        return AG_ENOMEM;
    }
    return 0;
}

/* ---- idempotency keys ---- */

/* The record of a key is the stream `idempotency-<hash(scope, principal, key)>`:
 *   IdempotencyKeyClaimed {requestHash, at}   a request took the key (at: Unix ms)
 *   IdempotentResponse {status, body, problem, location}   its final answer
 *   IdempotencyKeyReleased {status, reason}   it failed without a final answer (5xx,
 *                                             a lost race): the key is free again
 * A claim can follow a release, or a claim older than SVC_IDEM_LEASE_MS with no
 * answer (its process died between claim and answer): the new claim is appended
 * with the exact expected version, so of two retries only one takes the key. The
 * last event decides: a response is replayed (same body) or refused with 422
 * (another body); a fresh claim is 409 "in progress" (422 for another body); a
 * release or an expired claim of the same body lets the request proceed. */
#define SVC_IDEM_LEASE_MS 30000 /* the longest a request may take */

/* Expiry (IETF draft-ietf-httpapi-idempotency-key-header): a record whose claim is
 * older than the environment's TTL (24 h by default) is forgotten: the key is
 * free again, whatever body it was first used with, and the request that reuses
 * it is a new request (its claim is appended after the old record, which the
 * log's retention rule for `idempotency-` streams lets a scavenge remove). */
int64_t svc_env_now_ms(const struct svc_env *env)
{
    if (!env || !env->clock) return svc_now_ms();
    return (int64_t)(ag_clock_now(env->clock) / 1000000);
}

static int64_t idem_ttl_ms(const struct svc_env *env)
{
    return (int64_t)(env->idem_ttl_ms ? env->idem_ttl_ms : SVC_IDEM_TTL_DEFAULT_MS);
}

/* Keys are per principal: the same key from two principals names two records. */
void svc_idem_stream(const struct svc_job *j, const char *scope, char out[64])
{
    uint64_t h =
        ag_xxh3_seed(j->idem_key, strlen(j->idem_key),
                     ag_xxh3_seed(j->who.sub, strlen(j->who.sub), ag_xxh3(scope, strlen(scope))));
    snprintf(out, 64, "idempotency-%016llx", (unsigned long long)h);
}

static uint64_t body_hash(const struct svc_job *j)
{
    char *t = j->body ? json_dumps(j->body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    uint64_t h = t ? ag_xxh3(t, strlen(t)) : 0;
    free(t);
    return h;
}

static int replay(struct svc_job *j, const json_t *resp)
{
    j->replayed = 1;
    j->status = (int)json_integer_value(json_object_get(resp, "status"));
    const char *loc = json_string_value(json_object_get(resp, "location"));
    if (loc) snprintf(j->location, sizeof j->location, "%s", loc);
    json_t *body = json_object_get(resp, "body");
    if (json_object_get(resp, "problem") == json_true()) {
        j->problem = true;
        snprintf(j->title, sizeof j->title, "%s",
                 json_string_value(json_object_get(body, "title")) ?: "");
        snprintf(j->detail, sizeof j->detail, "%s",
                 json_string_value(json_object_get(body, "detail")) ?: "");
        json_t *errors = json_object_get(body, "errors"); /* null when the first had none */
        j->errors = json_is_array(errors) ? json_incref(errors) : NULL;
    } else {
        j->resp = json_incref(body);
        const char *k;
        json_t *v;
        void *it;
        json_object_foreach_safe(j->resp, it, k, v) svc_pii_open_field(j->resp, k); /* sealed */
    }
    return 1;
}

static bool ev_is(const struct ag_event *ev, const char *type)
{
    return ev->type_len == strlen(type) && memcmp(ev->type, type, ev->type_len) == 0;
}

/* Append a claim of the key at `expected`; 0 when this request holds it now. */
static int idem_claim(struct svc_job *j, const char *stream, const char *hash, int64_t expected)
{
    char data[128];
    snprintf(data, sizeof data, "{\"requestHash\":\"%s\",\"at\":%lld}", hash,
             (long long)svc_env_now_ms(j->env));
    struct ag_event_data ev = {
        .type = "IdempotencyKeyClaimed", .type_len = 21, .data = data, .data_len = strlen(data)};
    int rc = ag_store_append(j->env->store, stream, strlen(stream), expected, &ev, 1, NULL, NULL);
    if (rc) return rc;
    j->idem_claimed = true;
    j->idem_version = expected == AG_STORE_NO_STREAM ? 0 : expected + 1;
    return 0;
}

/* Decide from the stream's last events (newest first): 1 answered, 0 claim it at
 * *expected, -1 look again. */
static int idem_decide(struct svc_job *j, const struct ag_event_page *pg, const char *hash,
                       int64_t *expected)
{
    const struct ag_event *last = &pg->events[0];
    *expected = last->version;
    if (ev_is(last, "IdempotencyKeyReleased")) return 0;
    const struct ag_event *claim_ev = last;
    if (ev_is(last, "IdempotentResponse")) claim_ev = pg->count > 1 ? &pg->events[1] : NULL;
    json_t *claim = claim_ev ? json_loadb(claim_ev->data, claim_ev->data_len, 0, NULL) : NULL;
    const char *h = json_string_value(json_object_get(claim, "requestHash"));
    int64_t at = json_integer_value(json_object_get(claim, "at"));
    int out = 1;
    int64_t now = svc_env_now_ms(j->env);
    if (claim && now - at >= idem_ttl_ms(j->env)) {
        out = 0; /* expired: the key is free, this is a new request */
    } else if (!h || strcmp(h, hash) != 0) {
        svc_problem(j, 422, "Idempotency-Key reused",
                    "this Idempotency-Key was used with a different request body");
    } else if (last != claim_ev) {
        json_t *resp = json_loadb(last->data, last->data_len, 0, NULL);
        replay(j, resp);
        json_decref(resp);
    } else if (now - at >= SVC_IDEM_LEASE_MS) {
        AG_WARN("api.idempotency_claim_expired", AG_LS("key", j->idem_key),
                AG_LI("ageMs", now - at));
        out = 0; /* its request died between claim and answer: take the key over */
    } else {
        svc_problem(j, 409, "Request in progress",
                    "a request with this Idempotency-Key is still being processed");
    }
    json_decref(claim);
    return out;
}

int svc_idem_begin(struct svc_job *j, const char *scope)
{
    if (!j->idem_key[0]) return 0;
    if (strlen(j->idem_key) > 200) {
        svc_problem(j, 400, "Invalid Idempotency-Key", "Idempotency-Key is longer than 200 bytes");
        return 1;
    }
    char stream[64];
    svc_idem_stream(j, scope, stream);
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)body_hash(j));
    for (int attempt = 0; attempt < 3; attempt++) {
        struct ag_event_page pg;
        int rc = ag_store_read_stream(j->env->store, stream, strlen(stream), -1, AG_READ_BACKWARD,
                                      2, &pg, NULL);
        if (rc == AG_ENOTFOUND) {
            if (idem_claim(j, stream, hash, AG_STORE_NO_STREAM) == 0) return 0;
            continue; /* a concurrent request claimed it: look again */
        }
        if (rc) return 0;
        int64_t expected = -1;
        int d = pg.count ? idem_decide(j, &pg, hash, &expected) : -1;
        ag_event_page_free(&pg);
        if (d == 1) return 1;
        if (d == 0 && idem_claim(j, stream, hash, expected) == 0) return 0;
        /* another request took the key first: look again */
    }
    svc_problem(j, 409, "Request in progress",
                "a request with this Idempotency-Key is still being processed");
    return 1;
}

/* Free the key after a failure that is not the request's final answer. */
static void idem_release(struct svc_job *j, const char *stream)
{
    char data[160];
    snprintf(data, sizeof data, "{\"status\":%d,\"reason\":\"%s\"}", j->status,
             j->status == 409 ? "concurrent modification" : "server error");
    struct ag_event_data ev = {
        .type = "IdempotencyKeyReleased", .type_len = 22, .data = data, .data_len = strlen(data)};
    struct ag_err err;
    if (ag_store_append(j->env->store, stream, strlen(stream), j->idem_version, &ev, 1, NULL, &err))
        AG_WARN("api.idempotency_release_failed", AG_LS("error", err.msg));
}

/* The IdempotentResponse record of the answer `j` holds (malloc'd JSON text), or
 * NULL: no memory, or a personal field that could not be sealed (*unsealed). */
static char *idem_response_text(struct svc_job *j, bool *unsealed)
{
    *unsealed = false;
    json_t *body = j->problem ? json_pack("{s:s, s:s, s:O?}", "title", j->title, "detail",
                                          j->detail, "errors", j->errors)
                              : json_incref(j->resp);
    if (body && j->pii_fields && !j->problem) { /* never personal data in clear (pii.c) */
        json_t *copy = json_copy(body);
        json_decref(body);
        body = copy;
        struct ag_err perr;
        for (size_t i = 0; body && j->pii_fields[i]; i++)
            if (svc_pii_seal_field(body, j->pii_fields[i], j->pii_subject, &perr)) {
                AG_WARN("api.idempotency_not_sealed", AG_LS("error", perr.msg));
                json_decref(body);
                *unsealed = true;
                return NULL;
            }
    }
    json_t *rec = json_pack("{s:i, s:o, s:b}", "status", j->status, "body",
                            body ? body : json_null(), "problem", j->problem);
    if (rec && j->location[0]) json_object_set_new(rec, "location", json_string(j->location));
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    return text;
}

void svc_idem_end(struct svc_job *j, const char *scope)
{
    if (!j->idem_key[0] || j->replayed || !j->idem_claimed) return;
    j->idem_claimed = false;
    char stream[64];
    svc_idem_stream(j, scope, stream);
    /* A 5xx (or no answer yet: the error is filled in later) and a 409 from a lost
     * concurrency race are not the final answer: release the key for a retry. Any
     * other 4xx (a duplicate email, say) is the answer every replay must get. */
    if (j->status == 0 || j->status >= 500 ||
        (j->status == 409 && strcmp(j->title, "Concurrent modification") == 0)) {
        idem_release(j, stream);
        return;
    }
    bool unsealed;
    char *text = idem_response_text(j, &unsealed);
    if (unsealed) idem_release(j, stream); /* a retry runs the request again instead */
    if (!text) return;
    struct ag_event_data ev = {
        .type = "IdempotentResponse", .type_len = 18, .data = text, .data_len = strlen(text)};
    struct ag_err err;
    if (ag_store_append(j->env->store, stream, strlen(stream), j->idem_version, &ev, 1, NULL, &err))
        AG_WARN("api.idempotency_record_failed", AG_LS("error", err.msg));
    free(text);
}

/* ---- the key's record committed with the command (issue 19) ----
 *
 * A first request with a key costs three appends above, each its own group
 * commit and fdatasync when the load is light: the claim, the command, the
 * answer. A handler whose command is idempotent by itself (its ids derive from
 * the key, svc_job_id: a retry decides AG_EEXISTS) may defer the claim
 * (svc_idem_begin_defer) when the key has no record yet, and commit the record,
 * claim and answer together, in the multi-stream append of the command's events
 * (svc_idem_rec_make + ag_es_execute_extra: expected "no stream", so of two
 * concurrent first requests one writes the record, the other decides AG_EEXISTS
 * or conflicts on the record). Either both are durable or neither: no claim is
 * ever left behind. Any other outcome goes the usual way (svc_idem_settle):
 * claim now, then record the final answer or release the key, so every replay
 * answers exactly as before. */
int svc_idem_begin_defer(struct svc_job *j, const char *scope, bool defer)
{
    j->idem_deferred = false;
    if (!defer || !j->idem_key[0] || strlen(j->idem_key) > 200) return svc_idem_begin(j, scope);
    char stream[64];
    svc_idem_stream(j, scope, stream);
    int64_t v = -1;
    if (ag_store_stream_version(j->env->store, stream, strlen(stream), &v) == 0 && v < 0) {
        j->idem_deferred = true; /* no record: it commits with the command */
        return 0;
    }
    return svc_idem_begin(j, scope);
}

int svc_idem_rec_make(struct svc_job *j, const char *scope, struct svc_idem_rec *out)
{
    memset(out, 0, sizeof *out);
    if (!j->idem_deferred) return AG_EINVAL;
    bool unsealed;
    if (!(out->answer = idem_response_text(j, &unsealed))) return AG_ENOMEM;
    svc_idem_stream(j, scope, out->stream);
    snprintf(out->claim, sizeof out->claim, "{\"requestHash\":\"%016llx\",\"at\":%lld}",
             (unsigned long long)body_hash(j), (long long)svc_env_now_ms(j->env));
    out->ev[0] = (struct ag_event_data){.type = "IdempotencyKeyClaimed",
                                        .type_len = 21,
                                        .data = out->claim,
                                        .data_len = strlen(out->claim)};
    out->ev[1] = (struct ag_event_data){.type = "IdempotentResponse",
                                        .type_len = 18,
                                        .data = out->answer,
                                        .data_len = strlen(out->answer)};
    out->part =
        (struct ag_append_part){out->stream, strlen(out->stream), AG_STORE_NO_STREAM, out->ev, 2};
    return 0;
}

void svc_idem_rec_free(struct svc_idem_rec *r)
{
    free(r->answer); /* jansson's */
    r->answer = NULL;
}

void svc_idem_settle(struct svc_job *j, const char *scope)
{
    if (!j->idem_deferred) {
        svc_idem_end(j, scope);
        return;
    }
    j->idem_deferred = false;
    /* a claim now, then the answer as usual; or the record another request wrote
     * meanwhile, whose answer then wins, exactly as if this one had come second */
    json_t *resp = j->resp, *errors = j->errors;
    j->resp = j->errors = NULL;     /* a replay sets them */
    if (svc_idem_begin(j, scope)) { /* j answers from the record (or 409/422) */
        json_decref(resp);
        json_decref(errors);
        return;
    }
    j->resp = resp, j->errors = errors;
    svc_idem_end(j, scope);
}

/* ---- read models ---- */

int svc_get_one(struct svc_job *j, const struct svc_one *one, const char *id, const char *owner)
{
    const char *args[] = {id, owner};
    /* for the read cache: past the last commit, and the position from before the read */
    bool fresh = j->rm_fresh;
    uint64_t pos = fresh ? ag_projector_position(j->env->projector) : 0;
    json_t *rows =
        fresh ? svc_rm_query_fresh_ids(j->env, one->rm, one->sql, args, 2, one->ids, one->row)
              : svc_rm_query_ids(j->env, one->rm, one->sql, args, 2, one->ids, one->row);
    if (rows && !json_array_size(rows) && svc_stream_exists(j->env, one->prefix, id)) {
        svc_rm_catch_up_rm(j->env, one->rm); /* just written: wait for its read model */
        json_decref(rows);
        rows = svc_rm_query_ids(j->env, one->rm, one->sql, args, 2, one->ids, one->row);
    }
    if (!rows) return AG_EIO;
    if (!json_array_size(rows)) {
        json_decref(rows);
        return svc_problem(j, 404, one->title, "%s %s", one->missing, id);
    }
    j->rm_position = fresh ? pos : ag_projector_position(j->env->projector);
    j->rm_read = true;
    svc_ok(j, 200, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

json_t *svc_page(json_t *rows, int limit)
{
    json_t *next = json_null();
    if (json_array_size(rows) > (size_t)limit) { /* the query asked for one row more */
        json_array_remove(rows, (size_t)limit);
        next = json_incref(json_object_get(json_array_get(rows, (size_t)limit - 1), "id"));
    }
    return json_pack("{s:o, s:o}", "items", rows, "nextCursor", next);
}

void svc_rm_catch_up(struct svc_env *p)
{
    ag_projector_wait_head(p->projector, 2000);
}

void svc_rm_catch_up_rm(struct svc_env *p, enum rm_id rm)
{
    ag_projector_wait_head_of(p->projector, (size_t)rm, 2000);
}

/* Called with lock[rm] write-locked: the file was replaced by a rebuild. */
int svc_rm_reopen(struct svc_env *p, enum rm_id rm)
{
    uint64_t gen = 0;
    ag_projector_usable(p->projector, rm, &gen);
    ag_rm_close(p->rms->rm[rm]);
    p->rms->rm[rm] = NULL;
    int rc = ag_rm_open(p->rms->dir, svc_rm_names[rm], AG_RM_READONLY, &p->rms->rm[rm], NULL);
    if (!rc) p->rms->gen[rm] = gen;
    return rc;
}

/* The query handle of `rm`, read-locked (unlock with pthread_rwlock_unlock), or
 * NULL while the read model is being rebuilt. A handle opened on a file a rebuild
 * has replaced is reopened first. */
static struct ag_rm *rm_acquire(struct svc_env *p, enum rm_id rm)
{
    uint64_t gen;
    for (int tries = 0; tries < 2; tries++) {
        if (!ag_projector_usable(p->projector, rm, &gen)) break;
        pthread_rwlock_rdlock(&p->rms->lock[rm]);
        if (p->rms->gen[rm] == gen && p->rms->rm[rm]) return p->rms->rm[rm];
        pthread_rwlock_unlock(&p->rms->lock[rm]);
        pthread_rwlock_wrlock(&p->rms->lock[rm]);
        if (p->rms->gen[rm] != gen || !p->rms->rm[rm]) svc_rm_reopen(p, rm);
        pthread_rwlock_unlock(&p->rms->lock[rm]);
    }
    rm_unavailable = (int)rm;
    return NULL;
}

/* A failed query: damage (AG_ECORRUPT) is reported to the projector, which
 * rebuilds the read model; anything else is logged. */
static void rm_failed(struct svc_env *p, enum rm_id rm, const struct ag_err *err, const char *sql)
{
    if (err->code == AG_ECORRUPT) {
        ag_projector_report_damage(p->projector, rm, err->msg);
        rm_unavailable = (int)rm;
        return;
    }
    if (err->code == AG_EUNAVAILABLE) { /* a database server away: 503, retry later */
        rm_unavailable = (int)rm;
        rm_unreachable = true;
        AG_WARN("rm.query_unavailable", AG_LS("error", err->msg));
        return;
    }
    AG_ERROR("rm.query_failed", AG_LS("sql", sql), AG_LS("error", err->msg));
}

struct rows {
    json_t *rows;
    svc_row_fn row;
};

static int add_row(const struct ag_rm_row *r, void *ud)
{
    struct rows *c = ud;
    json_array_append_new(c->rows, c->row(r));
    return 0;
}

/* The arguments of a query: text, or ids (bit i of `ids`) bound by ag_rm_id_arg. */
struct rm_args {
    struct ag_rm_arg a[8];
    uint8_t idb[8][16];
    size_t n;
};

static void rm_args_fill(struct rm_args *v, const char *const *args, size_t nargs, unsigned ids)
{
    v->n = nargs < 8 ? nargs : 8;
    for (size_t i = 0; i < v->n; i++)
        v->a[i] = ids >> i & 1u ? ag_rm_id_arg(args[i], v->idb[i]) : AG_RM_TEXT(args[i]);
}

json_t *svc_rm_query(struct svc_env *p, enum rm_id rm, const char *sql, const char *const *args,
                     size_t nargs, svc_row_fn row)
{
    return svc_rm_query_ids(p, rm, sql, args, nargs, 0, row);
}

json_t *svc_rm_query_ids(struct svc_env *p, enum rm_id rm, const char *sql, const char *const *args,
                         size_t nargs, unsigned ids, svc_row_fn row)
{
    struct ag_rm *db = rm_acquire(p, rm);
    if (!db) return NULL;
    struct rm_args v;
    rm_args_fill(&v, args, nargs, ids);
    struct rows c = {json_array(), row};
    struct ag_err err;
    ag_err_clear(&err);
    if (ag_rm_query(db, sql, v.a, v.n, add_row, &c, &err)) {
        rm_failed(p, rm, &err, sql);
        json_decref(c.rows);
        c.rows = NULL;
    }
    pthread_rwlock_unlock(&p->rms->lock[rm]);
    return c.rows;
}

json_t *svc_rm_query_fresh(struct svc_env *p, enum rm_id rm, const char *sql,
                           const char *const *args, size_t nargs, svc_row_fn row)
{
    return svc_rm_query_fresh_ids(p, rm, sql, args, nargs, 0, row);
}

json_t *svc_rm_query_fresh_ids(struct svc_env *p, enum rm_id rm, const char *sql,
                               const char *const *args, size_t nargs, unsigned ids, svc_row_fn row)
{
    uint64_t gen = 0;
    if (!ag_projector_usable(p->projector, rm, &gen)) {
        rm_unavailable = (int)rm;
        return NULL;
    }
    struct svc_readmodels *r = p->rms;
    pthread_mutex_lock(&r->fresh_lock);
    if (r->fresh[rm] && r->fresh_gen[rm] != gen) { /* a rebuild replaced the file */
        ag_rm_close(r->fresh[rm]);
        r->fresh[rm] = NULL;
    }
    if (!r->fresh[rm] && ag_rm_open(r->dir, svc_rm_names[rm], AG_RM_READONLY, &r->fresh[rm], NULL))
        r->fresh[rm] = NULL;
    r->fresh_gen[rm] = gen;
    json_t *rows = NULL;
    if (r->fresh[rm]) {
        struct rm_args v;
        rm_args_fill(&v, args, nargs, ids);
        struct rows c = {json_array(), row};
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_rm_query(r->fresh[rm], sql, v.a, v.n, add_row, &c, &err)) {
            rm_failed(p, rm, &err, sql);
            json_decref(c.rows);
        } else {
            rows = c.rows;
        }
    }
    pthread_mutex_unlock(&r->fresh_lock);
    /* no handle: the shared one */
    return rows ? rows : svc_rm_query_ids(p, rm, sql, args, nargs, ids, row);
}

/* ---- small read-model helpers shared by the contexts ---- */

json_t *svc_money_json(json_int_t amount, const char *currency)
{
    return json_pack("{s:I, s:s}", "amount", amount, "currency", currency);
}

const char *svc_col(const struct ag_rm_row *r, int i)
{
    return ag_rm_text(r, i);
}

json_t *svc_id_json(const struct ag_rm_row *r, int i)
{
    char buf[AG_RM_ID_MAX];
    const char *id = ag_rm_id(r, i, buf);
    return id ? json_string(id) : json_null();
}

json_t *svc_time_json(const struct ag_rm_row *r, int i)
{
    if (ag_rm_is_null(r, i)) return json_null();
    char ts[32];
    ag_time_rfc3339((uint64_t)ag_rm_int64(r, i), ts);
    return json_string(ts);
}

int svc_sql_run(struct ag_rm *db, const char *sql, const char *id, const char *a, const char *b,
                const char *c, const char *ts)
{
    return svc_sql_run_ids(db, sql, 0, id, a, b, c, ts);
}

int svc_sql_run_ids(struct ag_rm *db, const char *sql, unsigned ids, const char *id, const char *a,
                    const char *b, const char *c, const char *ts)
{
    const char *args[] = {id, a, b, c, ts};
    struct rm_args v;
    rm_args_fill(&v, args, 5, ids);
    return ag_rm_exec(db, sql, v.a, v.n, NULL);
}

/* RFC 9110 §13.1.2: If-None-Match matches with the weak comparison: any listed
 * tag (W/ ignored) equal to ours, or "*". */
bool svc_inm_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (*p == '*') return true;
        if (strncmp(p, "W/", 2) == 0) p += 2;
        const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!end) return false;
        if ((size_t)(end + 1 - p) == el && memcmp(p, etag, el) == 0) return true;
        p = end + 1;
    }
    return false;
}
