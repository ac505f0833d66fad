/*
 * The bus port: the registry of adapters by URI scheme (as src/store/registry.c),
 * argument checks before an adapter sees a call, and the CloudEvents 1.0 JSON
 * (structured mode) every adapter and the relay share.
 *
 * A CloudEvent here is an object with the required attributes specversion ("1.0"),
 * id, source and type, the optional subject, time (RFC 3339 UTC) and
 * datacontenttype ("application/json"), the `traceparent` extension (W3C Trace
 * Context, the distributed-tracing extension's attribute) and `data`, inline JSON.
 * Writing is deterministic (same message → same bytes), so a republished message is
 * byte-identical to the first one.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bus/internal.h"

typedef int (*open_fn)(const char *rest, const struct ag_bus_options *opts, struct ag_bus **out,
                       struct ag_err *err);

static const struct {
    const char *scheme; /* without the ':' */
    open_fn open;       /* gets what follows "scheme:" */
} adapters[] = {
    {"local", ag__bus_local_open},
    {"nats", ag__bus_nats_open},
};

int ag_bus_open(const char *uri, const struct ag_bus_options *opts, struct ag_bus **out,
                struct ag_err *err)
{
    if (!uri || !*uri) return ag_err_set(err, AG_EINVAL, "no bus URI given");
    const char *colon = strchr(uri, ':');
    if (strlen(uri) >= sizeof((struct ag_bus *)0)->uri)
        return ag_err_set(err, AG_EINVAL, "bus URI too long");
    for (size_t i = 0; colon && i < AG_ARRAY_SIZE(adapters); i++) {
        size_t n = strlen(adapters[i].scheme);
        if ((size_t)(colon - uri) != n || strncasecmp(uri, adapters[i].scheme, n) != 0) continue;
        struct ag_bus_options o = {0};
        if (opts) o = *opts;
        if (!o.clock) o.clock = ag_clock_system();
        if (!o.dedup_window_ms) o.dedup_window_ms = 10 * 60 * 1000;
        if (!o.stream) o.stream = "AGORA";
        int rc = adapters[i].open(colon + 1, &o, out, err);
        if (!rc) snprintf((*out)->uri, sizeof(*out)->uri, "%s", uri);
        return rc;
    }
    return ag_err_set(err, AG_EUNSUPPORTED, "no bus adapter for '%.40s' (known: local:, nats://)",
                      uri);
}

void ag_bus_close(struct ag_bus *b)
{
    if (b) b->ops->close(b);
}

const char *ag_bus_name(const struct ag_bus *b)
{
    return b->ops->name;
}

/* ---- checks ---- */

/* Dot-separated tokens, no spaces or control characters; wildcards only in filters.
 * One pass (every message the relay publishes is checked). */
static int check_subject(const char *s, bool wild, struct ag_err *err)
{
    size_t n = 0, token = 0;
    bool ok = s != NULL;
    for (; ok && s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c == '.') {
            ok = token > 0;
            token = 0;
            continue;
        }
        ok = c > ' ' && c != 0x7f && (wild || (c != '*' && c != '>'));
        token++;
    }
    if (ok && token && n <= AG_BUS_SUBJECT_MAX) return 0;
    n = s ? strlen(s) : 0;
    if (n == 0 || n > AG_BUS_SUBJECT_MAX)
        return ag_err_set(err, AG_EINVAL, "a bus subject has 1..%d bytes", AG_BUS_SUBJECT_MAX);
    return ag_err_set(err, AG_EINVAL, "bad bus subject '%.80s'", s);
}

