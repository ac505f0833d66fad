/*
 * Segment preallocation: a filler thread zero-fills the last segment ahead of the
 * writer, so an append's fdatasync writes data into blocks that already exist
 * inside the file's size and does not also commit a size change or a block
 * allocation to the filesystem journal.
 *
 * The filler writes real zeros (fallocate would leave unwritten extents, whose
 * conversion is itself a journalled change at the writer's fdatasync), in steps
 * of LOG_PA_STEP, each followed by its own fdatasync, until the file reaches the
 * writer's end plus LOG_PA_AHEAD (never past segment_bytes); it wakes again when
 * the writer comes within half of that. It writes through its own descriptor:
 * a writeback error its fdatasync collects is still reported to the writer's
 * fdatasync (errors are tracked per open file), so the writer never acknowledges
 * bytes the filler saw fail.
 *
 * Who writes where (under pa_lock): the writer announces the end of each group
 * before its pwrite (`pa_hi`); the filler only writes at or after both `pa_hi`
 * and what exists (`pa_filled`), marks the range it is writing (`pa_busy_*`),
 * and the writer waits only when its group would overlap that range (the filler
 * fell behind). Zeros therefore never land on records.
 *
 * Failures: the filler is best effort and never fails an append. It leaves the
 * last LOG_PA_RESERVE bytes of free space alone (a nearly full disk belongs to
 * the records and the read models). ENOSPC or any error stops it (one info line); appends go on
 * into the zeros already there and then extend the file as without preallocation. It starts again
 * at the next segment and after a write outage ends. During an outage it is paused (the writer cuts
 * the tail back to `end`; see WRITE FAILURES in log.c). Recovery at open treats zeros after the
 * last record as a clean end (scan.c). Nothing of this runs under opts.no_sync or read-only.
 * The filler runs at nice PREALLOC_NICE (ag_thread_background): its 16 MiB lead
 * leaves it time, and its CPU should not come from requests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/log/internal.h"

#define PREALLOC_NICE 5

#define LOG_PA_STEP  (1u << 20)  /* bytes per zero write (+ fdatasync) */
#define LOG_PA_AHEAD (16u << 20) /* how far ahead of the writer the file is filled */
/* free space the filler never takes: a nearly full disk is left to the records,
 * the read models and the checkpoint (the filler skips, and looks again once the
 * writer has used half of LOG_PA_AHEAD) */
#define LOG_PA_RESERVE (256ull << 20)

static uint64_t pa_ahead(const struct lstore *ls)
{
    return AG_MIN((uint64_t)LOG_PA_AHEAD, ls->base.opts.segment_bytes / 2);
}

/* Open the filler's own descriptor on the last segment (pa_lock held). */
static void pa_attach(struct lstore *ls)
{
    const struct lseg *sg = &ls->segs[ls->nsegs - 1];
    char name[40];
    snprintf(name, sizeof name, "seg-%020llu.log", (unsigned long long)sg->segno);
    if (ls->pa_fd >= 0) close(ls->pa_fd);
    ls->pa_fd = openat(ls->dir_fd, name, O_WRONLY | O_CLOEXEC);
    struct stat st;
    ls->pa_filled = ls->pa_fd >= 0 && fstat(ls->pa_fd, &st) == 0 ? (uint64_t)st.st_size : sg->end;
    ls->pa_hi = sg->end;
    ls->pa_skip_below = 0;
    ls->pa_stopped = ls->pa_fd < 0;
}

/* The filler's next range [*from, *to), or false when there is nothing to do. */
static bool pa_next(const struct lstore *ls, uint64_t *from, uint64_t *to)
{
    if (ls->pa_stopped || ls->pa_paused || ls->pa_fd < 0 || ls->pa_hi < ls->pa_skip_below)
        return false;
    uint64_t at = AG_MAX(ls->pa_filled, ls->pa_hi);
    uint64_t goal = AG_MIN(ls->pa_hi + pa_ahead(ls), ls->base.opts.segment_bytes);
    if (at >= goal) return false;
    /* after a fill, sleep until the writer has used half of what is ahead */
    if (!ls->pa_filling && at - ls->pa_hi >= pa_ahead(ls) / 2) return false;
    *from = at;
    *to = AG_MIN(at + LOG_PA_STEP, goal);
    return true;
}

