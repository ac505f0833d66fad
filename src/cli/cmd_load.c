/*
 * agora load: a load generator for a running platform. It registers K customers
 * (funding most generously and a chosen share poorly, so some payments fail and
 * compensate), reads the catalog, then places orders over keep-alive HTTP with
 * agora's own client on one libuv loop, either at a fixed rate (open loop) or
 * with C clients that each place their next order when the previous one was
 * accepted (closed loop). Every accepted order is polled until it is confirmed
 * or cancelled, so the summary tells both how fast orders are accepted (POST to
 * 202) and how fast the saga finishes them (POST to the final state).
 *
 * One thread drives everything: the loop runs the two connection pools (orders,
 * polls — separate so polling never queues POSTs behind it), a tick timer that
 * issues rate-mode orders and due polls, and a progress timer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "agora/base.h"
#include "agora/http.h"
#include "agora/gateway.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora load [--target URL] [--rate N | --concurrency C] [--duration S | --orders N]\n"
    "                  [--customers K] [--seed-funds CENTS] [--poor-ratio R] [--poor-funds CENTS]\n"
    "                  [--connections N] [--poll-ms MS] [--order-timeout S] [--token JWT] "
    "[--wait S] [--quiet]\n"
    "\n"
    "Place orders against a running `agora run` and report what became of them.\n"
    "Sets up K customers (unique emails, funded wallets), reads the product list,\n"
    "then places orders of 1-3 random products with quantity 1-3 each over HTTP\n"
    "keep-alive, and polls every accepted order until it is confirmed or cancelled.\n"
    "\n"
    "  --target URL         the platform, http://HOST:PORT with a numeric host\n"
    "                       (default http://127.0.0.1:8080, env AGORA_TARGET)\n"
    "  --token JWT          sent as a bearer token (env AGORA_TOKEN): writes through the\n"
    "                       gateway need one, e.g. --token $(agora token --sub load --role "
    "customer)\n"
    "  --rate N             open loop: start N orders per second, whatever the answers\n"
    "  --concurrency C      closed loop: C clients, each placing its next order once the\n"
    "                       previous one was answered (default 16 when --rate is not given)\n"
    "  --duration S         place orders for S seconds (default 10)\n"
    "  --orders N           place N orders, then stop (instead of --duration)\n"
    "  --customers K        customers to register and fund (default 16)\n"
    "  --seed-funds CENTS   deposit per customer in minor units (default 1000000000)\n"
    "  --poor-ratio R       share 0..1 of customers funded with --poor-funds instead, so\n"
    "                       their orders mostly fail at payment and compensate (default 0)\n"
    "  --poor-funds CENTS   deposit for the poor customers (default 1000)\n"
    "  --connections N      connections for placing orders (default C, or 64 with --rate)\n"
    "  --poll-ms MS         interval between polls of one pending order (default 50)\n"
    "  --order-timeout S    stop polling an order after S seconds; it counts as pending\n"
    "                       (default 30)\n"
    "  --wait S             blocking polls (default 10; 0: plain polls every --poll-ms):\n"
    "                       GET with `Prefer: wait=S` and If-None-Match: <last ETag>, which\n"
    "                       the server answers the moment the order changes. When the\n"
    "                       server does not apply it (no Preference-Applied), the run falls\n"
    "                       back to --poll-ms\n"
    "  --quiet              no live progress line (it is shown only on a terminal anyway)\n"
    "\n"
    "Output: one JSON line on stdout: placed (accepted with 202), confirmed, compensated\n"
    "(cancelled), pending (no final state within the timeout), errors (non-2xx answers),\n"
    "rejected (503 with Retry-After: the server's admission control; in a closed loop the\n"
    "client places the order again after the delay) and transportErrors, ordersPerSec (placed), "
    "confirmedPerSec, and post/final latency\n"
    "percentiles in microseconds (POST to 202; POST to the observed final state, whose\n"
    "resolution is the server's notification with --wait, else --poll-ms; pollMode says\n"
    "which: \"wait\" or \"interval\"). In rate mode latency is measured from the submit, so a\n"
    "saturated client under-reports it (coordinated omission).\n"
    "Exit status: 0 done, 1 the target was unreachable (at start, or for 2 s during the\n"
    "run: the summary then says \"unreachable\": true), 2 usage.\n";

#define ID_MAX     64
#define GIVE_UP_NS 2000000000ull /* no answer at all for this long: the target is gone */

