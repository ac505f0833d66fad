/* The cluster CA (include/agora/certs.h) and mTLS with its certificates: init
 * creates once and checks after; issue writes a 0600 key and a certificate the CA
 * verifies, with the SANs asked and both TLS usages; validity windows; a wrong or
 * missing CA key and bad names refused. Then an HTTPS server requiring client
 * certificates from the CA: a member's is accepted, none / another CA's / an
 * expired one refused; the server's and the client's files rotated on disk are
 * picked up by new connections while an open one goes on. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agora/certs.h"
#include "agora/http.h"
#include "testrouter.h"

static char root[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/ag-certs-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(certs, .init = setup, .fini = teardown);

static const char *path(const char *rel)
{
    static char paths[8][256];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", root, rel);
    return p;
}

static mode_t mode_of(const char *p)
{
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "%s", p);
    return sb.st_mode & 0777;
}

static X509 *load(const char *p)
{
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f, "%s", p);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(x);
    return x;
}

static void issue(const char *ca, const char *name, const char *ip, int64_t not_before,
                  uint32_t days)
{
    const char *ips[] = {ip};
    struct ag_certs_member m = {
        .name = name, .ips = ips, .nips = ip ? 1 : 0, .days = days, .not_before = not_before};
    struct ag_err err;
    cr_assert_eq(ag_certs_issue(path(ca), &m, NULL, NULL, 0, &err), 0, "%s", err.msg);
}

static void init(const char *ca)
{
    struct ag_err err;
    bool created = false;
    cr_assert_eq(ag_certs_init(path(ca), &created, &err), 0, "%s", err.msg);
    cr_assert(created);
}

Test(certs, init_creates_once_and_checks_after)
{
    init("ca");
    cr_assert_eq(mode_of(path("ca")), 0700);
    cr_assert_eq(mode_of(path("ca/ca.key")), 0600);
    X509 *x = load(path("ca/ca.pem"));
    cr_assert_eq(X509_check_ca(x), 1);
    X509_free(x);
    struct ag_err err;
    bool created = true;
    cr_assert_eq(ag_certs_init(path("ca"), &created, &err), 0, "%s", err.msg);
    cr_assert_not(created, "an existing CA is kept");
    /* half a CA is refused, naming what is missing */
    cr_assert_eq(rename(path("ca/ca.key"), path("ca.key.aside")), 0);
    cr_assert_eq(ag_certs_init(path("ca"), NULL, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "without") && strstr(err.msg, "ca.key"), "%s", err.msg);
}

