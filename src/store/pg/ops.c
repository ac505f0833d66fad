/*
 * The PostgreSQL store's operations: appends (group commit: at most append_lanes
 * callers lead at once, each running the queued appends on disjoint streams in one
 * transaction, one pipelined round trip to the server's `append3` and
 * `resolve5`; an append not numbered by then is numbered by the commit of the
 * older transaction that held it back), reads
 * of streams and $all (numbered events only: joined with `positions`), snapshots and
 * stats. Each call borrows one pooled connection for its duration.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg/internal.h"

static struct pg_store *ps(struct ag_store *st)
{
    return (struct pg_store *)st;
}

/* ---- array literals for the server functions ---- */

static int arr_elem(struct ag_buf *b, const char *s, size_t n)
{
    int rc = b->len && b->data[b->len - 1] != '{' ? ag_buf_putc(b, ',') : 0;
    rc = rc ? rc : ag_buf_putc(b, '"');
    for (size_t i = 0; i < n && !rc; i++) {
        if (s[i] == '"' || s[i] == '\\') rc = ag_buf_putc(b, '\\');
        rc = rc ? rc : ag_buf_putc(b, s[i]);
    }
    return rc ? rc : ag_buf_putc(b, '"');
}

static int arr_i64(struct ag_buf *b, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    return arr_elem(b, tmp, (size_t)n);
}

/* append3's parameters (A_N of them), then the ids resolve5 looks up (and, in
 * vals[A_ALL], the global positions the process's other appends wait for) */
enum { A_NPARTS, A_STREAM, A_EXP, A_COUNT, A_ID, A_TYPE, A_DATA, A_META, A_N, A_RIDS = A_N, A_ALL };

/* The waits a batch's resolve looks up too: up to WAITS_MAX global positions of
 * s->waits, taken when the batch was formed; `all` when that was every wait. */
#define WAITS_MAX 512
struct batch_waits {
    int64_t gp[WAITS_MAX];
    size_t n;
    bool all;
};

static int build_part(struct pg_store *s, const struct ag_append_part *p, struct ag_buf *a)
{
    int rc = arr_elem(&a[A_STREAM], p->stream, p->stream_len);
    rc = rc ? rc : arr_i64(&a[A_EXP], p->expected_version);
    rc = rc ? rc : arr_i64(&a[A_COUNT], (long long)p->count);
    for (size_t j = 0; j < p->count && !rc; j++) {
        const struct ag_event_data *e = &p->events[j];
        struct ag_uuid id = e->id;
        if (ag_uuid_is_nil(&id)) ag_uuid_v7(&id, s->clock, s->rng);
        char ids[AG_UUID_STRLEN + 1];
        ag_uuid_format(&id, ids);
        rc = arr_elem(&a[A_ID], ids, strlen(ids));
        if (!rc && (j == 0 || j + 1 == p->count)) /* a part's first and last event */
            rc = arr_elem(&a[A_RIDS], ids, strlen(ids));
        rc = rc ? rc : arr_elem(&a[A_TYPE], e->type, e->type_len);
        rc = rc ? rc
                : (e->data_len ? arr_elem(&a[A_DATA], e->data, e->data_len)
                               : arr_elem(&a[A_DATA], "{}", 2));
        rc = rc ? rc
                : (e->metadata_len ? arr_elem(&a[A_META], e->metadata, e->metadata_len)
                                   : arr_elem(&a[A_META], "{}", 2));
    }
    return rc;
}

/* The array parameters of append_batch for reqs[0..n). */
static int build_arrays(struct pg_store *s, struct pg_req *const *reqs, size_t n, struct ag_buf *a)
{
    int rc = 0;
    for (int k = 0; k < A_ALL && !rc; k++) rc = ag_buf_putc(&a[k], '{');
    for (size_t r = 0; r < n && !rc; r++) {
        rc = arr_i64(&a[A_NPARTS], (long long)reqs[r]->nparts);
        for (size_t i = 0; i < reqs[r]->nparts && !rc; i++)
            rc = build_part(s, &reqs[r]->parts[i], a);
    }
    for (int k = 0; k < A_ALL && !rc; k++) {
        rc = ag_buf_putc(&a[k], '}');
        rc = rc ? rc : ag_buf_putc(&a[k], 0);
    }
    return rc;
}

static void expected_str(int64_t x, char out[32])
{
    if (x == AG_STORE_ANY)
        snprintf(out, 32, "any");
    else if (x == AG_STORE_NO_STREAM)
        snprintf(out, 32, "no-stream");
    else if (x == AG_STORE_STREAM_EXISTS)
        snprintf(out, 32, "exists");
    else
        snprintf(out, 32, "%lld", (long long)x);
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* One append's verdict from its rows [r0, r1) of append_batch (columns: app,
 * status, actual, first_version, last_version, note, first_gp, last_gp): 0 with the
 * versions in q->out and the global positions in q->gp, or a conflict/idempotency
 * error. */