struct opts {
    char host[64];
    uint16_t port;
    double rate;
    unsigned concurrency, connections, customers, poll_ms;
    double duration_s, order_timeout_s, poor_ratio;
    unsigned wait_s; /* Prefer: wait=S on polls; 0 = plain interval polls */
    uint64_t orders;
    int64_t funds, poor_funds;
    bool quiet;
    char auth[2048]; /* "Bearer <token>" for a target behind the gateway, or "" */
};

struct lat {
    uint32_t *v; /* microseconds */
    size_t n, cap;
};

struct order {
    char id[ID_MAX];
    uint64_t t0;        /* POST submitted (monotonic ns) */
    uint64_t next_poll; /* due time of the next poll */
    bool polling;       /* a poll is in flight */
    bool done;          /* final state seen (freed by the next scan) */
    char etag[80];      /* the last ETag seen ("" none yet) */
};

struct load {
    struct opts o;
    uv_loop_t loop;
    struct ag_http_upstream *up, *pollup;
    uv_timer_t tick, progress;
    struct ag_xoshiro rng;
    char (*products)[ID_MAX];
    size_t nproducts;
    char (*customers)[ID_MAX];
    size_t ncustomers;
    struct order **pending;
    size_t npending, cappending;
    struct lat post, final;
    uint64_t attempted, placed, confirmed, cancelled, errors, transport, dropped;
    uint64_t rejected; /* 503 with Retry-After: the server's admission control */
    uint64_t keys;     /* Idempotency-Keys used: a retried order gets a new one */
    unsigned deferred; /* closed-loop clients waiting out a Retry-After */
    unsigned inflight_posts, inflight_polls;
    unsigned resting; /* closed-loop clients pausing after a transport error */
    uint64_t t_start, t_end_placing, t_last_final, last_ok, last_scan;
    char run_id[24];
    bool placing_done, unreachable, tty;
    bool wait_applied;  /* the server answered Preference-Applied: wait */
    bool wait_refused;  /* it answered a waiting poll without it: interval polls */
    unsigned max_polls; /* polls in flight at once (a parked one holds a connection) */
};

static uint64_t mono_ns(void)
{
    return ag_clock_mono(ag_clock_system());
}

static int lat_add(struct lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *v = ag_realloc(l->v, cap * sizeof *v);
        if (!v) return AG_ENOMEM;
        l->v = v, l->cap = cap;
    }
    uint64_t us = ns / 1000;
    l->v[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile q (0..1) of a sorted sample; 0 when empty. */
static json_int_t pct(const struct lat *l, double q)
{
    if (!l->n) return 0;
    size_t i = (size_t)(q * (double)l->n);
    return l->v[i < l->n ? i : l->n - 1];
}

/* ---- options ---- */

static int parse_target(const char *url, struct opts *o)
{
    const char *hp = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", hp);
    char *slash = strchr(buf, '/');
    if (slash) *slash = 0;
    return ag_hostport_parse(buf, AG_HOSTPORT_NUMERIC, o->host, sizeof o->host, &o->port, NULL) ? -1
                                                                                                : 0;
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* One option with a value; 1 when `name` is not this option, -1 when bad. */
static int opt_value(struct opts *o, const char *name, const char *v)
{
    double d;
    static const struct {
        const char *name;
        double lo, hi;
    } r[] = {
        {"--rate", 0.001, 1e7},  {"--concurrency", 1, 100000},    {"--duration", 0.001, 1e6},
        {"--orders", 1, 1e12},   {"--customers", 1, 100000},      {"--seed-funds", 1, 1e15},
        {"--poor-ratio", 0, 1},  {"--poor-funds", 1, 1e15},       {"--connections", 1, 100000},
        {"--poll-ms", 1, 60000}, {"--order-timeout", 0.001, 1e6}, {"--wait", 0, 30},
    };
    if (strcmp(name, "--target") == 0) return parse_target(v, o);
    if (strcmp(name, "--token") == 0)
        return snprintf(o->auth, sizeof o->auth, "Bearer %s", v) < (int)sizeof o->auth ? 0 : -1;
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        if (strcmp(name, r[i].name) != 0) continue;
        if (num(v, r[i].lo, r[i].hi, &d)) return -1;
        switch (i) {
        case 0:
            o->rate = d;
            break;
        case 1:
            o->concurrency = (unsigned)d;
            break;
        case 2:
            o->duration_s = d;
            break;
        case 3:
            o->orders = (uint64_t)d;
            break;
        case 4:
            o->customers = (unsigned)d;
            break;
        case 5:
            o->funds = (int64_t)d;
            break;
        case 6:
            o->poor_ratio = d;
            break;
        case 7:
            o->poor_funds = (int64_t)d;
            break;
        case 8:
            o->connections = (unsigned)d;
            break;
        case 9:
            o->poll_ms = (unsigned)d;
            break;
        case 11:
            o->wait_s = (unsigned)d;
            break;
        case 10:
            o->order_timeout_s = d;
            break;
        default:
            break;
        }
        return 0;
    }
    return 1;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.customers = 16,
                       .funds = 1000000000,
                       .poor_funds = 1000,
                       .poll_ms = 50,
                       .duration_s = 10,
                       .order_timeout_s = 30,
                       .wait_s = 10};
    const char *t = getenv("AGORA_TARGET") ? getenv("AGORA_TARGET") : "http://127.0.0.1:8080";
    if (getenv("AGORA_TOKEN"))
        snprintf(o->auth, sizeof o->auth, "Bearer %s", getenv("AGORA_TOKEN"));
    if (parse_target(t, o))
        return ag_cli_usage_error("load: bad target '%s' (want http://HOST:PORT, numeric host)", t);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        int rc = i + 1 < argc ? opt_value(o, argv[i], argv[i + 1]) : 1;
        if (rc == 1)
            return ag_cli_usage_error(
                "load: unknown or incomplete option '%s' (see 'agora load --help')", argv[i]);
        if (rc < 0)
            return ag_cli_usage_error("load: bad value '%s' for %s (see 'agora load --help')",
                                      argv[i + 1], argv[i]);
        i++;
    }
    if (o->rate > 0 && o->concurrency)
        return ag_cli_usage_error("load: --rate and --concurrency exclude each other");
    if (!o->rate && !o->concurrency) o->concurrency = 16;
    if (!o->connections) o->connections = o->rate > 0 ? 64 : o->concurrency;
    return 0;
}

