/*
 * The PostgreSQL adapter of the read-model port (libpq): read model `name` at
 * `postgresql://...` is the schema `rm_<name>` of that database, holding the
 * projection's tables and its ag_checkpoint.
 *
 * One SQL for both engines. Projections and queries write the common subset of
 * SQLite (>= 3.24) and PostgreSQL (`INSERT ... ON CONFLICT(..) DO UPDATE SET
 * x=excluded.x`, `ON CONFLICT DO NOTHING`, `COALESCE`, `LIMIT`); this adapter
 * rewrites only what cannot be shared, at one place:
 *   - statements: placeholders `?N` (and bare `?`) become `$N`, outside quotes;
 *   - schemas (`ag_rm_script`): the words INTEGER -> BIGINT (SQLite integers are 64
 *     bits), BLOB -> BYTEA, and `WITHOUT ROWID` is dropped.
 * Parameter types: an INT64 argument is int8, a BLOB bytea (sent in binary), a
 * TEXT or NULL argument is left for the server to infer from its use (so "123"
 * bound to an integer column is an integer, as SQLite's affinity makes it); a
 * placeholder the statement skips (`?1, ?3`) is declared text, and when the server
 * cannot infer a type (`?1 IS NULL`) the statement is prepared again with text for
 * the undecided ones. Results come back as text: `ag_rm_int64` parses it.
 *
 * Connections. A read-write handle is one connection (one thread at a time, as the
 * port says); a read-only handle is a pool of up to `pool_size` connections (a URI
 * parameter, 1..64, default 4) opened on
 * demand, shared by the query threads. A query's result is read whole before its
 * row callback runs and the connection goes back to the pool first, so a callback
 * may run another query on the same handle. Every connection sets its
 * `search_path` to the schema; read-only ones also `default_transaction_read_only`.
 * `connect_timeout` is 5 s unless the URI says otherwise; the URI's own parameters
 * (`options=-c statement_timeout=...`, `idle_in_transaction_session_timeout`...)
 * pass through to libpq. libpq blocks: the port is only called from projection
 * threads and the HTTP worker pool, never from an event loop.
 *
 * Host loss. `lease_timeout` (a URI parameter, seconds, default 10, 0 = the
 * system's TCP defaults) bounds how long a connection whose peer vanished without
 * a FIN or RST (host down, link down, partition) lives, on both sides: libpq's
 * keepalives_* and tcp_user_timeout for the client, `SET tcp_keepalives_*` and
 * `SET tcp_user_timeout` for the server's backend. The server thus ends a lost
 * holder's session, and with it the session advisory locks of ag_rm_lease, within
 * about that time, so another instance takes the lease; the lost holder's own
 * calls fail (AG_EUNAVAILABLE, the connection broken) after 2/3 of it instead of
 * hanging. ag_rm_lease proves a held lease's session with a round trip at most
 * once a second, so a holder whose session ended (or went silent) reads the lease
 * as not held and stops its leased work before, or as soon as it is back. Both
 * only apply over TCP (a Unix socket's peer cannot vanish).
 *
 * Writers. `ag_rm_begin` is BEGIN plus a transaction-scoped advisory lock on the
 * schema's name (waiting up to `lock_timeout`, a URI parameter, default 5s): one
 * writer per read model, as
 * SQLite's BEGIN IMMEDIATE gives, so two processes pointed at the same schema
 * serialise their pages instead of interleaving them.
 *
 * Pipeline. Inside the writer's transaction an `ag_rm_exec` of a statement already
 * prepared on its connection is sent in pipeline mode and not waited for (up to
 * PIPELINE in flight); the next call that needs an answer — a query, the
 * checkpoint's read, a statement not yet prepared, the commit — syncs, reads
 * every result and leaves pipeline mode. The first failure found is the
 * transaction's "deferred" error, returned by that call and every later one
 * until the rollback, so a projection page costs about one round trip per read
 * instead of one per statement, and reads inside the transaction still see every
 * write before them.
 *
 * Lost connections. A statement that fails because the server went away (no
 * SQLSTATE, or classes 08 and 57) is AG_EUNAVAILABLE and marks the connection
 * broken; the next call outside a transaction reconnects (prepared statements are
 * made again). Inside a transaction nothing reconnects until the caller rolls
 * back: statements of a page never silently continue in autocommit.
 *
 * Errors: SQLSTATE XX001/XX002 (data corrupted) -> AG_ECORRUPT; classes 08
 * (connection), 53 (resources), 57 (operator intervention, statement timeout),
 * 40001, 40P01, 55P03 (lock timeout) -> AG_EUNAVAILABLE; the rest AG_EIO, with the
 * server's primary message.
 */
#ifdef AG_HAVE_PQ
#include <ctype.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "readmodel/internal.h"

#define POOL          4 /* connections of a read-only handle, unless pool_size= says */
#define POOL_MAX      64
#define SLOTS         64  /* prepared statements per connection; more run unprepared */
#define MAXARGS       32  /* highest placeholder */
#define PIPELINE      256 /* statements in flight before their results are read */
#define LEASE_TIMEOUT 10  /* s: lease_timeout unless the URI says */

#define OID_INT8  20
#define OID_BYTEA 17
#define OID_TEXT  25

struct stmt {
    uint64_t hash;      /* of the port's SQL text */
    char *sql;          /* owned copy of the port's SQL; NULL: free slot */
    Oid types[MAXARGS]; /* as prepared */
    int nparams;        /* the statement's highest placeholder */
};