Test(certs, issue_writes_a_member_the_ca_verifies)
{
    init("ca");
    const char *ips[] = {"127.0.0.1", "::1"}, *dns[] = {"orders.internal"};
    struct ag_certs_member m = {.name = "inst-a", .ips = ips, .nips = 2, .dns = dns, .ndns = 1};
    char cert[256], key[256];
    struct ag_err err;
    cr_assert_eq(ag_certs_issue(path("ca"), &m, cert, key, sizeof cert, &err), 0, "%s", err.msg);
    cr_assert_str_eq(cert, path("ca/inst-a.pem"));
    cr_assert_eq(mode_of(key), 0600);
    char subject[256];
    cr_assert_eq(ag_certs_verify(path("ca/ca.pem"), cert, 0, subject, sizeof subject, &err), 0,
                 "%s", err.msg);
    cr_assert(strstr(subject, "CN=inst-a"), "%s", subject);
    X509 *x = load(cert);
    cr_assert_eq(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    cr_assert_eq(X509_check_ip_asc(x, "::1", 0), 1);
    cr_assert_eq(X509_check_host(x, "orders.internal", 0, 0, NULL), 1);
    cr_assert_eq(X509_check_ip_asc(x, "10.0.0.1", 0), 0);
    cr_assert_eq(X509_check_ca(x), 0, "a member is no CA");
    uint32_t xku = X509_get_extended_key_usage(x);
    cr_assert((xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT), "serves and calls");
    /* 30 days by default, starting a little in the past (clock skew) */
    int days, secs;
    cr_assert_eq(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    cr_assert_eq(days, AG_CERTS_DAYS);
    cr_assert_lt(X509_cmp_current_time(X509_get0_notBefore(x)), 0);
    X509_free(x);
    /* with no SAN given the certificate names the member */
    issue("ca", "gateway", NULL, 0, 0);
    x = load(path("ca/gateway.pem"));
    cr_assert_eq(X509_check_host(x, "gateway", 0, 0, NULL), 1);
    X509_free(x);
}

Test(certs, validity_windows_are_checked)
{
    init("ca");
    int64_t now = (int64_t)time(NULL);
    issue("ca", "old", "127.0.0.1", now - 10 * 86400, 1);
    struct ag_err err;
    cr_assert_eq(ag_certs_verify(path("ca/ca.pem"), path("ca/old.pem"), 0, NULL, 0, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "expired"), "%s", err.msg);
    issue("ca", "future", "127.0.0.1", now + 86400, 5);
    cr_assert_eq(ag_certs_verify(path("ca/ca.pem"), path("ca/future.pem"), 0, NULL, 0, &err),
                 AG_ECONFIG);
    cr_assert(strstr(err.msg, "not yet valid"), "%s", err.msg);
    cr_assert_eq(
        ag_certs_verify(path("ca/ca.pem"), path("ca/future.pem"), now + 2 * 86400, NULL, 0, &err),
        0, "valid inside its window: %s", err.msg);
    cr_assert_eq(
        ag_certs_verify(path("ca/ca.pem"), path("ca/future.pem"), now + 7 * 86400, NULL, 0, &err),
        AG_ECONFIG, "5 days from its start");
}

Test(certs, another_ca_a_wrong_key_and_bad_input_are_refused)
{
    init("ca");
    init("other");
    issue("other", "rogue", "127.0.0.1", 0, 0);
    struct ag_err err;
    cr_assert_eq(ag_certs_verify(path("ca/ca.pem"), path("other/rogue.pem"), 0, NULL, 0, &err),
                 AG_ECONFIG);
    /* the other CA's key beside this CA's certificate */
    cr_assert_eq(rename(path("other/ca.key"), path("ca/ca.key")), 0);
    struct ag_certs_member m = {.name = "x"};
    cr_assert_eq(ag_certs_issue(path("ca"), &m, NULL, NULL, 0, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "wrong key"), "%s", err.msg);
    cr_assert_eq(ag_certs_init(path("ca"), NULL, &err), AG_ECONFIG);
    cr_assert_eq(access(path("ca/x.pem"), F_OK), -1, "nothing issued");
    /* no CA at all */
    cr_assert_eq(ag_certs_issue(path("none"), &m, NULL, NULL, 0, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "none/ca.pem"), "%s", err.msg);
    /* names that could escape the directory or smuggle another SAN */
    const char *bad_names[] = {"../x", "a/b", ".hidden", "ca", "", "a b"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        m.name = bad_names[i];
        cr_assert_eq(ag_certs_issue(path("other"), &m, NULL, NULL, 0, &err), AG_EINVAL, "%s",
                     bad_names[i]);
    }
    m.name = "ok";
    const char *bad_ip[] = {"1.2.3"};
    m.ips = bad_ip;
    m.nips = 1;
    cr_assert_eq(ag_certs_issue(path("other"), &m, NULL, NULL, 0, &err), AG_EINVAL);
    const char *bad_dns[] = {"a.test,IP:10.0.0.1"};
    m.nips = 0;
    m.dns = bad_dns;
    m.ndns = 1;
    cr_assert_eq(ag_certs_issue(path("other"), &m, NULL, NULL, 0, &err), AG_EINVAL);
}

/* ---- mTLS with the CA's certificates ---- */

static struct ag_http_router *router;
static struct ag_http_server *server;
static struct ag_tls_server *srv_tls;
static uv_loop_t loop;

static void serve_mtls(void)
{
    struct ag_tls_cert pair = {path("ca/inst.pem"), path("ca/inst.key")};
    struct ag_tls_server_config tc = {&pair, 1, path("ca/ca.pem")};
    struct ag_err err;
    cr_assert_eq(ag_tls_server_new(&tc, &srv_tls, &err), 0, "%s", err.msg);
    test_server_start((struct ag_http_server_config){.workers = 1, .tls = srv_tls}, &router,
                      &server, &loop);
}

static void stop_mtls(void)
{
    test_server_stop(&router, &server, &loop);
    ag_tls_server_free(srv_tls);
}

static struct ag_tls_client *member_client(const char *name)
{
    char cert[64] = "", key[64] = "";
    if (name) snprintf(cert, sizeof cert, "ca/%s.pem", name);
    if (name) snprintf(key, sizeof key, "ca/%s.key", name);
    struct ag_tls_client_config cc = {.ca_file = path("ca/ca.pem"),
                                      .cert_file = name ? path(cert) : NULL,
                                      .key_file = name ? path(key) : NULL};
    struct ag_tls_client *c;
    struct ag_err err;
    cr_assert_eq(ag_tls_client_new(&cc, &c, &err), 0, "%s", err.msg);
    return c;
}

struct got {
    int done, rc, status;
};

static void on_done(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct got *g = ud;
    g->done++;
    g->rc = rc;
    g->status = resp ? resp->status : 0;
}

static struct ag_http_upstream *upstream(struct ag_tls_client *c)
{
    struct ag_http_upstream_config cfg = {
        .host = "127.0.0.1", .port = ag_http_server_port(server), .tls = c};
    struct ag_http_upstream *u;
    cr_assert_eq(ag_http_upstream_new(&loop, &cfg, &u), 0);
    return u;
}

static struct got get(struct ag_http_upstream *u)
{
    struct got g = {0};
    struct ag_http_client_req q = {.method = "GET", .path = "/hello", .timeout_ms = 5000};
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, &g), 0);
    while (!g.done) uv_run(&loop, UV_RUN_ONCE);
    return g;
}