/* ---- blocking calls for the setup (run the loop until the answer) ---- */

struct sync_call {
    bool done;
    int rc, status;
    json_t *body;
};

static void sync_cb(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct sync_call *c = ud;
    c->done = true;
    c->rc = rc;
    if (rc) return;
    c->status = resp->status;
    c->body = json_loadb(resp->body, resp->body_len, 0, NULL);
}

/* Send `body` (decref'd here; NULL for none) with Idempotency-Key `key` (or NULL);
 * *out gets the parsed JSON answer. */
static int call_key(struct load *L, const char *method, const char *path, json_t *body,
                    const char *key, int *status, json_t **out)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct ag_http_header h[3] = {{"Content-Type", "application/json"}};
    size_t nh = text ? 1 : 0;
    if (L->o.auth[0]) h[nh++] = (struct ag_http_header){"Authorization", L->o.auth};
    if (key) h[nh++] = (struct ag_http_header){"Idempotency-Key", key};
    struct ag_http_client_req r = {.method = method,
                                   .path = path,
                                   .headers = h,
                                   .nheaders = nh,
                                   .body = text,
                                   .body_len = text ? strlen(text) : 0,
                                   .timeout_ms = 10000};
    struct sync_call c = {0};
    int rc = ag_http_upstream_request(L->up, &r, sync_cb, &c);
    free(text);
    if (rc) return rc;
    while (!c.done) uv_run(&L->loop, UV_RUN_ONCE);
    *status = c.status;
    if (out)
        *out = c.body;
    else
        json_decref(c.body);
    return c.rc;
}

static int call(struct load *L, const char *method, const char *path, json_t *body, int *status,
                json_t **out)
{
    return call_key(L, method, path, body, NULL, status, out);
}

/* A setup write: with an Idempotency-Key, so that a transport error or a 5xx (an
 * instance draining or restarting behind a gateway, say) is retried safely — a
 * replay answers as the first try did — for up to ~5 s. */
static int setup_call(struct load *L, const char *path, json_t *body, const char *key, int *status,
                      json_t **out)
{
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        *out = NULL;
        rc = call_key(L, "POST", path, json_incref(body), key, status, out);
        if (attempt == 20 || (!rc && *status < 500)) break;
        json_decref(*out);
        uv_sleep(250);
    }
    json_decref(body);
    return rc;
}

static int setup_fail(struct load *L, const char *what, int rc, int status, json_t *body)
{
    const char *detail = json_string_value(json_object_get(body, "detail"));
    if (rc)
        fprintf(stderr, "agora load: cannot reach http://%s:%u (%s): %s\n", L->o.host, L->o.port,
                what, ag_strerror(rc));
    else
        fprintf(stderr, "agora load: %s: HTTP %d%s%s\n", what, status, detail ? ": " : "",
                detail ? detail : "");
    json_decref(body);
    return rc ? 1 : 3;
}

