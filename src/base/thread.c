/*
 * Background threads at a lower priority.
 *
 * Housekeeping threads (the stream index's table flusher and merger, segment
 * preallocation, dictionary training) must not take the CPU or the disk from
 * the threads that answer requests: on a busy 2-core machine a merge that
 * competes at equal weight shows up as a stall in every append's latency.
 * Linux keeps a nice value and an I/O priority per thread, so the thread lowers
 * its own: CPU by setpriority on its tid, I/O by ioprio_set (the idle class
 * gets the disk only when nobody else wants it; mq-deadline and BFQ bound how
 * long it can wait, so it still finishes). Both are best effort: a failure is
 * logged at debug level and the thread runs at normal priority.
 *
 * Names. Every long-lived thread names itself (ag_thread_name, at most 15
 * bytes: "ag-store-writer", "ag-projector", "ag-saga-worker"...), so `top -H`,
 * `perf top --sort comm` and /proc/PID/task/<tid>/comm tell an operator which
 * part of agora is busy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agora/base.h"

#define IOPRIO_WHO_THREAD  1 /* IOPRIO_WHO_PROCESS: a tid names one thread */
#define IOPRIO_CLASS_SHIFT 13
#define IOPRIO_CLASS_IDLE  3

void ag_thread_name(const char *name)
{
    char n[16]; /* the kernel keeps 15 bytes */
    snprintf(n, sizeof n, "%s", name);
    pthread_setname_np(pthread_self(), n);
}

void ag_thread_background(const char *name, int nice_value, bool idle_io)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    ag_thread_name(name);
    if (nice_value > 0 && setpriority(PRIO_PROCESS, (id_t)tid, nice_value) != 0)
        AG_DEBUG("thread.nice_failed", AG_LS("thread", name), AG_LS("error", strerror(errno)));
    if (idle_io && syscall(SYS_ioprio_set, IOPRIO_WHO_THREAD, tid,
                           IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) != 0)
        AG_DEBUG("thread.ioprio_failed", AG_LS("thread", name), AG_LS("error", strerror(errno)));
}
