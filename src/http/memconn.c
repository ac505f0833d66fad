/*
 * A memory transport for the connection state machine: what the server writes
 * accumulates in an ag_buf, time is a fake millisecond counter, and "closing"
 * only sets a flag. The data-driven parser tests and the fuzz harness use it, so
 * they exercise exactly the code the socket server runs, without sockets.
 */
#include <stddef.h>
#include <string.h>

#include "http/internal.h"

static struct ag__http_memconn *mem_of(struct ag__http_conn *c)
{
    return (struct ag__http_memconn *)((char *)c - offsetof(struct ag__http_memconn, conn));
}

static void mem_flush(struct ag__http_conn *c)
{
    struct ag__http_memconn *m = mem_of(c);
    if (m->closed || m->stalled) return;
    if (c->out.len) ag_buf_append(&m->output, c->out.data, c->out.len);
    ag_buf_reset(&c->out);
    if (c->close_after_flush) {
        m->closed = true;
        ag__http_conn_closed(c);
    }
}

static void mem_close(struct ag__http_conn *c)
{
    struct ag__http_memconn *m = mem_of(c);
    if (m->closed) return;
    m->closed = true;
    ag__http_conn_closed(c);
}

static void mem_set_timer(struct ag__http_conn *c, uint64_t ms)
{
    struct ag__http_memconn *m = mem_of(c);
    m->timer_at_ms = ms ? m->now_ms + ms : 0;
    if (ms) m->timer_arms++;
}

static void mem_read(struct ag__http_conn *c, bool on)
{
    mem_of(c)->reading = on;
}
static uint64_t mem_now(struct ag__http_conn *c)
{
    return mem_of(c)->now_ms;
}
static void mem_release(struct ag__http_conn *c)
{
    AG_UNUSED(c);
}

static const struct ag__http_io mem_io = {
    .flush = mem_flush,
    .close = mem_close,
    .set_timer = mem_set_timer,
    .read = mem_read,
    .now_ms = mem_now,
    .release = mem_release,
};

int ag__http_memconn_new(struct ag_http_router *router, const struct ag_http_server_config *cfg,
                         struct ag__http_memconn **out)
{
    struct ag__http_memconn *m = ag_calloc(1, sizeof *m);
    if (!m) return AG_ENOMEM;
    m->ctx.router = router;
    ag__http_limits_from(cfg, &m->ctx.lim);
    m->ctx.free_cap = 4; /* reuse finished requests, as a server loop does */
    m->now_ms = 1000;
    m->reading = true;
    ag__http_conn_init(&m->conn, &m->ctx, &mem_io);
    strcpy(m->conn.peer, "memory");
    ag_buf_init(&m->output);
    *out = m;
    return 0;
}

void ag__http_memconn_feed(struct ag__http_memconn *m, const char *data, size_t n)
{
    if (!m->closed) ag__http_conn_feed(&m->conn, data, n);
}

void ag__http_memconn_advance(struct ag__http_memconn *m, uint64_t ms)
{
    m->now_ms += ms;
    while (m->timer_at_ms && m->now_ms >= m->timer_at_ms && !m->closed) {
        m->timer_at_ms = 0;
        ag__http_conn_timeout(&m->conn);
    }
}

void ag__http_memconn_free(struct ag__http_memconn *m)
{
    if (!m) return;
    if (!m->closed) mem_close(&m->conn); /* releases the transport's reference */
    ag_buf_free(&m->output);
    ag__http_ctx_release(&m->ctx);
    ag_free(m);
}
