/* Serving on a Unix-domain socket and calling it through the client pool
 * ("unix:/abs/path"): mode 0600, peer "unix", keep-alive reuse across requests,
 * a live listener refused, a stale socket file replaced, a regular file kept,
 * the socket file unlinked at free, a missing socket is AG_ECONNECT. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agora/http.h"
#include "testrouter.h"

static char dir[64], path[100], addr[110];
static uv_loop_t loop;

static int peer_route(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    const char *p = ag_http_req_peer(req);
    return ag_http_respond(req, 200, "text/plain", p, strlen(p));
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ag-unix-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);
    uv_loop_init(&loop);
}

static void teardown(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    unlink(path);
    rmdir(dir);
}

static struct ag_http_server *serve(struct ag_http_router *r, int *rc, struct ag_err *err)
{
    struct ag_http_server_config cfg = {.unix_path = path, .workers = 2, .port = 1};
    struct ag_http_server *s;
    cr_assert_eq(ag_http_server_new(&cfg, r, &s), 0);
    *rc = ag_http_server_start(s, err);
    return s;
}

struct result {
    int done, rc, status;
    char body[128];
};

static void on_done(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct result *r = ud;
    r->done++;
    r->rc = rc;
    if (resp) {
        r->status = resp->status;
        snprintf(r->body, sizeof r->body, "%.*s", (int)resp->body_len, resp->body);
    }
}

static void call(struct ag_http_upstream *u, const char *method, const char *p, const char *body,
                 struct result *r)
{
    struct ag_http_client_req q = {.method = method,
                                   .path = p,
                                   .body = body,
                                   .body_len = body ? strlen(body) : 0,
                                   .timeout_ms = 5000};
    int n = r->done;
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, r), 0);
    while (r->done == n) uv_run(&loop, UV_RUN_ONCE);
}

Test(unix_socket, serve_and_call_through_the_pool, .init = setup, .fini = teardown)
{
    struct ag_http_router *r = test_router_new();
    cr_assert_eq(ag_http_route(r, "GET", "/peer", peer_route, NULL), 0);
    int rc;
    struct ag_err err;
    struct ag_http_server *s = serve(r, &rc, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(ag_http_server_port(s), 0);
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISSOCK(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);

    struct ag_http_upstream *u;
    struct ag_http_upstream_config uc = {.host = addr};
    cr_assert_eq(ag_http_upstream_new(&loop, &uc, &u), 0);
    struct result res = {0};
    for (int i = 0; i < 5; i++) {
        call(u, "GET", "/orders/7", NULL, &res);
        cr_assert_eq(res.rc, 0);
        cr_assert_eq(res.status, 200);
        cr_assert_str_eq(res.body, "{\"id\":\"7\"}");
    }
    call(u, "POST", "/echo", "over a unix socket", &res);
    cr_assert_str_eq(res.body, "over a unix socket");
    call(u, "GET", "/peer", NULL, &res);
    cr_assert_str_eq(res.body, "unix");
    struct ag_http_upstream_stats ss;
    ag_http_upstream_stats(u, &ss);
    cr_assert_eq(ss.connects, 1, "one pooled connection for every request");

    /* a second server on the same path is refused while the first listens */
    struct ag_http_server *s2 = serve(r, &rc, &err);
    cr_assert_eq(rc, AG_EIO);
    cr_assert(strstr(err.msg, "another process listens"), "%s", err.msg);
    ag_http_server_free(s2);
    cr_assert_eq(lstat(path, &st), 0, "the refused server left the live socket alone");
    call(u, "GET", "/hello", NULL, &res);
    cr_assert_eq(res.status, 200, "still serving");

    ag_http_upstream_close(u);
    ag_http_server_drain(s, 100);
    ag_http_server_wait(s);
    ag_http_server_free(s);
    cr_assert_neq(lstat(path, &st), 0, "the socket file is unlinked at free");
    ag_http_router_free(r);
}

Test(unix_socket, stale_socket_replaced_regular_file_kept, .init = setup, .fini = teardown)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* a socket file nobody answers on, as a crash leaves it */
    struct ag_http_router *r = test_router_new();
    int rc;
    struct ag_err err;
    struct ag_http_server *s = serve(r, &rc, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    ag_http_server_free(s);

    FILE *f = fopen(path, "w");
    fputs("not a socket", f);
    fclose(f);
    s = serve(r, &rc, &err);
    cr_assert_eq(rc, AG_EIO);
    cr_assert(strstr(err.msg, "not a socket"), "%s", err.msg);
    ag_http_server_free(s);
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISREG(st.st_mode), "a regular file is never unlinked");
    ag_http_router_free(r);
}

Test(unix_socket, missing_socket_is_econnect_and_bad_paths_refused, .init = setup, .fini = teardown)
{
    struct ag_http_upstream *u;
    struct ag_http_upstream_config uc = {.host = addr};
    cr_assert_eq(ag_http_upstream_new(&loop, &uc, &u), 0);
    struct result res = {0};
    call(u, "GET", "/hello", NULL, &res);
    cr_assert_eq(res.rc, AG_ECONNECT);
    ag_http_upstream_close(u);
    uc.host = "unix:relative.sock";
    cr_assert_eq(ag_http_upstream_new(&loop, &uc, &u), AG_EINVAL);
    struct ag_http_router *r = test_router_new();
    struct ag_http_server *s;
    struct ag_http_server_config sc = {.unix_path = "relative.sock"};
    cr_assert_eq(ag_http_server_new(&sc, r, &s), AG_EINVAL);
    ag_http_router_free(r);
}
