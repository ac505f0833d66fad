/*
 * Spans: a process-wide ring of recent spans, and the OTLP/HTTP JSON exporter.
 *
 * Ring. `capacity` slots (a power of two), each a sequence word and one fixed-size
 * struct ag_span. A writer takes the next index with one relaxed fetch-add on
 * `head`, marks the slot odd (2*idx + 1: being written), copies the span and
 * publishes 2*idx + 2 with a release store: no lock, no allocation, so recording
 * is a few hundred bytes of copying. A reader (the admin routes, the exporter)
 * copies a slot and checks its sequence word before and after the copy (a
 * seqlock): a slot being written, or overwritten since, is skipped. The ring
 * keeps the newest `capacity` spans; older ones are overwritten.
 *
 * Export. The ring is also the exporter's queue: the exporter thread keeps its own
 * cursor. Every 100 ms it looks at head - cursor; once `batch_spans` spans wait,
 * or any have waited `batch_ms`, it encodes up to `batch_spans` of them as one
 * OTLP ExportTraceServiceRequest (JSON: resourceSpans/scopeSpans/spans, hex ids,
 * nanoseconds as strings) and POSTs it to ENDPOINT/v1/traces over a plain
 * blocking socket (this thread is nobody's event loop). A 5xx, a connection
 * failure or a timeout is retried with a doubling backoff (200 ms .. 3.2 s, five
 * tries), then the batch is dropped; a 4xx drops it at once. Spans the writers
 * lap before the exporter reads them (head - cursor > capacity: the receiver is
 * slow or down) are dropped too, oldest first. Both count in `dropped`
 * (agora_trace_spans_dropped_total), successes in `exported`.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agora/obs.h"

#define POLL_MS       100
#define TRIES         5
#define IO_TIMEOUT_MS 5000

struct slot {
    _Atomic uint64_t seq; /* 2*idx+1 while written, 2*idx+2 once idx is in */
    struct ag_span span;
};

struct endpoint {
    char host[256];
    char port[8];
    char path[256]; /* PATH/v1/traces */
};