/* One request on a new connection with client c. */
static struct got once(struct ag_tls_client *c)
{
    struct ag_http_upstream *u = upstream(c);
    struct got g = get(u);
    ag_http_upstream_close(u);
    return g;
}

Test(certs, the_server_requires_a_client_certificate_from_the_ca)
{
    init("ca");
    init("other");
    issue("ca", "inst", "127.0.0.1", 0, 0);
    issue("ca", "gw", NULL, 0, 0);
    issue("ca", "expired", NULL, (int64_t)time(NULL) - 10 * 86400, 1);
    issue("other", "rogue", NULL, 0, 0);
    cr_assert_eq(rename(path("other/rogue.pem"), path("ca/rogue.pem")), 0);
    cr_assert_eq(rename(path("other/rogue.key"), path("ca/rogue.key")), 0);
    serve_mtls();
    struct ag_tls_client *gw = member_client("gw"), *none = member_client(NULL),
                         *rogue = member_client("rogue"), *expired = member_client("expired");
    struct got g = once(gw);
    cr_assert_eq(g.rc, 0);
    cr_assert_eq(g.status, 200);
    struct ag_tls_client *refused[] = {none, rogue, expired};
    for (size_t i = 0; i < 3; i++) {
        g = once(refused[i]);
        cr_assert_neq(g.rc, 0, "client %zu must be refused", i);
        cr_assert_eq(g.status, 0);
    }
    stop_mtls();
    ag_tls_client_free(gw);
    ag_tls_client_free(none);
    ag_tls_client_free(rogue);
    ag_tls_client_free(expired);
}

/* Wait (bounded) until a new connection has made `reloads()` move past `from`. */
static void until_reloaded(struct ag_tls_client *c, uint64_t (*reloads)(void *), void *obj,
                           uint64_t from)
{
    for (int i = 0; i < 60 && reloads(obj) == from; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        once(c);
    }
    cr_assert_gt(reloads(obj), from, "the changed files were reloaded");
}

static uint64_t srv_reloads(void *t)
{
    return ag_tls_server_reloads(t);
}

static uint64_t cli_reloads(void *t)
{
    return ag_tls_client_reloads(t);
}

Test(certs, rotated_files_are_picked_up_and_open_connections_go_on)
{
    init("ca");
    issue("ca", "inst", "127.0.0.1", 0, 0);
    issue("ca", "gw", NULL, 0, 0);
    serve_mtls();
    struct ag_tls_client *gw = member_client("gw");
    struct ag_http_upstream *open = upstream(gw);
    cr_assert_eq(get(open).status, 200);
    /* the instance's certificate replaced by one that does not name 127.0.0.1:
     * once the server has re-read its files, a new connection fails the name check */
    const char *dns[] = {"elsewhere.test"};
    struct ag_certs_member m = {.name = "inst", .dns = dns, .ndns = 1};
    struct ag_err err;
    cr_assert_eq(ag_certs_issue(path("ca"), &m, NULL, NULL, 0, &err), 0, "%s", err.msg);
    until_reloaded(gw, srv_reloads, srv_tls, 0);
    cr_assert_eq(once(gw).rc, AG_ECONNECT, "the new server certificate is in use");
    cr_assert_eq(get(open).status, 200, "the open connection keeps its session");
    /* SIGHUP's path: an explicit reload of good files */
    issue("ca", "inst", "127.0.0.1", 0, 0);
    cr_assert_eq(ag_tls_server_reload(srv_tls, &err), 0, "%s", err.msg);
    cr_assert_eq(once(gw).status, 200);
    /* the client's own certificate rotated: it re-reads it too */
    uint64_t before = ag_tls_client_reloads(gw);
    issue("ca", "gw", NULL, 0, 0);
    until_reloaded(gw, cli_reloads, gw, before);
    cr_assert_eq(once(gw).status, 200);
    /* a broken file keeps the running certificate */
    FILE *f = fopen(path("ca/inst.pem"), "w");
    fputs("not a certificate\n", f);
    fclose(f);
    cr_assert_eq(ag_tls_server_reload(srv_tls, &err), AG_ECONFIG);
    cr_assert_eq(once(gw).status, 200);
    ag_http_upstream_close(open);
    stop_mtls();
    ag_tls_client_free(gw);
}
