/*
 * The PostgreSQL store adapter: opening (URI, first connection, migrations), the
 * connection pool with its outage handling, health, the listener thread behind
 * wait_head, the sequencer thread that gives committed appends their positions
 * (all the waiting ones of the process in one round trip), the async workers, and
 * close.
 *
 * Outages: a statement that fails because the connection is gone marks the store
 * unwritable (health: AG_EUNAVAILABLE, libpq's message) and the connection for a
 * reconnect no earlier than a backoff (retry_min_ns doubling to retry_max_ns).
 * Until then borrowing that connection fails fast with AG_EUNAVAILABLE, so an
 * append answers at once (the services turn it into 503 + Retry-After) instead of
 * hanging in connect. The first statement that succeeds again marks the store
 * writable. Nothing acknowledged is lost: an append is acknowledged only after its
 * transaction and its ordering have committed.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/pg/internal.h"

#define LISTEN_TICK_MS 500

static struct pg_store *ps(struct ag_store *st)
{
    return (struct pg_store *)st;
}

static uint64_t mono(const struct pg_store *s)
{
    return ag_clock_mono(s->clock);
}

/* ---- health and outages ---- */

static void mark_down(struct pg_store *s, struct pg_conn *pc, const char *msg)
{
    pthread_mutex_lock(&s->lock);
    struct ag_store_health *h = &s->health;
    if (h->writable) {
        h->writable = false;
        h->error = AG_EUNAVAILABLE;
        h->since_ns = ag_clock_now(s->clock);
        h->outages++;
        h->retries = 0;
        s->backoff_ns = s->base.opts.retry_min_ns;
    } else if (s->backoff_ns < s->base.opts.retry_max_ns) {
        s->backoff_ns *= 2;
        if (s->backoff_ns > s->base.opts.retry_max_ns) s->backoff_ns = s->base.opts.retry_max_ns;
    }
    h->failures++;
    snprintf(h->message, sizeof h->message, "%s", msg);
    if (pc) pc->retry_at_ns = mono(s) + s->backoff_ns;
    h->retry_in_ms = s->backoff_ns / 1000000;
    pthread_mutex_unlock(&s->lock);
}

void ag__pg_mark_ok(struct pg_store *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->health.writable) {
        s->health.writable = true;
        s->health.error = 0;
        s->health.message[0] = 0;
        s->health.since_ns = 0;
        s->health.retry_in_ms = 0;
    }
    pthread_mutex_unlock(&s->lock);
}

