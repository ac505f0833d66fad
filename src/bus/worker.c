/*
 * The bus worker: a durable consumer, its handler, the inbox and the parking lot
 * of sequenced dead letters (the rules are in include/agora/bus_worker.h).
 *
 * The parking lot lives in the store stream `_dlq-<consumer>` and is mirrored in
 * memory (loaded at open): an array of entries in id order. A parked entry is
 * written to the store before the bus message is acknowledged, so a crash
 * between the two redelivers the message, which is then parked again behind (or
 * as) the same head — never lost, at worst listed twice. Whether an aggregate is
 * held back is "it has an unresolved entry"; the head of its line is its
 * unresolved entry that is not waiting (at most one: a waiting entry becomes the
 * head only when the one before it was resolved).
 *
 * `lock` is held while a delivery (or a replay, or a release) is being handled,
 * so the handler is never run twice at once and the lot never changes under a
 * listing.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agora/bus_worker.h"

enum { PARKED, REPLAYED, DROPPED };

struct entry {
    uint64_t id;
    int state;
    bool waiting;
    uint32_t deliveries;
    uint64_t at_ns;
    char *aggregate; /* NULL: the message had no subject */
    char *topic, *msg_id, *type, *error;
    char *body; /* the CloudEvent JSON */
};

/* An aggregate whose message `msg_id` failed and waits for its redelivery: the
 * aggregate's later messages are parked as waiting meanwhile. In memory only (a
 * restart loses it: the retried message may then come after its followers). */
struct retrying {
    struct retrying *next;
    char *aggregate, *msg_id;
};

struct ag_bus_worker {
    struct ag_bus_worker_config cfg;
    struct ag_bus *bus;
    struct ag_bus_consumer *consumer;
    pthread_mutex_t lock;
    struct entry *e;
    size_t n, cap;
    struct retrying *retry; /* aggregates whose head message is being retried */
    char stream[AG_BUS_CONSUMER_MAX + 8];
};

static char *dup_str(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    char *p = ag_malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static void entry_free(struct entry *e)
{
    ag_free(e->aggregate);
    ag_free(e->topic);
    ag_free(e->msg_id);
    ag_free(e->type);
    ag_free(e->error);
    ag_free(e->body);
}

static struct entry *find(struct ag_bus_worker *w, uint64_t id)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].id == id) return &w->e[i];
    return NULL;
}

/* The aggregate's line is held: it has an unresolved entry. */
static const struct entry *head_of(const struct ag_bus_worker *w, const char *aggregate)
{
    const struct entry *first = NULL;
    for (size_t i = 0; aggregate && i < w->n; i++) {
        const struct entry *e = &w->e[i];
        if (e->state != PARKED || !e->aggregate || strcmp(e->aggregate, aggregate)) continue;
        if (!e->waiting) return e;
        if (!first) first = e;
    }
    return first;
}

static void set_error(struct entry *e, const char *error)
{
    ag_free(e->error);
    e->error = dup_str(error ? error : "");
}

/* ---- the lot in the store ---- */

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Fold one stored lot event into memory. */
static int fold(struct ag_bus_worker *w, const struct ag_event *ev)
{
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!d) return AG_EJSON;
#define IS(t) (ev->type_len == strlen(t) && memcmp(ev->type, t, ev->type_len) == 0)
    int rc = 0;
    if (IS("Parked")) {
        if (w->n == w->cap) {
            size_t ncap = w->cap ? w->cap * 2 : 16;
            struct entry *ne = ag_realloc(w->e, ncap * sizeof *ne);
            if (!ne) {
                json_decref(d);
                return AG_ENOMEM;
            }
            w->e = ne;
            w->cap = ncap;
        }
        struct entry *e = &w->e[w->n++];
        memset(e, 0, sizeof *e);
        e->id = (uint64_t)ev->version + 1;
        e->waiting = json_is_true(json_object_get(d, "waiting"));
        e->deliveries = (uint32_t)json_integer_value(json_object_get(d, "deliveries"));
        e->at_ns = (uint64_t)json_integer_value(json_object_get(d, "parkedAtNs"));
        e->aggregate = dup_str(jstr(d, "aggregate"));
        e->topic = dup_str(jstr(d, "topic"));
        e->msg_id = dup_str(jstr(d, "msgId"));
        e->type = dup_str(jstr(d, "type"));
        e->error = dup_str(jstr(d, "error"));
        e->body = json_dumps(json_object_get(d, "event"), JSON_COMPACT);
    } else {
        struct entry *e = find(w, (uint64_t)json_integer_value(json_object_get(d, "id")));
        if (e && IS("Failed")) e->waiting = false, set_error(e, jstr(d, "error"));
        if (e && IS("Replayed")) e->state = REPLAYED;
        if (e && IS("Dropped")) e->state = DROPPED;
    }
