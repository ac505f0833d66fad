/*
 * Metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * Layout. A registry is a list of families; a family a list of series. Series are
 * appended under the registry mutex and never removed, so a pointer stays valid
 * until the registry is freed and readers never see a half-built series (the list
 * head is published with a release store, walked with acquire loads).
 *
 * Sharding. Each series owns AG__OBS_SHARDS slots, each on its own cache line.
 * A thread picks a shard once (round robin over threads, kept in a thread-local)
 * and only updates that slot with relaxed atomics: with at most one writer per
 * shard in the common case the atomics never contend, and if two threads share a
 * shard they still add correctly. A scrape sums the slots; the sum can be a few
 * updates stale, never wrong in the long run.
 *
 * Doubles (gauge values, histogram sums) are stored as their bit patterns in
 * _Atomic uint64_t and updated with a compare-and-swap loop.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/obs.h"

#define AG__OBS_SHARDS 16

const double ag_obs_default_buckets[13] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1.0,   2.5,  10.0};

/* One shard of a series: counter/gauge use v; histograms use the tail array. */
struct shard {
    _Atomic uint64_t v;       /* counter value, or gauge bits */
    _Atomic uint64_t sum;     /* histogram sum (double bits) */
    _Atomic uint64_t count;   /* histogram observation count */
    _Atomic uint64_t *bucket; /* histogram per-bucket (non-cumulative) counts */
} __attribute__((aligned(64)));

struct ag_obs_series {
    struct ag_obs_series *_Atomic next; /* next series of the family */
    struct ag_obs_family *family;       /* owner */
    char **values;                      /* label values, one per family label */
    _Atomic uint64_t *bucket_mem;       /* shards * (nbounds + 1) bucket counters */
    struct shard shard[AG__OBS_SHARDS]; /* per-thread slots */
};

struct ag_obs_family {
    struct ag_obs_family *_Atomic next;   /* next family of the registry */
    struct ag_obs_registry *reg;          /* owner */
    enum ag_obs_type type;                /* counter, gauge or histogram */
    char *name;                           /* metric name */
    char *help;                           /* HELP text */
    size_t nlabels;                       /* number of label names */
    char *labels[AG_OBS_MAX_LABELS];      /* label names */
    size_t nbounds;                       /* histogram bucket count without +Inf */
    double bounds[AG_OBS_MAX_BUCKETS];    /* histogram upper bounds */
    struct ag_obs_series *_Atomic series; /* newest first */
};

#define MAX_COLLECTORS 8

struct ag_obs_registry {
    pthread_mutex_t lock;                   /* serialises definitions and lookups */
    struct ag_obs_family *_Atomic families; /* newest first */
    pthread_mutex_t collect_lock;           /* serialises collectors and their registration */
    struct {
        ag_obs_collect_fn fn;
        void *ud; /* borrowed */
    } collectors[MAX_COLLECTORS];
    size_t ncollectors;
};

/* ---- shards and doubles ---- */

static _Atomic unsigned next_shard;
static _Thread_local int my_shard = -1;

static inline struct shard *shard_of(struct ag_obs_series *s)
{
    if (AG_UNLIKELY(my_shard < 0))
        my_shard = (int)(atomic_fetch_add(&next_shard, 1) % AG__OBS_SHARDS);
    return &s->shard[my_shard];
}

