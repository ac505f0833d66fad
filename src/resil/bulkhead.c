/*
 * Bulkhead: at most `max_concurrent` calls at once, and at most `max_queue` more
 * waiting in FIFO order for up to `max_wait_ns`.
 *
 * One mutex guards the counters and the queue. A release with waiters hands the
 * slot straight to the queue head (active stays the same), so a newcomer can
 * never overtake a waiter. Synchronous waiters block on their own condition
 * variable (the node lives on the waiter's stack and is signalled under the lock,
 * so it cannot be freed under the releaser); asynchronous waiters (the libuv
 * pipeline) are granted by a callback made after the lock is dropped.
 *
 * Waiting is measured on the injected clock: the real timed wait is only a bound
 * on sleeping, after which the waiter re-reads the clock. With a fake clock a test
 * advances time and calls ag_bulkhead_wake so waiters notice.
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "resil/internal.h"

struct ag_bulkhead {
    pthread_mutex_t lock;              /* guards everything below */
    uint32_t active;                   /* slots held */
    uint32_t waiting;                  /* queued waiters */
    struct ag__bh_waiter *head, *tail; /* FIFO queue */
    struct ag_bulkhead_config cfg;     /* copy */
    char *name;                        /* owned copy of cfg.name */
};

/* A blocked synchronous caller (on its stack). */
struct sync_waiter {
    struct ag__bh_waiter w; /* queue node; w.granted unused */
    pthread_cond_t cond;    /* signalled on grant and on wake */
    bool granted;           /* the slot was handed over (under lock) */
};

int ag_bulkhead_new(const struct ag_bulkhead_config *cfg, struct ag_bulkhead **out,
                    struct ag_err *err)
{
    if (cfg->max_concurrent == 0)
        return ag_err_set(err, AG_EINVAL, "bulkhead: max_concurrent must be >= 1");
    struct ag_bulkhead *bh = ag_calloc(1, sizeof *bh);
    if (!bh) goto out_nomem;
    bh->cfg = *cfg;
    bh->cfg.clock = ag__resil_clock(cfg->clock);
    bh->name = ag_strdup(cfg->name ? cfg->name : "bulkhead");
    if (!bh->name || pthread_mutex_init(&bh->lock, NULL)) goto out_free_bh;
    bh->cfg.name = bh->name;
    *out = bh;
    return 0;
out_free_bh:
    ag_free(bh->name);
    ag_free(bh);
out_nomem:
    return ag_err_set(err, AG_ENOMEM, "bulkhead: out of memory");
}

void ag_bulkhead_free(struct ag_bulkhead *bh)
{
    if (!bh) return;
    pthread_mutex_destroy(&bh->lock);
    ag_free(bh->name);
    ag_free(bh);
}

static void queue_push(struct ag_bulkhead *bh, struct ag__bh_waiter *w)
{
    w->next = NULL;
    if (bh->tail)
        bh->tail->next = w;
    else
        bh->head = w;
    bh->tail = w;
    bh->waiting++;
}

static bool queue_remove(struct ag_bulkhead *bh, struct ag__bh_waiter *w)
{
    struct ag__bh_waiter *prev = NULL;
    for (struct ag__bh_waiter *p = bh->head; p; prev = p, p = p->next) {
        if (p != w) continue;
        if (prev)
            prev->next = p->next;
        else
            bh->head = p->next;
        if (bh->tail == p) bh->tail = prev;
        bh->waiting--;
        return true;
    }
    return false;
}

static int rejected(struct ag_bulkhead *bh, struct ag_err *err, const char *why)
{
    ag__hook_rejected(bh->cfg.hooks, bh->name, AG_EBULKHEAD_FULL);
    return ag_err_set(err, AG_EBULKHEAD_FULL, "bulkhead '%s': %s", bh->name, why);
}

int ag_bulkhead_try_acquire(struct ag_bulkhead *bh)
{
    pthread_mutex_lock(&bh->lock);
    bool ok = bh->active < bh->cfg.max_concurrent && !bh->head;
    if (ok) bh->active++;
    pthread_mutex_unlock(&bh->lock);
    return ok ? 0 : rejected(bh, NULL, "no free slot");
}

/* Block on `sw` until granted or `deadline` (0 = none) passes on the clock. */
static void wait_for_grant(struct ag_bulkhead *bh, struct sync_waiter *sw, uint64_t deadline)
{
    while (!sw->granted) {
        uint64_t now = ag_clock_mono(bh->cfg.clock);
        if (deadline && now >= deadline) return;
        if (!deadline) {
            pthread_cond_wait(&sw->cond, &bh->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t left = deadline - now;
        uint64_t ns = (uint64_t)ts.tv_nsec + left % 1000000000ull;
        ts.tv_sec += (time_t)(left / 1000000000ull + ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&sw->cond, &bh->lock, &ts);
    }
}

static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a)) return AG_ENOMEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc ? AG_ENOMEM : 0;
}