struct conn {
    PGconn *c;
    bool broken;            /* the server went away: reconnect before the next use */
    bool in_tx;             /* BEGIN sent, no COMMIT/ROLLBACK yet */
    bool busy;              /* read-only pool: handed out */
    bool piped;             /* in pipeline mode: statements sent, results not read yet */
    bool leased;            /* holds the ag_rm_lease advisory lock (session: lost with it) */
    char lease_key[64];     /* ... of this key (one per handle) */
    double lease_checked;   /* monotonic s: the lease's session last proved alive */
    int queued;             /* statements in the pipeline */
    int deferred;           /* the transaction's first failure found in the pipeline */
    char deferred_msg[512]; /* its message */
    struct stmt slots[SLOTS];
};

struct pg {
    struct ag_rm base;    /* must be first */
    char *uri;            /* the connection URI (owned) */
    char schema[80];      /* rm_<name> */
    int64_t lock_key;     /* the advisory lock of the writer */
    pthread_mutex_t lock; /* the pool */
    pthread_cond_t freed;
    size_t nconn;          /* 1 (read-write) or the pool's size */
    struct conn *conn;     /* nconn of them */
    char lock_timeout[24]; /* SET lock_timeout (the writer's wait for the schema) */
    int lease_timeout;     /* s: a silent peer's connection dropped after it (0: off) */
};

struct pg_row {
    struct ag_rm_row base; /* must be first */
    PGresult *res;
    int r;
};

/* ---- SQL translation ---- */

/* The port's SQL with `?N` / `?` as `$N` into `out` (malloc'd); *maxn the highest
 * placeholder, used[i] whether $i+1 appears. -1: more than MAXARGS. */
static int to_dollars(const char *sql, char **out, int *maxn, bool used[MAXARGS])
{
    size_t len = strlen(sql);
    char *o = ag_malloc(len * 2 + 1), *w = o;
    int seq = 0;
    if (!o) return AG_ENOMEM;
    *maxn = 0;
    memset(used, 0, MAXARGS * sizeof *used);
    for (const char *p = sql; *p;) {
        if (*p == '\'' || *p == '"') { /* a literal or quoted identifier, '' included */
            char q = *p;
            *w++ = *p++;
            while (*p && *p != q) *w++ = *p++;
            if (*p) *w++ = *p++;
            continue;
        }
        if (*p != '?') {
            *w++ = *p++;
            continue;
        }
        p++;
        int n = 0;
        if (isdigit((unsigned char)*p))
            while (isdigit((unsigned char)*p)) n = n * 10 + (*p++ - '0');
        else
            n = ++seq;
        if (n < 1 || n > MAXARGS) {
            ag_free(o);
            return -1;
        }
        used[n - 1] = true;
        if (n > *maxn) *maxn = n;
        w += sprintf(w, "$%d", n);
    }
    *w = '\0';
    *out = o;
    return 0;
}

/* Is `w` (length n) the word at p, bounded by non-identifier characters? */
static bool word_at(const char *start, const char *p, const char *w)
{
    size_t n = strlen(w);
    if (strncasecmp(p, w, n) != 0) return false;
    if (p > start && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) return false;
    return !isalnum((unsigned char)p[n]) && p[n] != '_';
}

/* A schema script in PostgreSQL's words (malloc'd). */
static char *ddl(const char *sql)
{
    size_t len = strlen(sql);
    char *o = ag_malloc(len * 2 + 1), *w = o;
    if (!o) return NULL;
    for (const char *p = sql; *p;) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            *w++ = *p++;
            while (*p && *p != q) *w++ = *p++;
            if (*p) *w++ = *p++;
        } else if (word_at(sql, p, "INTEGER")) {
            w += sprintf(w, "BIGINT"), p += 7;
        } else if (word_at(sql, p, "BLOB")) {
            w += sprintf(w, "BYTEA"), p += 4;
        } else if (word_at(sql, p, "WITHOUT") && strncasecmp(p + 7, " ROWID", 6) == 0) {
            p += 13;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return o;
}

/* ---- errors ---- */

static int map_state(const char *st)
{
    if (!st) return AG_EUNAVAILABLE; /* no SQLSTATE: the connection failed */
    if (!strcmp(st, "XX001") || !strcmp(st, "XX002")) return AG_ECORRUPT;
    if (!strncmp(st, "08", 2) || !strncmp(st, "53", 2) || !strncmp(st, "57", 2) ||
        !strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03"))
        return AG_EUNAVAILABLE;
    return AG_EIO;
}

/* The server's message without its "ERROR:  " prefix and trailing newline. */
static void message(PGconn *c, const PGresult *res, char *out, size_t n)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(out, n, "%s", m ? m : c ? PQerrorMessage(c) : "no connection");
    for (char *p = out; *p; p++) /* one line: libpq's "...\n\tThis probably means..." */
        if (*p == '\n' || *p == '\t') *p = ' ';
    size_t l = strlen(out);
    while (l && out[l - 1] == ' ') out[--l] = '\0';
}

/* Record a failed result on `cn` (consumes `res`): the AG_E* code. */
static int failed(struct pg *g, struct conn *cn, PGresult *res, struct ag_err *err)
{
    char msg[512], state[8] = "";
    const char *f = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (f) snprintf(state, sizeof state, "%s", f);
    const char *st = f ? state : NULL;
    int code = map_state(st);
    message(cn->c, res, msg, sizeof msg);
    /* no result, or no SQLSTATE: the command never reached a working server */
    if (!res || !st || !cn->c || PQstatus(cn->c) == CONNECTION_BAD || !strncmp(st, "57P", 3))
        cn->broken = true;
    PQclear(res);
    if (st && !strcmp(st, "55P03")) {
        char m2[700];
        snprintf(m2, sizeof m2, "read model %s is locked by another writer: %s", g->schema, msg);
        return ag__rm_outcome(&g->base, code, m2, err);
    }
    return ag__rm_outcome(&g->base, code, msg, err);
}