static int check_msg(const struct ag_bus_msg *m, size_t i, struct ag_err *err)
{
    if (check_subject(m->topic, false, err)) return AG_EINVAL;
    if (!m->id || !*m->id || strlen(m->id) > 128 || !m->source || !*m->source || !m->type ||
        !*m->type)
        return ag_err_set(err, AG_EINVAL, "message %zu: id, source and type are required", i);
    char why[160];
#ifdef NDEBUG
    bool check = !m->data_checked;
#else
    bool check = true; /* debug builds (every test run): vouched for or not */
#endif
    if (check && m->data && m->data_len &&
        ag_json_check(m->data, m->data_len, false, why, sizeof why))
        return ag_err_set(err, AG_EJSON, "message %zu: data is not JSON: %s", i, why);
    return 0;
}

static int check_msgs(const struct ag_bus_msg *msgs, size_t n, struct ag_err *err)
{
    if (n > AG_BUS_PUBLISH_MAX)
        return ag_err_set(err, AG_EINVAL, "at most %d messages per publish", AG_BUS_PUBLISH_MAX);
    for (size_t i = 0; i < n; i++) {
        int rc = check_msg(&msgs[i], i, err);
        if (rc) return rc;
    }
    return 0;
}

int ag_bus_publish(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, int timeout_ms,
                   struct ag_err *err)
{
    int rc = check_msgs(msgs, n, err);
    if (rc) return rc;
    return n ? b->ops->publish(b, msgs, n, timeout_ms, err) : 0;
}

/* Without the adapter's pipe ops: publish now, the mark is reached on return. */
int ag_bus_pipe_send(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, uint64_t mark,
                     int timeout_ms, struct ag_err *err)
{
    int rc = check_msgs(msgs, n, err);
    if (rc) return rc;
    if (b->ops->pipe_send) return b->ops->pipe_send(b, msgs, n, mark, timeout_ms, err);
    rc = n ? b->ops->publish(b, msgs, n, timeout_ms, err) : 0;
    if (rc) return rc;
    b->pipe.mark = mark;
    b->pipe.marked = true;
    b->pipe.acked += n;
    return 0;
}

int ag_bus_pipe_acked(struct ag_bus *b, int wait_ms, int lost_ms, struct ag_bus_pipe_stat *out,
                      struct ag_err *err)
{
    if (b->ops->pipe_acked) return b->ops->pipe_acked(b, wait_ms, lost_ms, out, err);
    *out = b->pipe;
    return 0;
}

void ag_bus_pipe_reset(struct ag_bus *b)
{
    if (b->ops->pipe_reset)
        b->ops->pipe_reset(b);
    else
        memset(&b->pipe, 0, sizeof b->pipe);
}

static int check_name(const char *s, struct ag_err *err)
{
    size_t n = s ? strlen(s) : 0;
    bool ok = n > 0 && n <= AG_BUS_CONSUMER_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-';
    return ok ? 0
              : ag_err_set(err, AG_EINVAL, "a consumer name is 1..%d of [A-Za-z0-9_-], not '%.80s'",
                           AG_BUS_CONSUMER_MAX, s ? s : "");
}

int ag_bus_consumer_open(struct ag_bus *b, const struct ag_bus_consumer_config *cfg,
                         struct ag_bus_consumer **out, struct ag_err *err)
{
    struct ag_bus_consumer_config c = *cfg;
    if (!c.filter) c.filter = "agora.>";
    if (check_name(c.name, err) || check_subject(c.filter, true, err)) return AG_EINVAL;
    if (c.nbackoff > AG_BUS_BACKOFF_MAX)
        return ag_err_set(err, AG_EINVAL, "at most %d backoff steps", AG_BUS_BACKOFF_MAX);
    if (!c.max_deliver) c.max_deliver = 5;
    if (!c.ack_wait_ms) c.ack_wait_ms = 30000;
    if (!c.max_pending) c.max_pending = 1000;
    if (!c.nbackoff) c.backoff_ms[c.nbackoff++] = 1000;
    int rc = b->ops->consumer_open(b, &c, out, err);
    if (rc) return rc;
    struct ag_bus_consumer *k = *out;
    k->bus = b;
    k->cfg = c;
    snprintf(k->name, sizeof k->name, "%s", c.name);
    snprintf(k->filter, sizeof k->filter, "%s", c.filter);
    k->cfg.name = k->name;
    k->cfg.filter = k->filter;
    return 0;
}