int ag_bulkhead_acquire(struct ag_bulkhead *bh, uint64_t deadline_ns, struct ag_err *err)
{
    struct sync_waiter sw = {.granted = false};
    pthread_mutex_lock(&bh->lock);
    if (bh->active < bh->cfg.max_concurrent && !bh->head) {
        bh->active++;
        pthread_mutex_unlock(&bh->lock);
        return 0;
    }
    if (bh->waiting >= bh->cfg.max_queue) {
        pthread_mutex_unlock(&bh->lock);
        return rejected(bh, err, "all slots busy and the queue is full");
    }
    uint64_t deadline = deadline_ns;
    if (bh->cfg.max_wait_ns) {
        uint64_t d = ag__sat_add(ag_clock_mono(bh->cfg.clock), bh->cfg.max_wait_ns);
        if (!deadline || d < deadline) deadline = d;
    }
    if (cond_init_mono(&sw.cond)) {
        pthread_mutex_unlock(&bh->lock);
        return ag_err_set(err, AG_ENOMEM, "bulkhead: cannot create a condition variable");
    }
    queue_push(bh, &sw.w);
    wait_for_grant(bh, &sw, deadline);
    bool ok = sw.granted || !queue_remove(bh, &sw.w);
    pthread_mutex_unlock(&bh->lock);
    pthread_cond_destroy(&sw.cond);
    return ok ? 0 : rejected(bh, err, "waited too long for a slot");
}

void ag_bulkhead_release(struct ag_bulkhead *bh)
{
    pthread_mutex_lock(&bh->lock);
    struct ag__bh_waiter *w = bh->head;
    if (!w) {
        if (bh->active) bh->active--;
        pthread_mutex_unlock(&bh->lock);
        return;
    }
    bh->head = w->next;
    if (!bh->head) bh->tail = NULL;
    bh->waiting--;
    if (!w->granted) { /* a synchronous waiter: wake it while we hold the lock */
        struct sync_waiter *sw = (struct sync_waiter *)w;
        sw->granted = true;
        pthread_cond_signal(&sw->cond);
        pthread_mutex_unlock(&bh->lock);
        return;
    }
    pthread_mutex_unlock(&bh->lock);
    w->granted(w);
}

void ag_bulkhead_wake(struct ag_bulkhead *bh)
{
    pthread_mutex_lock(&bh->lock);
    for (struct ag__bh_waiter *w = bh->head; w; w = w->next)
        if (!w->granted) pthread_cond_broadcast(&((struct sync_waiter *)w)->cond);
    pthread_mutex_unlock(&bh->lock);
}

void ag_bulkhead_stats(struct ag_bulkhead *bh, struct ag_bulkhead_stats *out)
{
    pthread_mutex_lock(&bh->lock);
    out->active = bh->active;
    out->waiting = bh->waiting;
    pthread_mutex_unlock(&bh->lock);
}

/* ---- async waiters ---- */

int ag__bulkhead_enqueue(struct ag_bulkhead *bh, struct ag__bh_waiter *w)
{
    int rc = 1;
    pthread_mutex_lock(&bh->lock);
    if (bh->active < bh->cfg.max_concurrent && !bh->head) {
        bh->active++;
        rc = 0;
    } else if (bh->waiting >= bh->cfg.max_queue) {
        rc = AG_EBULKHEAD_FULL;
    } else {
        queue_push(bh, w);
    }
    pthread_mutex_unlock(&bh->lock);
    if (rc == AG_EBULKHEAD_FULL) ag__hook_rejected(bh->cfg.hooks, bh->name, rc);
    return rc;
}

bool ag__bulkhead_cancel(struct ag_bulkhead *bh, struct ag__bh_waiter *w)
{
    pthread_mutex_lock(&bh->lock);
    bool removed = queue_remove(bh, w);
    pthread_mutex_unlock(&bh->lock);
    return removed;
}

const char *ag__bulkhead_name(const struct ag_bulkhead *bh)
{
    return bh->name;
}
const struct ag_resil_hooks *ag__bulkhead_hooks(const struct ag_bulkhead *bh)
{
    return bh->cfg.hooks;
}
uint64_t ag__bulkhead_max_wait(const struct ag_bulkhead *bh)
{
    return bh->cfg.max_wait_ns;
}