static int done(struct pg *g)
{
    if (g->base.mode == AG_RM_READWRITE && g->base.last_code)
        ag__rm_outcome(&g->base, 0, NULL, NULL);
    return 0;
}

/* ---- connections ---- */

static void quiet(void *arg, const char *msg)
{
    AG_UNUSED(arg), AG_UNUSED(msg); /* NOTICEs ("already exists, skipping") */
}

static void conn_close(struct conn *cn)
{
    for (size_t i = 0; i < SLOTS; i++) ag_free(cn->slots[i].sql);
    memset(cn->slots, 0, sizeof cn->slots);
    if (cn->c) PQfinish(cn->c);
    cn->c = NULL;
    cn->broken = cn->in_tx = cn->piped = cn->leased = false;
    cn->queued = cn->deferred = 0;
}

/* TCP liveness for a `lease_timeout` of t seconds, so a peer that vanished
 * without a FIN or RST (its host lost, its link down) is noticed instead of after
 * the kernel's defaults (hours idle, ~15 min writing): the server's side gives a
 * silent client up after t (unacknowledged data, or idle t/2 then 3 probes t/6
 * apart, at least 1 s) and ends its backend, releasing its session advisory locks
 * (the leases); the client's side after 2t/3, so a lost holder stops its leased
 * work before the server frees the lease for another. t = 0: the system's
 * defaults (the strings stay empty: libpq ignores empty values). */
struct alive {
    char on[2], idle[12], interval[12], count[4], user_ms[16];
};

static void alive_of(int t, bool client, struct alive *a)
{
    memset(a, 0, sizeof *a);
    if (t <= 0) return;
    long long ms = client ? (long long)t * 2000 / 3 : (long long)t * 1000;
    int idle = (int)(ms / 2000), every = (int)(ms / 6000);
    snprintf(a->on, sizeof a->on, "1");
    snprintf(a->idle, sizeof a->idle, "%d", idle > 0 ? idle : 1);
    snprintf(a->interval, sizeof a->interval, "%d", every > 0 ? every : 1);
    snprintf(a->count, sizeof a->count, "3");
    snprintf(a->user_ms, sizeof a->user_ms, "%lld", ms);
}

/* Connect `cn` and set its session up; AG_EUNAVAILABLE when the server cannot be
 * reached, AG_EIO when it refuses the setup. */
static int conn_open(struct pg *g, struct conn *cn, struct ag_err *err)
{
    struct alive a, srv;
    alive_of(g->lease_timeout, true, &a);
    alive_of(g->lease_timeout, false, &srv);
    /* before dbname: the URI's own keepalives_* / tcp_user_timeout win */
    const char *keys[] = {"connect_timeout",
                          "application_name",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          "dbname",
                          NULL};
    const char *vals[] = {"5",     "agora-readmodels", a.on,   a.idle, a.interval,
                          a.count, a.user_ms,          g->uri, NULL};
    conn_close(cn);
    cn->c = PQconnectdbParams(keys, vals, 1);
    if (!cn->c || PQstatus(cn->c) != CONNECTION_OK) {
        char msg[512];
        message(cn->c, NULL, msg, sizeof msg);
        conn_close(cn);
        return ag__rm_outcome(&g->base, AG_EUNAVAILABLE, msg, err);
    }
    PQsetNoticeProcessor(cn->c, quiet, NULL);
    char sql[512], server[200] = "";
    if (g->lease_timeout) /* the server's side: a vanished client's backend (and locks) ends */
        snprintf(server, sizeof server,
                 " SET tcp_keepalives_idle = %s; SET tcp_keepalives_interval = %s;"
                 " SET tcp_keepalives_count = %s; SET tcp_user_timeout = %s;",
                 srv.idle, srv.interval, srv.count, srv.user_ms);
    snprintf(sql, sizeof sql, "SET search_path TO \"%s\"; SET lock_timeout = '%s';%s%s", g->schema,
             g->lock_timeout[0] ? g->lock_timeout : "5s", server,
             g->base.mode == AG_RM_READONLY ? " SET default_transaction_read_only = on;" : "");
    PGresult *res = PQexec(cn->c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        int rc = failed(g, cn, res, err);
        conn_close(cn);
        return rc;
    }
    PQclear(res);
    return 0;
}

/* ---- the writer's pipeline ---- */

/* Read the results of everything in the pipeline and leave pipeline mode; the
 * first failure among them becomes the transaction's deferred error. */
