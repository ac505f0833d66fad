/*
 * Blocking reads (issue 11): a GET with `Prefer: wait=N` and If-None-Match whose
 * resource still matches is parked here, holding no thread, until the resource
 * changes, N seconds pass, the client goes away or the server drains.
 *
 * Registry. Waiters hang in buckets by hash of their key (a resource id) under
 * one mutex; the count of parked requests is bounded (over it the request is
 * answered 503 with Retry-After). Each waiter lives on its request's loop with
 * two handles: a timer (its deadline) and an async (its wake-up from the
 * notifier thread). The notifier sends only to a waiter still linked, under the
 * mutex, and a waiter is unlinked under the mutex before its handles close, so
 * no send can reach a closed handle.
 *
 * Notification. The resource's projection marks each key it touches while it
 * applies a page (svc_waiters_mark, its own thread, no lock) and, once the
 * page's transaction committed (ag_projection.committed), bumps the keys'
 * change sequences and wakes their waiters: the woken request runs its handler
 * again on the threadpool, which reads the committed row. A page rolled back
 * keeps its marks for the next commit (a spurious wake-up re-reads and parks
 * again: harmless).
 *
 * Lost wake-ups. A change can commit between the handler's read and the park.
 * So each key hashes to one of SEQ_SLOTS change sequences: the job reads its
 * key's sequence before its handler reads (svc_waiters_seq) and svc_wait_park
 * compares, under the mutex: moved means re-run now, not park. Slots are
 * shared by hash, so a collision costs a re-read, never a missed change.
 *
 * Stale snapshots. The shared read-only query handle is one SQLite connection,
 * and its read snapshot lasts while any query thread has a statement open on it:
 * under load a re-read right after the wake-up could still see the row before
 * the commit, and park again for the whole wait. So a woken job is flagged
 * (svc_job.wait_woken) and its handler reads with svc_rm_query_fresh.
 *
 * Counted wake-ups. svc_waiters_wake (any thread) bumps a key's sequence and
 * wakes at most n of its waiters, the oldest first: admission.c parks POSTs that
 * wait for a free slot on one key and wakes one per slot freed.
 *
 * Ending. Deadline or abort (EOF, close, drain; ag_http_req_on_abort): the job
 * is answered as its handler left it (304 with the ETag). Woken: the job runs
 * again (or, when the client went away meanwhile, is answered at once).
 */
#include <stdatomic.h>
#include <string.h>

#include "services/internal.h"

#define BUCKETS   1024
#define SEQ_SLOTS 4096
#define MARKS_MAX 4096 /* keys marked in one page; past that every waiter is woken */

struct waiter {
    struct svc_waiters *reg;
    struct svc_job *j;          /* the parked job (NULL once handed back) */
    uint64_t *seq;              /* the job's copy of its key's sequence */
    uv_timer_t timer;           /* deadline */
    uv_async_t async;           /* woken by the notifier */
    int open;                   /* handles not closed yet */
    bool linked;                /* in a bucket (under the mutex) */
    bool aborted;               /* the client went away after the wake-up was sent */
    struct waiter *prev, *next; /* bucket list */
    uint32_t bucket;
    char key[128];
};

struct svc_waiters {
    pthread_mutex_t lock;
    struct waiter *buckets[BUCKETS];
    uint32_t count; /* linked waiters */
    uint32_t max;
    _Atomic uint64_t seq[SEQ_SLOTS];
    /* the notifier thread's marks of the page being applied */
    char (*marks)[128];
    size_t nmarks;
    bool overflow;
};

int svc_waiters_new(uint32_t max, struct svc_waiters **out)
{
    struct svc_waiters *w = ag_calloc(1, sizeof *w);
    if (!w) return AG_ENOMEM;
    w->marks = ag_calloc(MARKS_MAX, sizeof *w->marks);
    if (!w->marks) {
        ag_free(w);
        return AG_ENOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    w->max = max ? max : SVC_WAITERS_DEFAULT;
    *out = w;
    return 0;
}

void svc_waiters_free(struct svc_waiters *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->lock);
    ag_free(w->marks);
    ag_free(w);
}

static uint64_t key_hash(const char *key)
{
    return key ? ag_xxh3(key, strlen(key)) : 0;
}

uint64_t svc_waiters_seq(struct svc_waiters *w, const char *key)
{
    return w ? atomic_load(&w->seq[key_hash(key) % SEQ_SLOTS]) : 0;
}

uint32_t svc_waiters_count(struct svc_waiters *w)
{
    if (!w) return 0;
    pthread_mutex_lock(&w->lock);
    uint32_t n = w->count;
    pthread_mutex_unlock(&w->lock);
    return n;
}

void svc_waiters_mark(struct svc_waiters *w, const char *key)
{
    if (!w) return;
    if (w->nmarks == MARKS_MAX || strlen(key) >= sizeof w->marks[0]) {
        w->overflow = true;
        return;
    }
    memcpy(w->marks[w->nmarks++], key, strlen(key) + 1);
}

/* Under the mutex. */
static void unlink_waiter(struct svc_waiters *w, struct waiter *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        w->buckets[x->bucket] = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
    x->linked = false;
    w->count--;
}

/* Under the mutex: wake the waiters of bucket b whose key is `key` (NULL: all). */
static void wake_bucket(struct svc_waiters *w, uint32_t b, const char *key)
{
    for (struct waiter *x = w->buckets[b], *n; x; x = n) {
        n = x->next;
        if (key && strcmp(x->key, key) != 0) continue;
        unlink_waiter(w, x);
        uv_async_send(&x->async);
    }
}