static int read_products(struct load *L)
{
    char path[256] = "/api/v1/products?limit=100";
    for (;;) {
        int status = 0;
        json_t *b = NULL;
        int rc = call(L, "GET", path, NULL, &status, &b);
        if (rc || status != 200) return setup_fail(L, "listing products", rc, status, b);
        size_t i;
        json_t *it;
        json_array_foreach(json_object_get(b, "items"), i, it)
        {
            const char *id = json_string_value(json_object_get(it, "id"));
            if (!id || !json_is_true(json_object_get(it, "active")) || strlen(id) >= ID_MAX)
                continue;
            void *p = ag_realloc(L->products, (L->nproducts + 1) * sizeof *L->products);
            if (!p) return json_decref(b), 1;
            L->products = p;
            snprintf(L->products[L->nproducts++], ID_MAX, "%s", id);
        }
        const char *next = json_string_value(json_object_get(b, "nextCursor"));
        if (next) snprintf(path, sizeof path, "/api/v1/products?limit=100&cursor=%s", next);
        json_decref(b);
        if (!next) break;
    }
    if (L->nproducts) return 0;
    fprintf(stderr, "agora load: the catalog has no active product to order\n");
    return 3;
}

static int add_customer(struct load *L, size_t i, int64_t funds)
{
    char email[128], path[256];
    snprintf(email, sizeof email, "load-%s-%zu@load.example", L->run_id, i);
    int status = 0;
    json_t *b = NULL;
    char key[160];
    snprintf(key, sizeof key, "load-%s-%zu-register", L->run_id, i);
    int rc = setup_call(L, "/api/v1/customers",
                        json_pack("{s:s, s:s}", "email", email, "name", "Load Tester"), key,
                        &status, &b);
    const char *id = json_string_value(json_object_get(b, "id"));
    const char *acct = json_string_value(json_object_get(b, "accountId"));
    if (rc || status != 201 || !id || !acct || strlen(id) >= ID_MAX)
        return setup_fail(L, "registering a customer", rc, status, b);
    snprintf(L->customers[i], ID_MAX, "%s", id);
    snprintf(path, sizeof path, "/api/v1/accounts/%s/deposits", acct);
    json_decref(b);
    b = NULL;
    snprintf(key, sizeof key, "load-%s-%zu-deposit", L->run_id, i);
    rc = setup_call(
        L, path,
        json_pack("{s:{s:I, s:s}}", "amount", "amount", (json_int_t)funds, "currency", "USD"), key,
        &status, &b);
    if (rc || status != 200) return setup_fail(L, "depositing", rc, status, b);
    json_decref(b);
    return 0;
}

static int setup(struct load *L)
{
    int rc = read_products(L);
    if (rc) return rc;
    if (!(L->customers = ag_calloc(L->o.customers, sizeof *L->customers))) return 1;
    size_t poor = (size_t)(L->o.poor_ratio * L->o.customers + 0.5);
    for (size_t i = 0; i < L->o.customers; i++) {
        if ((rc = add_customer(L, i, i < poor ? L->o.poor_funds : L->o.funds))) return rc;
        L->ncustomers++;
    }
    return 0;
}

/* ---- placing orders ---- */

static void place(struct load *L);

static bool placing_open(struct load *L, uint64_t now)
{
    if (L->placing_done) return false;
    bool over = L->o.orders ? L->attempted >= L->o.orders
                            : now - L->t_start >= (uint64_t)(L->o.duration_s * 1e9);
    if (over || L->unreachable) {
        L->placing_done = true;
        L->t_end_placing = now;
    }
    return !L->placing_done;
}

/* A transport failure; after GIVE_UP_NS without any answer the target is gone. */
static void transport_failed(struct load *L)
{
    L->transport++;
    if (mono_ns() - L->last_ok > GIVE_UP_NS && !L->unreachable) {
        L->unreachable = true;
        fprintf(stderr, "%sagora load: no answer from http://%s:%u for 2 s: stopping\n",
                L->tty ? "\n" : "", L->o.host, L->o.port);
    }
}

/* Blocking polls: asked for, and not refused by the server. */
static bool waiting(const struct load *L)
{
    return L->o.wait_s && !L->wait_refused;
}

