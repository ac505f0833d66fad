/*
 * The shard layout and adding a shard.
 *
 Each member has a stream `_shards`: ShardLayout {"index":k,"count":N} events
 * (the last one is in force) and, on shard 0, ShardPins {"pins":{"<hex key
 * hash>": shard, ...}} events (the pinned keys, all of them in force). A new
 * layout costs one event, at position 0, in each member's $all.
 * Open checks that member k says index k and count N, so a URI that lists the
 * shards in another order, leaves one out or adds an empty store without
 * ag_store_shard_add is refused instead of silently routing streams elsewhere.
 * A set of members none of which has a layout is new: each gets its own before
 * the first append (so a store nothing was appended to stays empty).
 *
 * Adding shard N (ag_store_shard_add, offline). Jump hash moves a key only to
 * the new bucket, and ~1/(N+1) of them. Every key that has a stream and would
 * move is pinned to the shard it is on (the map lives in shard 0's layout), so
 * no stream ever moves and no event is copied; keys not seen before spread over
 * N+1 shards. The map costs 9 bytes of memory per pinned key at open.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/shard/internal.h"

struct layout {
    bool have;
    int index, count;
};

#define PINS_PER_EVENT 16384 /* ~25 bytes each: well under the 1 MiB event limit */

/* Member k's layout: the last ShardLayout event of its `_shards`; on shard 0 the
 * ShardPins events are loaded into ss->pins when `pins` is set. */
static int layout_read(struct shard_store *ss, size_t k, bool pins, struct layout *l,
                       struct ag_err *err);

static int pins_load(struct shard_store *ss, json_t *pins, struct ag_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(pins, key, v)
    {
        char *end;
        unsigned long long h = strtoull(key, &end, 16);
        if (end == key || *end || !json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= AG_STORE_SHARDS_MAX)
            return ag_err_set(err, AG_ECORRUPT, "shard 0 (%s): a pinned key is malformed",
                              ss->uri[0]);
        if (ag__shard_pin_put(&ss->pins, h, (uint32_t)json_integer_value(v)))
            return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    return 0;
}

static int layout_event(struct shard_store *ss, size_t k, const struct ag_event *e, bool pins,
                        struct layout *l, struct ag_err *err)
{
    json_t *d = json_loadb(e->data, e->data_len, 0, NULL);
    int rc = 0;
    if (e->type_len == 9 && memcmp(e->type, "ShardPins", 9) == 0) {
        if (pins) rc = pins_load(ss, json_object_get(d, "pins"), err);
    } else {
        json_t *i = json_object_get(d, "index"), *c = json_object_get(d, "count");
        if (!json_is_integer(i) || !json_is_integer(c))
            rc = ag_err_set(err, AG_ECORRUPT, "shard %zu (%s): its layout is not readable", k,
                            ss->uri[k]);
        l->have = true;
        l->index = (int)json_integer_value(i);
        l->count = (int)json_integer_value(c);
    }
    json_decref(d);
    return rc;
}

static int layout_read(struct shard_store *ss, size_t k, bool pins, struct layout *l,
                       struct ag_err *err)
{
    memset(l, 0, sizeof *l);
    struct ag_store *m = ss->sh[k];
    int64_t from = 0;
    for (;;) {
        struct ag_event_page pg;
        int rc = m->ops->read_stream(m, SHARD_LAYOUT_STREAM, sizeof SHARD_LAYOUT_STREAM - 1, from,
                                     AG_READ_FORWARD, 64, &pg, NULL);
        if (rc == AG_ENOTFOUND) return 0;
        if (rc)
            return ag_err_set(err, rc, "shard %zu (%s): reading its layout: %s", k, ss->uri[k],
                              ag_strerror(rc));
        for (size_t i = 0; i < pg.count && !rc; i++)
            rc = layout_event(ss, k, &pg.events[i], pins, l, err);
        bool end = pg.end || pg.count == 0;
        from = pg.next_version;
        ag_event_page_free(&pg);
        if (rc || end) return rc;
    }
}

static int layout_append(struct shard_store *ss, size_t k, const char *type, json_t *doc,
                         struct ag_err *err)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text) return ag_err_set(err, AG_ENOMEM, "out of memory");
    struct ag_event_data ev = {
        .type = type, .type_len = strlen(type), .data = text, .data_len = strlen(text)};
    struct ag_store *m = ss->sh[k];
    struct ag_err e;
    ag_err_clear(&e);
    int rc = m->ops->append(m, SHARD_LAYOUT_STREAM, sizeof SHARD_LAYOUT_STREAM - 1, AG_STORE_ANY,
                            &ev, 1, NULL, &e);
    free(text); /* jansson's */
    if (rc) ag_err_set(err, rc, "shard %zu (%s): writing its layout: %s", k, ss->uri[k], e.msg);
    return rc;
}