static int verdict(const PGresult *r, int r0, int r1, struct pg_req *q, struct ag_err *err)
{
    const struct ag_append_part *parts = q->parts;
    size_t nparts = q->nparts;
    for (int i = r0; i < r1; i++) {
        int status = (int)strtol(PQgetvalue(r, i, 1), NULL, 10);
        int64_t actual = col_i64(r, i, 2);
        const char *note = PQgetvalue(r, i, 5);
        if (status == 1) {
            const struct ag_append_part *p = parts;
            for (size_t k = 0; k < nparts; k++)
                if (strlen(note) == parts[k].stream_len &&
                    memcmp(note, parts[k].stream, parts[k].stream_len) == 0)
                    p = &parts[k];
            char want[32];
            expected_str(p->expected_version, want);
            ag_err_set(err, AG_ECONFLICT,
                       "stream '%.*s': expected version %s, but the stream is at %lld%s",
                       (int)p->stream_len, p->stream, want, (long long)actual,
                       actual < 0 ? " (no stream)" : "");
            if (err) err->aux = actual;
            return AG_ECONFLICT;
        }
        if (status == 2) return ag_err_set(err, AG_EIDEMPOTENCY, "%s", note);
    }
    if ((size_t)(r1 - r0) != nparts)
        return ag_err_set(err, AG_EFAILED, "postgresql: append returned %d rows for %zu parts",
                          r1 - r0, nparts);
    for (size_t i = 0; i < nparts; i++) {
        int row = r0 + (int)i;
        q->out[i].first_version = col_i64(r, row, 3);
        q->out[i].last_version = col_i64(r, row, 4);
        q->gp[i][0] = col_i64(r, row, 6);
        q->gp[i][1] = col_i64(r, row, 7);
    }
    return 0;
}

/* The append and resolve statements, prepared once per session (no parse and plan per append).
 * False when the connection failed (the next statement reports it). */
static bool prepare(struct pg_conn *pc)
{
    if (pc->prepared_for == pc->c) return true;
    PGresult *a = PQprepare(pc->c, "ag_append",
                            "SELECT app, status, actual, first_version, last_version, note,"
                            " first_gp, last_gp FROM append3($1::int[], $2::text[],"
                            " $3::bigint[], $4::int[], $5::uuid[], $6::text[], $7::json[],"
                            " $8::json[])",
                            A_N, NULL);
    bool ok = PQresultStatus(a) == PGRES_COMMAND_OK;
    PQclear(a);
    if (ok) {
        a = PQprepare(pc->c, "ag_resolve", "SELECT gp, pos FROM resolve5($1::uuid[], $2::bigint[])",
                      2, NULL);
        ok = PQresultStatus(a) == PGRES_COMMAND_OK;
        PQclear(a);
    }
    if (ok) pc->prepared_for = pc->c;
    return ok;
}

/* Wait until every part has its positions: the process's sequencer numbers what
 * can be numbered (once every older transaction has finished) and looks up the
 * first and last event of each part, for every waiting append at once. Holds no
 * pooled connection while it waits. */
static int positions(struct pg_store *s, const struct pg_req *q, struct ag_err *err)
{
    size_t nparts = q->nparts;
    const int64_t(*gp)[2] = q->gp;
    struct ag_append_result *out = q->out;
    if (q->positioned) { /* the batch's leader found them right after the commit */
        for (size_t i = 0; i < nparts; i++) {
            out[i].first_position = (uint64_t)q->pos[i][0];
            out[i].last_position = (uint64_t)q->pos[i][1];
        }
        return 0;
    }
    struct pg_wait w[2 * AG_STORE_MULTI_MAX];
    size_t n = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (gp[i][0] < 0 || gp[i][1] < 0)
            return ag_err_set(err, AG_EFAILED, "postgresql: append returned no global position");
        w[n++] = (struct pg_wait){.gp = gp[i][0]};
        if (gp[i][1] != gp[i][0]) w[n++] = (struct pg_wait){.gp = gp[i][1]};
    }
    int rc = ag__pg_wait_positions(s, w, n, err);
    if (rc) return rc;
    n = 0;
    for (size_t i = 0; i < nparts; i++) {
        out[i].first_position = (uint64_t)w[n].pos;
        out[i].last_position = (uint64_t)(gp[i][1] != gp[i][0] ? w[n + 1].pos : w[n].pos);
        n += gp[i][1] != gp[i][0] ? 2 : 1;
    }
    return 0;
}

/* Under no lock: the position `pos` of global position `gp` into every part it starts
 * or ends. */
static void batch_take(struct pg_req **reqs, size_t n, int64_t gp, int64_t pos)
{
    for (size_t q = 0; q < n; q++) {
        if (reqs[q]->rc) continue;
        for (size_t i = 0; i < reqs[q]->nparts; i++) {
            if (reqs[q]->gp[i][0] == gp) reqs[q]->pos[i][0] = pos;
            if (reqs[q]->gp[i][1] == gp) reqs[q]->pos[i][1] = pos;
        }
    }
}

/* The answer of resolve5, run right behind the batch's commit on the same
 * connection: the numbering ran once (after any other session's), and these are
 * the positions of every event it numbered plus those of the batch's events
 * numbered before. When nothing older was still running (always so with one
 * writer) every append has its positions; the others wait (positions()) until the
 * commit of the older transaction numbers them: an append of this process hands
 * them over here, anything else through the sequencer thread. */