static struct tracer {
    struct slot *ring;     /* capacity slots, or NULL: off */
    uint64_t mask;         /* capacity - 1 */
    _Atomic uint64_t head; /* next index to write */
    _Atomic bool on;       /* recording */
    char service[64];      /* resource service.name */
    bool exporting;        /* an exporter thread runs */
    struct endpoint ep;
    size_t batch;
    unsigned batch_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* on CLOCK_MONOTONIC (nap_locked's deadlines) */
    bool stopping;
    uint64_t cursor; /* the exporter's next index */
    _Atomic uint64_t exported, dropped;
    struct ag_obs_series *m_recorded, *m_exported, *m_dropped;
    uint64_t seen_recorded, seen_exported, seen_dropped; /* what the metrics already have */
} T = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local struct ag_obs_trace cur;
static _Thread_local bool has_cur;

/* ---- recording ---- */

uint64_t ag_span_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool ag_span_enabled(void)
{
    return atomic_load_explicit(&T.on, memory_order_relaxed);
}

static void set_name(struct ag_span *sp, const char *name)
{
    size_t n = strlen(name);
    if (n >= sizeof sp->name) n = sizeof sp->name - 1;
    memcpy(sp->name, name, n);
    sp->name[n] = '\0';
}

void ag_span_begin_as(struct ag_span *sp, const char *name, enum ag_span_kind kind,
                      const struct ag_obs_trace *self, const uint8_t *parent)
{
    sp->kind = 0;
    if (!ag_span_enabled()) return;
    sp->ctx = *self;
    if (parent)
        memcpy(sp->parent, parent, sizeof sp->parent);
    else
        memset(sp->parent, 0, sizeof sp->parent);
    sp->kind = (uint8_t)kind;
    sp->status = AG_SPAN_UNSET;
    sp->nattrs = 0;
    set_name(sp, name);
    sp->start_ns = ag_span_now();
    sp->end_ns = 0;
}

void ag_span_begin(struct ag_span *sp, const char *name, enum ag_span_kind kind,
                   const struct ag_obs_trace *parent)
{
    sp->kind = 0;
    if (!ag_span_enabled()) return;
    struct ag_obs_trace self;
    if (parent)
        ag_obs_trace_child(parent, &self, NULL);
    else
        ag_obs_trace_new(&self, NULL);
    ag_span_begin_as(sp, name, kind, &self, parent ? parent->span_id : NULL);
}

static struct ag_span_attr *new_attr(struct ag_span *sp, const char *key)
{
    if (!sp->kind || sp->nattrs >= AG_SPAN_MAX_ATTRS) return NULL;
    struct ag_span_attr *a = &sp->attrs[sp->nattrs++];
    a->key = key;
    return a;
}

void ag_span_attr_str(struct ag_span *sp, const char *key, const char *value)
{
    struct ag_span_attr *a = new_attr(sp, key);
    if (!a) return;
    a->is_int = false;
    size_t n = value ? strlen(value) : 0;
    if (n >= sizeof a->s) n = sizeof a->s - 1;
    if (n) memcpy(a->s, value, n);
    a->s[n] = '\0';
}

void ag_span_attr_int(struct ag_span *sp, const char *key, int64_t value)
{
    struct ag_span_attr *a = new_attr(sp, key);
    if (!a) return;
    a->is_int = true;
    a->i = value;
}

void ag_span_record(const struct ag_span *sp)
{
    if (!sp->kind || !ag_span_enabled()) return;
    uint64_t idx = atomic_fetch_add_explicit(&T.head, 1, memory_order_relaxed);
    struct slot *s = &T.ring[idx & T.mask];
    atomic_store_explicit(&s->seq, 2 * idx + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    /* only the used attributes: most spans carry three or four */
    memcpy(&s->span, sp, offsetof(struct ag_span, attrs) + sp->nattrs * sizeof sp->attrs[0]);
    atomic_store_explicit(&s->seq, 2 * idx + 2, memory_order_release);
}

void ag_span_end(struct ag_span *sp)
{
    if (!sp->kind) return;
    sp->end_ns = ag_span_now();
    ag_span_record(sp);
}

void ag_span_set_current(const struct ag_obs_trace *t)
{
    has_cur = t != NULL;
    if (t) cur = *t;
}

bool ag_span_current(struct ag_obs_trace *out)
{
    if (has_cur) *out = cur;
    return has_cur;
}

/* Copy span `idx` out of the ring: 1 when it was there whole, 0 when it is not
 * written yet, -1 when it was overwritten. */
static int read_slot(uint64_t idx, struct ag_span *out)
{
    struct slot *s = &T.ring[idx & T.mask];
    uint64_t want = 2 * idx + 2;
    uint64_t a = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (a < want) return 0;
    if (a > want) return -1;
    memcpy(out, &s->span, sizeof *out);
    atomic_thread_fence(memory_order_acquire);
    uint64_t b = atomic_load_explicit(&s->seq, memory_order_relaxed);
    if (b != want) return -1;
    if (out->nattrs > AG_SPAN_MAX_ATTRS) out->nattrs = AG_SPAN_MAX_ATTRS;
    return 1;
}

/* ---- JSON ---- */

static void put_hex(struct ag_buf *b, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[33];
    for (size_t i = 0; i < n; i++) {
        tmp[2 * i] = digits[p[i] >> 4];
        tmp[2 * i + 1] = digits[p[i] & 15];
    }
    ag_buf_append(b, tmp, 2 * n);
}

/* Decimal digits of v (no printf: the exporter encodes many numbers). */
static void put_u64(struct ag_buf *b, uint64_t v)
{
    char tmp[24], *t = tmp + sizeof tmp;
    do *--t = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    ag_buf_append(b, t, (size_t)(tmp + sizeof tmp - t));
}

static void put_i64(struct ag_buf *b, int64_t v)
{
    if (v < 0) ag_buf_putc(b, '-');
    put_u64(b, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

static bool is_root(const struct ag_span *sp)
{
    static const uint8_t zero[8];
    return memcmp(sp->parent, zero, 8) == 0;
}

/* A JSON string; most need no escaping (names, routes, ids): copy those whole. */
static void put_str(struct ag_buf *b, const char *s)
{
    size_t n = 0;
    bool plain = true;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        plain &= c >= 0x20 && c != '"' && c != '\\';
    }
    if (!plain) {
        ag_buf_json_str(b, s, n);
        return;
    }
    if (ag_buf_reserve(b, n + 2)) return;
    b->data[b->len++] = '"';
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

/* The admin form: {"spanId",...,"attributes":{k: v}}. */
static void admin_span(struct ag_buf *b, const struct ag_span *sp)
{
    static const char *const kinds[] = {"unset", "internal", "server", "client"};
    static const char *const statuses[] = {"unset", "ok", "error"};
    ag_buf_puts(b, "{\"spanId\":\"");
    put_hex(b, sp->ctx.span_id, 8);
    ag_buf_puts(b, "\",\"parentSpanId\":");
    if (is_root(sp)) {
        ag_buf_puts(b, "null");
    } else {
        ag_buf_putc(b, '"');
        put_hex(b, sp->parent, 8);
        ag_buf_putc(b, '"');
    }
    ag_buf_puts(b, ",\"name\":");
    put_str(b, sp->name);
    ag_buf_printf(b, ",\"kind\":\"%s\",\"startUnixNano\":\"%llu\",\"endUnixNano\":\"%llu\"",
                  kinds[sp->kind & 3], (unsigned long long)sp->start_ns,
                  (unsigned long long)sp->end_ns);
    ag_buf_printf(b, ",\"status\":\"%s\",\"attributes\":{", statuses[sp->status % 3]);
    for (size_t i = 0; i < sp->nattrs; i++) {
        const struct ag_span_attr *a = &sp->attrs[i];
        if (i) ag_buf_putc(b, ',');
        put_str(b, a->key);
        ag_buf_putc(b, ':');
        if (a->is_int)
            ag_buf_printf(b, "%lld", (long long)a->i);
        else
            put_str(b, a->s);
    }
    ag_buf_puts(b, "}}");
}

int ag_span_trace_json(const uint8_t trace_id[16], struct ag_buf *out)
{
    if (!T.ring) return AG_ENOTFOUND;
    uint64_t head = atomic_load_explicit(&T.head, memory_order_acquire);
    uint64_t from = head > T.mask + 1 ? head - (T.mask + 1) : 0;
    size_t n = 0;
    struct ag_span sp;
    for (uint64_t i = from; i < head; i++) {
        if (read_slot(i, &sp) != 1 || memcmp(sp.ctx.trace_id, trace_id, 16) != 0) continue;
        ag_buf_puts(out, n++ ? "," : "{\"traceId\":\"");
        if (n == 1) {
            put_hex(out, trace_id, 16);
            ag_buf_puts(out, "\",\"spans\":[");
        }
        admin_span(out, &sp);
    }
    if (!n) return AG_ENOTFOUND;
    return ag_buf_puts(out, "]}");
}

/* One span in the OTLP JSON encoding. */
static void otlp_span(struct ag_buf *b, const struct ag_span *sp)
{
    ag_buf_puts(b, "{\"traceId\":\"");
    put_hex(b, sp->ctx.trace_id, 16);
    ag_buf_puts(b, "\",\"spanId\":\"");
    put_hex(b, sp->ctx.span_id, 8);
    ag_buf_puts(b, "\",");
    if (!is_root(sp)) {
        ag_buf_puts(b, "\"parentSpanId\":\"");
        put_hex(b, sp->parent, 8);
        ag_buf_puts(b, "\",");
    }
    ag_buf_puts(b, "\"name\":");
    put_str(b, sp->name);
    ag_buf_puts(b, ",\"kind\":");
    put_u64(b, sp->kind);
    ag_buf_puts(b, ",\"startTimeUnixNano\":\"");
    put_u64(b, sp->start_ns);
    ag_buf_puts(b, "\",\"endTimeUnixNano\":\"");
    put_u64(b, sp->end_ns);
    ag_buf_puts(b, "\",\"attributes\":[");
    for (size_t i = 0; i < sp->nattrs; i++) {
        const struct ag_span_attr *a = &sp->attrs[i];
        ag_buf_puts(b, i ? ",{\"key\":" : "{\"key\":");
        put_str(b, a->key);
        if (a->is_int) {
            ag_buf_puts(b, ",\"value\":{\"intValue\":\"");
            put_i64(b, a->i);
            ag_buf_puts(b, "\"}}");
        } else {
            ag_buf_puts(b, ",\"value\":{\"stringValue\":");
            put_str(b, a->s);
            ag_buf_puts(b, "}}");
        }
    }
    ag_buf_puts(b, "],\"status\":{\"code\":");
    put_u64(b, sp->status);
    ag_buf_puts(b, "}}");
}

static void otlp_begin(struct ag_buf *b)
{
    ag_buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                   "\"value\":{\"stringValue\":");
    put_str(b, T.service);
    ag_buf_puts(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"agora\",\"version\":\"" AG_VERSION
                   "\"},\"spans\":[");
}

/* ---- the HTTP POST (blocking, on the exporter thread) ---- */

static int parse_endpoint(const char *uri, struct endpoint *ep)
{
    static const char scheme[] = "http://";
    if (strncmp(uri, scheme, sizeof scheme - 1) != 0) return AG_EINVAL;
    const char *h = uri + sizeof scheme - 1;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hl);
    size_t nl = colon ? (size_t)(colon - h) : hl;
    if (nl == 0 || nl >= sizeof ep->host) return AG_EINVAL;
    memcpy(ep->host, h, nl);
    ep->host[nl] = '\0';
    size_t pl = colon ? hl - nl - 1 : 2;
    if (pl == 0 || pl >= sizeof ep->port) return AG_EINVAL;
    memcpy(ep->port, colon ? colon + 1 : "80", pl);
    ep->port[pl] = '\0';
    const char *path = slash ? slash : "";
    size_t len = strlen(path);
    while (len && path[len - 1] == '/') len--;
    if (len + sizeof "/v1/traces" > sizeof ep->path) return AG_EINVAL;
    snprintf(ep->path, sizeof ep->path, "%.*s/v1/traces", (int)len, path);
    return 0;
}

static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do n = poll(&p, 1, ms);
    while (n < 0 && errno == EINTR);
    return n > 0 ? 0 : -1;
}

static int dial(const struct endpoint *ep)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(ep->host, ep->port, &hints, &ai)) return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (rc && (errno != EINPROGRESS || wait_fd(fd, POLLOUT, IO_TIMEOUT_MS) ||
                   getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        if (wait_fd(fd, POLLOUT, IO_TIMEOUT_MS)) return -1;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* POST the body; the HTTP status, or -1 when the receiver could not be reached. */
static int post(const struct endpoint *ep, const struct ag_buf *body)
{
    int fd = dial(ep);
    if (fd < 0) return -1;
    char head[768];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      ep->path, ep->host, ep->port, body->len);
    int status = -1;
    if (send_all(fd, head, (size_t)hn) == 0 && send_all(fd, body->data, body->len) == 0) {
        /* the whole answer, up to the receiver's close (we asked for it): closing
         * with unread bytes would reset the connection under the receiver */
        char resp[64], sink[4096];
        size_t got = 0, total = 0;
        while (total < (1u << 20) && !wait_fd(fd, POLLIN, IO_TIMEOUT_MS)) {
            ssize_t r = recv(fd, sink, sizeof sink, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) break;
            size_t keep = AG_MIN((size_t)r, sizeof resp - 1 - got);
            memcpy(resp + got, sink, keep);
            got += keep;
            total += (size_t)r;
        }
        resp[got] = '\0';
        /* "HTTP/1.x NNN ..." */
        if (got >= 12 && memcmp(resp, "HTTP/1.", 7) == 0 && resp[8] == ' ' && resp[9] >= '1' &&
            resp[9] <= '5' && resp[10] >= '0' && resp[10] <= '9' && resp[11] >= '0' &&
            resp[11] <= '9')
            status = (resp[9] - '0') * 100 + (resp[10] - '0') * 10 + (resp[11] - '0');
    }
    close(fd);
    return status;
}

/* ---- the exporter thread ---- */

/* Sleep up to `ms` unless stopping; true when stopping. Lock held. */
static bool nap_locked(unsigned ms)
{
    if (T.stopping) return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_cond_timedwait(&T.wake, &T.lock, &ts);
    return T.stopping;
}

/* Encode up to T.batch waiting spans from the cursor; how many went in. */
static size_t take_batch(struct ag_buf *b)
{
    uint64_t head = atomic_load_explicit(&T.head, memory_order_acquire);
    if (head - T.cursor > T.mask + 1) { /* lapped: the oldest are gone */
        atomic_fetch_add(&T.dropped, head - (T.mask + 1) - T.cursor);
        T.cursor = head - (T.mask + 1);
    }
    size_t n = 0;
    struct ag_span sp;
    otlp_begin(b);
    while (T.cursor < head && n < T.batch) {
        int r = read_slot(T.cursor, &sp);
        if (r == 0) break; /* still being written: next round */
        T.cursor++;
        if (r < 0) {
            atomic_fetch_add(&T.dropped, 1);
            continue;
        }
        if (n++) ag_buf_putc(b, ',');
        otlp_span(b, &sp);
    }
    ag_buf_puts(b, "]}]}]}");
    return n;
}

/* Send one batch with retries; `final`: one try only (shutdown). Lock held. */
static void ship(const struct ag_buf *b, size_t n, bool final)
{
    unsigned backoff = 200;
    for (int t = 0; t < TRIES; t++) {
        pthread_mutex_unlock(&T.lock);
        int status = post(&T.ep, b);
        pthread_mutex_lock(&T.lock);
        if (status >= 200 && status < 300) {
            atomic_fetch_add(&T.exported, n);
            return;
        }
        bool retry = status < 0 || status >= 500 || status == 429;
        if (!retry || final || t + 1 == TRIES || nap_locked(backoff)) break;
        backoff *= 2;
    }
    atomic_fetch_add(&T.dropped, n);
    AG_DEBUG("trace.export_dropped", AG_LU("spans", n));
}

static void *exporter(void *arg)
{
    AG_UNUSED(arg);
    ag_thread_name("ag-span-export");
    struct ag_buf b;
    ag_buf_init(&b);
    uint64_t waited_ms = 0;
    pthread_mutex_lock(&T.lock);
    for (;;) {
        bool stop = nap_locked(POLL_MS);
        uint64_t waiting = atomic_load(&T.head) - T.cursor;
        waited_ms = waiting ? waited_ms + POLL_MS : 0;
        if (!stop && waiting < T.batch && waited_ms < T.batch_ms) continue;
        while (atomic_load(&T.head) != T.cursor) {
            b.len = 0;
            size_t n = take_batch(&b);
            if (n) ship(&b, n, stop);
            if (!n || (!stop && atomic_load(&T.head) - T.cursor < T.batch)) break;
        }
        waited_ms = 0;
        if (stop) break;
    }
    pthread_mutex_unlock(&T.lock);
    ag_buf_free(&b);
    return NULL;
}

/* ---- metrics ---- */

static void collect(void *ud)
{
    AG_UNUSED(ud);
    struct ag_span_stats st;
    ag_span_stats(&st);
    ag_obs_counter_add(T.m_recorded, st.recorded - T.seen_recorded);
    ag_obs_counter_add(T.m_exported, st.exported - T.seen_exported);
    ag_obs_counter_add(T.m_dropped, st.dropped - T.seen_dropped);
    T.seen_recorded = st.recorded, T.seen_exported = st.exported, T.seen_dropped = st.dropped;
}

static int counter(struct ag_obs_registry *r, const char *name, const char *help,
                   struct ag_obs_series **out)
{
    struct ag_obs_family_spec spec = {AG_OBS_COUNTER, name, help, 0, NULL, NULL, 0};
    struct ag_obs_family *f;
    int rc = ag_obs_family_define(r, &spec, &f);
    return rc ? rc : ag_obs_series_get(f, NULL, out);
}

static int define_metrics(struct ag_obs_registry *r)
{
    int rc = counter(r, "agora_trace_spans_recorded_total",
                     "Spans recorded into the recent-span buffer.", &T.m_recorded);
    if (!rc)
        rc = counter(r, "agora_trace_spans_exported_total", "Spans the OTLP receiver accepted.",
                     &T.m_exported);
    if (!rc)
        rc = counter(r, "agora_trace_spans_dropped_total",
                     "Spans never exported: overwritten before the exporter read them, or "
                     "refused by the receiver after the retries.",
                     &T.m_dropped);
    if (!rc) rc = ag_obs_registry_collector(r, collect, NULL);
    return rc;
}

/* ---- setup ---- */

void ag_span_stats(struct ag_span_stats *out)
{
    out->recorded = atomic_load(&T.head);
    out->exported = atomic_load(&T.exported);
    out->dropped = atomic_load(&T.dropped);
}

int ag_span_setup(const struct ag_span_config *cfg)
{
    if (T.ring) return AG_EEXISTS;
    if (cfg->otlp_endpoint && *cfg->otlp_endpoint && parse_endpoint(cfg->otlp_endpoint, &T.ep))
        return AG_EINVAL;
    if (cfg->metrics) {
        int rc = define_metrics(cfg->metrics);
        if (rc) return rc;
    }
    if (!cfg->capacity) return 0;
    size_t cap = 1;
    while (cap < cfg->capacity) cap <<= 1;
    T.ring = ag_calloc(cap, sizeof *T.ring);
    if (!T.ring) return AG_ENOMEM;
    T.mask = cap - 1;
    snprintf(T.service, sizeof T.service, "%s", cfg->service_name ? cfg->service_name : "agora");
    T.batch = cfg->batch_spans ? cfg->batch_spans : 512;
    T.batch_ms = cfg->batch_ms ? cfg->batch_ms : 1000;
    T.stopping = false;
    atomic_store(&T.on, true);
    if (cfg->otlp_endpoint && *cfg->otlp_endpoint) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&T.wake, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&T.thread, NULL, exporter, NULL)) return AG_ENOMEM;
        T.exporting = true;
    }
    return 0;
}

void ag_span_shutdown(void)
{
    if (!T.ring) return;
    if (T.exporting) {
        pthread_mutex_lock(&T.lock);
        T.stopping = true;
        pthread_cond_signal(&T.wake);
        pthread_mutex_unlock(&T.lock);
        pthread_join(T.thread, NULL);
        T.exporting = false;
    }
    /* the ring stays: another thread may still be recording; the process ends next */
    atomic_store(&T.on, false);
}