#undef IS
    json_decref(d);
    return rc;
}

static int load(struct ag_bus_worker *w, struct ag_err *err)
{
    for (int64_t from = 0;;) {
        struct ag_event_page pg;
        int rc = ag_store_read_stream(w->cfg.store, w->stream, strlen(w->stream), from,
                                      AG_READ_FORWARD, 1024, &pg, err);
        if (rc == AG_ENOTFOUND) return 0;
        if (rc) return rc;
        for (size_t i = 0; i < pg.count && !rc; i++) rc = fold(w, &pg.events[i]);
        bool end = pg.end || pg.count == 0;
        from = pg.next_version;
        ag_event_page_free(&pg);
        if (rc) return ag_err_set(err, rc, "%s: %s", w->stream, ag_strerror(rc));
        if (end) return 0;
    }
}

/* Append one lot event and fold it in. */
static int record(struct ag_bus_worker *w, const char *type, json_t *data, struct ag_err *err)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text) return ag_err_set(err, AG_ENOMEM, "out of memory");
    struct ag_event_data ev = {
        .type = type, .type_len = strlen(type), .data = text, .data_len = strlen(text)};
    struct ag_append_result res;
    int rc = ag_store_append(w->cfg.store, w->stream, strlen(w->stream), AG_STORE_ANY, &ev, 1, &res,
                             err);
    if (!rc) {
        struct ag_event stored = {.type = type,
                                  .type_len = strlen(type),
                                  .data = text,
                                  .data_len = strlen(text),
                                  .version = res.last_version};
        rc = fold(w, &stored);
        if (rc) ag_err_set(err, rc, "%s: %s", w->stream, ag_strerror(rc));
    }
    ag_free(text);
    return rc;
}

static int resolve(struct ag_bus_worker *w, struct entry *e, const char *type, struct ag_err *err)
{
    return record(w, type, json_pack("{sI}", "id", (json_int_t)e->id), err);
}

static int park(struct ag_bus_worker *w, const struct ag_bus_delivery *d, const char *error,
                bool waiting, struct ag_err *err)
{
    json_t *event = json_loadb(d->body, d->body_len, 0, NULL);
    json_t *data =
        json_pack("{ss? ss? ss? ss? ss sI sb sI so?}", "aggregate", d->msg.subject, "topic",
                  d->msg.topic, "msgId", d->msg.id, "type", d->msg.type, "error",
                  error ? error : "", "deliveries", (json_int_t)d->deliveries, "waiting", waiting,
                  "parkedAtNs", (json_int_t)ag_clock_now(w->bus->opts.clock), "event", event);
    if (!data) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int rc = record(w, "Parked", data, err);
    if (!rc)
        AG_WARN("bus.parked", AG_LS("consumer", w->cfg.consumer.name), AG_LS("id", d->msg.id),
                AG_LS("aggregate", d->msg.subject ? d->msg.subject : ""),
                AG_LS("error", error ? error : ""), AG_LU("waiting", waiting));
    return rc;
}

/* ---- the inbox ---- */

static int inbox_stream(const char *consumer, const char *msg_id, char *out, size_t n,
                        struct ag_err *err)
{
    if (!consumer || !msg_id || !*msg_id || strlen(msg_id) > AG_BUS_MSG_ID_MAX)
        return ag_err_set(err, AG_EINVAL, "inbox: a consumer and a message id of 1..%d bytes",
                          AG_BUS_MSG_ID_MAX);
    int k = snprintf(out, n, "_inbox-%s-%s", consumer, msg_id);
    if (k < 0 || (size_t)k >= n) return ag_err_set(err, AG_EINVAL, "inbox: consumer name too long");
    return 0;
}