int ag_bus_fetch(struct ag_bus_consumer *c, size_t max, int timeout_ms,
                 struct ag_bus_delivery ***out, size_t *n, struct ag_err *err)
{
    *out = NULL;
    *n = 0;
    if (max == 0) return 0;
    if (max > 4096) max = 4096;
    struct ag_bus_delivery **arr = ag_calloc(max, sizeof *arr);
    if (!arr) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = c->bus->ops->fetch(c, max, timeout_ms, arr, n, err);
    if (rc || *n == 0) {
        ag_free(arr);
        *n = 0;
        return rc;
    }
    *out = arr;
    return 0;
}

int ag_bus_ack(struct ag_bus_consumer *c, struct ag_bus_delivery *d, struct ag_err *err)
{
    return c->bus->ops->ack(c, d, err);
}

int ag_bus_nak(struct ag_bus_consumer *c, struct ag_bus_delivery *d, int64_t delay_ms,
               const char *error, struct ag_err *err)
{
    if (delay_ms < 0) delay_ms = (int64_t)ag_bus_backoff_ms(&c->cfg, d->deliveries);
    return c->bus->ops->nak(c, d, delay_ms, error ? error : "", err);
}

int ag_bus_term(struct ag_bus_consumer *c, struct ag_bus_delivery *d, const char *error,
                struct ag_err *err)
{
    return c->bus->ops->term(c, d, error ? error : "", err);
}

void ag_bus_delivery_free(struct ag_bus_consumer *c, struct ag_bus_delivery *d)
{
    if (d) c->bus->ops->delivery_free(d);
}

void ag_bus_consumer_close(struct ag_bus_consumer *c)
{
    if (c) c->bus->ops->consumer_close(c);
}

int ag_bus_dlq_read(struct ag_bus *b, uint64_t from, size_t max, struct ag_buf *out, uint64_t *next,
                    struct ag_err *err)
{
    if (from == 0) from = 1;
    return b->ops->dlq_read(b, from, max ? max : 100, out, next, err);
}

void ag_bus_health(struct ag_bus *b, struct ag_bus_health *out)
{
    memset(out, 0, sizeof *out);
    b->ops->health(b, out);
}

uint64_t ag_bus_backoff_ms(const struct ag_bus_consumer_config *cfg, uint32_t deliveries)
{
    if (!cfg->nbackoff) return 1000;
    size_t i = deliveries ? deliveries - 1 : 0;
    return cfg->backoff_ms[i < cfg->nbackoff ? i : cfg->nbackoff - 1];
}

bool ag_bus_subject_match(const char *filter, const char *topic)
{
    for (;;) {
        size_t fl = strcspn(filter, "."), tl = strcspn(topic, ".");
        if (fl == 1 && filter[0] == '>') return tl > 0;
        if (!(fl == 1 && filter[0] == '*') && (fl != tl || memcmp(filter, topic, fl) != 0))
            return false;
        if (!filter[fl] || !topic[tl]) return !filter[fl] && !topic[tl];
        filter += fl + 1;
        topic += tl + 1;
    }
}

/* ---- CloudEvents ---- */

/* ,"key":"value" — the common value (ids, names, no character to escape) is
 * copied as it is: this runs for every message the relay publishes. */
static void put_str(struct ag_buf *b, const char *key, const char *v)
{
    size_t kn = strlen(key), vn = strlen(v), i = 0;
    while (i < vn && (unsigned char)v[i] >= 0x20 && v[i] != '"' && v[i] != '\\') i++;
    if (ag_buf_reserve(b, kn + vn + 6)) return;
    ag_buf_append(b, ",\"", 2);
    ag_buf_append(b, key, kn);
    if (i < vn) { /* something to escape */
        ag_buf_append(b, "\":", 2);
        ag_buf_json_str(b, v, vn);
        return;
    }
    ag_buf_append(b, "\":\"", 3);
    ag_buf_append(b, v, vn);
    ag_buf_putc(b, '"');
}