static void resolved_inline(struct pg_store *s, const PGresult *r, struct pg_req **reqs, size_t n,
                            const struct batch_waits *bw)
{
    for (size_t q = 0; q < n; q++)
        for (size_t i = 0; i < reqs[q]->nparts; i++) reqs[q]->pos[i][0] = reqs[q]->pos[i][1] = -1;
    int rows = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : 0;
    uint64_t head = 0;
    for (int row = 0; row < rows; row++) {
        int64_t gp = col_i64(r, row, 0), pos = col_i64(r, row, 1);
        if (gp < 0)
            head = (uint64_t)pos;
        else
            batch_take(reqs, n, gp, pos);
    }
    if (head) ag__pg_head_advance(s, head);
    /* other appends' events it numbered, and the waits it looked up */
    if (rows) ag__pg_take_resolved(s, r, bw->all);
    for (size_t q = 0; q < n; q++) {
        bool all = !reqs[q]->rc;
        for (size_t i = 0; all && i < reqs[q]->nparts; i++)
            all = reqs[q]->pos[i][0] >= 0 && reqs[q]->pos[i][1] >= 0;
        reqs[q]->positioned = all;
    }
}

/* One pipeline, one round trip: append3 (autocommit: its own transaction, then a
 * sync) and resolve5 behind it (a second transaction, after the first
 * committed). *app and *res get the two results (NULL when missing); false when the
 * pipeline could not be used (the connection is then left for the caller to fail). */
static bool pipeline(struct pg_conn *pc, const char *const *vals, PGresult **app, PGresult **res)
{
    PGconn *c = pc->c;
    *app = *res = NULL;
    if (!PQenterPipelineMode(c)) return false;
    bool sent =
        PQsendQueryPrepared(c, "ag_append", A_N, vals, NULL, NULL, 0) && PQpipelineSync(c) &&
        PQsendQueryPrepared(c, "ag_resolve", 2, &vals[A_RIDS], NULL, NULL, 0) && PQpipelineSync(c);
    int syncs = 0, nulls = 0;
    while (sent && syncs < 2 && nulls < 4) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (PQstatus(c) != CONNECTION_OK) break;
            nulls++; /* the end of one query's results */
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            syncs++;
            PQclear(r);
        } else if (syncs == 0 && !*app) {
            *app = r;
        } else if (syncs == 1 && !*res) {
            *res = r;
        } else {
            PQclear(r);
        }
    }
    if (syncs < 2 || !PQexitPipelineMode(c)) {
        /* a broken pipeline: this session is not reused (the next borrow reconnects) */
        if (PQstatus(c) == CONNECTION_OK)
            PQfinish(c), pc->c = NULL, pc->prepared_for = NULL, pc->reads_prepared_for = NULL;
        return *app != NULL;
    }
    return true;
}

/* Run reqs[0..n) in one transaction on pc and mark them done. A batch that fails
 * as a whole for a reason of one append's (an event id taken meanwhile, a
 * deadlock) is run again one append at a time, so no append fails for another's. */
static void run_batch(struct pg_store *s, struct pg_conn *pc, struct pg_req **reqs, size_t n,
                      const struct batch_waits *bw)
{
    struct ag_buf a[A_ALL + 1];
    for (int k = 0; k <= A_ALL; k++) ag_buf_init(&a[k]);
    int rc = build_arrays(s, reqs, n, a);
    rc = rc ? rc : ag_buf_putc(&a[A_ALL], '{');
    for (size_t i = 0; i < bw->n && !rc; i++) {
        char tmp[24];
        int k = snprintf(tmp, sizeof tmp, "%s%lld", i ? "," : "", (long long)bw->gp[i]);
        rc = ag_buf_append(&a[A_ALL], tmp, (size_t)k);
    }
    rc = rc ? rc : ag_buf_puts(&a[A_ALL], "}");
    struct ag_err e;
    ag_err_clear(&e);
    if (rc) rc = ag_err_set(&e, AG_ENOMEM, "out of memory");
    const char *vals[A_ALL + 1];
    for (int k = 0; k <= A_ALL; k++) vals[k] = a[k].data;
    PGresult *r = NULL, *res = NULL;
    if (!rc) {
        if (prepare(pc)) pipeline(pc, vals, &r, &res);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(res), res = NULL;
            rc = pc->c ? ag__pg_fail(s, pc, r, "append", &e)
                       : ag_err_set(&e, AG_EUNAVAILABLE, "postgresql: append: pipeline broken");
            r = NULL;
        }
    }
    for (int k = 0; k <= A_ALL; k++) ag_buf_free(&a[k]);
    if (rc && n > 1 && rc != AG_EUNAVAILABLE && rc != AG_ENOMEM) {
        for (size_t i = 0; i < n; i++) run_batch(s, pc, &reqs[i], 1, bw);
        return;
    }
    if (r) {
        ag__pg_mark_ok(s);
        int row = 0, rows = PQntuples(r);
        for (size_t i = 0; i < n; i++) {
            int r0 = row;
            while (row < rows && col_i64(r, row, 0) == (int64_t)i + 1) row++;
            reqs[i]->rc = verdict(r, r0, row, reqs[i], &reqs[i]->err);
        }
        PQclear(r);
        resolved_inline(s, res, reqs, n, bw);
        PQclear(res);
    } else {
        for (size_t i = 0; i < n; i++) reqs[i]->rc = rc, reqs[i]->err = e;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++) { /* wakes exactly the callers whose append this was */
        reqs[i]->done = true;
        pthread_cond_signal(&reqs[i]->cv);
    }
    s->commits += r ? 1 : 0;
    if (s->borrowers)
        pthread_cond_broadcast(&s->conn_free); /* a leader may wait for a
                                                  connection unless done */
    pthread_mutex_unlock(&s->lock);
}

#define BATCH_APPENDS 64
#define BATCH_EVENTS  4096