int ag_bus_inbox_seen(struct ag_store *s, const char *consumer, const char *msg_id,
                      struct ag_err *err)
{
    char stream[AG_STORE_STREAM_MAX + 1];
    int rc = inbox_stream(consumer, msg_id, stream, sizeof stream, err);
    if (rc) return rc;
    struct ag_event_page pg;
    rc = ag_store_read_stream(s, stream, strlen(stream), 0, AG_READ_FORWARD, 1, &pg, err);
    if (rc == AG_ENOTFOUND) return 0;
    if (rc) return rc;
    bool seen = pg.count > 0;
    ag_event_page_free(&pg);
    return seen;
}

int ag_bus_inbox_append(struct ag_store *s, const char *consumer, const char *msg_id,
                        const struct ag_append_part *parts, size_t nparts, struct ag_err *err)
{
    char stream[AG_STORE_STREAM_MAX + 1];
    int rc = inbox_stream(consumer, msg_id, stream, sizeof stream, err);
    if (rc) return rc;
    if (nparts + 1 > AG_STORE_MULTI_MAX)
        return ag_err_set(err, AG_EINVAL, "inbox: at most %d parts", AG_STORE_MULTI_MAX - 1);
    struct ag_append_part all[AG_STORE_MULTI_MAX];
    for (size_t i = 0; i < nparts; i++) all[i] = parts[i];
    struct ag_event_data rec = {
        .type = "MessageHandled", .type_len = 14, .data = "{}", .data_len = 2};
    all[nparts] = (struct ag_append_part){.stream = stream,
                                          .stream_len = strlen(stream),
                                          .expected_version = AG_STORE_NO_STREAM,
                                          .events = &rec,
                                          .count = 1};
    struct ag_err e;
    ag_err_clear(&e);
    rc = ag_store_append_multi(s, all, nparts + 1, NULL, &e);
    if (rc == AG_ECONFLICT && ag_bus_inbox_seen(s, consumer, msg_id, NULL) == 1) return 1;
    if (rc) ag_err_set(err, rc, "%s", e.msg);
    return rc;
}

/* ---- handling ---- */

static struct retrying **retrying_of(struct ag_bus_worker *w, const char *aggregate)
{
    struct retrying **r = &w->retry;
    while (*r && (!aggregate || strcmp((*r)->aggregate, aggregate))) r = &(*r)->next;
    return r;
}

static void retry_set(struct ag_bus_worker *w, const char *aggregate, const char *msg_id)
{
    if (!aggregate || !msg_id || *retrying_of(w, aggregate)) return;
    struct retrying *r = ag_calloc(1, sizeof *r);
    if (!r || !(r->aggregate = dup_str(aggregate)) || !(r->msg_id = dup_str(msg_id))) {
        if (r) ag_free(r->aggregate);
        ag_free(r);
        return;
    }
    r->next = w->retry;
    w->retry = r;
}

static void retry_clear(struct ag_bus_worker *w, const char *aggregate)
{
    struct retrying **p = retrying_of(w, aggregate), *r = *p;
    if (!aggregate || !r) return;
    *p = r->next;
    ag_free(r->aggregate);
    ag_free(r->msg_id);
    ag_free(r);
}

static bool poison(int rc)
{
    return rc == AG_EJSON || rc == AG_EINVAL || rc == AG_EDOMAIN;
}

/* Run the handler (after the inbox check). */
static int call(struct ag_bus_worker *w, const struct ag_bus_delivery *d, struct ag_err *err)
{
    if (d->msg.id && strlen(d->msg.id) <= AG_BUS_MSG_ID_MAX &&
        ag_bus_inbox_seen(w->cfg.store, w->cfg.consumer.name, d->msg.id, NULL) == 1)
        return 0;
    ag_err_clear(err);
    int rc = w->cfg.handler(w->cfg.ud, d, err);
    if (rc && !err->msg[0]) ag_err_set(err, rc, "%s", ag_strerror(rc));
    return rc;
}

static int release(struct ag_bus_worker *w, const char *aggregate, size_t *released,
                   struct ag_err *err);

/* Called without `lock`: the handler runs unlocked (lanes of other aggregates
 * run theirs at the same time); the lot is looked at and changed under `lock`. */