/* RFC 3339 UTC with microseconds, as ag_time_rfc3339, without printf. */
static void rfc3339_us(uint64_t unix_ns, char out[32])
{
    time_t secs = (time_t)(unix_ns / 1000000000ull);
    unsigned us = (unsigned)((unix_ns % 1000000000ull) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    unsigned v[] = {(unsigned)tm.tm_year + 1900,
                    (unsigned)tm.tm_mon + 1,
                    (unsigned)tm.tm_mday,
                    (unsigned)tm.tm_hour,
                    (unsigned)tm.tm_min,
                    (unsigned)tm.tm_sec,
                    us};
    static const int width[] = {4, 2, 2, 2, 2, 2, 6};
    static const char after[] = "--T::.Z";
    char *o = out;
    for (int f = 0; f < 7; f++) {
        if (v[f] >= 10000 && f == 0) { /* beyond 9999: not a time we write */
            ag_time_rfc3339(unix_ns, out);
            return;
        }
        for (int d = width[f] - 1; d >= 0; d--, v[f] /= 10) o[d] = (char)('0' + v[f] % 10);
        o += width[f];
        *o++ = after[f];
    }
    *o = 0;
}

/* The CloudEvent member by member (a value may need escapes). */
static int cloudevent_slow(const struct ag_bus_msg *m, const char *ts, struct ag_buf *b)
{
    size_t start = b->len;
    ag_buf_puts(b, "{\"specversion\":\"1.0\"");
    put_str(b, "id", m->id);
    put_str(b, "source", m->source);
    put_str(b, "type", m->type);
    if (m->subject) put_str(b, "subject", m->subject);
    put_str(b, "time", ts);
    put_str(b, "datacontenttype", "application/json");
    if (m->traceparent && *m->traceparent) put_str(b, "traceparent", m->traceparent);
    ag_buf_puts(b, ",\"data\":");
    if (m->data && m->data_len)
        ag_buf_append(b, m->data, m->data_len);
    else
        ag_buf_puts(b, "{}");
    int rc = ag_buf_putc(b, '}');
    if (rc) b->len = start;
    return rc;
}

static bool plain(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == '"' || v[i] == '\\') return false;
    return true;
}

/* The relay writes one per message: when no value needs an escape (ids, names,
 * the usual case) the lengths are taken once and the bytes copied into one
 * reserved stretch; otherwise member by member. The same bytes either way. */
int ag_bus_cloudevent_json(const struct ag_bus_msg *m, struct ag_buf *b)
{
    char ts[32];
    rfc3339_us(m->time_ns ? m->time_ns : ag_clock_now(ag_clock_system()), ts);
    static const char *const keys[] = {
        ",\"id\":\"",   ",\"source\":\"",          ",\"type\":\"",       ",\"subject\":\"",
        ",\"time\":\"", ",\"datacontenttype\":\"", ",\"traceparent\":\""};
    static const size_t klen[] = {7, 11, 9, 12, 9, 20, 16};
    const char *v[] = {m->id,
                       m->source,
                       m->type,
                       m->subject,
                       ts,
                       "application/json",
                       m->traceparent && *m->traceparent ? m->traceparent : NULL};
    size_t vn[7], need = 64 + (m->data && m->data_len ? m->data_len : 2);
    for (int i = 0; i < 7; i++) {
        vn[i] = v[i] ? strlen(v[i]) : 0;
        if (v[i] && !plain(v[i], vn[i])) return cloudevent_slow(m, ts, b);
        need += v[i] ? klen[i] + vn[i] + 1 : 0;
    }
    if (ag_buf_reserve(b, need + 1)) return AG_ENOMEM;
    char *o = b->data + b->len;
    memcpy(o, "{\"specversion\":\"1.0\"", 20);
    o += 20;
    for (int i = 0; i < 7; i++) {
        if (!v[i]) continue;
        memcpy(o, keys[i], klen[i]);
        memcpy(o + klen[i], v[i], vn[i]);
        o += klen[i] + vn[i];
        *o++ = '"';
    }
    memcpy(o, ",\"data\":", 8);
    o += 8;
    if (m->data && m->data_len) {
        memcpy(o, m->data, m->data_len);
        o += m->data_len;
    } else {
        memcpy(o, "{}", 2);
        o += 2;
    }
    *o++ = '}';
    *o = 0;
    b->len = (size_t)(o - b->data);
    return 0;
}

