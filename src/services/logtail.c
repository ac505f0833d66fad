/*
 * GET /admin/log/stream (issue 18): a live tail of `$all` as Server-Sent Events
 * for operators (the console reads it with EventSource).
 *
 * Contract. Each event is `id: <position>`, `event: <type>`, `data:
 * {"position","stream","type","version","time","data"}` with data as the store
 * holds it (personal data stays sealed: nothing is decrypted here). Without
 * `from` the tail starts at the end of the log; `?from=<position>` starts there
 * (inclusive), `Last-Event-ID: <position>` right after it (EventSource's
 * reconnect); `?type=<event type>` keeps only that type.
 *
 * Waking. One notifier thread per platform holds, while any tail is open, a
 * live subscription to `$all` (ag_store_subscribe, pulled with a timeout) and,
 * whenever events arrive, wakes every open tail through its uv_async (tails are linked under a
 * mutex; a tail is unlinked under it before its handles close, so no send reaches a closed handle).
 * No thread per stream, no polling per stream.
 *
 * Reading. A woken tail reads the log from its next position on the threadpool
 * (one read in flight per tail, 256 events a page, formatted there) and writes
 * the page on its loop; it reads on while pages are full. A tail whose client
 * has more than CATCHUP_UNSENT bytes not taken yet waits 50 ms before reading
 * on, so catching up from an old position follows the client's pace; a client
 * that falls behind live events is dropped by the server's unsent-bytes cap.
 *
 * Ending. The client goes away, is dropped, or the server drains: the abort
 * callback ends the stream once no read is in flight.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "agora/store.h"
#include "services/internal.h"

#define PAGE           256
#define CATCHUP_UNSENT ((size_t)64 * 1024)
#define LIVE           UINT64_MAX /* next position: the end of the log, found at the first read */

struct tail {
    struct svc_logtail *reg;
    struct svc_job *j; /* answered (the stream ended) when the tail closes */
    struct ag_http_req *req;
    uv_async_t async; /* woken by the notifier */
    uv_timer_t timer; /* catch-up pacing */
    uv_work_t work;   /* the read in flight */
    int open;         /* handles not closed yet */
    bool linked;      /* in reg's list (under its mutex) */
    bool reading;     /* work queued */
    bool again;       /* woken while reading: read again after */
    bool ended;       /* the client is gone or the server drains */
    uint64_t next;    /* position of the next event to send */
    char type[128];   /* only this event type, "" = every type */
    /* the read's result (threadpool -> loop) */
    struct ag_buf out;
    uint64_t page_next;
    bool page_full;
    int rc;
    struct tail *prev, *nxt;
};

struct svc_logtail {
    struct ag_store *store;
    pthread_mutex_t lock;
    struct tail *tails;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
};

/* ---- the notifier thread ---- */

static void wake_all(struct svc_logtail *t)
{
    pthread_mutex_lock(&t->lock);
    for (struct tail *x = t->tails; x; x = x->nxt) uv_async_send(&x->async);
    pthread_mutex_unlock(&t->lock);
}

static uint64_t log_end(struct ag_store *s)
{
    struct ag_event_page page = {0};
    struct ag_err err;
    uint64_t end = 0;
    if (ag_store_read_all(s, UINT64_MAX, AG_READ_BACKWARD, 1, &page, &err) == 0 && page.count)
        end = page.events[0].position + 1;
    ag_event_page_free(&page);
    return end;
}

static bool any_tail(struct svc_logtail *t)
{
    pthread_mutex_lock(&t->lock);
    bool any = t->tails != NULL;
    pthread_mutex_unlock(&t->lock);
    return any;
}

/* Subscribed only while a tail is open (no tail: the log is not read at all).
 * After (re)subscribing it wakes every tail once, so an append between a tail's
 * first read and the subscription is not missed. */
/* (Re)subscribe from the end of the log and wake every tail once; NULL on failure. */
static struct ag_store_sub *subscribe_now(struct svc_logtail *t)
{
    struct ag_store_sub *sub = NULL;
    struct ag_err err;
    if (ag_store_subscribe(t->store, NULL, 0, log_end(t->store), &sub, &err) != 0) {
        AG_WARN("logtail.subscribe", AG_LS("error", err.msg));
        return NULL;
    }
    wake_all(t);
    return sub;
}