static int handle(struct ag_bus_worker *w, struct ag_bus_delivery *d, size_t *handled)
{
    struct ag_err e, he;
    ag_err_clear(&e);
    const char *agg = d->msg.subject;
    pthread_mutex_lock(&w->lock);
    struct retrying *r = agg ? *retrying_of(w, agg) : NULL;
    bool is_retry = r && d->msg.id && strcmp(r->msg_id, d->msg.id) == 0;
    int rc = 0;
    if (!is_retry && (r || head_of(w, agg))) {
        rc = park(w, d, "waiting behind a failed message of the same aggregate", true, &e);
    } else if (w->cfg.wants && !w->cfg.wants(w->cfg.ud, d)) {
        /* not for this consumer: acknowledged without the inbox or the handler */
    } else {
        pthread_mutex_unlock(&w->lock);
        int hrc = call(w, d, &he);
        pthread_mutex_lock(&w->lock);
        if (hrc && (d->last || poison(hrc))) {
            rc = park(w, d, he.msg, false, &e);
            if (!rc) retry_clear(w, agg);
        } else if (hrc) {
            retry_set(w, agg, d->msg.id);
            pthread_mutex_unlock(&w->lock);
            return ag_bus_nak(w->consumer, d,
                              w->cfg.retry_delay_ms > 0 ? w->cfg.retry_delay_ms : -1, he.msg, &e);
        } else if (is_retry) { /* it went through: what queued up behind it follows */
            retry_clear(w, agg);
            if (release(w, agg, NULL, &e))
                AG_WARN("bus.release_failed", AG_LS("consumer", w->cfg.consumer.name),
                        AG_LS("error", e.msg));
        }
    }
    pthread_mutex_unlock(&w->lock);
    if (rc) /* not parked: let the bus deliver it again */
        return ag_bus_nak(w->consumer, d, -1, e.msg, NULL), rc;
    if ((rc = ag_bus_ack(w->consumer, d, &e)) == 0 && handled)
        __atomic_add_fetch(handled, 1, __ATOMIC_RELAXED);
    return rc;
}

/* One lane of a fetched batch: deliveries of the same aggregates, in order. */
struct lane {
    struct ag_bus_worker *w;
    struct ag_bus_delivery **d;
    size_t n;
    size_t *handled;
    pthread_t th;
    bool threaded;
};

static void *lane_run(void *arg)
{
    struct lane *l = arg;
    ag_thread_name("ag-bus-lane");
    for (size_t i = 0; i < l->n; i++) {
        handle(l->w, l->d[i], l->handled);
        ag_bus_delivery_free(l->w->consumer, l->d[i]);
    }
    return NULL;
}

static size_t lane_of(const struct ag_bus_delivery *d, size_t lanes)
{
    const char *s = d->msg.subject;
    return s ? (size_t)(ag_xxh3(s, strlen(s)) % lanes) : 0;
}

/* Split `ds` into lanes by aggregate (a message without one: lane 0) and handle
 * them at once, lane 0 on this thread; back when every lane is done. */
static void run_lanes(struct ag_bus_worker *w, struct ag_bus_delivery **ds, size_t n,
                      size_t *handled)
{
    size_t k = w->cfg.lanes < n ? w->cfg.lanes : n;
    struct lane *ls = ag_calloc(k, sizeof *ls);
    struct ag_bus_delivery **byl = ag_calloc(n, sizeof(struct ag_bus_delivery *));
    size_t *lane = ag_calloc(n, sizeof *lane);
    if (!ls || !byl || !lane) { /* one lane, then */
        ag_free(ls), ag_free(byl), ag_free(lane);
        struct lane one = {w, ds, n, handled, 0, false};
        lane_run(&one);
        return;
    }
    for (size_t i = 0; i < n; i++) ls[lane[i] = lane_of(ds[i], k)].n++;
    for (size_t j = 0, at = 0; j < k; j++) { /* counting sort: stable, in order */
        size_t len = ls[j].n;
        ls[j] = (struct lane){w, byl + at, 0, handled, 0, false};
        at += len;
    }
    for (size_t i = 0; i < n; i++) ls[lane[i]].d[ls[lane[i]].n++] = ds[i];
    for (size_t j = 1; j < k; j++)
        ls[j].threaded = ls[j].n && pthread_create(&ls[j].th, NULL, lane_run, &ls[j]) == 0;
    for (size_t j = 0; j < k; j++)
        if (!ls[j].threaded) lane_run(&ls[j]); /* lane 0, or no thread could start */
    for (size_t j = 1; j < k; j++)
        if (ls[j].threaded) pthread_join(ls[j].th, NULL);
    ag_free(ls), ag_free(byl), ag_free(lane);
}