static inline double bits_dbl(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static inline uint64_t dbl_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static void atomic_add_dbl(_Atomic uint64_t *p, double d)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbl_bits(bits_dbl(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- registry ---- */

int ag_obs_registry_new(struct ag_obs_registry **out)
{
    struct ag_obs_registry *r = ag_calloc(1, sizeof *r);
    if (!r) return AG_ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->collect_lock, NULL);
    *out = r;
    return 0;
}

int ag_obs_registry_collector(struct ag_obs_registry *r, ag_obs_collect_fn fn, void *ud)
{
    if (!fn) return AG_EINVAL;
    pthread_mutex_lock(&r->collect_lock);
    int rc = r->ncollectors < MAX_COLLECTORS ? 0 : AG_ETOOBIG;
    if (!rc) {
        r->collectors[r->ncollectors].fn = fn;
        r->collectors[r->ncollectors++].ud = ud;
    }
    pthread_mutex_unlock(&r->collect_lock);
    return rc;
}

void ag_obs_registry_collector_remove(struct ag_obs_registry *r, ag_obs_collect_fn fn, void *ud)
{
    pthread_mutex_lock(&r->collect_lock);
    for (size_t i = 0; i < r->ncollectors; i++) {
        if (r->collectors[i].fn != fn || r->collectors[i].ud != ud) continue;
        memmove(&r->collectors[i], &r->collectors[i + 1],
                (r->ncollectors - i - 1) * sizeof r->collectors[0]);
        r->ncollectors--;
        break;
    }
    pthread_mutex_unlock(&r->collect_lock);
}

void ag_obs_breaker_state(struct ag_obs_registry *r, const char *scope, const char *name,
                          int cb_state)
{
    static const char *const labels[] = {"scope", "name"};
    static const struct ag_obs_family_spec spec = {
        AG_OBS_GAUGE, "agora_breaker_open",
        "Circuit breakers: 1 open (or forced open), 0.5 half-open, 0 closed, by scope "
        "(gateway: an upstream cluster; saga: a step's participant) and name.",
        2, labels};
    struct ag_obs_family *f;
    struct ag_obs_series *s;
    const char *values[] = {scope, name};
    if (ag_obs_family_define(r, &spec, &f) || ag_obs_series_get(f, values, &s)) return;
    ag_obs_gauge_set(s, cb_state == 1 || cb_state == 4 ? 1.0 : cb_state == 2 ? 0.5 : 0.0);
}

static void series_free(struct ag_obs_series *s, size_t nlabels)
{
    for (size_t i = 0; s->values && i < nlabels; i++) ag_free(s->values[i]);
    ag_free(s->values);
    ag_free(s->bucket_mem);
    ag_free(s);
}

static void family_free(struct ag_obs_family *f)
{
    struct ag_obs_series *s = atomic_load(&f->series);
    while (s) {
        struct ag_obs_series *n = atomic_load(&s->next);
        series_free(s, f->nlabels);
        s = n;
    }
    for (size_t i = 0; i < f->nlabels; i++) ag_free(f->labels[i]);
    ag_free(f->name);
    ag_free(f->help);
    ag_free(f);
}

void ag_obs_registry_free(struct ag_obs_registry *r)
{
    if (!r) return;
    struct ag_obs_family *f = atomic_load(&r->families);
    while (f) {
        struct ag_obs_family *n = atomic_load(&f->next);
        family_free(f);
        f = n;
    }
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->collect_lock);
    ag_free(r);
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s) return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static bool same_shape(const struct ag_obs_family *f, enum ag_obs_type type, size_t nlabels,
                       const char *const *labels)
{
    if (f->type != type || f->nlabels != nlabels) return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0) return false;
    return true;
}

static int check_family_args(const struct ag_obs_family_spec *d)
{
    if (!valid_name(d->name, true) || d->nlabels > AG_OBS_MAX_LABELS) return AG_EINVAL;
    for (size_t i = 0; i < d->nlabels; i++)
        if (!valid_name(d->labels[i], false) || strncmp(d->labels[i], "__", 2) == 0 ||
            (d->type == AG_OBS_HISTOGRAM && strcmp(d->labels[i], "le") == 0))
            return AG_EINVAL;
    if (d->type != AG_OBS_HISTOGRAM || !d->bounds) return 0;
    if (d->nbounds == 0 || d->nbounds > AG_OBS_MAX_BUCKETS) return AG_EINVAL;
    for (size_t i = 0; i < d->nbounds; i++)
        if (!isfinite(d->bounds[i]) || (i > 0 && d->bounds[i] <= d->bounds[i - 1]))
            return AG_EINVAL;
    return 0;
}