static int track(struct load *L, const char *id, uint64_t t0)
{
    if (L->npending == L->cappending) {
        size_t cap = L->cappending ? L->cappending * 2 : 1024;
        struct order **v = ag_realloc(L->pending, cap * sizeof *v);
        if (!v) return AG_ENOMEM;
        L->pending = v, L->cappending = cap;
    }
    struct order *o = ag_calloc(1, sizeof *o);
    if (!o) return AG_ENOMEM;
    snprintf(o->id, sizeof o->id, "%s", id);
    o->t0 = t0;
    o->next_poll = mono_ns() + (waiting(L) ? 0 : (uint64_t)L->o.poll_ms * 1000000ull);
    L->pending[L->npending++] = o;
    return 0;
}

struct post_ctx {
    struct load *L;
    uint64_t t0;
};

static const char *resp_header(const struct ag_http_client_resp *r, const char *name);

struct retry_ctx {
    uv_timer_t timer;
    struct load *L;
};

static void retry_closed(uv_handle_t *h)
{
    ag_free(h->data);
}

static void retry_due(uv_timer_t *t)
{
    struct retry_ctx *r = t->data;
    struct load *L = r->L;
    L->deferred--;
    uv_close((uv_handle_t *)&r->timer, retry_closed);
    if (placing_open(L, mono_ns())) place(L);
}

/* A 503 with Retry-After (admission control): counted apart from the errors; in
 * a closed loop the client places its order again after the delay (plus up to
 * 20% jitter, so the refused clients do not come back in one burst), and it
 * does not count as attempted. Open loop: counted only (the schedule goes on).
 * False when the answer is something else. */
static bool retry_later(struct load *L, const struct ag_http_client_resp *resp)
{
    const char *after = resp->status == 503 ? resp_header(resp, "Retry-After") : NULL;
    if (!after) return false;
    L->rejected++;
    if (!L->o.concurrency) return true;
    double s = strtod(after, NULL);
    s = s > 0 && s < 30 ? s : 1;
    uint64_t ms = (uint64_t)(s * 1000 * (1 + (double)ag_rng_below(&L->rng.rng, 200) / 1000));
    struct retry_ctx *r = ag_calloc(1, sizeof *r);
    if (!r) return false;
    L->attempted--; /* placed again: --orders counts it once */
    if (L->o.orders && L->placing_done && !L->unreachable) { /* the count was reached early */
        L->placing_done = false;
        L->t_end_placing = 0;
    }
    r->L = L;
    r->timer.data = r;
    uv_timer_init(&L->loop, &r->timer);
    uv_timer_start(&r->timer, retry_due, ms, 0);
    L->deferred++;
    return true;
}

static void posted(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct post_ctx *c = ud;
    struct load *L = c->L;
    uint64_t now = mono_ns();
    L->inflight_posts--;
    bool deferred = !rc && retry_later(L, resp); /* comes back after the delay */
    if (rc) {
        transport_failed(L);
    } else if (!deferred) {
        L->last_ok = now;
        json_t *b = resp->status == 202 ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(b, "orderId"));
        if (id && strlen(id) < ID_MAX && !track(L, id, c->t0)) {
            L->placed++;
            lat_add(&L->post, now - c->t0);
        } else {
            L->errors++;
        }
        json_decref(b);
    } else {
        L->last_ok = now;
    }
    ag_free(c);
    /* after a transport error a client rests until the next tick, not spinning on a refused
     * connect; a refused order's client waits for its retry timer */
    if (L->o.concurrency && rc)
        L->resting++;
    else if (L->o.concurrency && !deferred && placing_open(L, now))
        place(L);
}

static json_t *order_body(struct load *L)
{
    const struct ag_rng *r = &L->rng.rng;
    size_t n = 1 + (size_t)ag_rng_below(r, 3), first = (size_t)ag_rng_below(r, L->nproducts);
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < L->nproducts;
         i++) /* distinct products: consecutive from a random one */
        json_array_append_new(items, json_pack("{s:s, s:I}", "productId",
                                               L->products[(first + i) % L->nproducts], "quantity",
                                               (json_int_t)(1 + ag_rng_below(r, 3))));
    return json_pack("{s:s, s:o, s:{s:s, s:s, s:s, s:s, s:s}}", "customerId",
                     L->customers[ag_rng_below(r, L->ncustomers)], "items", items,
                     "shippingAddress", "street", "1 Load Street", "city", "Springfield", "state",
                     "IL", "zipCode", "62701", "country", "US");
}