static void *notifier(void *arg)
{
    struct svc_logtail *t = arg;
    ag_thread_name("ag-logtail");
    struct ag_store_sub *sub = NULL;
    while (!t->stop) {
        if (!any_tail(t)) { /* nobody tails: read nothing */
            ag_store_sub_free(sub);
            sub = NULL;
            uv_sleep(100);
            continue;
        }
        if (!sub && !(sub = subscribe_now(t))) {
            uv_sleep(1000);
            continue;
        }
        struct ag_event_page page = {0};
        struct ag_err err;
        int rc = ag_store_sub_next(sub, PAGE, 200, &page, &err);
        if (rc == 0 && page.count) wake_all(t);
        ag_event_page_free(&page);
        if (rc == AG_ECLOSED) break;
    }
    ag_store_sub_free(sub);
    return NULL;
}

int svc_logtail_start(struct ag_store *store, struct svc_logtail **out)
{
    struct svc_logtail *t = ag_calloc(1, sizeof *t);
    if (!t) return AG_ENOMEM;
    t->store = store;
    pthread_mutex_init(&t->lock, NULL);
    /* the thread takes no signals: SIGTERM/SIGINT belong to the loops' handlers */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, notifier, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&t->lock);
        ag_free(t);
        return AG_ENOMEM;
    }
    t->started = true;
    *out = t;
    return 0;
}

void svc_logtail_stop(struct svc_logtail *t)
{
    if (!t) return;
    t->stop = true;
    if (t->started) pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    ag_free(t);
}

/* ---- one tail on its loop ---- */

static void kick(struct tail *x);

static void tail_closed(uv_handle_t *h)
{
    struct tail *x = h->data;
    if (--x->open > 0) return;
    struct svc_job *j = x->j;
    ag_buf_free(&x->out);
    ag_free(x);
    svc_job_answer(j); /* its finish ends the stream */
}

static void tail_close(struct tail *x)
{
    pthread_mutex_lock(&x->reg->lock);
    if (x->linked) {
        if (x->prev)
            x->prev->nxt = x->nxt;
        else
            x->reg->tails = x->nxt;
        if (x->nxt) x->nxt->prev = x->prev;
        x->linked = false;
    }
    pthread_mutex_unlock(&x->reg->lock);
    ag_http_req_on_abort(x->req, NULL, NULL);
    uv_close((uv_handle_t *)&x->async, tail_closed);
    uv_close((uv_handle_t *)&x->timer, tail_closed);
}

/* {"position","stream","type","version","time","data"} of one event. */
static int event_data(const struct ag_event *ev, struct ag_buf *b)
{
    char ts[32];
    ag_time_rfc3339(ev->time_ns, ts);
    int rc = ag_buf_printf(b, "{\"position\":%llu,\"stream\":", (unsigned long long)ev->position);
    if (!rc) rc = ag_buf_json_str(b, ev->stream, ev->stream_len);
    if (!rc) rc = ag_buf_puts(b, ",\"type\":");
    if (!rc) rc = ag_buf_json_str(b, ev->type, ev->type_len);
    if (!rc)
        rc = ag_buf_printf(b, ",\"version\":%lld,\"time\":\"%s\",\"data\":", (long long)ev->version,
                           ts);
    if (!rc && ev->data_len) rc = ag_buf_append(b, ev->data, ev->data_len);
    if (!rc && !ev->data_len) rc = ag_buf_puts(b, "null");
    if (!rc) rc = ag_buf_putc(b, '}');
    return rc;
}

static int format_page(struct tail *x, const struct ag_event_page *page)
{
    struct ag_buf data;
    ag_buf_init(&data);
    int rc = 0;
    for (size_t i = 0; i < page->count && !rc; i++) {
        const struct ag_event *ev = &page->events[i];
        if (x->type[0] &&
            (strlen(x->type) != ev->type_len || memcmp(x->type, ev->type, ev->type_len) != 0))
            continue;
        char id[24], type[256];
        snprintf(id, sizeof id, "%llu", (unsigned long long)ev->position);
        snprintf(type, sizeof type, "%.*s", (int)ev->type_len, ev->type);
        ag_buf_reset(&data);
        rc = event_data(ev, &data);
        if (!rc) rc = ag_http_sse_format(&x->out, id, type, data.data, data.len);
    }
    ag_buf_free(&data);
    return rc;
}

static void read_work(uv_work_t *w)
{
    struct tail *x = w->data;
    struct ag_store *s = x->reg->store;
    struct ag_err err;
    if (x->next == LIVE) x->next = log_end(s);
    struct ag_event_page page = {0};
    x->rc = ag_store_read_all(s, x->next, AG_READ_FORWARD, PAGE, &page, &err);
    x->page_next = x->next;
    x->page_full = false;
    if (!x->rc) {
        x->rc = format_page(x, &page);
        if (page.count) x->page_next = page.events[page.count - 1].position + 1;
        x->page_full = page.count == PAGE && !page.end;
    }
    ag_event_page_free(&page);
}