/* Whether q writes a stream that an append of batch[0..n) writes too (append3 wants
 * the appends of one batch on disjoint streams: each is checked against the stream
 * as it was before the batch). */
static bool shares_stream(const struct pg_req *q, struct pg_req *const *batch, size_t n)
{
    for (size_t b = 0; b < n; b++)
        for (size_t i = 0; i < batch[b]->nparts; i++)
            for (size_t j = 0; j < q->nparts; j++) {
                const struct ag_append_part *x = &batch[b]->parts[i], *y = &q->parts[j];
                if (x->stream_len == y->stream_len &&
                    memcmp(x->stream, y->stream, x->stream_len) == 0)
                    return true;
            }
    return false;
}

/* Holding pc: run queued appends, oldest first, in batches until `me` is done. */
static void lead(struct pg_store *s, struct pg_conn *pc, struct pg_req *me)
{
    struct pg_req *batch[BATCH_APPENDS];
    struct batch_waits bw;
    for (;;) {
        size_t n = 0, events = 0;
        pthread_mutex_lock(&s->lock);
        if (me->done) {
            pthread_mutex_unlock(&s->lock);
            return;
        }
        struct pg_req *prev = NULL;
        for (struct pg_req *q = s->pending; q && n < BATCH_APPENDS;) {
            struct pg_req *next = q->next;
            if ((n && events + q->nevents > BATCH_EVENTS) || shares_stream(q, batch, n)) {
                prev = q, q = next; /* for a later batch: one batch, disjoint streams */
                continue;
            }
            if (prev)
                prev->next = next;
            else
                s->pending = next;
            if (s->pending_tail == q) s->pending_tail = prev;
            q->next = NULL;
            events += q->nevents;
            batch[n++] = q;
            q = next;
        }
        if (!n) {                           /* `me` is in another leader's batch */
            pthread_mutex_unlock(&s->lock); /* give the lane back; the caller waits */
            return;
        }
        const struct pg_wait *w = s->waits;
        for (bw.n = 0; w && bw.n < WAITS_MAX; w = w->next) bw.gp[bw.n++] = w->gp;
        bw.all = !w;
        pthread_mutex_unlock(&s->lock);
        run_batch(s, pc, batch, n, &bw);
    }
}

/* Under s->lock: take `me` out of the queue; false when a leader has it already. */
static bool dequeue(struct pg_store *s, struct pg_req *me)
{
    struct pg_req *prev = NULL;
    for (struct pg_req *q = s->pending; q; prev = q, q = q->next)
        if (q == me) {
            if (prev)
                prev->next = q->next;
            else
                s->pending = q->next;
            if (s->pending_tail == q) s->pending_tail = prev;
            return true;
        }
    return false;
}

/* Under s->lock: a lane is free; the oldest queued caller that is not leading
 * already takes it. */
static void wake_next(struct pg_store *s)
{
    for (struct pg_req *q = s->pending; q; q = q->next)
        if (!q->leader) {
            pthread_cond_signal(&q->cv);
            return;
        }
}

/* Group commit: queue the append; whoever gets a pooled connection first runs
 * every queued append in one transaction. Then wait for the positions. Each caller
 * sleeps on its own condition variable and is woken only when its append is done
 * or a lane is free for it (64 callers woken per batch cost more CPU than the
 * batch saved). */
int ag__pg_append_multi(struct ag_store *st, const struct ag_append_part *parts, size_t nparts,
                        struct ag_append_result *out, struct ag_err *err)
{
    struct pg_store *s = ps(st);
    if (st->opts.read_only) return ag_err_set(err, AG_EINVAL, "store is open read-only");
    struct ag_append_result tmp[AG_STORE_MULTI_MAX];
    struct pg_req me = {.parts = parts, .nparts = nparts, .out = out ? out : tmp};
    for (size_t i = 0; i < nparts; i++) me.nevents += parts[i].count;
    ag_err_clear(&me.err);
    pthread_cond_init(&me.cv, NULL);
    pthread_mutex_lock(&s->lock);
    if (s->pending_tail)
        s->pending_tail->next = &me;
    else
        s->pending = &me;
    s->pending_tail = &me;
    /* at most `append_lanes` leaders: the others' appends queue into their batches */
    while (!me.done && s->leaders >= s->append_lanes && !s->closing)
        pthread_cond_wait(&me.cv, &s->lock);
    me.leader = !me.done;
    s->leaders += me.leader;
    pthread_mutex_unlock(&s->lock);
    struct pg_conn *pc = NULL;
    int rc = me.leader ? ag__pg_borrow_unless(s, &pc, &me.done, err) : 0;
    if (pc) {
        lead(s, pc, &me);
        ag__pg_return(s, pc);
    }
    pthread_mutex_lock(&s->lock);
    if (me.leader) {
        s->leaders--;
        wake_next(s);
    }
    bool queued = !pc && rc && !me.done && dequeue(s, &me);
    while (!queued && !me.done) /* in a leader's batch: its outcome is ours */
        pthread_cond_wait(&me.cv, &s->lock);
    pthread_mutex_unlock(&s->lock);
    pthread_cond_destroy(&me.cv);
    if (queued) return rc;
    if (me.rc) {
        if (err) *err = me.err;
        return me.rc;
    }
    rc = positions(s, &me, err);
    if (!rc) {
        pthread_mutex_lock(&s->lock);
        s->appends++;
        pthread_mutex_unlock(&s->lock);
    }
    return rc;
}