static void place(struct load *L)
{
    json_t *b = order_body(L);
    char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    struct post_ctx *c = ag_malloc(sizeof *c);
    char key[64];
    /* a unique Idempotency-Key per order, so the server could dedup a retried POST */
    snprintf(key, sizeof key, "load-%s-%llu", L->run_id, (unsigned long long)L->keys++);
    struct ag_http_header h[3] = {{"Content-Type", "application/json"},
                                  {"Idempotency-Key", key},
                                  {"Authorization", L->o.auth}};
    struct ag_http_client_req r = {.method = "POST",
                                   .path = "/api/v1/orders",
                                   .headers = h,
                                   .nheaders = L->o.auth[0] ? 3 : 2,
                                   .body = text,
                                   .body_len = text ? strlen(text) : 0,
                                   .timeout_ms = 10000};
    L->attempted++;
    if (!text || !c) {
        L->dropped++;
    } else {
        c->L = L;
        c->t0 = mono_ns();
        if (ag_http_upstream_request(L->up, &r, posted, c) == 0)
            L->inflight_posts++, c = NULL;
        else
            L->dropped++; /* the client's own queue is full: it cannot keep up with --rate */
    }
    ag_free(c);
    free(text);
}

/* ---- polling ---- */

struct poll_ctx {
    struct load *L;
    struct order *o;
    bool waited; /* sent with Prefer: wait */
};

