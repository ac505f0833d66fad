/*
 * The log's I/O layer for segment writes: every pwrite, fdatasync and ftruncate
 * the writer (and recovery) does to a segment goes through here, so a test can make
 * them fail the way a full or failing disk does — ENOSPC, EIO, EROFS, a torn write
 * that stores half its bytes — without a real broken disk.
 *
 * A fault is per kind of call (write, sync): after `after` successful calls, the
 * next `times` calls (0: all) fail with the errno. Truncates count as writes (a
 * read-only file system or a dying disk refuses both; a full one still lets a file
 * shrink, so an ENOSPC fault lets truncates through). The check is one relaxed load of
 * `faults_armed` when no fault was ever armed, so production pays nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "store/log/internal.h"

/* ---- faults ---- */

/* 0 when the call may go ahead, else the errno it must fail with. Counts the call. */
static int fault_hit(struct lstore *ls, enum ag_log_fault_op op, bool *torn)
{
    if (!__atomic_load_n(&ls->faults_armed, __ATOMIC_ACQUIRE)) return 0;
    int e = 0;
    pthread_mutex_lock(&ls->fault_lock);
    struct log_fault_state *f = &ls->faults[op];
    if (f->f.error) {
        uint64_t k = f->seen++;
        if (k >= f->f.after && (f->f.times == 0 || k < f->f.after + f->f.times)) {
            e = f->f.error;
            if (torn) *torn = f->f.torn;
        }
    }
    pthread_mutex_unlock(&ls->fault_lock);
    return e;
}

int ag_store_log_inject_fault(struct ag_store *s, const struct ag_log_fault *f)
{
    if (!s || !f || strcmp(s->ops->name, "log") != 0) return AG_EINVAL;
    if (f->op != AG_LOG_FAULT_WRITE && f->op != AG_LOG_FAULT_SYNC) return AG_EINVAL;
    struct lstore *ls = (struct lstore *)s;
    pthread_mutex_lock(&ls->fault_lock);
    ls->faults[f->op] = (struct log_fault_state){.f = *f, .seen = 0};
    bool any = ls->faults[0].f.error || ls->faults[1].f.error;
    __atomic_store_n(&ls->faults_armed, any, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ls->fault_lock);
    return 0;
}

static int errno_named(const char *name)
{
    if (strcasecmp(name, "enospc") == 0) return ENOSPC;
    if (strcasecmp(name, "eio") == 0) return EIO;
    if (strcasecmp(name, "erofs") == 0) return EROFS;
    return 0;
}

int ag_store_log_parse_fault(const char *spec, struct ag_log_fault *out)
{
    char op[8] = "", en[8] = "", torn[8] = "";
    unsigned long long after = 0, times = 0;
    memset(out, 0, sizeof *out);
    int n = sscanf(spec, "%7[a-z]:%7[a-zA-Z]:%llu:%llu:%7s", op, en, &after, &times, torn);
    if (n < 2) return AG_EINVAL;
    if (strcmp(op, "write") == 0)
        out->op = AG_LOG_FAULT_WRITE;
    else if (strcmp(op, "sync") == 0)
        out->op = AG_LOG_FAULT_SYNC;
    else
        return AG_EINVAL;
    if (!(out->error = errno_named(en))) return AG_EINVAL;
    if (n == 5 && strcmp(torn, "torn") != 0) return AG_EINVAL;
    out->after = after;
    out->times = times;
    out->torn = n == 5;
    return 0;
}

void ag__log_io_faults_from_env(struct lstore *ls)
{
    const char *spec = getenv("AGORA_STORE_FAULT");
    if (!spec || !*spec || ls->read_only) return;
    struct ag_log_fault f;
    if (ag_store_log_parse_fault(spec, &f)) {
        AG_WARN("store.bad_fault_config", AG_LS("variable", "AGORA_STORE_FAULT"),
                AG_LS("value", spec),
                AG_LS("expected", "write|sync:enospc|eio|erofs[:after[:times[:torn]]]"));
        return;
    }
    ag_store_log_inject_fault(&ls->base, &f);
    AG_WARN("store.fault_injection", AG_LS("dir", ls->dir), AG_LS("fault", spec));
}

/* ---- the calls ---- */

int ag__log_io_pwrite(struct lstore *ls, int fd, const void *p, size_t n, uint64_t off)
{
    bool torn = false;
    int e = fault_hit(ls, AG_LOG_FAULT_WRITE, &torn);
    if (e && torn) n /= 2; /* store half, then fail */
    const char *b = p;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EIO;
        b += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return e ? -e : 0;
}

int ag__log_io_sync(struct lstore *ls, int fd)
{
    int e = fault_hit(ls, AG_LOG_FAULT_SYNC, NULL);
    if (e) return -e;
    if (ls->base.opts.no_sync) return 0;
    return fdatasync(fd) == 0 ? 0 : -errno;
}

int ag__log_io_truncate(struct lstore *ls, int fd, uint64_t len)
{
    int e = fault_hit(ls, AG_LOG_FAULT_WRITE, NULL);
    if (e && e != ENOSPC) return -e; /* shrinking a file needs no space */
    return ftruncate(fd, (off_t)len) == 0 ? 0 : -errno;
}