int ag__pg_health(struct ag_store *st, struct ag_store_health *out)
{
    struct pg_store *s = ps(st);
    pthread_mutex_lock(&s->lock);
    *out = s->health;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int ag__pg_fail(struct pg_store *s, struct pg_conn *pc, PGresult *res, const char *what,
                struct ag_err *err)
{
    PGconn *c = pc->c;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char msg[300];
    snprintf(msg, sizeof msg, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    PQclear(res);
    /* the server's own errors carry a SQLSTATE; libpq's (connection lost) do not */
    if (PQstatus(c) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
        (state && (strcmp(state, "57P01") == 0 || strcmp(state, "57P03") == 0))) {
        mark_down(s, pc, msg);
        return ag_err_set(err, AG_EUNAVAILABLE, "postgresql unavailable (%s): %s", what, msg);
    }
    if (state && strcmp(state, "23505") == 0)
        return ag_err_set(err, AG_EIDEMPOTENCY, "%s: an event id is already in the store (%s)",
                          what, msg);
    if (state && strcmp(state, "57014") == 0)
        return ag_err_set(err, AG_ETIMEDOUT, "%s: statement timeout: %s", what, msg);
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        return ag_err_set(err, AG_EAGAIN, "%s: %s", what, msg);
    return ag_err_set(err, AG_EFAILED, "%s: %s", what, msg);
}

/* ---- the pool ---- */

int ag__pg_borrow(struct pg_store *s, struct pg_conn **out, struct ag_err *err)
{
    return ag__pg_borrow_unless(s, out, NULL, err);
}

int ag__pg_borrow_unless(struct pg_store *s, struct pg_conn **out, const bool *stop,
                         struct ag_err *err)
{
    pthread_mutex_lock(&s->lock);
    struct pg_conn *pc = NULL;
    while (!s->closing) {
        for (size_t i = 0; i < s->pool_size && !pc; i++)
            if (!s->pool[i].busy) pc = &s->pool[i];
        if (pc) break;
        if (stop && *stop) {
            pthread_mutex_unlock(&s->lock);
            *out = NULL;
            return 0;
        }
        s->borrowers++;
        pthread_cond_wait(&s->conn_free, &s->lock);
        s->borrowers--;
    }
    if (!pc) {
        pthread_mutex_unlock(&s->lock);
        return ag_err_set(err, AG_ECLOSED, "store closed");
    }
    pc->busy = true;
    bool need = !pc->c || PQstatus(pc->c) != CONNECTION_OK;
    bool due = mono(s) >= pc->retry_at_ns || s->health.writable; /* the listener saw it back */
    char msg[sizeof s->health.message];
    snprintf(msg, sizeof msg, "%s", s->health.message);
    if (need && due) s->health.retries++;
    pthread_mutex_unlock(&s->lock);
    if (need && !due) {
        ag__pg_return(s, pc);
        return ag_err_set(err, AG_EUNAVAILABLE, "postgresql unavailable: %s", msg);
    }
    if (need) {
        if (pc->c) PQfinish(pc->c);
        pc->c = NULL;
        pc->prepared_for = NULL;
        pc->reads_prepared_for = NULL;
        struct ag_err e2;
        ag_err_clear(&e2);
        int rc = ag__pg_connect(s, &pc->c, &e2);
        if (rc) {
            mark_down(s, pc, e2.msg);
            ag__pg_return(s, pc);
            if (err) *err = e2;
            return rc;
        }
    }
    *out = pc;
    return 0;
}

void ag__pg_return(struct pg_store *s, struct pg_conn *pc)
{
    pthread_mutex_lock(&s->lock);
    pc->busy = false;
    /* broadcast: the waiters are of two kinds (callers that want a connection, callers
     * whose append a leader is running); a signal could wake only the latter */
    pthread_cond_broadcast(&s->conn_free);
    pthread_mutex_unlock(&s->lock);
}

/* ---- head, wait_head and the listener ---- */

void ag__pg_head_advance(struct pg_store *s, uint64_t head)
{
    pthread_mutex_lock(&s->lock);
    if (head > s->head) {
        s->head = head;
        pthread_cond_broadcast(&s->head_moved);
    }
    pthread_mutex_unlock(&s->lock);
}

void ag__pg_wait_head_for(struct pg_store *s, uint64_t after, uint64_t us)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += (long)(us * 1000);
    while (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->lock);
    while (s->head <= after && !s->closing)
        if (pthread_cond_timedwait(&s->head_moved, &s->lock, &dl) != 0) break;
    pthread_mutex_unlock(&s->lock);
}

int ag__pg_wait_head(struct ag_store *st, uint64_t after, int timeout_ms)
{
    struct pg_store *s = ps(st);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (s->head <= after && !s->closing && !rc)
        if (timeout_ms < 0)
            pthread_cond_wait(&s->head_moved, &s->lock);
        else if (pthread_cond_timedwait(&s->head_moved, &s->lock, &dl) != 0)
            rc = AG_ETIMEDOUT;
    if (s->head > after)
        rc = 0;
    else if (s->closing)
        rc = AG_ECLOSED;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Order what can be ordered and read the head (the listener's periodic duty: it
 * covers events whose appender died between commit and ordering). */
static void listener_settle(struct pg_store *s, PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT sequence(), (SELECT next FROM head)");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        uint64_t h = 0;
        ag_parse_u64(PQgetvalue(r, 0, 1), &h);
        ag__pg_head_advance(s, h);
    }
    PQclear(r);
}

void *ag__pg_listener(void *arg)
{
    struct pg_store *s = arg;
    PGconn *c = NULL;
    uint64_t backoff_ms = 100, last_tick = 0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool stop = s->closing;
        pthread_mutex_unlock(&s->lock);
        if (stop) break;
        if (!c || PQstatus(c) != CONNECTION_OK) {
            if (c) PQfinish(c);
            c = NULL;
            struct ag_err e;
            char sql[128];
            snprintf(sql, sizeof sql, "LISTEN %s", s->channel);
            if (ag__pg_connect(s, &c, &e) == 0) {
                PQclear(PQexec(c, sql));
                backoff_ms = 100;
                listener_settle(s, c);
                if (PQstatus(c) == CONNECTION_OK) ag__pg_mark_ok(s); /* the server is back */
            } else {
                mark_down(s, NULL, e.msg); /* seen even with no traffic */
                poll(NULL, 0, (int)backoff_ms);
                if (backoff_ms < 5000) backoff_ms *= 2;
                continue;
            }
        }
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        int n = poll(&pfd, 1, LISTEN_TICK_MS / 5);
        bool woke = false;
        if (n > 0) {
            PQconsumeInput(c);
            PGnotify *nt;
            while ((nt = PQnotifies(c))) {
                uint64_t h;
                if (nt->extra[0] && ag_parse_u64(nt->extra, &h) == 0)
                    ag__pg_head_advance(s, h);
                else
                    woke = true; /* an append committed: it orders itself */
                PQfreemem(nt);
            }
        }
        uint64_t now = mono(s);
        (void)woke;
        if (now - last_tick >= (uint64_t)LISTEN_TICK_MS * 1000000u) {
            last_tick = now;
            listener_settle(s, c);
        }
    }
    if (c) PQfinish(c);
    return NULL;
}