static void drain(struct conn *cn)
{
    if (!cn->piped) return;
    int nulls = 0;
    if (PQpipelineSync(cn->c) != 1) cn->broken = true;
    while (!cn->broken) {
        PGresult *r = PQgetResult(cn->c);
        if (!r) { /* the end of one statement's results; two in a row: nothing more */
            if (++nulls > 1 || PQstatus(cn->c) == CONNECTION_BAD) cn->broken = true;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (st == PGRES_FATAL_ERROR && !cn->deferred) {
            const char *f = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            cn->deferred = map_state(f);
            message(cn->c, r, cn->deferred_msg, sizeof cn->deferred_msg);
            if (!f || PQstatus(cn->c) == CONNECTION_BAD) cn->broken = true;
        }
        PQclear(r);
    }
    if (cn->broken && !cn->deferred) {
        cn->deferred = AG_EUNAVAILABLE;
        message(cn->c, NULL, cn->deferred_msg, sizeof cn->deferred_msg);
    }
    if (!cn->broken && PQexitPipelineMode(cn->c) != 1) cn->broken = true;
    cn->piped = false;
    cn->queued = 0;
}

/* Before any call but a pipelined exec: the pipeline's outcome (0, or the
 * deferred failure of the transaction, reported again until it ends). */
static int settle(struct pg *g, struct conn *cn, struct ag_err *err)
{
    drain(cn);
    if (!cn->deferred) return 0;
    return ag__rm_outcome(&g->base, cn->deferred, cn->deferred_msg, err);
}

/* A usable connection of `g` (OUT *cn); give it back with put_conn. */
static int get_conn(struct pg *g, struct conn **out, struct ag_err *err)
{
    struct conn *cn = NULL;
    pthread_mutex_lock(&g->lock);
    for (;;) {
        for (size_t i = 0; i < g->nconn && !cn; i++)
            if (!g->conn[i].busy && g->conn[i].c) cn = &g->conn[i];
        for (size_t i = 0; i < g->nconn && !cn; i++)
            if (!g->conn[i].busy) cn = &g->conn[i];
        if (cn || g->nconn == 1) break; /* a writer's one connection is never shared */
        pthread_cond_wait(&g->freed, &g->lock);
    }
    if (!cn) cn = &g->conn[0];
    cn->busy = true;
    pthread_mutex_unlock(&g->lock);
    *out = cn;
    int rc = cn->in_tx ? settle(g, cn, err) : 0;
    if (rc) return rc;
    if (cn->broken && cn->in_tx)
        return ag__rm_outcome(&g->base, AG_EUNAVAILABLE,
                              "the connection was lost inside a transaction; roll back", err);
    if (cn->c && !cn->broken && PQstatus(cn->c) == CONNECTION_OK) return 0;
    return conn_open(g, cn, err);
}

static void put_conn(struct pg *g, struct conn *cn)
{
    pthread_mutex_lock(&g->lock);
    cn->busy = false;
    pthread_cond_signal(&g->freed);
    pthread_mutex_unlock(&g->lock);
}

/* ---- statements ---- */

struct params {
    int n;                  /* placeholders sent */
    Oid types[MAXARGS];     /* declared types (0: the server infers) */
    const char *v[MAXARGS]; /* values, NULL for SQL NULL */
    int len[MAXARGS];
    int fmt[MAXARGS];       /* 1: binary (BLOB) */
    char ints[MAXARGS][24]; /* INT64 values as text */
};

static void fill_params(struct params *p, int maxn, const bool used[MAXARGS],
                        const struct ag_rm_arg *args, size_t nargs)
{
    memset(p, 0, sizeof *p);
    p->n = maxn;
    for (int i = 0; i < maxn; i++) {
        const struct ag_rm_arg *a = (size_t)i < nargs ? &args[i] : NULL;
        enum ag_rm_kind k = a ? a->kind : AG_RM_KIND_NULL;
        p->types[i] = !used[i]                ? OID_TEXT
                      : k == AG_RM_KIND_INT64 ? OID_INT8
                      : k == AG_RM_KIND_BLOB  ? OID_BYTEA
                                              : 0;
        if (k == AG_RM_KIND_INT64) {
            snprintf(p->ints[i], sizeof p->ints[i], "%lld", (long long)a->i);
            p->v[i] = p->ints[i];
        } else if (k == AG_RM_KIND_BLOB && a->p) {
            p->v[i] = a->p;
            p->len[i] = (int)a->len;
            p->fmt[i] = 1;
        } else if (k == AG_RM_KIND_TEXT) {
            p->v[i] = a->p;
        }
    }
}

static bool undecided(const PGresult *res)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    /* indeterminate_datatype, ambiguous_parameter ("$2 IS NULL OR id=$2") */
    return st && (!strcmp(st, "42P18") || !strcmp(st, "42P08"));
}

/* Text for the placeholder the server could not type: the one at the error's
 * position in `pgsql` (1-based, in characters: the SQL here is ASCII), else for
 * every placeholder still left to inference. */
static void decide(struct params *p, const PGresult *res, const char *pgsql)
{
    const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    long at = pos ? strtol(pos, NULL, 10) : 0;
    if (at > 0 && (size_t)at < strlen(pgsql) && pgsql[at - 1] == '$') {
        long n = strtol(pgsql + at, NULL, 10);
        if (n >= 1 && n <= p->n && !p->types[n - 1]) {
            p->types[n - 1] = OID_TEXT;
            return;
        }
    }
    for (int i = 0; i < p->n; i++)
        if (!p->types[i]) p->types[i] = OID_TEXT;
}

/* The cached statement of `sql` on `cn` with these types, or -1. */
static int find_slot(struct conn *cn, const char *sql, uint64_t h, const struct params *p,
                     int *free_slot)
{
    *free_slot = -1;
    for (size_t k = 0; k < SLOTS; k++) {
        size_t i = (size_t)((h + k) % SLOTS);
        struct stmt *s = &cn->slots[i];
        if (!s->sql) {
            *free_slot = (int)i;
            return -1;
        }
        if (s->hash != h || strcmp(s->sql, sql) != 0) continue;
        for (int j = 0; j < p->n; j++) /* inferred (0) matches what the server chose */
            if (p->types[j] && p->types[j] != s->types[j]) return -1;
        return (int)i;
    }
    return -1;
}

static PGresult *exec_simple(PGconn *c, const char *sql)
{
    return PQexec(c, sql);
}

/* Prepare `pgsql` as `name` ("" for a one-off). When the server cannot type a
 * placeholder ("$1 IS NULL"), prepare again with text for it, one placeholder at a
 * time; inside a transaction under a savepoint, since a failed PREPARE aborts
 * the transaction. */