static struct ag_obs_family *family_build(const struct ag_obs_family_spec *d)
{
    struct ag_obs_family *f = ag_calloc(1, sizeof *f);
    if (!f) return NULL;
    f->type = d->type;
    f->name = ag_strdup(d->name);
    f->help = ag_strdup(d->help ? d->help : "");
    bool ok = f->name && f->help;
    for (size_t i = 0; i < d->nlabels; i++) {
        f->labels[i] = ag_strdup(d->labels[i]);
        f->nlabels = i + 1;
        ok = ok && f->labels[i];
    }
    if (d->type == AG_OBS_HISTOGRAM) {
        const double *bounds = d->bounds ? d->bounds : ag_obs_default_buckets;
        size_t nbounds = d->bounds ? d->nbounds : AG_ARRAY_SIZE(ag_obs_default_buckets);
        memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
        f->nbounds = nbounds;
    }
    if (!ok) {
        family_free(f);
        return NULL;
    }
    return f;
}

int ag_obs_family_define(struct ag_obs_registry *r, const struct ag_obs_family_spec *spec,
                         struct ag_obs_family **out)
{
    int rc = check_family_args(spec);
    if (rc) return rc;
    pthread_mutex_lock(&r->lock);
    for (struct ag_obs_family *f = atomic_load(&r->families); f; f = atomic_load(&f->next)) {
        if (strcmp(f->name, spec->name) != 0) continue;
        rc = same_shape(f, spec->type, spec->nlabels, spec->labels) ? 0 : AG_EEXISTS;
        if (!rc) *out = f;
        goto out_unlock;
    }
    struct ag_obs_family *f = family_build(spec);
    if (!f) {
        rc = AG_ENOMEM;
        goto out_unlock;
    }
    f->reg = r;
    atomic_store(&f->next, atomic_load(&r->families));
    atomic_store_explicit(&r->families, f, memory_order_release);
    *out = f;
out_unlock:
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* ---- series ---- */

static bool values_match(const struct ag_obs_series *s, size_t n, const char *const *values)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0) return false;
    return true;
}

static struct ag_obs_series *series_build(struct ag_obs_family *f, const char *const *values)
{
    struct ag_obs_series *s = ag_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->family = f;
    s->values = ag_calloc(f->nlabels ? f->nlabels : 1, sizeof *s->values);
    bool ok = s->values != NULL;
    for (size_t i = 0; ok && i < f->nlabels; i++)
        ok = (s->values[i] = ag_strdup(values[i])) != NULL;
    if (ok && f->type == AG_OBS_HISTOGRAM) {
        size_t per = f->nbounds + 1;
        s->bucket_mem = ag_calloc(AG__OBS_SHARDS * per, sizeof *s->bucket_mem);
        ok = s->bucket_mem != NULL;
        for (size_t i = 0; ok && i < AG__OBS_SHARDS; i++)
            s->shard[i].bucket = s->bucket_mem + i * per;
    }
    if (!ok) {
        series_free(s, f->nlabels);
        return NULL;
    }
    return s;
}

int ag_obs_series_get(struct ag_obs_family *f, const char *const *values,
                      struct ag_obs_series **out)
{
    for (size_t i = 0; i < f->nlabels; i++)
        if (!values || !values[i]) return AG_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&f->reg->lock);
    for (struct ag_obs_series *s = atomic_load(&f->series); s; s = atomic_load(&s->next)) {
        if (values_match(s, f->nlabels, values)) {
            *out = s;
            goto out_unlock;
        }
    }
    struct ag_obs_series *s = series_build(f, values);
    if (!s) {
        rc = AG_ENOMEM;
        goto out_unlock;
    }
    atomic_store(&s->next, atomic_load(&f->series));
    atomic_store_explicit(&f->series, s, memory_order_release);
    *out = s;