int ag_bus_worker_poll(struct ag_bus_worker *w, size_t max, int timeout_ms, size_t *handled,
                       struct ag_err *err)
{
    struct ag_bus_delivery **ds;
    size_t n = 0;
    int rc = ag_bus_fetch(w->consumer, max, timeout_ms, &ds, &n, err);
    if (rc) return rc;
    if (w->cfg.lanes > 1 && n > 1) {
        run_lanes(w, ds, n, handled);
    } else {
        struct lane one = {w, ds, n, handled, 0, false};
        lane_run(&one);
    }
    ag_free(ds);
    return 0;
}

/* Handle a parked entry again from its stored CloudEvent. */
static int rehandle(struct ag_bus_worker *w, const struct entry *en, struct ag_err *err)
{
    struct ag_bus_delivery d = {0};
    void *mem = NULL;
    int rc = ag_bus_cloudevent_parse(en->body, strlen(en->body), en->topic, &d, &mem, err);
    if (rc) return rc;
    d.body = en->body;
    d.body_len = strlen(en->body);
    d.deliveries = en->deliveries + 1;
    d.last = true;
    rc = call(w, &d, err);
    ag_free(mem);
    return rc;
}

/* The head of `aggregate` was resolved: handle the ones waiting behind it, in
 * order, until one fails (it becomes the head). */
static int release(struct ag_bus_worker *w, const char *aggregate, size_t *released,
                   struct ag_err *err)
{
    for (size_t i = 0; aggregate && i < w->n; i++) {
        struct entry *e = &w->e[i];
        if (e->state != PARKED || !e->aggregate || strcmp(e->aggregate, aggregate)) continue;
        struct ag_err he;
        int rc = rehandle(w, e, &he);
        if (rc)
            return record(w, "Failed",
                          json_pack("{sIss}", "id", (json_int_t)e->id, "error", he.msg), err);
        if ((rc = resolve(w, e, "Replayed", err))) return rc;
        if (released) (*released)++;
    }
    return 0;
}