static int append(struct ag_store *st, const char *stream, size_t stream_len, int64_t expected,
                  const struct ag_event_data *ev, size_t n, struct ag_append_result *out,
                  struct ag_err *err)
{
    struct ag_append_part p = {stream, stream_len, expected, ev, n};
    return ag__pg_append_multi(st, &p, 1, out, err);
}

/* ---- reads ---- */

/* The read statements, prepared once per session and answered in binary (no
 * parse and plan per page, no text formatting of the numbers, uuids and times on
 * the server nor parsing of them here). Columns: stream, version, position, id,
 * type, created_at, data, metadata. */
#define EVENT_COLS                                                                                 \
    "SELECT s.stream_name, e.version, p.position, e.event_id, e.type, e.created_at, e.data,"       \
    " e.metadata FROM positions p JOIN events e USING (global_position)"                           \
    " JOIN streams s USING (stream_id) "

enum { RQ_STREAM_ID, RQ_STREAM_FWD, RQ_STREAM_BACK, RQ_ALL_FWD, RQ_ALL_BACK, RQ_N };

static const char *const read_sql[RQ_N] = {
    "SELECT stream_id FROM streams WHERE stream_name = $1",
    EVENT_COLS "WHERE s.stream_name = $1 AND e.version >= $2 ORDER BY e.version LIMIT $3",
    EVENT_COLS "WHERE s.stream_name = $1 AND e.version <= $2 ORDER BY e.version DESC LIMIT $3",
    EVENT_COLS "WHERE p.position >= $1 ORDER BY p.position LIMIT $2",
    EVENT_COLS "WHERE p.position <= $1 ORDER BY p.position DESC LIMIT $2",
};

