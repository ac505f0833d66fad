/* The loop's pool of finished requests (ag__http_ctx.free_reqs): two connections
 * on one context take turns with the same request object, a reused request
 * carries nothing of the one before (headers, path), requests finished while the
 * pool is full are freed, and ag__http_ctx_release frees the pool (ASan's leak
 * check). The connections here have a minimal transport that keeps the bytes
 * written. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/internal.h"

struct tconn {
    struct ag__http_conn conn; /* first: the transport's cast */
    struct ag_buf written;
    bool closed;
};

static void t_flush(struct ag__http_conn *c)
{
    struct tconn *t = (struct tconn *)c;
    ag_buf_append(&t->written, c->out.data, c->out.len);
    ag_buf_reset(&c->out);
}
static void t_close(struct ag__http_conn *c)
{
    struct tconn *t = (struct tconn *)c;
    if (t->closed) return;
    t->closed = true;
    ag__http_conn_closed(c);
}
static void t_set_timer(struct ag__http_conn *c, uint64_t ms)
{
    AG_UNUSED(c), AG_UNUSED(ms);
}
static void t_read(struct ag__http_conn *c, bool on)
{
    AG_UNUSED(c), AG_UNUSED(on);
}
static uint64_t t_now(struct ag__http_conn *c)
{
    AG_UNUSED(c);
    return 1000;
}
static void t_release(struct ag__http_conn *c)
{
    AG_UNUSED(c);
}
static const struct ag__http_io tio = {.flush = t_flush,
                                       .close = t_close,
                                       .set_timer = t_set_timer,
                                       .read = t_read,
                                       .now_ms = t_now,
                                       .release = t_release};

static struct ag_http_req *seen[8];
static size_t seen_hdrs[8];
static const char *seen_big[8];
static int nseen;
static struct ag_http_req *parked[4];
static int nparked;

static int now_h(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    if (nseen < 8) {
        seen[nseen] = req;
        seen_hdrs[nseen] = ag_http_req_header_count(req);
        seen_big[nseen] = ag_http_req_header(req, "X-Big");
        nseen++;
    }
    return ag_http_respond(req, 200, "text/plain", "ok", 2);
}

static int later_h(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    parked[nparked++] = req;
    return 0;
}

static struct ag_http_router *router;
static struct ag__http_ctx ctx;
static struct tconn a, b;

static void open_conns(uint32_t free_cap)
{
    cr_assert_eq(ag_http_router_new(&router), 0);
    ag_http_route(router, "GET", "/now", now_h, NULL);
    ag_http_route(router, "GET", "/later", later_h, NULL);
    memset(&ctx, 0, sizeof ctx);
    ctx.router = router;
    ag__http_limits_from(NULL, &ctx.lim);
    ctx.free_cap = free_cap;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    ag__http_conn_init(&a.conn, &ctx, &tio);
    ag__http_conn_init(&b.conn, &ctx, &tio);
    nseen = nparked = 0;
}

static void close_conns(void)
{
    t_close(&a.conn), t_close(&b.conn);
    ag_buf_free(&a.written), ag_buf_free(&b.written);
    ag__http_ctx_release(&ctx);
    ag_http_router_free(router);
}

static void feed(struct tconn *t, const char *s)
{
    ag__http_conn_feed(&t->conn, s, strlen(s));
}

Test(reqpool, connections_take_turns_with_one_request)
{
    open_conns(64);
    feed(&a, "GET /now HTTP/1.1\r\nHost: x\r\nX-Big: first\r\nX-Other: 1\r\n\r\n");
    feed(&b, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(&a, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(nseen, 3);
    cr_assert_eq(seen[1], seen[0], "b's request reuses the one a finished");
    cr_assert_eq(seen[2], seen[0]);
    cr_assert_eq(seen_hdrs[0], 3);
    cr_assert_str_eq(seen_big[0], "first");
    cr_assert_eq(seen_hdrs[1], 1, "nothing of the request before");
    cr_assert_null(seen_big[1]);
    cr_assert_eq(ctx.nfree, 1);
    cr_assert_not_null(strstr(b.written.data, "HTTP/1.1 200 OK\r\n"));
    close_conns();
}

Test(reqpool, a_full_pool_frees_what_it_cannot_keep)
{
    open_conns(1);
    feed(&a, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(&b, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(nparked, 2);
    cr_assert_neq(parked[0], parked[1], "two requests in flight are two objects");
    cr_assert_eq(ag_http_respond(parked[0], 200, "text/plain", "a", 1), 0);
    cr_assert_eq(ag_http_respond(parked[1], 200, "text/plain", "b", 1), 0);
    cr_assert_eq(ctx.nfree, 1, "one kept, the other freed");
    close_conns();
    cr_assert_eq(ctx.nfree, 0);
    cr_assert_null(ctx.free_reqs);
}

Test(reqpool, no_pool_frees_every_request)
{
    open_conns(0);
    feed(&a, "GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(nseen, 1);
    cr_assert_eq(ctx.nfree, 0);
    cr_assert_null(ctx.free_reqs);
    close_conns();
}