int ag_bus_worker_replay(struct ag_bus_worker *w, uint64_t id, size_t *released, struct ag_err *err)
{
    if (released) *released = 0;
    pthread_mutex_lock(&w->lock);
    struct entry *e = find(w, id);
    int rc = 0;
    if (!e)
        rc = ag_err_set(err, AG_ENOTFOUND, "no parked message %llu", (unsigned long long)id);
    else if (e->state != PARKED)
        rc = ag_err_set(err, AG_ECONFLICT, "parked message %llu is resolved already",
                        (unsigned long long)id);
    else if (e->waiting)
        rc = ag_err_set(err, AG_ECONFLICT, "parked message %llu waits behind %llu: replay that",
                        (unsigned long long)id, (unsigned long long)head_of(w, e->aggregate)->id);
    if (!rc && (rc = rehandle(w, e, err))) {
        struct ag_err re;
        int hrc = rc;
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        record(w, "Failed", json_pack("{sIss}", "id", (json_int_t)id, "error", why), &re);
        rc = ag_err_set(err, hrc, "still failing: %s", why);
    } else if (!rc && (rc = resolve(w, e, "Replayed", err)) == 0) {
        e = find(w, id);
        char *agg = dup_str(e->aggregate);
        rc = release(w, agg, released, err);
        ag_free(agg);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int ag_bus_worker_drop(struct ag_bus_worker *w, uint64_t id, size_t *released, struct ag_err *err)
{
    if (released) *released = 0;
    pthread_mutex_lock(&w->lock);
    struct entry *e = find(w, id);
    int rc = 0;
    if (!e)
        rc = ag_err_set(err, AG_ENOTFOUND, "no parked message %llu", (unsigned long long)id);
    else if (e->state != PARKED)
        rc = ag_err_set(err, AG_ECONFLICT, "parked message %llu is resolved already",
                        (unsigned long long)id);
    bool head = !rc && !e->waiting;
    if (!rc && (rc = resolve(w, e, "Dropped", err)) == 0 && head) {
        e = find(w, id);
        char *agg = dup_str(e->aggregate);
        rc = release(w, agg, released, err);
        ag_free(agg);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* ---- listings ---- */

static json_t *entry_json(struct ag_bus_worker *w, const struct entry *e, bool with_event)
{
    static const char *const states[] = {"parked", "replayed", "dropped"};
    const struct entry *h = e->waiting ? head_of(w, e->aggregate) : NULL;
    json_t *o =
        json_pack("{sI ss ss? ss? ss? ss? ss sI sb ss sI}", "id", (json_int_t)e->id, "consumer",
                  w->cfg.consumer.name, "aggregate", e->aggregate, "topic", e->topic, "msgId",
                  e->msg_id, "type", e->type, "error", e->error ? e->error : "", "deliveries",
                  (json_int_t)e->deliveries, "waiting", e->waiting && e->state == PARKED, "state",
                  states[e->state], "parkedAtNs", (json_int_t)e->at_ns);
    if (o && h && h != e) json_object_set_new(o, "behind", json_integer((json_int_t)h->id));
    if (o && with_event && e->body) json_object_set_new(o, "event", json_loads(e->body, 0, NULL));
    return o;
}

static int dump(json_t *j, struct ag_buf *out, struct ag_err *err)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = s && ag_buf_puts(out, s) == 0 ? 0 : ag_err_set(err, AG_ENOMEM, "out of memory");
    ag_free(s);
    return rc;
}

int ag_bus_worker_list(struct ag_bus_worker *w, struct ag_buf *out, struct ag_err *err)
{
    pthread_mutex_lock(&w->lock);
    json_t *a = json_array();
    for (size_t i = 0; a && i < w->n; i++)
        if (w->e[i].state == PARKED) json_array_append_new(a, entry_json(w, &w->e[i], false));
    pthread_mutex_unlock(&w->lock);
    return dump(a, out, err);
}

int ag_bus_worker_show(struct ag_bus_worker *w, uint64_t id, struct ag_buf *out, struct ag_err *err)
{
    pthread_mutex_lock(&w->lock);
    struct entry *e = find(w, id);
    json_t *o = e ? entry_json(w, e, true) : NULL;
    pthread_mutex_unlock(&w->lock);
    if (!e) return ag_err_set(err, AG_ENOTFOUND, "no parked message %llu", (unsigned long long)id);
    return dump(o, out, err);
}

/* ---- life ---- */

int ag_bus_worker_open(struct ag_bus *b, const struct ag_bus_worker_config *cfg,
                       struct ag_bus_worker **out, struct ag_err *err)
{
    if (!b || !cfg || !cfg->store || !cfg->handler || !cfg->consumer.name || !out)
        return ag_err_set(err, AG_EINVAL, "a worker needs a bus, a store, a handler and a name");
    struct ag_bus_worker *w = ag_calloc(1, sizeof *w);
    if (!w) return ag_err_set(err, AG_ENOMEM, "out of memory");
    w->cfg = *cfg;
    w->bus = b;
    pthread_mutex_init(&w->lock, NULL);
    int rc = ag_bus_consumer_open(b, &cfg->consumer, &w->consumer, err);
    if (!rc) {
        w->cfg.consumer.name = w->consumer->name;
        snprintf(w->stream, sizeof w->stream, "_dlq-%s", w->consumer->name);
        rc = load(w, err);
    }
    if (rc) {
        ag_bus_worker_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

const char *ag_bus_worker_name(const struct ag_bus_worker *w)
{
    return w->cfg.consumer.name;
}

void ag_bus_worker_close(struct ag_bus_worker *w)
{
    if (!w) return;
    if (w->consumer) ag_bus_consumer_close(w->consumer);
    for (size_t i = 0; i < w->n; i++) entry_free(&w->e[i]);
    ag_free(w->e);
    while (w->retry) retry_clear(w, w->retry->aggregate);
    pthread_mutex_destroy(&w->lock);
    ag_free(w);
}