static bool prepare_reads(struct pg_conn *pc)
{
    if (pc->reads_prepared_for == pc->c) return true;
    bool ok = true;
    for (int i = 0; i < RQ_N && ok; i++) {
        char name[24];
        snprintf(name, sizeof name, "ag_read%d", i);
        PGresult *r = PQprepare(pc->c, name, read_sql[i], 0, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (ok) pc->reads_prepared_for = pc->c;
    return ok;
}

static char *copy_str(char **p, const char *src, size_t n)
{
    char *d = *p;
    memcpy(d, src, n);
    d[n] = 0;
    *p += n + 1;
    return d;
}

/* A binary int8 (network order). */
static int64_t bin_i64(const PGresult *r, int row, int col)
{
    uint32_t hi, lo;
    const char *v = PQgetvalue(r, row, col);
    memcpy(&hi, v, 4);
    memcpy(&lo, v + 4, 4);
    return (int64_t)(((uint64_t)ntohl(hi) << 32) | ntohl(lo));
}

/* PostgreSQL's epoch (2000-01-01) in Unix microseconds. */
#define PG_EPOCH_US 946684800000000LL

/* Rows [row0, row0 + rows) of a read result as a page: one allocation for the
 * events and their bytes. */
static int to_page_rows(const PGresult *r, int row0, int rows, struct ag_event_page *out,
                        struct ag_err *err)
{
    memset(out, 0, sizeof *out);
    size_t bytes = sizeof(struct ag_event) * (size_t)rows;
    for (int i = row0; i < row0 + rows; i++)
        bytes += (size_t)PQgetlength(r, i, 0) + (size_t)PQgetlength(r, i, 4) +
                 (size_t)PQgetlength(r, i, 6) + (size_t)PQgetlength(r, i, 7) + 4;
    out->mem = ag_malloc(bytes ? bytes : 1);
    if (!out->mem) return ag_err_set(err, AG_ENOMEM, "out of memory");
    out->events = out->mem;
    char *p = (char *)(out->events + rows);
    for (int k = 0; k < rows; k++) {
        int i = row0 + k;
        struct ag_event *e = &out->events[k];
        e->stream_len = (size_t)PQgetlength(r, i, 0);
        e->stream = copy_str(&p, PQgetvalue(r, i, 0), e->stream_len);
        e->version = bin_i64(r, i, 1);
        e->position = (uint64_t)bin_i64(r, i, 2);
        memcpy(e->id.b, PQgetvalue(r, i, 3), sizeof e->id.b);
        e->type_len = (size_t)PQgetlength(r, i, 4);
        e->type = copy_str(&p, PQgetvalue(r, i, 4), e->type_len);
        e->time_ns = (uint64_t)(bin_i64(r, i, 5) + PG_EPOCH_US) * 1000u;
        e->data_len = (size_t)PQgetlength(r, i, 6);
        e->data = copy_str(&p, PQgetvalue(r, i, 6), e->data_len);
        e->metadata_len = (size_t)PQgetlength(r, i, 7);
        e->metadata = copy_str(&p, PQgetvalue(r, i, 7), e->metadata_len);
    }
    out->count = (size_t)rows;
    return 0;
}

static int to_page(const PGresult *r, struct ag_event_page *out, struct ag_err *err)
{
    return to_page_rows(r, 0, PQntuples(r), out, err);
}

/* Run a prepared read (read_sql[which]) with text parameters on a pooled
 * connection; *res (binary columns) on success. */
static int read_query(struct pg_store *s, int which, int n, const char *const *vals, PGresult **res,
                      struct ag_err *err)
{
    struct pg_conn *pc;
    int rc = ag__pg_borrow(s, &pc, err);
    if (rc) return rc;
    char name[24];
    snprintf(name, sizeof name, "ag_read%d", which);
    PGresult *r = prepare_reads(pc) ? PQexecPrepared(pc->c, name, n, vals, NULL, NULL, 1) : NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = ag__pg_fail(s, pc, r, "read", err);
    } else {
        *res = r;
        ag__pg_mark_ok(s);
    }
    ag__pg_return(s, pc);
    return rc;
}

/* Run a read query with text parameters on a pooled connection; *res on success. */
static int query(struct pg_store *s, const char *sql, int n, const char *const *vals,
                 PGresult **res, struct ag_err *err)
{
    struct pg_conn *pc;
    int rc = ag__pg_borrow(s, &pc, err);
    if (rc) return rc;
    PGresult *r = PQexecParams(pc->c, sql, n, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        rc = ag__pg_fail(s, pc, r, "read", err);
    } else {
        *res = r;
        ag__pg_mark_ok(s);
    }
    ag__pg_return(s, pc);
    return rc;
}

static int read_stream(struct ag_store *st, const char *stream, size_t stream_len, int64_t from,
                       enum ag_read_dir dir, size_t max, struct ag_event_page *out,
                       struct ag_err *err)
{
    struct pg_store *s = ps(st);
    char name[AG_STORE_STREAM_MAX + 1], f[24], m[24];
    snprintf(name, sizeof name, "%.*s", (int)stream_len, stream);
    bool back = dir == AG_READ_BACKWARD;
    snprintf(f, sizeof f, "%lld", back && from < 0 ? (long long)INT64_MAX : (long long)from);
    snprintf(m, sizeof m, "%zu", max > 100000 ? (size_t)100000 : max);
    const char *vals[3] = {name, f, m};
    PGresult *r = NULL;
    int rc = read_query(s, RQ_STREAM_ID, 1, vals, &r, err);
    if (rc) return rc;
    bool exists = PQntuples(r) == 1;
    PQclear(r);
    if (!exists)
        return ag_err_set(err, AG_ENOTFOUND, "stream '%.*s' not found", (int)stream_len, stream);
    rc = read_query(s, back ? RQ_STREAM_BACK : RQ_STREAM_FWD, 3, vals, &r, err);
    if (rc) return rc;
    rc = to_page(r, out, err);
    PQclear(r);
    if (rc) return rc;
    size_t c = out->count;
    if (back) {
        out->next_version = c ? out->events[c - 1].version - 1 : -1;
        out->end = c < max || out->next_version < 0;
        if (out->next_version < 0) out->next_version = 0;
    } else {
        out->next_version = c ? out->events[c - 1].version + 1 : from;
        out->end = c < max;
    }
    return 0;
}

/* ---- $all read ahead ----
 * A reader that goes through $all forward page after page (a subscription catching
 * up, a projector rebuilding) pays one round trip per page: on a loaded machine
 * the wake-ups of each round trip, not the rows, set its pace. When a forward read
 * starts where a full page of an earlier one ended (a sequential reader), it asks
 * for PG_RA_PAGES pages at once and keeps the result (a slot); the next pages are cut
 * from it without a round trip. Sound because a numbered position never changes:
 * a page served from a slot is exactly what the query would return, and only
 * whole pages are served (the end of $all is always read fresh). */

static struct pg_ra *ra_find(struct pg_store *s, uint64_t from, size_t max)
{
    for (int i = 0; i < PG_RA_SLOTS; i++) {
        struct pg_ra *a = &s->ra[i];
        if (a->r && from >= a->first && from - a->first + max <= (uint64_t)a->rows) return a;
    }
    return NULL;
}

/* Under ra_lock: the slot a sequential reader at `from` left (its next position),
 * or NULL. */
static struct pg_ra *ra_expected(struct pg_store *s, uint64_t from)
{
    for (int i = 0; i < PG_RA_SLOTS; i++)
        if (s->ra[i].used && s->ra[i].expect == from) return &s->ra[i];
    return NULL;
}

/* Under ra_lock: the slot to record a reader in (least recently used). */
static struct pg_ra *ra_victim(struct pg_store *s)
{
    struct pg_ra *v = &s->ra[0];
    for (int i = 1; i < PG_RA_SLOTS; i++)
        if (s->ra[i].used < v->used) v = &s->ra[i];
    return v;
}

static void ra_drop(struct pg_ra *a)
{
    PQclear(a->r);
    a->r = NULL, a->rows = 0;
}

/* A forward page served from a slot: 1 when served, 0 when the caller must read. */
static int ra_take(struct pg_store *s, uint64_t from, size_t max, struct ag_event_page *out,
                   int *rc, struct ag_err *err)
{
    pthread_mutex_lock(&s->ra_lock);
    struct pg_ra *a = ra_find(s, from, max);
    if (a) {
        *rc = to_page_rows(a->r, (int)(from - a->first), (int)max, out, err);
        a->expect = from + max;
        a->used = ++s->ra_tick;
        if (a->expect == a->first + (uint64_t)a->rows) ra_drop(a); /* used up */
    }
    pthread_mutex_unlock(&s->ra_lock);
    return a != NULL;
}

/* How many rows to ask for a forward page of `max` at `from`: PG_RA_PAGES pages when a
 * sequential reader is there (up to PG_RA_ROWS rows), else the page. */
static size_t ra_want(struct pg_store *s, uint64_t from, size_t max)
{
    pthread_mutex_lock(&s->ra_lock);
    bool seq = ra_expected(s, from) != NULL;
    pthread_mutex_unlock(&s->ra_lock);
    size_t pages = PG_RA_ROWS / max < PG_RA_PAGES ? PG_RA_ROWS / max : PG_RA_PAGES;
    return seq ? max * pages : max;
}

/* After a forward read of `max` at `from` that returned `r` (`want` rows asked):
 * remember the reader when its page was full, and keep the rows past the page. r
 * is kept (ownership taken) when it returns true. */
static bool ra_keep(struct pg_store *s, uint64_t from, size_t max, PGresult *r)
{
    int rows = PQntuples(r);
    pthread_mutex_lock(&s->ra_lock);
    struct pg_ra *a = ra_expected(s, from);
    if ((size_t)rows < max) { /* the end of $all: this reader is no longer sequential */
        if (a) ra_drop(a), a->used = 0;
        pthread_mutex_unlock(&s->ra_lock);
        return false;
    }
    if (!a) a = ra_victim(s);
    ra_drop(a);
    a->expect = from + max;
    a->used = ++s->ra_tick;
    bool keep = (size_t)rows > max;
    if (keep) a->r = r, a->first = from, a->rows = rows;
    pthread_mutex_unlock(&s->ra_lock);
    return keep;
}

void ag__pg_ra_free(struct pg_store *s)
{
    for (int i = 0; i < PG_RA_SLOTS; i++) ra_drop(&s->ra[i]);
}

static int read_all_forward(struct pg_store *s, uint64_t from, size_t max,
                            struct ag_event_page *out, struct ag_err *err)
{
    int rc = 0;
    bool ra = max * 2 <= PG_RA_ROWS; /* a bigger page is read as asked */
    if (ra && ra_take(s, from, max, out, &rc, err)) {
        if (!rc) out->next_position = from + max; /* a whole page: not the end */
        return rc;
    }
    size_t want = ra ? ra_want(s, from, max) : max;
    char f[24], m[24];
    snprintf(f, sizeof f, "%lld",
             from > (uint64_t)INT64_MAX ? (long long)INT64_MAX : (long long)from);
    snprintf(m, sizeof m, "%zu", want);
    const char *vals[2] = {f, m};
    PGresult *r = NULL;
    rc = read_query(s, RQ_ALL_FWD, 2, vals, &r, err);
    if (rc) return rc;
    int rows = PQntuples(r);
    rc = to_page_rows(r, 0, rows < (int)max ? rows : (int)max, out, err);
    if (rc || !ra || !ra_keep(s, from, max, r)) PQclear(r);
    if (rc) return rc;
    size_t c = out->count;
    out->next_position = c ? out->events[c - 1].position + 1 : from;
    out->end = c < max;
    return 0;
}

static int read_all(struct ag_store *st, uint64_t from, enum ag_read_dir dir, size_t max,
                    struct ag_event_page *out, struct ag_err *err)
{
    struct pg_store *s = ps(st);
    bool back = dir == AG_READ_BACKWARD;
    if (!back && max && max <= 100000) return read_all_forward(s, from, max, out, err);
    char f[24], m[24];
    snprintf(f, sizeof f, "%lld",
             from > (uint64_t)INT64_MAX ? (long long)INT64_MAX : (long long)from);
    snprintf(m, sizeof m, "%zu", max > 100000 ? (size_t)100000 : max);
    const char *vals[2] = {f, m};
    PGresult *r = NULL;
    int rc = read_query(s, back ? RQ_ALL_BACK : RQ_ALL_FWD, 2, vals, &r, err);
    if (rc) return rc;
    rc = to_page(r, out, err);
    PQclear(r);
    if (rc) return rc;
    size_t c = out->count;
    if (back) {
        uint64_t last = c ? out->events[c - 1].position : 0;
        out->end = c < max || last == 0;
        out->next_position = last ? last - 1 : 0;
    } else {
        out->next_position = c ? out->events[c - 1].position + 1 : from;
        out->end = c < max;
    }
    return 0;
}

static int stream_version(struct ag_store *st, const char *stream, size_t stream_len,
                          int64_t *version)
{
    char name[AG_STORE_STREAM_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)stream_len, stream);
    const char *vals[1] = {name};
    PGresult *r = NULL;
    int rc = query(ps(st), "SELECT version FROM streams WHERE stream_name = $1", 1, vals, &r, NULL);
    if (rc) return rc;
    *version = PQntuples(r) ? col_i64(r, 0, 0) : -1;
    PQclear(r);
    return 0;
}

