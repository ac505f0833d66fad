/*
 * Private to the PostgreSQL store adapter: the handle, the connection pool and
 * the helpers the files of src/store/pg share.
 *
 * Threads: callers of the synchronous operations borrow a pooled connection
 * (blocking their own thread, as the embedded log's fdatasync does); at most
 * `append_lanes` appending callers lead at once, the others' appends join their
 * batches (group commit); async appends
 * are run by `pool_size` worker threads and finished on the caller's loop through
 * ag__store_loop_complete; one listener thread LISTENs for appends, keeps `head`
 * (the number of ordered events) current for wait_head and orders events whose
 * appender went away; one sequencer thread settles the appends of this process:
 * an append, once committed, queues a `pg_wait` (its first global_position) and
 * sleeps; every batch's resolve right behind its commit looks up the queued waits,
 * and when none has ended for a pause (250 µs doubling to 2 ms) the sequencer
 * numbers and looks up every queued wait in one round trip (`resolve`) and wakes
 * them. No libpq call ever runs on a caller's libuv loop.
 */
#ifndef AGORA_STORE_PG_INTERNAL_H
#define AGORA_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>

#include "agora/store_pg.h"
#include "store/internal.h"

#define PG_POOL_MAX 64
#ifndef PG_APPEND_LANES
/* default append_lanes: each batch costs the server ~1.6 ms of CPU whatever its size
 * (two transactions, a commit's flush); 4 lanes split 64 waiting writers into
 * batches of ~10 events, 2 into ~19 (docs/internals/store.md, Performance) */
#define PG_APPEND_LANES 2
#endif

struct pg_conn {
    PGconn *c;
    bool busy;
    const PGconn *prepared_for;       /* the session the append statements are prepared on */
    const PGconn *reads_prepared_for; /* the session the read statements are prepared on */
    uint64_t retry_at_ns;             /* monotonic: no reconnect attempt before this */
};

struct pg_job {
    struct ag_append_req *req;        /* single-stream */
    struct ag_append_multi_req *mreq; /* or multi-stream */
    struct pg_job *next;
};

/* An append committed and waiting for its $all position (on the caller's stack). */
struct pg_wait {
    int64_t gp;  /* the global_position of its first event */
    int64_t pos; /* its $all position once known */
    int rc;      /* set with done: 0, or why it cannot be known (AG_EUNAVAILABLE) */
    bool done;
    struct pg_wait *next;
};

/* A (global_position, position) pair a resolve returned, kept in a direct-mapped
 * table (PG_RECENT, by gp) for the append that waits for it only after it came: of
 * overlapping batches the last to commit numbers the others' events, often before
 * their callers have queued their waits. */
#define PG_RECENT 4096
struct pg_recent {
    int64_t gp, pos; /* gp 0: empty (global positions start at 1) */
};

/* $all read ahead (ops.c): a sequential forward reader's next position, and rows
 * read past its page (positions first .. first + rows - 1), kept to cut its next
 * pages from without a round trip. */
#define PG_RA_SLOTS 4
#define PG_RA_ROWS  8192 /* at most this many rows asked at once (and kept per slot) */
#define PG_RA_PAGES 4    /* pages asked at once by a sequential reader */
struct pg_ra {
    uint64_t expect; /* where its reader reads next */
    uint64_t used;   /* ra_tick of its last use; 0: free */
    PGresult *r;     /* NULL: nothing kept */
    uint64_t first;
    int rows;
};

/* One caller's append, queued for group commit: whoever holds a connection next
 * runs every queued append in one transaction (append_batch). */
struct pg_req {
    const struct ag_append_part *parts;
    size_t nparts, nevents;
    struct ag_append_result *out;
    int64_t gp[AG_STORE_MULTI_MAX][2];  /* each part's first and last global_position */
    int64_t pos[AG_STORE_MULTI_MAX][2]; /* their $all positions, when `positioned` */
    bool positioned;
    struct ag_err err; /* the verdict when rc != 0 */
    int rc;
    bool done;
    bool leader;       /* its caller holds a lane */
    pthread_cond_t cv; /* its caller sleeps here (s->lock) */
    struct pg_req *next;
};