static const char *resp_header(const struct ag_http_client_resp *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

static void poll_one(struct load *L, struct order *o);

static void polled(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct poll_ctx *c = ud;
    struct load *L = c->L;
    struct order *o = c->o;
    uint64_t now = mono_ns();
    L->inflight_polls--;
    o->polling = false;
    o->next_poll = now + (uint64_t)L->o.poll_ms * 1000000ull;
    if (!rc && (resp->status == 200 || resp->status == 304)) {
        const char *etag = resp_header(resp, "ETag");
        if (etag) snprintf(o->etag, sizeof o->etag, "%s", etag);
        if (c->waited && resp_header(resp, "Preference-Applied"))
            L->wait_applied = true;
        else if (c->waited)
            L->wait_refused = true;                       /* not applied: back to interval polls */
        if (waiting(L) && o->etag[0]) o->next_poll = now; /* wait again at once */
    }
    if (rc) {
        transport_failed(L);
    } else if ((L->last_ok = now), resp->status == 200) {
        json_t *b = json_loadb(resp->body, resp->body_len, 0, NULL);
        const char *st = json_string_value(json_object_get(b, "status"));
        bool ok = st && (strcmp(st, "confirmed") == 0 || strcmp(st, "shipped") == 0);
        bool cancelled = st && strcmp(st, "cancelled") == 0;
        if (ok || cancelled) {
            o->done = true;
            (ok ? L->confirmed++ : L->cancelled++);
            L->t_last_final = now;
            lat_add(&L->final, now - o->t0);
        }
        json_decref(b);
    }
    ag_free(c);
    if (!o->done && o->next_poll <= now && !L->unreachable && L->inflight_polls < L->max_polls &&
        now - o->t0 <= (uint64_t)(L->o.order_timeout_s * 1e9))
        poll_one(L, o); /* the next blocking poll without waiting for a scan */
}

static void poll_one(struct load *L, struct order *o)
{
    struct poll_ctx *c = ag_malloc(sizeof *c);
    if (!c) return;
    char path[128];
    snprintf(path, sizeof path, "/api/v1/orders/%s", o->id);
    /* behind the gateway a poll is an authenticated read like any other */
    char prefer[32];
    snprintf(prefer, sizeof prefer, "wait=%u", L->o.wait_s);
    bool wait = waiting(L) && o->etag[0];
    struct ag_http_header h[3];
    size_t n = 0;
    if (L->o.auth[0]) h[n++] = (struct ag_http_header){"Authorization", L->o.auth};
    if (wait) {
        h[n++] = (struct ag_http_header){"Prefer", prefer};
        h[n++] = (struct ag_http_header){"If-None-Match", o->etag};
    }
    struct ag_http_client_req r = {.method = "GET",
                                   .path = path,
                                   .headers = h,
                                   .nheaders = n,
                                   .timeout_ms = wait ? L->o.wait_s * 1000 + 10000 : 10000};
    *c = (struct poll_ctx){L, o, wait};
    if (ag_http_upstream_request(L->pollup, &r, polled, c) == 0) {
        o->polling = true;
        L->inflight_polls++;
    } else {
        ag_free(c);
    }
}

/* Issue due polls; drop finished and timed-out orders from the pending list. */
static void scan_pending(struct load *L, uint64_t now)
{
    uint64_t timeout = (uint64_t)(L->o.order_timeout_s * 1e9);
    unsigned max_polls = L->max_polls;
    size_t keep = 0;
    for (size_t i = 0; i < L->npending; i++) {
        struct order *o = L->pending[i];
        if (o->done && !o->polling) {
            ag_free(o);
            continue;
        }
        bool expired = now - o->t0 > timeout || L->unreachable;
        if (!o->polling && !o->done && !expired && o->next_poll <= now &&
            L->inflight_polls < max_polls)
            poll_one(L, o);
        if (expired && !o->polling) { /* given up: it stays counted as pending */
            ag_free(o);
            continue;
        }
        L->pending[keep++] = o;
    }
    L->npending = keep;
}

/* ---- the run ---- */

static void print_progress(struct load *L, uint64_t now)
{
    double s = (double)(now - L->t_start) / 1e9;
    fprintf(stderr,
            "\r\033[Kagora load: %5.1fs  placed %llu  confirmed %llu  cancelled %llu  pending %zu"
            "  errors %llu  %.0f orders/s",
            s, (unsigned long long)L->placed, (unsigned long long)L->confirmed,
            (unsigned long long)L->cancelled, L->npending,
            (unsigned long long)(L->errors + L->transport), s > 0 ? (double)L->placed / s : 0.0);
}

static void on_progress(uv_timer_t *t)
{
    print_progress(t->data, mono_ns());
}

static void stop_run(struct load *L)
{
    uv_timer_stop(&L->tick);
    uv_timer_stop(&L->progress);
    uv_close((uv_handle_t *)&L->tick, NULL);
    uv_close((uv_handle_t *)&L->progress, NULL);
    ag_http_upstream_close(L->up);
    ag_http_upstream_close(L->pollup);
    L->up = L->pollup = NULL;
}

static void on_tick(uv_timer_t *t)
{
    struct load *L = t->data;
    uint64_t now = mono_ns();
    if (L->o.rate > 0 && placing_open(L, now)) { /* catch up with the schedule, bounded per tick */
        uint64_t due = (uint64_t)((double)(now - L->t_start) / 1e9 * L->o.rate) + 1;
        for (unsigned n = 0; L->attempted < due && n < 1000 && placing_open(L, now); n++) place(L);
    }
    placing_open(L, now);
    for (; L->resting && placing_open(L, now) && now - L->last_scan >= 5000000ull; L->resting--)
        place(L);
    if (now - L->last_scan >= 5000000ull) { /* the pending list can be long: not every tick */
        L->last_scan = now;
        scan_pending(L, now);
    }
    if (L->placing_done && !L->inflight_posts && !L->npending && !L->inflight_polls && !L->deferred)
        stop_run(L);
}

static json_t *summary(struct load *L)
{
    uint64_t end = L->t_end_placing ? L->t_end_placing : mono_ns();
    double place_s = (double)(end - L->t_start) / 1e9;
    uint64_t last = L->t_last_final > L->t_start ? L->t_last_final : end;
    double final_s = (double)(last - L->t_start) / 1e9;
    if (L->post.n) qsort(L->post.v, L->post.n, sizeof *L->post.v, cmp_u32);
    if (L->final.n) qsort(L->final.v, L->final.n, sizeof *L->final.v, cmp_u32);
    json_int_t pending = (json_int_t)(L->placed - L->confirmed - L->cancelled);
    return json_pack(
        "{s:s, s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f,"
        " s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:s, s:i}",
        "target", L->o.host, "mode", L->o.rate > 0 ? "rate" : "concurrency", "durationS", place_s,
        "customers", (json_int_t)L->ncustomers, "attempted", (json_int_t)L->attempted, "placed",
        (json_int_t)L->placed, "confirmed", (json_int_t)L->confirmed, "compensated",
        (json_int_t)L->cancelled, "pending", pending, "errors", (json_int_t)L->errors, "rejected",
        (json_int_t)L->rejected, "transportErrors", (json_int_t)(L->transport + L->dropped),
        "confirmedPerSec", final_s > 0 ? (double)L->confirmed / final_s : 0.0, "ordersPerSec",
        place_s > 0 ? (double)L->placed / place_s : 0.0, "postP50Us", pct(&L->post, 0.50),
        "postP99Us", pct(&L->post, 0.99), "postMaxUs",
        L->post.n ? (json_int_t)L->post.v[L->post.n - 1] : 0, "finalP50Us", pct(&L->final, 0.50),
        "finalP99Us", pct(&L->final, 0.99), "finalMaxUs",
        L->final.n ? (json_int_t)L->final.v[L->final.n - 1] : 0, "unreachable", L->unreachable,
        "pollMode", L->o.wait_s && L->wait_applied && !L->wait_refused ? "wait" : "interval",
        "waitS", (int)(L->wait_refused ? 0 : L->o.wait_s));
}

static void run_orders(struct load *L)
{
    uv_timer_init(&L->loop, &L->tick);
    uv_timer_init(&L->loop, &L->progress);
    L->tick.data = L->progress.data = L;
    L->t_start = L->last_ok = mono_ns();
    uv_timer_start(&L->tick, on_tick, 1, 1); /* 1 ms: smooth rate and poll scheduling */
    if (L->tty) uv_timer_start(&L->progress, on_progress, 250, 250);
    for (unsigned i = 0; i < L->o.concurrency && placing_open(L, L->t_start); i++) place(L);
    uv_run(&L->loop, UV_RUN_DEFAULT);
    if (L->tty) {
        print_progress(L, mono_ns());
        fputc('\n', stderr);
    }
}

static int open_pools(struct load *L)
{
    struct ag_http_upstream_config c = {.host = L->o.host,
                                        .port = L->o.port,
                                        .max_connections = L->o.connections,
                                        .max_pending = 100000,
                                        .pool_timeout_ms = 10000};
    if (ag_http_upstream_new(&L->loop, &c, &L->up)) return -1;
    c.max_connections = L->o.connections < 16 ? L->o.connections : 16;
    if (L->o.wait_s) /* a parked poll holds its connection: one per pending order */
        c.max_connections = L->o.connections > 64 ? L->o.connections : 64;
    L->max_polls = L->o.wait_s ? c.max_connections : 256;
    return ag_http_upstream_new(&L->loop, &c, &L->pollup) ? -1 : 0;
}

static void cleanup(struct load *L)
{
    if (L->up) ag_http_upstream_close(L->up);
    if (L->pollup) ag_http_upstream_close(L->pollup);
    uv_run(&L->loop, UV_RUN_DEFAULT); /* let the pools close their handles */
    uv_loop_close(&L->loop);
    for (size_t i = 0; i < L->npending; i++) ag_free(L->pending[i]);
    ag_free(L->pending);
    ag_free(L->products);
    ag_free(L->customers);
    ag_free(L->post.v);
    ag_free(L->final.v);
}

/* Without --token, a platform started by `agora run` on this machine (its data
 * directory holds the gateway's secret) gets a token minted here, so
 * `agora run` + `agora load` work together as they are. */
static void default_token(struct opts *o)
{
    if (o->auth[0]) return;
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    char secret[65], *yaml = NULL, *tok = NULL;
    if (ag_cli_jwt_secret(data, false, secret, NULL)) return; /* no gateway secret: no token */
    yaml = ag_cli_run_gateway_yaml("127.0.0.1:0", secret, "127.0.0.1:1");
    const char *roles[] = {"admin"}; /* the load registers and funds many customers */
    struct ag_gateway_token_request t = {
        .sub = "agora-load", .roles = roles, .nroles = 1, .ttl_s = 86400};
    struct ag_gateway_options go = {.config_yaml = yaml};
    if (yaml && ag_gateway_token(&go, &t, &tok, NULL) == 0)
        snprintf(o->auth, sizeof o->auth, "Bearer %s", tok);
    ag_free(tok);
    ag_free(yaml);
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    struct load *L = ag_calloc(1, sizeof *L);
    if (!L) return 1;
    int rc = parse_opts(argc, argv, &L->o);
    if (rc) return ag_free(L), rc;
    default_token(&L->o);
    uint64_t seed = ag_rng_next(ag_rng_system());
    ag_xoshiro_seed(&L->rng, seed);
    snprintf(L->run_id, sizeof L->run_id, "%016llx", (unsigned long long)seed);
    L->tty = !L->o.quiet && isatty(STDERR_FILENO);
    uv_loop_init(&L->loop);
    if (open_pools(L)) rc = 1;
    if (!rc) rc = setup(L);
    if (!rc) {
        run_orders(L);
        json_t *s = summary(L);
        char *text = s ? json_dumps(s, JSON_COMPACT) : NULL;
        if (text) printf("%s\n", text);
        fflush(stdout);
        free(text);
        json_decref(s);
        rc = L->unreachable ? 1 : 0;
    }
    cleanup(L);
    ag_free(L);
    return rc == 3 ? 1 : rc;
}

const struct ag_cli_cmd ag_cli_cmd_load = {
    "load", "place orders against a running platform and report", run};