static PGresult *prepare(PGconn *c, const char *name, const char *pgsql, struct params *p)
{
    bool in_tx = PQtransactionStatus(c) == PQTRANS_INTRANS;
    if (in_tx) PQclear(exec_simple(c, "SAVEPOINT ag_prepare"));
    PGresult *res = PQprepare(c, name, pgsql, p->n, p->types);
    for (int tries = 0; tries <= p->n && PQresultStatus(res) == PGRES_FATAL_ERROR && undecided(res);
         tries++) {
        decide(p, res, pgsql);
        PQclear(res);
        if (in_tx) PQclear(exec_simple(c, "ROLLBACK TO SAVEPOINT ag_prepare"));
        res = PQprepare(c, name, pgsql, p->n, p->types);
    }
    if (in_tx && PQresultStatus(res) == PGRES_COMMAND_OK)
        PQclear(exec_simple(c, "RELEASE SAVEPOINT ag_prepare"));
    return res;
}

/* Run `sql` (the port's text) on `cn`: the result (PQclear it); NULL for more
 * than MAXARGS placeholders. */
static PGresult *run(struct conn *cn, const char *sql, const struct ag_rm_arg *args, size_t nargs)
{
    char *pgsql, name[16] = "";
    int maxn;
    bool used[MAXARGS];
    if (to_dollars(sql, &pgsql, &maxn, used)) /* a result that says so */
        return PQmakeEmptyPGresult(cn->c, PGRES_BAD_RESPONSE);
    struct params p;
    fill_params(&p, maxn, used, args, nargs);
    uint64_t h = ag_xxh3(sql, strlen(sql));
    int free_slot, slot = find_slot(cn, sql, h, &p, &free_slot);
    if (slot < 0) { /* prepare it: into a free slot, else as the unnamed statement */
        char *copy = free_slot >= 0 ? ag_malloc(strlen(sql) + 1) : NULL;
        if (copy) snprintf(name, sizeof name, "s%d", free_slot);
        PGresult *res = prepare(cn->c, name, pgsql, &p);
        ag_free(pgsql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            ag_free(copy);
            return res;
        }
        PQclear(res);
        if (copy) {
            struct stmt *s = &cn->slots[free_slot];
            s->sql = strcpy(copy, sql);
            s->hash = h;
            s->nparams = p.n;
            memcpy(s->types, p.types, sizeof p.types);
        }
    } else {
        ag_free(pgsql);
        snprintf(name, sizeof name, "s%d", slot);
    }
    return PQexecPrepared(cn->c, name, p.n, p.v, p.len, p.fmt, 0);
}

/* Run `sql` on a connection of `g` into *out (the result, OK). A read-only
 * handle whose connection turns out to be dead (the server restarted since its
 * last use) reconnects and runs it once more: a read changes nothing. */
static int run_on(struct pg *g, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                  PGresult **out, struct ag_err *err)
{
    for (int attempt = 0;; attempt++) {
        struct conn *cn;
        int rc = get_conn(g, &cn, err);
        if (rc) {
            put_conn(g, cn);
            return rc;
        }
        PGresult *res = run(cn, sql, args, nargs);
        ExecStatusType st = PQresultStatus(res); /* NULL: PGRES_FATAL_ERROR */
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            put_conn(g, cn); /* the result is whole: callbacks may query again */
            *out = res;
            return 0;
        }
        if (st == PGRES_BAD_RESPONSE) {
            PQclear(res);
            put_conn(g, cn);
            return ag__rm_outcome(&g->base, AG_EINVAL, "more than 32 placeholders", err);
        }
        rc = failed(g, cn, res, err);
        bool again = cn->broken && g->base.mode == AG_RM_READONLY && attempt == 0;
        put_conn(g, cn);
        if (!again) return rc;
    }
}

static int pg_query(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                    ag_rm_row_fn row, void *ud, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    PGresult *res = NULL;
    int rc = run_on(g, sql, args, nargs, &res, err);
    if (rc) return rc;
    done(g);
    struct pg_row r = {{&ag__rm_pg_ops}, res, 0};
    int out = 0;
    for (int n = PQntuples(res); row && r.r < n; r.r++) {
        int cb = row(&r.base, ud);
        if (cb) {
            out = cb < 0 ? cb : 0;
            break;
        }
    }
    PQclear(res);
    return out;
}

/* An exec inside the writer's transaction whose statement is prepared on its
 * connection: sent into the pipeline, not waited for (1: it was; 0: run it the
 * ordinary way). Its failure is found by the next call that is not one of these
 * (drain), at the latest by the commit. */
static int pipe_exec(struct pg *g, const char *sql, const struct ag_rm_arg *args, size_t nargs)
{
    struct conn *cn = &g->conn[0];
    if (g->nconn != 1 || !cn->in_tx || cn->broken || cn->deferred || !cn->c) return 0;
    char *pgsql;
    int maxn, free_slot;
    bool used[MAXARGS];
    if (to_dollars(sql, &pgsql, &maxn, used)) return 0;
    ag_free(pgsql);
    struct params p;
    fill_params(&p, maxn, used, args, nargs);
    int slot = find_slot(cn, sql, ag_xxh3(sql, strlen(sql)), &p, &free_slot);
    if (slot < 0) return 0; /* prepared first, the ordinary way */
    if (!cn->piped && PQenterPipelineMode(cn->c) != 1) return 0;
    cn->piped = true;
    char name[16];
    snprintf(name, sizeof name, "s%d", slot);
    if (PQsendQueryPrepared(cn->c, name, p.n, p.v, p.len, p.fmt, 0) != 1) cn->broken = true;
    if (++cn->queued >= PIPELINE || cn->broken) drain(cn); /* results must not pile up */
    return 1;
}