/* The new pins (in chunks), then the layout itself: a crash before the layout
 * leaves the old layout in force (pins of keys that do not move yet are inert). */
static int layout_write(struct shard_store *ss, size_t k, size_t count, json_t *pins,
                        struct ag_err *err)
{
    int rc = 0;
    const char *key;
    json_t *v, *chunk = json_object();
    json_object_foreach(pins, key, v)
    {
        json_object_set(chunk, key, v);
        if (json_object_size(chunk) < PINS_PER_EVENT) continue;
        json_t *doc = json_pack("{s:O}", "pins", chunk);
        rc = layout_append(ss, k, "ShardPins", doc, err);
        json_decref(doc);
        json_object_clear(chunk);
        if (rc) break;
    }
    if (!rc && json_object_size(chunk)) {
        json_t *doc = json_pack("{s:O}", "pins", chunk);
        rc = layout_append(ss, k, "ShardPins", doc, err);
        json_decref(doc);
    }
    json_decref(chunk);
    json_t *doc = json_pack("{s:I, s:I}", "index", (json_int_t)k, "count", (json_int_t)count);
    if (!rc) rc = layout_append(ss, k, "ShardLayout", doc, err);
    json_decref(doc);
    return rc;
}

/* Check member k's layout against its place in the list of `n`. */
static int layout_check(struct shard_store *ss, size_t k, size_t n, const struct layout *l,
                        struct ag_err *err)
{
    if (!l->have)
        return ag_err_set(err, AG_EINVAL,
                          "shard %zu (%s) has no shard layout while the others have: a new shard "
                          "is added with `agora store add-shard`",
                          k, ss->uri[k]);
    if (l->index != (int)k)
        return ag_err_set(err, AG_EINVAL,
                          "shard %zu (%s) was laid out as shard %d: list the shards in their "
                          "original order",
                          k, ss->uri[k], l->index);
    if (l->count != (int)n)
        return ag_err_set(err, AG_EINVAL,
                          "shard %zu (%s) belongs to a %d-shard layout but %zu shards are listed%s",
                          k, ss->uri[k], l->count, n,
                          l->count > (int)n ? " (one is missing)"
                                            : " (add shards with `agora store add-shard`)");
    return 0;
}

int ag__shard_layout_load(struct shard_store *ss, bool allow_new, struct ag_err *err)
{
    struct layout l[AG_STORE_SHARDS_MAX];
    size_t have = 0;
    int rc = 0;
    for (size_t k = 0; k < ss->n && !rc; k++)
        if (!(rc = layout_read(ss, k, k == 0, &l[k], err)) && l[k].have) have++;
    for (size_t k = 0; have && k < ss->n && !rc; k++) rc = layout_check(ss, k, ss->n, &l[k], err);
    if (!rc && !have && allow_new) ss->unlaid = true;
    return rc;
}

int ag__shard_layout_ensure(struct shard_store *ss, struct ag_err *err)
{
    if (!ss->unlaid) return 0;
    pthread_mutex_lock(&ss->layout_lock);
    int rc = 0;
    if (ss->unlaid) {
        for (size_t k = 0; k < ss->n && !rc; k++) rc = layout_write(ss, k, ss->n, NULL, err);
        if (!rc) ss->unlaid = false;
    }
    pthread_mutex_unlock(&ss->layout_lock);
    return rc;
}

/* ---- adding a shard ---- */