static bool pa_room(int fd, uint64_t bytes)
{
    struct statvfs v;
    return fstatvfs(fd, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize >= bytes + LOG_PA_RESERVE;
}

static int pa_fill(int fd, uint64_t from, uint64_t to, uint64_t *done)
{
    static const uint8_t zeros[64u << 10];
    *done = from;
    if (!pa_room(fd, to - from)) return EAGAIN;
    while (*done < to) {
        size_t n = (size_t)AG_MIN((uint64_t)sizeof zeros, to - *done);
        ssize_t w = pwrite(fd, zeros, n, (off_t)*done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? errno : ENOSPC;
        *done += (uint64_t)w;
    }
    return fdatasync(fd) ? errno : 0;
}

static void *pa_main(void *arg)
{
    struct lstore *ls = arg;
    ag_thread_background("ag-prealloc", PREALLOC_NICE, false);
    pthread_mutex_lock(&ls->pa_lock);
    for (;;) {
        uint64_t from, to;
        while (!ls->pa_quit && !pa_next(ls, &from, &to)) {
            ls->pa_filling = false;
            pthread_cond_wait(&ls->pa_cond, &ls->pa_lock);
        }
        if (ls->pa_quit) break;
        ls->pa_filling = true;
        ls->pa_busy_from = from;
        ls->pa_busy_to = to;
        int fd = ls->pa_fd;
        pthread_mutex_unlock(&ls->pa_lock);
        uint64_t done;
        int e = pa_fill(fd, from, to, &done);
        pthread_mutex_lock(&ls->pa_lock);
        ls->pa_busy_from = ls->pa_busy_to = 0;
        pthread_cond_broadcast(&ls->pa_cond);
        if (ls->pa_paused) continue; /* the writer cuts the tail back: `filled` is reset */
        if (done > ls->pa_filled) ls->pa_filled = done;
        if (e == EAGAIN) { /* the disk is nearly full: not now */
            ls->pa_skip_below = ls->pa_hi + pa_ahead(ls) / 2;
            ls->pa_filling = false;
        } else if (e) {
            ls->pa_stopped = true;
            AG_INFO("store.prealloc_stopped", AG_LS("dir", ls->dir), AG_LS("error", strerror(e)),
                    AG_LU("offset", done),
                    AG_LS("effect", "appends go on; the segment grows as it is written"));
        }
    }
    pthread_mutex_unlock(&ls->pa_lock);
    return NULL;
}

int ag__log_pa_start(struct lstore *ls)
{
    ls->pa_fd = -1;
    if (ls->read_only || ls->base.opts.no_sync || !ls->nsegs) return 0;
    pthread_mutex_lock(&ls->pa_lock);
    pa_attach(ls);
    pthread_mutex_unlock(&ls->pa_lock);
    if (pthread_create(&ls->pa_thread, NULL, pa_main, ls) != 0) return AG_ENOMEM;
    ls->pa_started = true;
    return 0;
}

void ag__log_pa_stop(struct lstore *ls)
{
    if (ls->pa_started) {
        pthread_mutex_lock(&ls->pa_lock);
        ls->pa_quit = true;
        pthread_cond_broadcast(&ls->pa_cond);
        pthread_mutex_unlock(&ls->pa_lock);
        pthread_join(ls->pa_thread, NULL);
        ls->pa_started = false;
    }
    if (ls->pa_fd >= 0) close(ls->pa_fd);
    ls->pa_fd = -1;
}

void ag__log_pa_before_write(struct lstore *ls, uint64_t end)
{
    if (!ls->pa_started) return;
    pthread_mutex_lock(&ls->pa_lock);
    uint64_t start = ls->segs[ls->nsegs - 1].end;
    while (ls->pa_busy_to && ls->pa_busy_from < end && start < ls->pa_busy_to)
        pthread_cond_wait(&ls->pa_cond, &ls->pa_lock);
    if (end > ls->pa_hi) ls->pa_hi = end;
    uint64_t from, to; /* wake the filler only when it has something to do */
    if (!ls->pa_filling && pa_next(ls, &from, &to)) pthread_cond_signal(&ls->pa_cond);
    pthread_mutex_unlock(&ls->pa_lock);
}

void ag__log_pa_pause(struct lstore *ls)
{
    if (!ls->pa_started) return;
    pthread_mutex_lock(&ls->pa_lock);
    ls->pa_paused = true;
    while (ls->pa_busy_to) pthread_cond_wait(&ls->pa_cond, &ls->pa_lock);
    pthread_mutex_unlock(&ls->pa_lock);
}

void ag__log_pa_reset(struct lstore *ls)
{
    if (!ls->pa_started) return;
    pthread_mutex_lock(&ls->pa_lock);
    while (ls->pa_busy_to) pthread_cond_wait(&ls->pa_cond, &ls->pa_lock);
    ls->pa_paused = false;
    pa_attach(ls);
    pthread_cond_signal(&ls->pa_cond);
    pthread_mutex_unlock(&ls->pa_lock);
}