static int pg_exec(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                   struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    if (pipe_exec(g, sql, args, nargs)) {
        struct conn *cn = &g->conn[0];
        if (cn->deferred) return ag__rm_outcome(rm, cn->deferred, cn->deferred_msg, err);
        return done(g);
    }
    return pg_query(rm, sql, args, nargs, NULL, NULL, err);
}

/* Several statements without parameters (PQexec), `sql` as it is. */
static int exec_plain(struct pg *g, const char *sql, struct ag_err *err)
{
    struct conn *cn;
    int rc = get_conn(g, &cn, err);
    if (!rc) {
        PGresult *res = PQexec(cn->c, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            PQclear(res);
            done(g);
        } else {
            rc = failed(g, cn, res, err);
        }
    }
    put_conn(g, cn);
    return rc;
}

static int pg_script(struct ag_rm *rm, const char *sql, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    char *s = ddl(sql);
    if (!s) return ag__rm_outcome(rm, AG_ENOMEM, "out of memory", err);
    int rc = exec_plain(g, s, err);
    ag_free(s);
    return rc;
}

static const char *pg_text(const struct ag_rm_row *row, int col)
{
    const struct pg_row *r = (const struct pg_row *)row;
    if (col < 0 || col >= PQnfields(r->res) || PQgetisnull(r->res, r->r, col)) return NULL;
    return PQgetvalue(r->res, r->r, col);
}

static int64_t pq_int64(const struct ag_rm_row *row, int col)
{
    const char *t = pg_text(row, col);
    if (!t) return 0;
    if (t[0] == 't' && !t[1]) return 1; /* booleans */
    return strtoll(t, NULL, 10);
}

static bool pg_is_null(const struct ag_rm_row *row, int col)
{
    return pg_text(row, col) == NULL;
}

static int hexdigit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* bytea comes back as text in hex format ("\\x0a1b..."): decode it. */
static bool pg_blob(const struct ag_rm_row *row, int col, void *buf, size_t cap, size_t *len)
{
    const struct pg_row *r = (const struct pg_row *)row;
    const char *t = pg_text(row, col);
    if (!t || PQftype(r->res, col) != OID_BYTEA || t[0] != '\\' || t[1] != 'x') return false;
    size_t n = strlen(t + 2) / 2;
    uint8_t *out = buf;
    for (size_t i = 0; i < n && i < cap; i++) {
        int hi = hexdigit(t[2 + 2 * i]), lo = hexdigit(t[3 + 2 * i]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n;
    return true;
}

static int pg_ncols(const struct ag_rm_row *row)
{
    return PQnfields(((const struct pg_row *)row)->res);
}

/* ---- transactions ---- */

static int pg_begin(struct ag_rm *rm, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    g->conn[0].deferred = 0;
    int rc = exec_plain(g, "BEGIN", err);
    if (rc) return rc;
    g->conn[0].in_tx = true;
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)", (long long)g->lock_key);
    if ((rc = exec_plain(g, sql, err))) { /* not the writer: undo the BEGIN */
        struct conn *cn = &g->conn[0];
        if (cn->c && !cn->broken) PQclear(PQexec(cn->c, "ROLLBACK"));
        cn->in_tx = false;
    }
    return rc;
}

static int pg_commit(struct ag_rm *rm, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    struct conn *cn = &g->conn[0];
    int rc = settle(g, cn, err);
    if (rc) return rc; /* the caller rolls back */
    if (cn->broken)
        return ag__rm_outcome(rm, AG_EUNAVAILABLE, "the connection was lost before the commit",
                              err);
    PGresult *res = cn->c ? PQexec(cn->c, "COMMIT") : NULL;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) return failed(g, cn, res, err);
    /* COMMIT of a transaction a failed statement aborted answers ROLLBACK */
    bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    PQclear(res);
    cn->in_tx = false;
    if (rolled_back)
        return ag__rm_outcome(rm, AG_EIO, "the transaction was aborted by an earlier error", err);
    return done(g);
}

static void pg_rollback(struct ag_rm *rm)
{
    struct pg *g = (struct pg *)rm;
    struct conn *cn = &g->conn[0];
    drain(cn);
    if (cn->c && !cn->broken && PQtransactionStatus(cn->c) != PQTRANS_IDLE)
        PQclear(PQexec(cn->c, "ROLLBACK"));
    cn->in_tx = false;
    cn->deferred = 0;
}

/* ---- locating, dropping, setting aside ---- */

/* rm_<name>, lower case: 0, or AG_EINVAL for a name that is not [A-Za-z0-9_]. */
static int schema_of(const char *name, char *out, size_t n, struct ag_err *err)
{
    size_t len = strlen(name);
    if (!len || len + 4 > n || len > 60)
        return ag_err_set(err, AG_EINVAL, "%s: not a read-model name", name);
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_')
            return ag_err_set(err, AG_EINVAL, "%s: not a read-model name", name);
    snprintf(out, n, "rm_%s", name);
    for (char *p = out; *p; p++) *p = (char)tolower((unsigned char)*p);
    return 0;
}

/* The URI without its password, for logs. */
static void redact(const char *uri, char *out, size_t n)
{
    const char *s = strstr(uri, "://"), *at = s ? strchr(s + 3, '@') : NULL;
    const char *slash = s ? strchr(s + 3, '/') : NULL;
    const char *colon = s ? memchr(s + 3, ':', at ? (size_t)(at - s - 3) : 0) : NULL;
    if (!at || (slash && slash < at) || !colon) {
        snprintf(out, n, "%s", uri);
        return;
    }
    snprintf(out, n, "%.*s%s", (int)(colon - uri), uri, at);
}