out_unlock:
    pthread_mutex_unlock(&f->reg->lock);
    return rc;
}

/* ---- updates ---- */

void ag_obs_counter_add(struct ag_obs_series *s, uint64_t n)
{
    if (AG_UNLIKELY(!s || s->family->type != AG_OBS_COUNTER)) return;
    atomic_fetch_add_explicit(&shard_of(s)->v, n, memory_order_relaxed);
}

void ag_obs_gauge_add(struct ag_obs_series *s, double d)
{
    if (AG_UNLIKELY(!s || s->family->type != AG_OBS_GAUGE)) return;
    atomic_add_dbl(&shard_of(s)->v, d);
}

void ag_obs_gauge_set(struct ag_obs_series *s, double v)
{
    if (!s || s->family->type != AG_OBS_GAUGE) return;
    for (size_t i = 1; i < AG__OBS_SHARDS; i++) atomic_store(&s->shard[i].v, dbl_bits(0.0));
    atomic_store(&s->shard[0].v, dbl_bits(v));
}

void ag_obs_histogram_observe(struct ag_obs_series *s, double v)
{
    if (AG_UNLIKELY(!s || s->family->type != AG_OBS_HISTOGRAM)) return;
    const struct ag_obs_family *f = s->family;
    size_t b = 0;
    while (b < f->nbounds && v > f->bounds[b]) b++;
    struct shard *sh = shard_of(s);
    atomic_fetch_add_explicit(&sh->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->count, 1, memory_order_relaxed);
    atomic_add_dbl(&sh->sum, v);
}

/* ---- reads ---- */

uint64_t ag_obs_counter_value(const struct ag_obs_series *s)
{
    uint64_t v = 0;
    for (size_t i = 0; i < AG__OBS_SHARDS; i++)
        v += atomic_load_explicit(&s->shard[i].v, memory_order_relaxed);
    return v;
}

double ag_obs_gauge_value(const struct ag_obs_series *s)
{
    double v = 0;
    for (size_t i = 0; i < AG__OBS_SHARDS; i++) v += bits_dbl(atomic_load(&s->shard[i].v));
    return v;
}

void ag_obs_histogram_value(const struct ag_obs_series *s, uint64_t *buckets, double *sum,
                            uint64_t *count)
{
    const struct ag_obs_family *f = s->family;
    uint64_t cum = 0, n = 0;
    double total = 0;
    for (size_t b = 0; b <= f->nbounds; b++) {
        for (size_t i = 0; i < AG__OBS_SHARDS; i++) cum += atomic_load(&s->shard[i].bucket[b]);
        if (buckets) buckets[b] = cum;
    }
    for (size_t i = 0; i < AG__OBS_SHARDS; i++) {
        n += atomic_load(&s->shard[i].count);
        total += bits_dbl(atomic_load(&s->shard[i].sum));
    }
    /* A scrape racing an observe may see the bucket before the count: keep the
     * exposition consistent (+Inf bucket == _count). */
    if (count) *count = cum > n ? cum : n;
    if (sum) *sum = total;
}

/* ---- exposition ---- */

static int put_escaped(struct ag_buf *b, const char *s, bool quote)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        if (*s == '\\')
            rc = ag_buf_puts(b, "\\\\");
        else if (*s == '\n')
            rc = ag_buf_puts(b, "\\n");
        else if (quote && *s == '"')
            rc = ag_buf_puts(b, "\\\"");
        else
            rc = ag_buf_putc(b, *s);
    }
    return rc;
}

