/* The JWKS cache belongs to its gateway: two gateways in one process, started
 * while the identity provider serves different keys, each keep the keys they
 * fetched, and a reload takes them from the gateway's own cache without a fetch.
 * The identity provider is a one-thread HTTP server on 127.0.0.1 in this test. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway/internal.h"

static const char doc_k1[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k1\",\"alg\":\"HS256\",\"k\":"
                             "\"Zmlyc3Qtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5\"}]}";
static const char doc_k2[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k2\",\"alg\":\"HS256\",\"k\":"
                             "\"c2Vjb25kLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4\"}]}";

static int lfd = -1;
static uint16_t idp_port;
static pthread_t idp_thread;
static _Atomic(const char *) serving;
static atomic_int fetches;

/* Answer each connection with the current document, then close it. */
static void *idp(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) return NULL; /* shut down */
        char req[2048];
        size_t n = 0;
        ssize_t r;
        while (n < sizeof req - 1 && (r = read(c, req + n, sizeof req - 1 - n)) > 0) {
            n += (size_t)r;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        const char *doc = atomic_load(&serving);
        char resp[1024];
        int len = snprintf(resp, sizeof resp,
                           "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                           strlen(doc), doc);
        atomic_fetch_add(&fetches, 1);
        if (write(c, resp, (size_t)len) != len) fprintf(stderr, "idp: short write\n");
        close(c);
    }
}

static void idp_start(void)
{
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(lfd, 16), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    idp_port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&idp_thread, NULL, idp, NULL), 0);
}

static void idp_stop(void)
{
    shutdown(lfd, SHUT_RDWR);
    pthread_join(idp_thread, NULL);
    close(lfd);
}

static struct ag_gateway *start(char *yaml)
{
    struct ag_gateway_options o = {.config_yaml = yaml, .listen = "127.0.0.1:0", .workers = 1};
    struct ag_gateway *gw = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_gateway_start(&o, &gw, &err);
    cr_assert_eq(rc, 0, "%s", ag_err_msg(&err, rc));
    return gw;
}

static const char *kid_of(struct ag_gateway *gw)
{
    const struct gw_issuer *is = &gw->conf->jwt.issuers[0];
    cr_assert_eq(is->nkeys, 1);
    return is->keys[0].kid;
}

Test(gateway_jwks, each_gateway_keeps_its_own_cache, .init = idp_start, .fini = idp_stop)
{
    ag_log_set_level(AG_LOG_OFF);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "jwt:\n"
             "  issuers:\n"
             "    - issuer: idp\n"
             "      jwksUri: http://127.0.0.1:%u/jwks.json\n"
             "      jwksRefresh: 1h\n"
             "destinationRules:\n"
             "  - host: svc\n"
             "    endpoints: [{address: 127.0.0.1:9}]\n"
             "virtualServices:\n"
             "  - name: t\n"
             "    http:\n"
             "      - name: all\n"
             "        route: [{destination: {host: svc}}]\n",
             idp_port);
    atomic_store(&serving, doc_k1);
    struct ag_gateway *a = start(yaml);
    cr_expect_str_eq(kid_of(a), "k1");
    cr_expect_eq(atomic_load(&fetches), 1);

    atomic_store(&serving, doc_k2); /* the provider rotates its keys */
    struct ag_gateway *b = start(yaml);
    cr_expect_str_eq(kid_of(b), "k2", "the second gateway fetched; it saw no other cache");
    cr_expect_eq(atomic_load(&fetches), 2);

    struct ag_err err;
    cr_assert_eq(ag_gateway_reload(a, NULL, &err), 0, "%s", err.msg);
    cr_expect_str_eq(kid_of(a), "k1", "a reload takes the keys from the gateway's own cache");
    cr_expect_eq(atomic_load(&fetches), 2, "and does not fetch");

    ag_gateway_stop(b, 1000);
    ag_gateway_stop(a, 1000);
}

static void issuer_free(struct gw_issuer *is)
{
    for (size_t k = 0; k < is->nkeys; k++) {
        ag_free(is->keys[k].kid);
        ag_free(is->keys[k].key);
        ag_free(is->keys[k].sign_pem);
    }
    ag_free(is->keys);
}

/* jansson allocates through ag_malloc (base's constructor), so a failing first
 * allocation inside json_loads is reported as AG_ENOMEM, not as a malformed
 * document. Every later failure point is clean too (no crash; ASan: no leak),
 * though a failure inside jansson's lexer reaches us as a syntax error (jansson
 * does not tell those apart), so AG_EINVAL is allowed there. */
Test(gateway_jwks, json_allocation_failure_is_enomem)
{
    struct ag_err err;
    struct gw_issuer is = {0};
    ag_alloc_fail_at(1);
    int rc = ag__gw_jwks_add(&is, doc_k1, "test", &err);
    ag_alloc_fail_at(0);
    cr_assert_eq(rc, AG_ENOMEM, "%s", ag_errname(rc));
    cr_assert_str_eq(err.msg, "JWKS test: out of memory", "the first allocation is jansson's");
    issuer_free(&is);
    long k;
    for (k = 2; k < 200; k++) {
        memset(&is, 0, sizeof is);
        ag_alloc_fail_at(k);
        rc = ag__gw_jwks_add(&is, doc_k1, "test", &err);
        ag_alloc_fail_at(0);
        cr_assert(rc == 0 || rc == AG_ENOMEM || rc == AG_EINVAL, "k=%ld: %s (%s)", k,
                  ag_errname(rc), err.msg);
        issuer_free(&is);
        if (rc == 0) break;
    }
    cr_assert_lt(k, 200, "the document loads once allocations suffice");
    cr_assert_gt(k, 3, "loading a JWKS takes several jansson allocations");
}