static void pg_locate(const char *loc, const char *name, char *out, size_t n)
{
    char uri[1024], schema[80] = "?";
    snprintf(uri, sizeof uri, "postgresql:%s", loc);
    char safe[1024];
    redact(uri, safe, sizeof safe);
    schema_of(name, schema, sizeof schema, NULL);
    snprintf(out, n, "%s schema %s", safe, schema);
}

/* lease_timeout=N or Ns, 0..3600 (the value `v`, `n` bytes). */
static int take_lease_timeout(struct pg *g, const char *v, size_t n, struct ag_err *err)
{
    char tmp[16], *e = NULL;
    snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 15 ? n : 15), v);
    long t = strtol(tmp, &e, 10);
    if (e == tmp || tmp[0] == '-' || t > 3600 || n > 15 || (*e && strcmp(e, "s") != 0))
        return ag_err_set(err, AG_EINVAL,
                          "read models URI: lease_timeout must be 0..3600 seconds, like 10s "
                          "(0: the system's TCP defaults)");
    g->lease_timeout = (int)t;
    return 0;
}

/* agora's own URI parameters, taken out before libpq sees the URI (it refuses
 * parameters it does not know): pool_size=N (the read-only pool, 1..64, default 4),
 * lock_timeout=T (how long a writer waits for the read model's lock, a
 * PostgreSQL duration, default 5s) and lease_timeout=N[s] (host loss, above; 0..3600,
 * default 10). Writes "postgresql:" + loc without them to out. */
static int take_params(struct pg *g, const char *loc, char *out, size_t cap, struct ag_err *err)
{
    const char *q = strchr(loc, '?');
    size_t base = q ? (size_t)(q - loc) : strlen(loc);
    int w = snprintf(out, cap, "postgresql:%.*s", (int)base, loc);
    char sep = '?';
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 10 && strncmp(p, "pool_size=", 10) == 0) {
            char tmp[8];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(len - 10 < 7 ? len - 10 : 7), p + 10);
            long v = strtol(tmp, NULL, 10);
            if (v < 1 || v > POOL_MAX || strspn(tmp, "0123456789") != strlen(tmp))
                return ag_err_set(err, AG_EINVAL, "read models URI: pool_size must be 1..%d",
                                  POOL_MAX);
            g->nconn = (size_t)v;
        } else if (len > 13 && strncmp(p, "lock_timeout=", 13) == 0) {
            size_t vn = len - 13;
            const char *v = p + 13;
            bool ok = vn < sizeof g->lock_timeout && v[0] >= '0' && v[0] <= '9';
            for (size_t i = 0; ok && i < vn; i++)
                ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'z');
            if (!ok)
                return ag_err_set(
                    err, AG_EINVAL,
                    "read models URI: lock_timeout must be a duration like 5000 or 5s");
            snprintf(g->lock_timeout, sizeof g->lock_timeout, "%.*s", (int)vn, v);
        } else if (len > 14 && strncmp(p, "lease_timeout=", 14) == 0) {
            if (take_lease_timeout(g, p + 14, len - 14, err)) return AG_EINVAL;
        } else if (w >= 0 && (size_t)w < cap) {
            w += snprintf(out + w, cap - (size_t)w, "%c%.*s", sep, (int)len, p);
            sep = '&';
        }
        p = end ? end + 1 : NULL;
    }
    if (w < 0 || (size_t)w >= cap) return ag_err_set(err, AG_EINVAL, "read models URI too long");
    return 0;
}

/* One statement on a connection of its own (drop, set aside). */
static int admin(const char *loc, const char *sql, struct ag_err *err)
{
    static _Thread_local struct conn one; /* large (prepared slots): not on the stack */
    memset(&one, 0, sizeof one);
    struct pg g = {
        .base.mode = AG_RM_READWRITE, .nconn = 1, .conn = &one, .lease_timeout = LEASE_TIMEOUT};
    char uri[2048];
    struct ag_err e2;
    if (take_params(&g, loc, uri, sizeof uri, err ? err : &e2)) return AG_EINVAL;
    g.uri = uri;
    snprintf(g.schema, sizeof g.schema, "public");
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.freed, NULL);
    int rc = exec_plain(&g, sql, err);
    conn_close(&g.conn[0]);
    pthread_cond_destroy(&g.freed);
    pthread_mutex_destroy(&g.lock);
    return rc;
}

static int pg_drop(const char *loc, const char *name, struct ag_err *err)
{
    char schema[80], sql[160];
    int rc = schema_of(name, schema, sizeof schema, err);
    if (rc) return rc;
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
    return admin(loc, sql, err);
}

static int pg_set_aside(const char *loc, const char *name, char *kept_as, size_t n,
                        struct ag_err *err)
{
    char schema[80], aside[120], sql[300];
    int rc = schema_of(name, schema, sizeof schema, err);
    if (rc) return rc;
    snprintf(aside, sizeof aside, "%s_corrupt_%lld", schema, (long long)time(NULL));
    snprintf(sql, sizeof sql, "ALTER SCHEMA \"%s\" RENAME TO \"%s\"", schema, aside);
    if ((rc = admin(loc, sql, err))) return rc;
    if (kept_as) snprintf(kept_as, n, "schema %s", aside);
    return 0;
}

/* PostgreSQL verifies its pages itself (checksums, XX001 on reads): nothing to run. */
static int pg_check(struct ag_rm *rm, struct ag_err *err)
{
    AG_UNUSED(rm), AG_UNUSED(err);
    return 0;
}