struct pg_store {
    struct ag_store base;
    char *conninfo;   /* what libpq gets (agora's parameters removed) */
    char schema[64];  /* validated identifier */
    char channel[80]; /* LISTEN/NOTIFY channel: <schema>_events */
    char stmt_timeout[32], idle_timeout[32];
    size_t pool_size;
    size_t append_lanes;        /* at most this many append batches run at once (URI) */
    uint64_t append_timeout_ns; /* an append waits this long for its position */
    const struct ag_clock *clock;
    const struct ag_rng *rng;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t conn_free, head_moved, jobs_cond;
    struct pg_conn pool[PG_POOL_MAX];
    uint64_t head; /* ordered events known (= next position) */
    bool closing;
    struct pg_job *jobs, *jobs_tail;
    size_t running; /* jobs being run by a worker */
    pthread_t workers[PG_POOL_MAX];
    size_t nworkers;
    pthread_t listener;
    bool listener_started;
    /* the sequencer thread and the appends waiting for it */
    pthread_cond_t seq_cond, resolved;
    struct pg_wait *waits;
    struct pg_recent recent[PG_RECENT]; /* pairs resolves returned lately */
    pthread_t sequencer;
    bool sequencer_started;
    uint64_t resolves;    /* round trips of the sequencer (stats: batching) */
    uint64_t resolved_ns; /* ag__pg_now_ns when the last resolve covering every wait ended */
    struct pg_req *pending, *pending_tail; /* appends waiting for a connection */
    size_t leaders;                        /* callers running batches (<= append_lanes) */
    size_t borrowers;                      /* callers waiting in ag__pg_borrow_unless */
    /* $all read ahead: its own lock (reads never wait for appends) */
    pthread_mutex_t ra_lock;
    struct pg_ra ra[PG_RA_SLOTS];
    uint64_t ra_tick;
    /* health */
    struct ag_store_health health;
    uint64_t backoff_ns;
    uint64_t appends, commits;
};

/* Split `uri` into the libpq conninfo and agora's parameters (into `s`). */
int ag__pg_parse_uri(struct pg_store *s, const char *uri, struct ag_err *err);
/* Connect one session (search_path, timeouts). AG_EUNAVAILABLE with libpq's message. */
int ag__pg_connect(const struct pg_store *s, PGconn **out, struct ag_err *err);
/* Migrate the schema on `c` (under an advisory lock). `apply`: run missing steps. */
int ag__pg_migrate(PGconn *c, const char *schema, bool apply, int *from, int *to,
                   struct ag_err *err);

/* Borrow / return a pooled connection. Borrowing fails fast (AG_EUNAVAILABLE) while
 * the server is unreachable and the next retry is not due. */
int ag__pg_borrow(struct pg_store *s, struct pg_conn **out, struct ag_err *err);
/* The same, but gives up (0 and *out NULL) once *stop is true (read under the lock;
 * whoever sets it broadcasts conn_free). */
int ag__pg_borrow_unless(struct pg_store *s, struct pg_conn **out, const bool *stop,
                         struct ag_err *err);
void ag__pg_return(struct pg_store *s, struct pg_conn *pc);
/* Map a failed result (or a NULL one) to an AG_E* code and message; marks the store
 * unavailable when the connection is gone. Clears `res`. */
int ag__pg_fail(struct pg_store *s, struct pg_conn *pc, PGresult *res, const char *what,
                struct ag_err *err);
void ag__pg_mark_ok(struct pg_store *s);
/* Raise the known head to at least `head` and wake wait_head callers. */
void ag__pg_head_advance(struct pg_store *s, uint64_t head);
/* Wait up to `us` for the head to pass `after`. */
void ag__pg_wait_head_for(struct pg_store *s, uint64_t after, uint64_t us);

/* the operations (ops.c) */
int ag__pg_append_multi(struct ag_store *st, const struct ag_append_part *parts, size_t nparts,
                        struct ag_append_result *out, struct ag_err *err);
void *ag__pg_listener(void *arg);
void *ag__pg_sequencer(void *arg);
/* Queue w[0..n) for the sequencer and wait until all are resolved, or the append
 * timeout (AG_ETIMEDOUT), or the sequencer lost the server (AG_EUNAVAILABLE). */
int ag__pg_wait_positions(struct pg_store *s, struct pg_wait *w, size_t n, struct ag_err *err);
/* Hand the (gp, pos) rows of a resolve result to the waiting appends they settle.
 * `covered`: the resolve looked up every wait queued when its batch was formed, so
 * the sequencer thread waits a pause from now before it polls. */
void ag__pg_take_resolved(struct pg_store *s, const PGresult *r, bool covered);
/* CLOCK_MONOTONIC in ns (pacing of the sequencer thread: real time, not the
 * store's injectable clock). */
uint64_t ag__pg_now_ns(void);
void *ag__pg_worker(void *arg);
int ag__pg_health(struct ag_store *st, struct ag_store_health *out);
int ag__pg_wait_head(struct ag_store *st, uint64_t after, int timeout_ms);
int ag__pg_append_async(struct ag_store *st, struct ag_append_req *req);
int ag__pg_append_multi_async(struct ag_store *st, struct ag_append_multi_req *m);
void ag__pg_close(struct ag_store *st);
/* Free what the read-ahead slots keep (close). */
void ag__pg_ra_free(struct pg_store *s);
extern const struct ag_store_ops ag__pg_ops;

#endif