static int list_streams(struct ag_store *st,
                        int (*cb)(void *ud, const char *name, size_t len, int64_t version),
                        void *ud)
{
    PGresult *r = NULL;
    int rc = query(ps(st), "SELECT stream_name, version FROM streams ORDER BY stream_id", 0, NULL,
                   &r, NULL);
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r); i++)
        if (cb(ud, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), col_i64(r, i, 1))) break;
    PQclear(r);
    return 0;
}

/* ---- snapshots ---- */

static int save_snapshot(struct ag_store *st, const char *stream, size_t stream_len,
                         int64_t version, const void *state, size_t state_len, struct ag_err *err)
{
    if (st->opts.read_only) return ag_err_set(err, AG_EINVAL, "store is open read-only");
    struct pg_store *s = ps(st);
    char name[AG_STORE_STREAM_MAX + 1], v[24];
    snprintf(name, sizeof name, "%.*s", (int)stream_len, stream);
    snprintf(v, sizeof v, "%lld", (long long)version);
    const char *vals[3] = {name, v, state_len ? state : ""};
    int lens[3] = {0, 0, (int)state_len};
    int fmts[3] = {0, 0, 1};
    struct pg_conn *pc;
    int rc = ag__pg_borrow(s, &pc, err);
    if (rc) return rc;
    PGresult *r =
        PQexecParams(pc->c,
                     "WITH st AS (SELECT stream_id, version FROM streams WHERE stream_name = $1),"
                     " up AS (INSERT INTO snapshots (stream_id, version, state)"
                     "  SELECT stream_id, $2, $3 FROM st WHERE version >= $2::bigint"
                     "  ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version,"
                     "  state = EXCLUDED.state, created_at = now() RETURNING 1)"
                     " SELECT (SELECT version FROM st), (SELECT count(*) FROM up)",
                     3, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = ag__pg_fail(s, pc, r, "save snapshot", err);
    } else {
        int64_t cur = col_i64(r, 0, 0);
        bool saved = strtol(PQgetvalue(r, 0, 1), NULL, 10) == 1;
        PQclear(r);
        if (cur < 0)
            rc = ag_err_set(err, AG_ENOTFOUND, "stream '%.*s' has no events to snapshot",
                            (int)stream_len, stream);
        else if (!saved)
            rc = ag_err_set(err, AG_EINVAL,
                            "snapshot version %lld is beyond stream '%.*s' (at %lld)",
                            (long long)version, (int)stream_len, stream, (long long)cur);
        ag__pg_mark_ok(s);
    }
    ag__pg_return(s, pc);
    return rc;
}