/* Can the server be reached: a round trip outside a transaction. */
static int pg_ping(struct ag_rm *rm, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    if (g->nconn == 1 && g->conn[0].in_tx) return 0; /* the page in flight will tell */
    return exec_plain(g, "SELECT 1", err);
}

static int lease_row(const struct ag_rm_row *row, void *ud)
{
    const char *t = ag_rm_text(row, 0);
    *(bool *)ud = t && t[0] == 't';
    return 1;
}

/* ag_rm_lease: a session advisory lock on hash(schema ':' key) on the writer's
 * one connection; conn_close forgets it, so a reconnection asks again. */
static int pg_lease(struct ag_rm *rm, const char *key, bool *held, bool *taken, struct ag_err *err)
{
    struct pg *g = (struct pg *)rm;
    struct conn *cn = &g->conn[0];
    *held = *taken = false;
    if (g->nconn != 1) return ag_err_set(err, AG_EINVAL, "a lease needs a read-write handle");
    if (cn->leased && strcmp(cn->lease_key, key) != 0)
        return ag_err_set(err, AG_EINVAL, "this handle holds the lease '%s' already",
                          cn->lease_key);
    if (cn->leased && cn->c && !cn->broken && PQstatus(cn->c) == CONNECTION_OK) {
        /* held while the session lives: a round trip at most once a second proves it
         * (a server that ended it answers with an error, a lost one times out) */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        struct ag_err e;
        if (cn->in_tx || now - cn->lease_checked < 1.0) {
            *held = true;
            return 0;
        }
        cn->lease_checked = now;
        if (exec_plain(g, "SELECT 1", &e) == 0) {
            *held = true;
            return 0;
        }
        /* the session is gone, the lock with it: asked for again below (reconnecting) */
    }
    bool got = false;
    struct ag_rm_arg arg = AG_RM_TEXT(key);
    int rc = pg_query(rm,
                      "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':' || "
                      "?1::text, 0))",
                      &arg, 1, lease_row, &got, err);
    if (!rc) cn->leased = got; /* on the connection pg_query used (reopened or not) */
    if (got) cn->lease_checked = 0;
    if (got) snprintf(cn->lease_key, sizeof cn->lease_key, "%s", key);
    *held = *taken = cn->leased;
    return rc;
}

/* ---- open / close ---- */

static void pg_close(struct ag_rm *rm)
{
    struct pg *g = (struct pg *)rm;
    for (size_t i = 0; g->conn && i < g->nconn; i++) conn_close(&g->conn[i]);
    pthread_cond_destroy(&g->freed);
    pthread_mutex_destroy(&g->lock);
    ag_free(g->conn);
    ag_free(g->uri);
    ag_free(g);
}

static int exists_row(const struct ag_rm_row *row, void *ud)
{
    AG_UNUSED(row);
    *(bool *)ud = true;
    return 1;
}

/* Read-write: the schema and ag_checkpoint; read-only: the schema must exist. */
static int setup(struct pg *g, struct ag_err *err)
{
    char sql[512];
    if (g->base.mode == AG_RM_READWRITE) {
        snprintf(sql, sizeof sql,
                 "CREATE SCHEMA IF NOT EXISTS \"%s\";"
                 "CREATE TABLE IF NOT EXISTS \"%s\".ag_checkpoint(name TEXT PRIMARY KEY,"
                 " position BIGINT NOT NULL);",
                 g->schema, g->schema);
        return exec_plain(g, sql, err);
    }
    bool found = false;
    struct ag_rm_arg arg = AG_RM_TEXT(g->schema);
    int rc = pg_query(&g->base, "SELECT 1 FROM pg_namespace WHERE nspname=?1", &arg, 1, exists_row,
                      &found, err);
    if (!rc && !found)
        rc = ag_err_set(err, AG_EIO, "read model schema %s does not exist", g->schema);
    return rc;
}

static int pg_open(const char *loc, const char *name, enum ag_rm_mode mode, struct ag_rm **out,
                   struct ag_err *err)
{
    struct pg *g = ag_calloc(1, sizeof *g);
    size_t n = strlen(loc) + sizeof "postgresql:";
    if (!g || !(g->uri = ag_malloc(n))) {
        ag_free(g);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    g->base.mode = mode;
    g->nconn = POOL;
    g->lease_timeout = LEASE_TIMEOUT;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->freed, NULL);
    int rc = take_params(g, loc, g->uri, n, err);
    if (mode == AG_RM_READWRITE) g->nconn = 1;
    if (!rc && !(g->conn = ag_calloc(g->nconn, sizeof *g->conn)))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) rc = schema_of(name, g->schema, sizeof g->schema, err);
    g->lock_key = (int64_t)ag_xxh3(g->schema, strlen(g->schema));
    if (!rc) rc = setup(g, err);
    if (rc) {
        char where[1200], msg[sizeof err->msg];
        pg_locate(loc, name, where, sizeof where);
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        ag_err_set(err, rc, "%s: %s", where, msg);
        pg_close(&g->base);
        return rc;
    }
    *out = &g->base;
    return 0;
}

const struct ag_rm_ops ag__rm_pg_ops = {
    .scheme = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .locate = pg_locate,
    .set_aside = pg_set_aside,
    .drop = pg_drop,
    .check = pg_check,
    .ping = pg_ping,
    .lease = pg_lease,
    .exec = pg_exec,
    .query = pg_query,
    .script = pg_script,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .text = pg_text,
    .int64 = pq_int64,
    .is_null = pg_is_null,
    .ncols = pg_ncols,
    .blob = pg_blob,
};
#endif