void svc_waiters_committed(void *ud)
{
    struct svc_waiters *w = ud;
    if (!w || (!w->nmarks && !w->overflow)) return;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->nmarks; i++) {
        uint64_t h = key_hash(w->marks[i]);
        atomic_fetch_add(&w->seq[h % SEQ_SLOTS], 1);
        wake_bucket(w, (uint32_t)(h % BUCKETS), w->marks[i]);
    }
    if (w->overflow) {
        for (size_t i = 0; i < SEQ_SLOTS; i++) atomic_fetch_add(&w->seq[i], 1);
        for (uint32_t b = 0; b < BUCKETS; b++) wake_bucket(w, b, NULL);
    }
    pthread_mutex_unlock(&w->lock);
    w->nmarks = 0;
    w->overflow = false;
}

void svc_waiters_wake(struct svc_waiters *w, const char *key, uint32_t n)
{
    if (!w || !n) return;
    uint64_t h = key_hash(key);
    uint32_t b = (uint32_t)(h % BUCKETS), m = 0;
    pthread_mutex_lock(&w->lock);
    atomic_fetch_add(&w->seq[h % SEQ_SLOTS], 1);
    for (struct waiter *x = w->buckets[b]; x; x = x->next) m += strcmp(x->key, key) == 0;
    /* the list is newest first: skip the m - n newest, wake the n oldest */
    for (struct waiter *x = w->buckets[b], *nx; x && n; x = nx) {
        nx = x->next;
        if (strcmp(x->key, key) != 0) continue;
        if (m-- > n) continue;
        unlink_waiter(w, x);
        uv_async_send(&x->async);
        n--;
    }
    pthread_mutex_unlock(&w->lock);
}

/* ---- a waiter on its loop ---- */

static void handle_closed(uv_handle_t *h)
{
    struct waiter *x = h->data;
    if (--x->open == 0) ag_free(x);
}

static void release(struct waiter *x)
{
    uv_close((uv_handle_t *)&x->timer, handle_closed);
    uv_close((uv_handle_t *)&x->async, handle_closed);
}

/* Deadline or abort: answer the job as its handler left it, if still parked. */
static void expire(struct waiter *x, bool abort)
{
    struct svc_waiters *w = x->reg;
    pthread_mutex_lock(&w->lock);
    bool parked = x->linked;
    if (parked) unlink_waiter(w, x);
    pthread_mutex_unlock(&w->lock);
    if (!parked) {                    /* woken meanwhile: the async callback comes next */
        if (abort) x->aborted = true; /* ... and answers; a deadline lets it read */
        return;
    }
    struct svc_job *j = x->j;
    x->j = NULL;
    ag_http_req_on_abort(j->req, NULL, NULL);
    release(x);
    svc_job_answer(j);
}

static void on_deadline(uv_timer_t *t)
{
    expire(t->data, false);
}

static void on_abort(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(req);
    expire(ud, true);
}

static void on_wake(uv_async_t *a)
{
    struct waiter *x = a->data;
    struct svc_job *j = x->j;
    if (!j) return; /* answered already (a second send before the close) */
    x->j = NULL;
    uv_timer_stop(&x->timer);
    ag_http_req_on_abort(j->req, NULL, NULL);
    *x->seq = svc_waiters_seq(x->reg, x->key);
    bool gone = x->aborted;
    release(x);
    j->wait_woken = true; /* its handler reads the committed row (svc_rm_query_fresh) */
    if (gone || svc_job_requeue(j) != 0) svc_job_answer(j); /* as it stands */
}

int svc_wait_park(struct svc_waiters *w, struct svc_job *j, struct ag_http_req *req,
                  const char *key, uint64_t *seq, uint64_t deadline_ns)
{
    if (!w) return AG_EUNSUPPORTED;
    if (strlen(key) >= sizeof((struct waiter *)0)->key) return AG_EINVAL;
    uint64_t now = ag_clock_mono(ag_clock_system());
    struct waiter *x = ag_calloc(1, sizeof *x);
    if (!x) return AG_ENOMEM;
    x->reg = w;
    x->j = j;
    x->seq = seq;
    memcpy(x->key, key, strlen(key) + 1);
    uint64_t h = key_hash(key);
    x->bucket = (uint32_t)(h % BUCKETS);
    uv_loop_t *loop = ag_http_req_loop(req);
    if (ag_http_req_on_abort(req, on_abort, x) != 0) {
        ag_free(x);
        return AG_ECLOSED;
    }
    uv_timer_init(loop, &x->timer);
    uv_async_init(loop, &x->async, on_wake);
    x->timer.data = x->async.data = x;
    x->open = 2;
    /* link under the mutex unless the key changed since the handler read it */
    pthread_mutex_lock(&w->lock);
    bool moved = atomic_load(&w->seq[h % SEQ_SLOTS]) != *seq;
    bool full = !moved && w->count >= w->max;
    if (!moved && !full) {
        x->next = w->buckets[x->bucket];
        if (x->next) x->next->prev = x;
        w->buckets[x->bucket] = x;
        x->linked = true;
        w->count++;
    }
    pthread_mutex_unlock(&w->lock);
    if (moved) {
        uv_async_send(&x->async); /* on_wake runs the handler again, reading fresh */
        return 0;
    }
    if (full) {
        x->j = NULL;
        ag_http_req_on_abort(req, NULL, NULL);
        release(x);
        return AG_EBULKHEAD_FULL;
    }
    uint64_t ms = deadline_ns > now ? (deadline_ns - now + 999999) / 1000000 : 0;
    uv_timer_start(&x->timer, on_deadline, ms, 0);
    return 0;
}