static void read_done(uv_work_t *w, int status)
{
    struct tail *x = w->data;
    AG_UNUSED(status);
    x->reading = false;
    if (!x->ended && x->out.len && ag_http_stream_write(x->req, x->out.data, x->out.len) != 0)
        x->ended = true;
    ag_buf_reset(&x->out);
    if (x->rc) x->ended = true; /* the log cannot be read: end, the client reconnects */
    x->next = x->page_next;
    if (x->ended) {
        tail_close(x);
        return;
    }
    if (x->page_full || x->again) {
        x->again = false;
        kick(x);
    }
}

static void on_pace(uv_timer_t *t)
{
    kick(t->data);
}

static void kick(struct tail *x)
{
    if (x->ended) return;
    if (x->reading) {
        x->again = true;
        return;
    }
    if (ag_http_stream_unsent(x->req) > CATCHUP_UNSENT) {
        uv_timer_start(&x->timer, on_pace, 50, 0);
        return;
    }
    x->reading = true;
    x->work.data = x;
    if (uv_queue_work(uv_handle_get_loop((uv_handle_t *)&x->async), &x->work, read_work,
                      read_done) != 0) {
        x->reading = false;
        x->ended = true;
        tail_close(x);
    }
}

static void on_wake(uv_async_t *a)
{
    kick(a->data);
}

static void on_abort(struct ag_http_req *req, void *ud)
{
    struct tail *x = ud;
    AG_UNUSED(req);
    if (x->ended) return;
    x->ended = true;
    if (!x->reading) tail_close(x); /* else read_done closes it */
}

/* ---- the route ---- */

static bool parse_pos(const char *s, uint64_t *out)
{
    if (!s || !*s || *s < '0' || *s > '9') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return false;
    *out = v;
    return true;
}

/* On the threadpool: check the query (j->q: from, type). */
static int log_stream(struct svc_job *j)
{
    uint64_t pos;
    if (j->q[0] && !parse_pos(j->q[0], &pos))
        svc_field_error(j, "/from", "from must be a log position (a non-negative integer)");
    if (j->q[1] && (!*j->q[1] || strlen(j->q[1]) >= sizeof((struct tail *)0)->type))
        svc_field_error(j, "/type", "type must be an event type");
    if (svc_fields_failed(j, 400)) return 0;
    j->status = 200;
    return 0;
}

static void log_finish(struct svc_job *j, struct ag_http_req *req)
{
    if (j->streamed) ag_http_stream_end(req);
}

/* On the loop: turn the answer into the stream and start tailing. */
static int log_park(struct svc_job *j, struct ag_http_req *req)
{
    struct svc_logtail *reg = j->env->logtail;
    if (j->status != 200) return 0;
    if (!reg) {
        svc_problem(j, 503, "Log tail unavailable", "the log tail is not running");
        return 0;
    }
    struct tail *x = ag_calloc(1, sizeof *x);
    if (!x) return 0;
    x->reg = reg;
    x->j = j;
    x->req = req;
    ag_buf_init(&x->out);
    uint64_t last;
    x->next = LIVE;
    if (j->q[0])
        parse_pos(j->q[0], &x->next);
    else if (parse_pos(ag_http_req_header(req, "Last-Event-ID"), &last))
        x->next = last + 1;
    if (j->q[1]) snprintf(x->type, sizeof x->type, "%s", j->q[1]);
    if (ag_http_sse_begin(req) != 0) {
        ag_free(x);
        return 0;
    }
    j->streamed = true;
    if (!strcmp(ag_http_req_method(req), "HEAD")) { /* the headers only */
        ag_free(x);
        return 0;
    }
    uv_loop_t *loop = ag_http_req_loop(req);
    uv_async_init(loop, &x->async, on_wake);
    uv_timer_init(loop, &x->timer);
    x->async.data = x->timer.data = x;
    x->open = 2;
    pthread_mutex_lock(&reg->lock);
    x->nxt = reg->tails;
    if (x->nxt) x->nxt->prev = x;
    reg->tails = x;
    x->linked = true;
    pthread_mutex_unlock(&reg->lock);
    if (ag_http_req_on_abort(req, on_abort, x) != 0) {
        x->ended = true;
        tail_close(x);
        return 1;
    }
    kick(x);
    return 1;
}

static const struct svc_route routes[] = {
    {"GET",
     "/admin/log/stream",
     SVC_ADMIN,
     log_stream,
     NULL,
     NULL,
     {"from", "type"},
     NULL,
     log_finish,
     log_park},
};

const struct svc_context svc_logtail_context = {"logtail", routes, 1, NULL, RM_COUNT};