/* Copy the CloudEvent's strings (and the data's JSON text) into one block. */
int ag_bus_cloudevent_parse(const char *body, size_t len, const char *topic,
                            struct ag_bus_delivery *d, void **mem, struct ag_err *err)
{
    json_error_t je;
    json_t *ce = json_loadb(body, len, 0, &je);
    if (!json_is_object(ce)) {
        json_decref(ce);
        return ag_err_set(err, AG_EJSON, "not a CloudEvent: %s", je.text);
    }
    const char *keys[] = {"id", "source", "type", "subject", "traceparent", "time"};
    const char *v[6];
    size_t need = strlen(topic) + 1;
    for (int i = 0; i < 6; i++) {
        v[i] = json_string_value(json_object_get(ce, keys[i]));
        need += v[i] ? strlen(v[i]) + 1 : 0;
    }
    char *data = json_dumps(json_object_get(ce, "data"), JSON_COMPACT | JSON_ENCODE_ANY);
    const char *sv = json_string_value(json_object_get(ce, "specversion"));
    char *m = (!v[0] || !v[1] || !v[2] || !sv || strcmp(sv, "1.0") != 0)
                  ? NULL
                  : ag_malloc(need + (data ? strlen(data) + 1 : 3));
    if (!m) {
        ag_free(data);
        json_decref(ce);
        return ag_err_set(err, AG_EJSON, "not a CloudEvent 1.0 (id, source, type, specversion)");
    }
    *mem = m;
    const char **dst[] = {&d->msg.id,      &d->msg.source,      &d->msg.type,
                          &d->msg.subject, &d->msg.traceparent, NULL};
    d->msg = (struct ag_bus_msg){0};
    for (int i = 0; i < 5; i++) {
        if (!v[i]) continue;
        *dst[i] = strcpy(m, v[i]);
        m += strlen(v[i]) + 1;
    }
    d->msg.topic = strcpy(m, topic);
    m += strlen(topic) + 1;
    d->msg.data = strcpy(m, data ? data : "{}");
    d->msg.data_len = strlen(d->msg.data);
    ag_free(data);
    json_decref(ce);
    d->body = body;
    d->body_len = len;
    return 0;
}

int ag_bus_dead_letter_json(const struct ag_bus_dead_letter *dl, struct ag_buf *b)
{
    const struct ag_bus_delivery *d = dl->d;
    char ts[32];
    ag_time_rfc3339(dl->at_ns, ts);
    ag_buf_puts(b, "{\"consumer\":");
    ag_buf_json_str(b, dl->consumer, strlen(dl->consumer));
    put_str(b, "topic", d->msg.topic);
    ag_buf_printf(b, ",\"seq\":%llu,\"deliveries\":%u", (unsigned long long)d->seq,
                  (unsigned)d->deliveries);
    put_str(b, "reason", dl->reason == AG_BUS_DL_TERMINATED ? "terminated" : "max_deliver");
    put_str(b, "error", dl->error ? dl->error : "");
    if (d->msg.subject) put_str(b, "aggregate", d->msg.subject);
    put_str(b, "id", d->msg.id);
    put_str(b, "type", d->msg.type);
    put_str(b, "time", ts);
    ag_buf_puts(b, ",\"event\":");
    ag_buf_append(b, d->body, d->body_len);
    return ag_buf_putc(b, '}');
}
