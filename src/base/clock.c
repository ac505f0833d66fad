/* The real and the fake clock, RFC 3339 formatting. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "agora/base.h"

static uint64_t ts_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sys_now(void *ctx)
{
    AG_UNUSED(ctx);
    return ts_ns(CLOCK_REALTIME);
}

static uint64_t sys_mono(void *ctx)
{
    AG_UNUSED(ctx);
    return ts_ns(CLOCK_MONOTONIC);
}

static const struct ag_clock system_clock = {sys_now, sys_mono, NULL};

const struct ag_clock *ag_clock_system(void)
{
    return &system_clock;
}

static uint64_t fake_now(void *ctx)
{
    return ((struct ag_fake_clock *)ctx)->now_ns;
}
static uint64_t fake_mono(void *ctx)
{
    return ((struct ag_fake_clock *)ctx)->mono_ns;
}

void ag_fake_clock_init(struct ag_fake_clock *fc, uint64_t start_wall_ns)
{
    fc->clock.now_ns = fake_now;
    fc->clock.mono_ns = fake_mono;
    fc->clock.ctx = fc;
    fc->now_ns = start_wall_ns;
    fc->mono_ns = 1000000000ull; /* non-zero so "0 = never" sentinels stay distinct */
}

void ag_fake_clock_advance(struct ag_fake_clock *fc, uint64_t ns)
{
    fc->now_ns += ns;
    fc->mono_ns += ns;
}

size_t ag_time_rfc3339(uint64_t unix_ns, char out[32])
{
    time_t secs = (time_t)(unix_ns / 1000000000ull);
    unsigned us = (unsigned)((unix_ns % 1000000000ull) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
    return n > 0 ? (size_t)n : 0;
}

static void deadline(clockid_t id, struct timespec *ts, long ms)
{
    clock_gettime(id, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

void ag_deadline_in_ms(void *out, long ms)
{
    deadline(CLOCK_REALTIME, out, ms);
}

void ag_deadline_mono_in_ms(void *out, long ms)
{
    deadline(CLOCK_MONOTONIC, out, ms);
}

int ag_cond_init_mono(void *cond)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a)) return AG_ENOMEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
    return rc ? AG_ENOMEM : 0;
}