/* ---- the sequencer thread: every waiting append of the process in one round trip ---- */

#define SEQ_BATCH         1024
#define SEQ_PAUSE_MIN_US  250
#define SEQ_PAUSE_MAX_US  2000
#define SEQ_PAUSE_BUSY_US 10000

static struct timespec deadline_in(uint64_t ns)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)(ns / 1000000000ull);
    dl.tv_nsec += (long)(ns % 1000000000ull);
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    return dl;
}

static void unlink_wait(struct pg_store *s, struct pg_wait *w)
{
    for (struct pg_wait **pp = &s->waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

int ag__pg_wait_positions(struct pg_store *s, struct pg_wait *w, size_t n, struct ag_err *err)
{
    struct timespec dl = deadline_in(s->append_timeout_ns);
    pthread_mutex_lock(&s->lock);
    size_t queued = 0;
    for (size_t i = 0; i < n; i++) {
        const struct pg_recent *k = &s->recent[(uint64_t)w[i].gp % PG_RECENT];
        w[i].done = k->gp == w[i].gp && w[i].gp > 0; /* numbered before we came */
        w[i].pos = w[i].done ? k->pos : 0, w[i].rc = 0;
        if (w[i].done) continue;
        w[i].next = s->waits;
        s->waits = &w[i];
        queued++;
    }
    if (queued) pthread_cond_signal(&s->seq_cond);
    size_t left = queued;
    while (left && !s->closing) {
        left = 0;
        for (size_t i = 0; i < n; i++) left += !w[i].done;
        if (left && pthread_cond_timedwait(&s->resolved, &s->lock, &dl) != 0) break;
    }
    int rc = 0;
    left = 0;
    for (size_t i = 0; i < n; i++) {
        if (!w[i].done) unlink_wait(s, &w[i]), left++;
        if (w[i].done && w[i].rc && !rc) rc = w[i].rc;
    }
    bool closing = s->closing;
    pthread_mutex_unlock(&s->lock);
    if (rc)
        return ag_err_set(err, rc,
                          "the append committed but its position is not known (postgresql "
                          "unavailable): retry it with the same event ids");
    if (!left) return 0;
    if (closing) return ag_err_set(err, AG_ECLOSED, "store closed");
    return ag_err_set(err, AG_ETIMEDOUT,
                      "the append committed but is not ordered yet: a transaction older than it "
                      "is still open on the cluster (append_timeout); retry it with the same "
                      "event ids");
}

/* Under s->lock: take the rows of `resolve` (first: -1 and the head); each row is
 * also remembered in s->recent for a wait queued after it came. */
static size_t take_resolved(struct pg_store *s, const PGresult *r)
{
    size_t got = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t gp = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        int64_t pos = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (gp < 0) {
            if ((uint64_t)pos > s->head) {
                s->head = (uint64_t)pos;
                pthread_cond_broadcast(&s->head_moved);
            }
            continue;
        }
        s->recent[(uint64_t)gp % PG_RECENT] = (struct pg_recent){gp, pos};
        for (struct pg_wait **pp = &s->waits; *pp; pp = &(*pp)->next)
            if ((*pp)->gp == gp) {
                struct pg_wait *w = *pp;
                w->pos = pos, w->rc = 0, w->done = true;
                *pp = w->next;
                got++;
                break;
            }
    }
    return got;
}

void ag__pg_take_resolved(struct pg_store *s, const PGresult *r, bool covered)
{
    uint64_t now = covered ? ag__pg_now_ns() : 0;
    pthread_mutex_lock(&s->lock);
    if (take_resolved(s, r)) pthread_cond_broadcast(&s->resolved);
    if (now > s->resolved_ns) s->resolved_ns = now;
    pthread_mutex_unlock(&s->lock);
}

uint64_t ag__pg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under s->lock: the connection is gone; the waits sent cannot learn their positions. */
static void fail_waits(struct pg_store *s, const int64_t *gps, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (struct pg_wait **pp = &s->waits; *pp; pp = &(*pp)->next)
            if ((*pp)->gp == gps[i]) {
                struct pg_wait *w = *pp;
                w->rc = AG_EUNAVAILABLE, w->done = true;
                *pp = w->next;
                break;
            }
}

/* One round trip for the waits in gps[0..n). 1: some resolved, 0: none, -1: connection lost. */
static int resolve_once(struct pg_store *s, PGconn **c, const int64_t *gps, size_t n,
                        struct ag_buf *b)
{
    b->len = 0;
    int rc = ag_buf_putc(b, '{');
    for (size_t i = 0; i < n && !rc; i++) {
        char tmp[24];
        int k = snprintf(tmp, sizeof tmp, "%s%lld", i ? "," : "", (long long)gps[i]);
        rc = ag_buf_append(b, tmp, (size_t)k);
    }
    rc = rc ? rc : ag_buf_puts(b, "}");
    if (rc) return 0;
    if (!*c || PQstatus(*c) != CONNECTION_OK) {
        if (*c) PQfinish(*c);
        *c = NULL;
        struct ag_err e;
        if (ag__pg_connect(s, c, &e)) {
            mark_down(s, NULL, e.msg);
            return -1;
        }
    }
    const char *vals[1] = {b->data};
    PGresult *r =
        PQexecParams(*c, "SELECT gp, pos FROM resolve($1::bigint[])", 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        bool lost = PQstatus(*c) != CONNECTION_OK;
        if (lost) mark_down(s, NULL, PQerrorMessage(*c));
        PQclear(r);
        return lost ? -1 : 0;
    }
    pthread_mutex_lock(&s->lock);
    s->resolves++;
    size_t got = take_resolved(s, r);
    pthread_cond_broadcast(&s->resolved);
    pthread_mutex_unlock(&s->lock);
    PQclear(r);
    return got ? 1 : 0;
}

/* Polls only while waits remain and no resolve has ended for a pause (250 µs
 * doubling to 2 ms while they remain; 10 ms while batches are in flight). Under
 * load every batch's resolve, right behind its commit, numbers what the waits'
 * holders left and looks up every wait queued when the batch was formed
 * (resolve5), so this thread stays out of the way: a wait queued after every
 * batch in flight was formed is looked up by the next batch, or here once the
 * batches stop (a holder that is not an append: another application's
 * transaction, an appender that died). */
void *ag__pg_sequencer(void *arg)
{
    struct pg_store *s = arg;
    PGconn *c = NULL;
    int64_t *gps = ag_malloc(SEQ_BATCH * sizeof *gps);
    struct ag_buf b;
    ag_buf_init(&b);
    uint64_t pause_us = SEQ_PAUSE_MIN_US;
    pthread_mutex_lock(&s->lock);
    while (gps && !s->closing) {
        if (!s->waits) {
            pause_us = SEQ_PAUSE_MIN_US;
            pthread_cond_wait(&s->seq_cond, &s->lock);
            continue;
        }
        /* batches in flight will resolve (and look the waits up) behind their
         * commits: poll only if none has for SEQ_PAUSE_BUSY_US (a stuck batch) */
        uint64_t p_us = s->leaders ? SEQ_PAUSE_BUSY_US : pause_us;
        uint64_t now = ag__pg_now_ns(), due = s->resolved_ns + p_us * 1000u;
        if (now < due) { /* a resolve ended less than a pause ago */
            struct timespec dl = deadline_in(due - now);
            pthread_cond_timedwait(&s->seq_cond, &s->lock, &dl);
            continue;
        }
        size_t n = 0;
        const struct pg_wait *w = s->waits;
        for (; w && n < SEQ_BATCH; w = w->next) gps[n++] = w->gp;
        s->resolved_ns = w ? now - pause_us * 1000u : now; /* more than a batch: again soon */
        pthread_mutex_unlock(&s->lock);
        int got = n ? resolve_once(s, &c, gps, n, &b) : 0;
        pthread_mutex_lock(&s->lock);
        if (got < 0) {
            fail_waits(s, gps, n);
            pthread_cond_broadcast(&s->resolved);
        }
        pause_us = pause_us * 2 > SEQ_PAUSE_MAX_US ? SEQ_PAUSE_MAX_US : pause_us * 2;
    }
    pthread_mutex_unlock(&s->lock);
    ag_buf_free(&b);
    ag_free(gps);
    if (c) PQfinish(c);
    return NULL;
}

/* ---- async appends: worker threads ---- */

static int enqueue(struct pg_store *s, struct ag_append_req *req, struct ag_append_multi_req *m)
{
    struct pg_job *j = ag_calloc(1, sizeof *j);
    if (!j) return AG_ENOMEM;
    j->req = req, j->mreq = m;
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        ag_free(j);
        return AG_ECLOSED;
    }
    if (s->jobs_tail)
        s->jobs_tail->next = j;
    else
        s->jobs = j;
    s->jobs_tail = j;
    pthread_cond_signal(&s->jobs_cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int ag__pg_append_async(struct ag_store *st, struct ag_append_req *req)
{
    return enqueue(ps(st), req, NULL);
}

int ag__pg_append_multi_async(struct ag_store *st, struct ag_append_multi_req *m)
{
    return enqueue(ps(st), &m->req, m);
}

static void run_job(struct pg_store *s, struct pg_job *j)
{
    struct ag_append_req *r = j->req;
    if (j->mreq) {
        struct ag_append_multi_req *m = j->mreq;
        struct ag_append_result tmp[AG_STORE_MULTI_MAX];
        struct ag_append_result *res = m->results ? m->results : tmp;
        r->status = ag__pg_append_multi(&s->base, m->parts, m->nparts, res, &r->err);
        if (!r->status) r->result = res[0];
    } else {
        struct ag_append_part p = {r->stream, r->stream_len, r->expected_version, r->events,
                                   r->count};
        r->status = ag__pg_append_multi(&s->base, &p, 1, &r->result, &r->err);
    }
    ag__store_loop_complete(r);
}

void *ag__pg_worker(void *arg)
{
    struct pg_store *s = arg;
    ag_thread_name("ag-pg-worker");
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->jobs && !s->closing) pthread_cond_wait(&s->jobs_cond, &s->lock);
        struct pg_job *j = s->jobs;
        if (!j) break; /* closing and drained */
        s->jobs = j->next;
        if (!s->jobs) s->jobs_tail = NULL;
        s->running++;
        pthread_mutex_unlock(&s->lock);
        run_job(s, j);
        ag_free(j);
        pthread_mutex_lock(&s->lock);
        if (--s->running == 0 && !s->jobs) pthread_cond_broadcast(&s->jobs_cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- open and close ---- */

static void destroy(struct pg_store *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->nworkers && (s->jobs || s->running)) /* pending appends finish first */
        pthread_cond_wait(&s->jobs_cond, &s->lock);
    s->closing = true;
    for (struct pg_req *q = s->pending; q; q = q->next) pthread_cond_signal(&q->cv);
    pthread_cond_broadcast(&s->jobs_cond);
    pthread_cond_broadcast(&s->head_moved);
    pthread_cond_broadcast(&s->seq_cond);
    pthread_cond_broadcast(&s->resolved);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < s->nworkers; i++) pthread_join(s->workers[i], NULL);
    if (s->listener_started) pthread_join(s->listener, NULL);
    if (s->sequencer_started) pthread_join(s->sequencer, NULL);
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->conn_free);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < PG_POOL_MAX; i++)
        if (s->pool[i].c) PQfinish(s->pool[i].c);
    ag__pg_ra_free(s);
    pthread_mutex_destroy(&s->ra_lock);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->conn_free);
    pthread_cond_destroy(&s->head_moved);
    pthread_cond_destroy(&s->jobs_cond);
    pthread_cond_destroy(&s->seq_cond);
    pthread_cond_destroy(&s->resolved);
    ag_free(s->conninfo);
    ag_free(s);
}

