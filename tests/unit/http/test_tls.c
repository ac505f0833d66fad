/* TLS: the upstream client against an agora server serving HTTPS on 127.0.0.1
 * (certificates in tests/data/tls): verification of the chain and the name, SNI
 * choosing among certificates, keep-alive over one session, a large body both
 * ways, HSTS on answers, a reload, and file errors that name the file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "agora/http.h"
#include "testrouter.h"

static struct ag_http_router *router;
static struct ag_http_server *server;
static struct ag_tls_server *tls;
static uv_loop_t loop;
static char dir[1024];

static const char *f(const char *name)
{
    static char paths[8][1100];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

/* A TLS server with `cert` (then b.pem for SNI). */
static void start(const char *cert, const char *key)
{
    const char *src = getenv("AG_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/tests/data/tls", src ? src : ".");
    struct ag_tls_cert certs[] = {{f(cert), f(key)}, {f("b.pem"), f("b.key")}};
    struct ag_tls_server_config tc = {certs, 2};
    struct ag_err err;
    cr_assert_eq(ag_tls_server_new(&tc, &tls, &err), 0, "%s", err.msg);
    test_server_start((struct ag_http_server_config){.workers = 1, .tls = tls}, &router, &server,
                      &loop);
}

static void stop(void)
{
    test_server_stop(&router, &server, &loop);
    ag_tls_server_free(tls);
    tls = NULL;
}

struct result {
    int done, rc, status;
    char body[256];
    char hsts[64];
    size_t body_len;
};

static void on_done(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct result *r = ud;
    r->done++;
    r->rc = rc;
    if (!resp) return;
    r->status = resp->status;
    r->body_len = resp->body_len;
    snprintf(r->body, sizeof r->body, "%.*s", (int)resp->body_len, resp->body);
    for (size_t i = 0; i < resp->nheaders; i++)
        if (!strcasecmp(resp->headers[i].name, "strict-transport-security"))
            snprintf(r->hsts, sizeof r->hsts, "%s", resp->headers[i].value);
}

static struct ag_tls_client *client(struct ag_tls_client_config cc)
{
    struct ag_tls_client *c;
    struct ag_err err;
    cr_assert_eq(ag_tls_client_new(&cc, &c, &err), 0, "%s", err.msg);
    return c;
}

static struct ag_http_upstream *upstream(struct ag_tls_client *c)
{
    struct ag_http_upstream_config cfg = {
        .host = "127.0.0.1", .port = ag_http_server_port(server), .tls = c};
    struct ag_http_upstream *u;
    cr_assert_eq(ag_http_upstream_new(&loop, &cfg, &u), 0);
    return u;
}

static void call(struct ag_http_upstream *u, const char *method, const char *path, const char *body,
                 size_t len, struct result *r)
{
    struct ag_http_client_req q = {
        .method = method, .path = path, .body = body, .body_len = len, .timeout_ms = 5000};
    int before = r->done;
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, r), 0);
    while (r->done == before) uv_run(&loop, UV_RUN_ONCE);
}

Test(tls, verified_keep_alive_hsts_and_large_bodies)
{
    start("server.pem", "server.key");
    struct ag_tls_client *c = client((struct ag_tls_client_config){.ca_file = f("ca.pem")});
    struct ag_http_upstream *u = upstream(c);
    struct result r = {0};
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.hsts, "max-age=31536000");
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    /* 300 KB each way: many records, partial socket writes */
    size_t n = 300 * 1024;
    char *big = ag_malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    call(u, "POST", "/echo", big, n, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, n);
    cr_assert_eq(memcmp(r.body, big, 200), 0);
    ag_free(big);
    struct ag_http_upstream_stats st;
    ag_http_upstream_stats(u, &st);
    cr_assert_eq(st.connects, 1, "keep-alive over one TLS session");
    ag_http_upstream_close(u);
    stop();
    ag_tls_client_free(c);
}

Test(tls, a_certificate_from_another_issuer_is_refused)
{
    start("rogue.pem", "rogue.key");
    struct ag_tls_client *c = client((struct ag_tls_client_config){.ca_file = f("ca.pem")});
    struct ag_http_upstream *u = upstream(c);
    struct result r = {0};
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.rc, AG_ECONNECT);
    ag_http_upstream_close(u);
    /* the same server with verification off (tests only) answers */
    struct ag_tls_client *ins = client((struct ag_tls_client_config){.insecure = true});
    u = upstream(ins);
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.status, 200);
    ag_http_upstream_close(u);
    stop();
    ag_tls_client_free(c);
    ag_tls_client_free(ins);
}

Test(tls, the_name_is_checked_and_sni_picks_the_certificate)
{
    start("server.pem", "server.key");
    /* c.test is on no certificate: the default one (a.test) does not match it */
    struct ag_tls_client *bad =
        client((struct ag_tls_client_config){.ca_file = f("ca.pem"), .server_name = "c.test"});
    struct ag_http_upstream *u = upstream(bad);
    struct result r = {0};
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.rc, AG_ECONNECT);
    ag_http_upstream_close(u);
    /* b.test verifies only if SNI made the server present b.pem */
    struct ag_tls_client *b =
        client((struct ag_tls_client_config){.ca_file = f("ca.pem"), .server_name = "b.test"});
    u = upstream(b);
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.status, 200);
    ag_http_upstream_close(u);
    stop();
    ag_tls_client_free(bad);
    ag_tls_client_free(b);
}

Test(tls, a_client_certificate_is_presented_and_reload_keeps_serving)
{
    start("server.pem", "server.key");
    struct ag_tls_client *c = client((struct ag_tls_client_config){
        .ca_file = f("ca.pem"), .cert_file = f("client.pem"), .key_file = f("client.key")});
    struct ag_http_upstream *u = upstream(c);
    struct result r = {0};
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    struct ag_err err;
    cr_assert_eq(ag_tls_server_reload(tls, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_tls_server_reloads(tls), 1);
    call(u, "GET", "/hello", NULL, 0, &r); /* the open session goes on */
    cr_assert_eq(r.status, 200);
    ag_http_upstream_close(u);
    u = upstream(c); /* a new handshake with the reloaded contexts */
    call(u, "GET", "/hello", NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    ag_http_upstream_close(u);
    stop();
    ag_tls_client_free(c);
}

Test(tls, file_errors_name_the_file)
{
    const char *src = getenv("AG_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/tests/data/tls", src ? src : ".");
    struct ag_err err;
    struct ag_tls_server *t = NULL;
    struct ag_tls_cert missing[] = {{"/nonexistent/cert.pem", f("server.key")}};
    cr_assert_eq(ag_tls_server_new(&(struct ag_tls_server_config){missing, 1}, &t, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "/nonexistent/cert.pem"), "%s", err.msg);
    struct ag_tls_cert mismatch[] = {{f("server.pem"), f("b.key")}};
    cr_assert_eq(ag_tls_server_new(&(struct ag_tls_server_config){mismatch, 1}, &t, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "b.key") && strstr(err.msg, "does not match"), "%s", err.msg);
    struct ag_tls_cert keyless[] = {{f("server.pem"), f("ca.pem")}};
    cr_assert_eq(ag_tls_server_new(&(struct ag_tls_server_config){keyless, 1}, &t, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "ca.pem"), "%s", err.msg);
    struct ag_tls_client *c = NULL;
    cr_assert_eq(ag_tls_client_new(&(struct ag_tls_client_config){.ca_file = "/nonexistent/ca.pem"},
                                   &c, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "/nonexistent/ca.pem"), "%s", err.msg);
}
