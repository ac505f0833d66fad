/* The client pool against a real agora server on 127.0.0.1 (its own worker
 * thread) and against a misbehaving raw upstream on the test's loop. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/http.h"
#include "testrouter.h"

static struct ag_http_router *router;
static struct ag_http_server *server;
static uv_loop_t loop;

static void start_server(uint32_t idle_ms)
{
    struct ag_http_server_config cfg = {.workers = 1, .idle_timeout_ms = idle_ms};
    test_server_start(cfg, &router, &server, &loop);
}

static void stop_all(void)
{
    test_server_stop(&router, &server, &loop);
}

struct result {
    int done;       /* callbacks seen */
    int rc;         /* last rc */
    int status;     /* last status */
    char body[256]; /* last body */
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

static struct ag_http_upstream *upstream(uint16_t port, struct ag_http_upstream_config cfg)
{
    cfg.host = "127.0.0.1";
    cfg.port = port;
    struct ag_http_upstream *u;
    cr_assert_eq(ag_http_upstream_new(&loop, &cfg, &u), 0);
    return u;
}

static void run_until(struct result *r, int n)
{
    while (r->done < n) uv_run(&loop, UV_RUN_ONCE);
}

static int get(struct ag_http_upstream *u, const char *path, uint32_t timeout_ms, struct result *r)
{
    struct ag_http_client_req q = {.method = "GET", .path = path, .timeout_ms = timeout_ms};
    return ag_http_upstream_request(u, &q, on_done, r);
}

