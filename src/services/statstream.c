/*
 * GET /admin/stats/stream (issue 18): the console's overview numbers as
 * Server-Sent Events — one `event: stats` a second whose data is the JSON of
 * GET /admin/stats (svc_console_stats), `id:` its time in Unix milliseconds.
 *
 * svc_console_stats reads the tail of the log, so it never runs on a loop: each
 * tick queues one computation on the threadpool and sends its result on the
 * stream's loop. A tick that finds the previous computation still running is
 * skipped (a slow store slows the stream down instead of piling work up). A client
 * that does not read is dropped by the server's unsent-bytes cap like any stream.
 *
 * Ending: the client goes away, is dropped, or the server drains; the abort
 * callback closes the timer once no computation is in flight, and the job's
 * finish ends the stream.
 */
#include <stdlib.h>
#include <string.h>

#include "services/internal.h"

#define PERIOD_MS 1000

struct ticker {
    struct svc_job *j;
    struct ag_http_req *req;
    uv_timer_t timer;
    uv_work_t work;
    bool busy;     /* a computation is queued or running */
    bool ended;    /* the client is gone or the server drains */
    char *payload; /* the computation's JSON (threadpool -> loop), or NULL */
    long long ms;  /* its time, the event id */
};

static void ticker_closed(uv_handle_t *h)
{
    struct ticker *t = h->data;
    struct svc_job *j = t->j;
    free(t->payload);
    ag_free(t);
    svc_job_answer(j); /* its finish ends the stream */
}

static void ticker_close(struct ticker *t)
{
    ag_http_req_on_abort(t->req, NULL, NULL);
    uv_close((uv_handle_t *)&t->timer, ticker_closed);
}

static void compute(uv_work_t *w)
{
    struct ticker *t = w->data;
    json_t *s = svc_console_stats(t->j->env);
    t->ms = s ? (long long)json_integer_value(json_object_get(s, "timeUnixMs")) : 0;
    t->payload = s ? json_dumps(s, JSON_COMPACT) : NULL;
    json_decref(s);
}

static void computed(uv_work_t *w, int status)
{
    struct ticker *t = w->data;
    t->busy = false;
    if (!t->ended && status == 0 && t->payload) {
        char id[24];
        snprintf(id, sizeof id, "%lld", t->ms);
        if (ag_http_sse_send(t->req, id, "stats", t->payload) != 0) t->ended = true;
    }
    free(t->payload);
    t->payload = NULL;
    if (t->ended) ticker_close(t);
}

static void on_tick(uv_timer_t *h)
{
    struct ticker *t = h->data;
    if (t->busy || t->ended) return;
    t->busy = true;
    if (uv_queue_work(h->loop, &t->work, compute, computed) != 0) {
        t->busy = false;
        t->ended = true;
        ticker_close(t);
    }
}

static void on_abort(struct ag_http_req *req, void *ud)
{
    struct ticker *t = ud;
    AG_UNUSED(req);
    if (t->ended) return;
    t->ended = true;
    if (!t->busy) ticker_close(t); /* else computed() closes it */
}

/* On the threadpool: nothing to check; the stream starts on the loop. */
static int stats_stream(struct svc_job *j)
{
    j->status = 200;
    return 0;
}

static void stats_finish(struct svc_job *j, struct ag_http_req *req)
{
    if (j->streamed) ag_http_stream_end(req);
}

/* On the loop: turn the answer into the stream and start ticking. */
static int stats_park(struct svc_job *j, struct ag_http_req *req)
{
    if (j->status != 200) return 0;
    if (ag_http_sse_begin(req) != 0) return 0;
    j->streamed = true;
    if (!strcmp(ag_http_req_method(req), "HEAD")) return 0; /* the headers only */
    struct ticker *t = ag_calloc(1, sizeof *t);
    if (!t) return 0;
    t->j = j;
    t->req = req;
    t->work.data = t;
    uv_timer_init(ag_http_req_loop(req), &t->timer);
    t->timer.data = t;
    if (ag_http_req_on_abort(req, on_abort, t) != 0) {
        t->ended = true;
        ticker_close(t);
        return 1;
    }
    uv_timer_start(&t->timer, on_tick, 0, PERIOD_MS);
    return 1;
}

static const struct svc_route routes[] = {
    {"GET",
     "/admin/stats/stream",
     SVC_ADMIN,
     stats_stream,
     NULL,
     NULL,
     {NULL},
     NULL,
     stats_finish,
     stats_park},
};

const struct svc_context svc_statstream_context = {"statstream", routes, 1, NULL, RM_COUNT};