/* The shortest of %.15g..%.17g that reads back as the same double. */
static void fmt_double(char out[32], double v)
{
    if (isinf(v)) {
        snprintf(out, 32, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (isnan(v)) {
        snprintf(out, 32, "NaN");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

static int put_double(struct ag_buf *b, double v)
{
    char tmp[32];
    fmt_double(tmp, v);
    return ag_buf_puts(b, tmp);
}

/* `name{l1="v1",...,extra}` where extra is an already formatted `le="..."` or NULL. */
static int put_series_name(struct ag_buf *b, const struct ag_obs_family *f,
                           const struct ag_obs_series *s, const char *suffix, const char *extra)
{
    int rc = ag_buf_puts(b, f->name);
    if (!rc && suffix) rc = ag_buf_puts(b, suffix);
    if (rc || (f->nlabels == 0 && !extra)) return rc;
    rc = ag_buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels && !rc; i++) {
        rc = ag_buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        if (!rc) rc = put_escaped(b, s->values[i], true);
        if (!rc) rc = ag_buf_putc(b, '"');
    }
    if (!rc && extra) rc = ag_buf_printf(b, "%s%s", f->nlabels ? "," : "", extra);
    if (!rc) rc = ag_buf_putc(b, '}');
    return rc;
}

static int render_histogram(struct ag_buf *b, const struct ag_obs_family *f,
                            const struct ag_obs_series *s)
{
    uint64_t cum[AG_OBS_MAX_BUCKETS + 1], count;
    double sum;
    ag_obs_histogram_value(s, cum, &sum, &count);
    int rc = 0;
    char le[64], num[32];
    for (size_t i = 0; i <= f->nbounds && !rc; i++) {
        fmt_double(num, i < f->nbounds ? f->bounds[i] : INFINITY);
        snprintf(le, sizeof le, "le=\"%s\"", num);
        rc = put_series_name(b, f, s, "_bucket", le);
        if (!rc)
            rc = ag_buf_printf(b, " %llu\n", (unsigned long long)(i < f->nbounds ? cum[i] : count));
    }
    if (!rc) rc = put_series_name(b, f, s, "_sum", NULL);
    if (!rc) rc = ag_buf_putc(b, ' ');
    if (!rc) rc = put_double(b, sum);
    if (!rc) rc = ag_buf_putc(b, '\n');
    if (!rc) rc = put_series_name(b, f, s, "_count", NULL);
    if (!rc) rc = ag_buf_printf(b, " %llu\n", (unsigned long long)count);
    return rc;
}

static int render_family(struct ag_buf *b, const struct ag_obs_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    int rc = ag_buf_printf(b, "# HELP %s ", f->name);
    if (!rc) rc = put_escaped(b, f->help, false);
    if (!rc) rc = ag_buf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    for (struct ag_obs_series *s = atomic_load_explicit(&f->series, memory_order_acquire); s && !rc;
         s = atomic_load_explicit(&s->next, memory_order_acquire)) {
        if (f->type == AG_OBS_HISTOGRAM) {
            rc = render_histogram(b, f, s);
            continue;
        }
        rc = put_series_name(b, f, s, NULL, NULL);
        if (!rc && f->type == AG_OBS_COUNTER)
            rc = ag_buf_printf(b, " %llu\n", (unsigned long long)ag_obs_counter_value(s));
        else if (!rc) {
            rc = ag_buf_putc(b, ' ');
            if (!rc) rc = put_double(b, ag_obs_gauge_value(s));
            if (!rc) rc = ag_buf_putc(b, '\n');
        }
    }
    return rc;
}

int ag_obs_registry_render(struct ag_obs_registry *r, struct ag_buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&r->collect_lock); /* outside `lock`: collectors look series up */
    for (size_t i = 0; i < r->ncollectors; i++) r->collectors[i].fn(r->collectors[i].ud);
    pthread_mutex_unlock(&r->collect_lock);
    pthread_mutex_lock(&r->lock);
    for (struct ag_obs_family *f = atomic_load(&r->families); f && !rc; f = atomic_load(&f->next))
        rc = render_family(out, f);
    pthread_mutex_unlock(&r->lock);
    return rc;
}