static void timer_fired(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Run the loop for `ms` (the client's timers keep working meanwhile). */
static void pause_ms(uint64_t ms)
{
    uv_timer_t t;
    int fired = 0;
    uv_timer_init(&loop, &t);
    t.data = &fired;
    uv_timer_start(&t, timer_fired, ms, 0);
    while (!fired) uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- a misbehaving upstream on the test loop ---- */

enum raw_mode { RAW_GARBAGE, RAW_RESET, RAW_PARTIAL, RAW_CHUNKED, RAW_SILENT, RAW_EOF_BODY };

struct raw_server {
    uv_tcp_t tcp;          /* listener */
    enum raw_mode mode;    /* behaviour */
    uv_tcp_t *clients[16]; /* accepted, closed at the end */
    int nclients;          /* in use */
};

static struct raw_server raw;
static char raw_buf[4096];

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h, (void)n;
    *b = uv_buf_init(raw_buf, sizeof raw_buf);
}

static void raw_closed(uv_handle_t *h)
{
    ag_free(h);
}

static void raw_send(uv_tcp_t *c, const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    uv_try_write((uv_stream_t *)c, &b, 1);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    uv_tcp_t *c = (uv_tcp_t *)s;
    if (n <= 0 || uv_is_closing((uv_handle_t *)c)) return;
    switch (raw.mode) {
    case RAW_GARBAGE:
        raw_send(c, "HELLO THERE\r\n\r\n");
        break;
    case RAW_RESET:
        uv_close((uv_handle_t *)c, raw_closed);
        break;
    case RAW_PARTIAL:
        raw_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        uv_close((uv_handle_t *)c, raw_closed);
        break;
    case RAW_CHUNKED:
        raw_send(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n "
                    "world\r\n0\r\n\r\n");
        break;
    case RAW_SILENT:
        break;
    case RAW_EOF_BODY:
        raw_send(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof");
        uv_close((uv_handle_t *)c, raw_closed);
        break;
    }
}

static void raw_conn(uv_stream_t *listener, int status)
{
    (void)status;
    uv_tcp_t *c = ag_calloc(1, sizeof *c);
    uv_tcp_init(&loop, c);
    uv_accept(listener, (uv_stream_t *)c);
    if (raw.nclients < 16) raw.clients[raw.nclients++] = c;
    uv_read_start((uv_stream_t *)c, raw_alloc, raw_read);
}

static uint16_t raw_start(enum raw_mode mode)
{
    uv_loop_init(&loop);
    memset(&raw, 0, sizeof raw);
    raw.mode = mode;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &raw.tcp);
    uv_tcp_bind(&raw.tcp, (struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&raw.tcp, 16, raw_conn);
    int len = sizeof a;
    uv_tcp_getsockname(&raw.tcp, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void raw_stop(void)
{
    for (int i = 0; i < raw.nclients; i++)
        if (!uv_is_closing((uv_handle_t *)raw.clients[i]))
            uv_close((uv_handle_t *)raw.clients[i], raw_closed);
    uv_close((uv_handle_t *)&raw.tcp, NULL);
    stop_all();
}

static int raw_case(enum raw_mode mode, uint32_t timeout_ms, struct result *r)
{
    struct ag_http_upstream *u = upstream(raw_start(mode), (struct ag_http_upstream_config){0});
    cr_assert_eq(get(u, "/x", timeout_ms, r), 0);
    run_until(r, 1);
    ag_http_upstream_close(u);
    raw_stop();
    return r->rc;
}

Test(client, distinct_errors_for_bad_upstreams)
{
    struct result r = {0};
    cr_assert_eq(raw_case(RAW_GARBAGE, 0, &r), AG_EPROTOCOL);
    memset(&r, 0, sizeof r);
    cr_assert_eq(raw_case(RAW_RESET, 0, &r), AG_ERESET);
    memset(&r, 0, sizeof r);
    cr_assert_eq(raw_case(RAW_PARTIAL, 0, &r), AG_ERESET);
    memset(&r, 0, sizeof r);
    cr_assert_eq(raw_case(RAW_SILENT, 200, &r), AG_ETIMEDOUT);
}

Test(client, chunked_and_until_eof_bodies)
{
    struct result r = {0};
    cr_assert_eq(raw_case(RAW_CHUNKED, 0, &r), 0);
    cr_assert_str_eq(r.body, "hello world");
    memset(&r, 0, sizeof r);
    cr_assert_eq(raw_case(RAW_EOF_BODY, 0, &r), 0);
    cr_assert_str_eq(r.body, "until-eof");
}

Test(client, connect_refused_is_econnect)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* nobody listens there now */
    uv_loop_init(&loop);
    struct ag_http_upstream *u = upstream(ntohs(a.sin_port), (struct ag_http_upstream_config){0});
    struct result r = {0};
    cr_assert_eq(get(u, "/x", 0, &r), 0);
    run_until(&r, 1);
    cr_assert_eq(r.rc, AG_ECONNECT);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, keep_alive_reuses_one_connection)
{
    start_server(0);
    struct ag_http_upstream *u =
        upstream(ag_http_server_port(server), (struct ag_http_upstream_config){0});
    struct result r = {0};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(get(u, "/orders/5", 0, &r), 0);
        run_until(&r, i + 1);
        cr_assert_eq(r.rc, 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "{\"id\":\"5\"}");
    }
    struct ag_http_upstream_stats st;
    ag_http_upstream_stats(u, &st);
    cr_assert_eq(st.connects, 1);
    cr_assert_eq(st.reused, 4);
    cr_assert_eq(st.idle, 1);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, deadline_and_pool_wait_are_distinct)
{
    start_server(0);
    struct ag_http_upstream_config cfg = {.max_connections = 1, .pool_timeout_ms = 100};
    struct ag_http_upstream *u = upstream(ag_http_server_port(server), cfg);
    struct result slow = {0}, waiting = {0}, deadline = {0};
    cr_assert_eq(get(u, "/sleep/400", 0, &slow), 0);
    cr_assert_eq(get(u, "/hello", 0, &waiting), 0);
    run_until(&waiting, 1);
    cr_assert_eq(waiting.rc, AG_EPOOL_TIMEOUT);
    run_until(&slow, 1);
    cr_assert_eq(slow.rc, 0);
    cr_assert_str_eq(slow.body, "slept");
    cr_assert_eq(get(u, "/sleep/500", 150, &deadline), 0);
    run_until(&deadline, 1);
    cr_assert_eq(deadline.rc, AG_ETIMEDOUT);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, max_pending_refuses_at_once)
{
    start_server(0);
    struct ag_http_upstream_config cfg = {.max_connections = 1, .max_pending = 1};
    struct ag_http_upstream *u = upstream(ag_http_server_port(server), cfg);
    struct result a = {0}, b = {0}, c = {0};
    cr_assert_eq(get(u, "/sleep/50", 0, &a), 0);
    cr_assert_eq(get(u, "/hello", 0, &b), 0);
    cr_assert_eq(get(u, "/hello", 0, &c), AG_EAGAIN);
    run_until(&b, 1);
    cr_assert_eq(a.rc, 0);
    cr_assert_eq(b.rc, 0);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, upstream_closing_idle_keep_alive_connections)
{
    start_server(100); /* the server closes idle connections after 100 ms */
    struct ag_http_upstream *u =
        upstream(ag_http_server_port(server), (struct ag_http_upstream_config){0});
    struct result r = {0};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(get(u, "/hello", 0, &r), 0);
        run_until(&r, i + 1);
        cr_assert_eq(r.rc, 0, "request %d: %s", i, ag_strerror(r.rc));
        pause_ms(180);
    }
    struct ag_http_upstream_stats st;
    ag_http_upstream_stats(u, &st);
    cr_assert_eq(st.connects, 3, "a closed keep-alive connection is replaced");
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, max_requests_per_connection)
{
    start_server(0);
    struct ag_http_upstream_config cfg = {.max_requests_per_conn = 2};
    struct ag_http_upstream *u = upstream(ag_http_server_port(server), cfg);
    struct result r = {0};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(get(u, "/hello", 0, &r), 0);
        run_until(&r, i + 1);
        cr_assert_eq(r.rc, 0);
    }
    struct ag_http_upstream_stats st;
    ag_http_upstream_stats(u, &st);
    cr_assert_eq(st.connects, 2);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, propagates_request_id_and_traceparent)
{
    start_server(0);
    struct ag_http_upstream *u =
        upstream(ag_http_server_port(server), (struct ag_http_upstream_config){0});
    struct ag_http_header h[] = {{"X-Custom", "v1"}};
    struct ag_http_client_req q = {
        .method = "GET", .path = "/headers", .headers = h, .nheaders = 1, .request_id = "rid-1"};
    strcpy(q.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    struct result r = {0};
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, &r), 0);
    run_until(&r, 1);
    cr_assert_str_eq(
        r.body, "{\"requestId\":\"rid-1\",\"traceparent\":"
                "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\",\"custom\":\"v1\"}");
    struct ag_http_header bad[] = {{"X-Split", "a\r\nHost: evil"}};
    q.headers = bad;
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, &r), AG_EINVAL);
    q.headers = NULL, q.nheaders = 0, q.path = "/a b";
    cr_assert_eq(ag_http_upstream_request(u, &q, on_done, &r), AG_EINVAL);
    ag_http_upstream_close(u);
    stop_all();
}

Test(client, close_cancels_waiting_requests)
{
    start_server(0);
    struct ag_http_upstream_config cfg = {.max_connections = 1};
    struct ag_http_upstream *u = upstream(ag_http_server_port(server), cfg);
    struct result a = {0}, b = {0};
    cr_assert_eq(get(u, "/sleep/200", 0, &a), 0);
    cr_assert_eq(get(u, "/hello", 0, &b), 0);
    ag_http_upstream_close(u);
    cr_assert_eq(a.rc, AG_ECANCELED);
    cr_assert_eq(b.rc, AG_ECANCELED);
    stop_all();
}