void ag__pg_close(struct ag_store *st)
{
    destroy(ps(st));
}

static int init(struct pg_store *s, const char *uri, const struct ag_store_options *opts,
                struct ag_err *err)
{
    if (opts) s->base.opts = *opts;
    struct ag_store_options *o = &s->base.opts;
    if (!o->max_event_bytes) o->max_event_bytes = AG_STORE_EVENT_MAX_DEFAULT;
    if (!o->retry_min_ns) o->retry_min_ns = 100000000ull;
    if (!o->retry_max_ns) o->retry_max_ns = 5000000000ull;
    s->clock = o->clock ? o->clock : ag_clock_system();
    s->rng = o->rng ? o->rng : ag_rng_system();
    s->health.writable = true;
    s->backoff_ns = o->retry_min_ns;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->ra_lock, NULL);
    pthread_cond_init(&s->conn_free, NULL);
    pthread_cond_init(&s->head_moved, NULL);
    pthread_cond_init(&s->jobs_cond, NULL);
    pthread_cond_init(&s->seq_cond, NULL);
    pthread_cond_init(&s->resolved, NULL);
    return ag__pg_parse_uri(s, uri, err);
}

int ag_store_pg_open(const char *uri, const struct ag_store_options *opts, struct ag_store **out,
                     struct ag_err *err)
{
    struct pg_store *s = ag_calloc(1, sizeof *s);
    if (!s) return ag_err_set(err, AG_ENOMEM, "out of memory");
    s->base.ops = &ag__pg_ops;
    int rc = init(s, uri, opts, err);
    if (!rc) rc = ag__pg_connect(s, &s->pool[0].c, err);
    if (!rc) rc = ag__pg_migrate(s->pool[0].c, s->schema, false, NULL, NULL, err);
    if (!rc) {
        PGresult *r = PQexec(s->pool[0].c, "SELECT next FROM head");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) ag_parse_u64(PQgetvalue(r, 0, 0), &s->head);
        PQclear(r);
    }
    for (size_t i = 0; !rc && i < s->pool_size; i++)
        if (pthread_create(&s->workers[i], NULL, ag__pg_worker, s) == 0) s->nworkers++;
    if (!rc && pthread_create(&s->listener, NULL, ag__pg_listener, s) == 0)
        s->listener_started = true;
    if (!rc && pthread_create(&s->sequencer, NULL, ag__pg_sequencer, s) == 0)
        s->sequencer_started = true;
    if (!rc && !s->sequencer_started)
        rc = ag_err_set(err, AG_ENOMEM, "postgresql store: cannot start the sequencer thread");
    if (rc) {
        destroy(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}

int ag_store_pg_migrate(const char *uri, int *from, int *to, struct ag_err *err)
{
    struct pg_store *s = ag_calloc(1, sizeof *s);
    if (!s) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = init(s, uri, NULL, err);
    if (!rc) rc = ag__pg_connect(s, &s->pool[0].c, err);
    if (!rc) rc = ag__pg_migrate(s->pool[0].c, s->schema, true, from, to, err);
    destroy(s);
    return rc;
}