struct pin_scan {
    struct shard_store *ss; /* the n old shards' routing */
    json_t *pins;           /* the map being built (old pins included) */
    size_t added;
    int rc;
};

static int pin_stream(void *ud, const char *name, size_t len, int64_t version)
{
    AG_UNUSED(version);
    struct pin_scan *p = ud;
    size_t n = p->ss->n;
    if ((len == sizeof SHARD_LAYOUT_STREAM - 1 && memcmp(name, SHARD_LAYOUT_STREAM, len) == 0) ||
        (len > sizeof SHARD_XS_PREFIX - 1 &&
         memcmp(name, SHARD_XS_PREFIX, sizeof SHARD_XS_PREFIX - 1) == 0))
        return 0;
    uint64_t h = ag__shard_key_hash(name, len);
    uint32_t pinned;
    if (ag__shard_pin_get(&p->ss->pins, h, &pinned) == 0) return 0; /* pinned already */
    if (ag__shard_jump(h, (uint32_t)n + 1) == ag__shard_jump(h, (uint32_t)n)) return 0;
    uint32_t now = ag__shard_jump(h, (uint32_t)n);
    if (ag__shard_pin_put(&p->ss->pins, h, now)) return p->rc = AG_ENOMEM;
    char key[24];
    snprintf(key, sizeof key, "%llx", (unsigned long long)(h ? h : 1));
    json_object_set_new(p->pins, key, json_integer(now));
    p->added++;
    return 0;
}

static int add_checks(struct shard_store *all, size_t n, struct layout *l, struct ag_err *err)
{
    int rc = 0;
    size_t have = 0;
    for (size_t k = 0; k < n && !rc; k++)
        if (!(rc = layout_read(all, k, k == 0, &l[k], err)) && l[k].have) have++;
    for (size_t k = 0; have && k < n && !rc; k++) rc = layout_check(all, k, n, &l[k], err);
    if (rc) return rc;
    struct layout nl;
    if ((rc = layout_read(all, n, false, &nl, err))) return rc;
    struct ag_store_stats st = {0};
    all->sh[n]->ops->stats(all->sh[n], &st);
    if (nl.have || st.events)
        return ag_err_set(err, AG_EINVAL, "the new shard (%s) is not an empty store", all->uri[n]);
    return 0;
}

int ag_store_shard_add(const char *list, const char *new_uri, const struct ag_store_options *opts,
                       size_t *pinned, struct ag_err *err)
{
    if (pinned) *pinned = 0;
    if (!list || !new_uri || !*new_uri)
        return ag_err_set(err, AG_EINVAL, "add-shard needs the store and the new shard's URI");
    size_t len = strlen(list) + 1 + strlen(new_uri) + 1;
    char *both = ag_malloc(len);
    if (!both) return ag_err_set(err, AG_ENOMEM, "out of memory");
    snprintf(both, len, "%s,%s", list, new_uri);
    struct shard_store *all;
    int rc = ag__shard_open_raw(both, opts, &all, err);
    ag_free(both);
    if (rc) return rc;
    size_t n = all->n - 1;
    struct layout l[AG_STORE_SHARDS_MAX] = {0};
    all->n = n; /* route as the old layout while scanning */
    rc = add_checks(all, n, l, err);
    json_t *pins = json_object(); /* only the new ones: the old stay in their events */
    struct pin_scan scan = {all, pins, 0, 0};
    for (size_t k = 0; k < n && !rc; k++) {
        rc = all->sh[k]->ops->list_streams(all->sh[k], pin_stream, &scan);
        if (!rc && scan.rc) rc = ag_err_set(err, scan.rc, "out of memory");
    }
    all->n = n + 1;
    for (size_t k = 0; k <= n && !rc; k++) rc = layout_write(all, k, n + 1, k ? NULL : pins, err);
    if (!rc)
        AG_INFO("store.shard_added", AG_LU("shard", n), AG_LU("shards", n + 1),
                AG_LU("pinned", scan.added));
    json_decref(pins);
    if (!rc && pinned) *pinned = scan.added;
    ag__shard_close_raw(all);
    return rc;
}