static int load_snapshot(struct ag_store *st, const char *stream, size_t stream_len,
                         struct ag_snapshot *out, struct ag_err *err)
{
    struct pg_store *s = ps(st);
    char name[AG_STORE_STREAM_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)stream_len, stream);
    const char *vals[1] = {name};
    struct pg_conn *pc;
    int rc = ag__pg_borrow(s, &pc, err);
    if (rc) return rc;
    PGresult *r = PQexecParams(pc->c,
                               "SELECT sn.version, sn.state FROM snapshots sn"
                               " JOIN streams s USING (stream_id) WHERE s.stream_name = $1",
                               1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = ag__pg_fail(s, pc, r, "load snapshot", err);
    } else if (PQntuples(r) == 0) {
        PQclear(r);
        rc =
            ag_err_set(err, AG_ENOTFOUND, "stream '%.*s' has no snapshot", (int)stream_len, stream);
    } else {
        uint32_t hi, lo;
        memcpy(&hi, PQgetvalue(r, 0, 0), 4);
        memcpy(&lo, PQgetvalue(r, 0, 0) + 4, 4);
        out->version = (int64_t)(((uint64_t)ntohl(hi) << 32) | ntohl(lo));
        out->state_len = (size_t)PQgetlength(r, 0, 1);
        out->state = ag_malloc(out->state_len + 1);
        if (!out->state) {
            rc = ag_err_set(err, AG_ENOMEM, "out of memory");
        } else {
            memcpy(out->state, PQgetvalue(r, 0, 1), out->state_len);
            out->state[out->state_len] = 0;
        }
        PQclear(r);
    }
    ag__pg_return(s, pc);
    return rc;
}

/* ---- stats ---- */

static int stats(struct ag_store *st, struct ag_store_stats *out)
{
    struct pg_store *s = ps(st);
    memset(out, 0, sizeof *out);
    PGresult *r = NULL;
    int rc = query(s,
                   /* streams: exact below 100K (count(*) is cheap there), above it
                    * the planner's estimate from the last (auto)vacuum or ANALYZE:
                    * no scan of every stream for a stats call */
                   "SELECT (SELECT next FROM head),"
                   " (SELECT CASE WHEN c.reltuples < 100000 THEN (SELECT count(*) FROM streams)"
                   " ELSE c.reltuples::bigint END FROM pg_class c"
                   " WHERE c.oid = 'streams'::regclass),"
                   " pg_total_relation_size('events'), pg_indexes_size('events')",
                   0, NULL, &r, NULL);
    pthread_mutex_lock(&s->lock);
    out->appends = s->appends;
    out->commits = s->commits;
    out->events = s->head;
    pthread_mutex_unlock(&s->lock);
    if (rc) return rc;
    out->events = (uint64_t)col_i64(r, 0, 0);
    out->streams = (uint64_t)col_i64(r, 0, 1);
    out->bytes = (uint64_t)col_i64(r, 0, 2);
    out->index_bytes = (uint64_t)col_i64(r, 0, 3);
    PQclear(r);
    ag__pg_head_advance(s, out->events);
    return 0;
}

const struct ag_store_ops ag__pg_ops = {
    .name = "postgresql",
    .append = append,
    .append_async = ag__pg_append_async,
    .append_multi = ag__pg_append_multi,
    .append_multi_async = ag__pg_append_multi_async,
    .read_stream = read_stream,
    .read_all = read_all,
    .stream_version = stream_version,
    .list_streams = list_streams,
    .wait_head = ag__pg_wait_head,
    .save_snapshot = save_snapshot,
    .load_snapshot = load_snapshot,
    .stats = stats,
    .close = ag__pg_close,
    .health = ag__pg_health,
};
