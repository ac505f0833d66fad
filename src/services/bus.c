/*
 * The published language and its relay (docs/events.md): which domain events other
 * contexts and outside systems may rely on, the shape each takes on the bus, and
 * the ops view of the relay (GET /admin/bus, the "bus" readiness check, metrics).
 *
 * An integration event is a CloudEvent on subject `agora.<context>.<Type>` with
 * type `agora.<context>.<Type>`, source `/agora/<context>`, subject = the
 * aggregate id, id = the domain event's id. Its data is a stable, documented
 * subset of the domain event's (plus the aggregate id under its own name); no
 * personal data (names, emails, addresses) is ever published. OrderPlaced is
 * enriched with the order's customer and lines, read from the order's stream up to
 * that event, so a consumer needs nothing else to react to it.
 *
 * Since issue 19's bounded aggregates a domain event and the integration event it
 * publishes may differ in name: the stock item records StockHeld / StockFreed and
 * the account AccountCharged / AccountRefunded, published as the documented
 * StockReserved / StockReleased and PaymentCaptured / PaymentRefunded (`as`). The
 * account's events carry the amount in minor units of the account's currency; the
 * published amount is {amount, currency}, the currency read from the stream's
 * AccountOpened (`money`). A StockFreed without a reason (written before it had
 * one) is published with reason "released".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/relay.h"
#include "services/internal.h"

struct pl_event {
    const char *prefix;  /* stream prefix: streams "<prefix>-<id>" */
    const char *type;    /* domain event type = integration event type */
    const char *context; /* subject token */
    const char *id_key;  /* the aggregate id's name in the data */
    const char *fields[6];
    const char *as; /* the integration event's type; NULL → `type` */
    bool money;     /* `amount` is minor units of the account's currency */
};

static const struct pl_event language[] = {
    {"order", "OrderPlaced", "ordering", "orderId", {"subtotal", "discount", "total", "sagaId"}},
    {"order", "OrderConfirmed", "ordering", "orderId", {"trackingNumber"}},
    {"order", "OrderCancelled", "ordering", "orderId", {"reason"}},
    {"order", "OrderShipped", "ordering", "orderId", {"shippedAt"}},
    {"stock", "StockReserved", "inventory", "productId", {"orderId", "quantity"}},
    {"stock", "StockReleased", "inventory", "productId", {"orderId", "quantity", "reason"}},
    {"stock", "StockHeld", "inventory", "productId", {"orderId", "quantity"}, "StockReserved"},
    {"stock",
     "StockFreed",
     "inventory",
     "productId",
     {"orderId", "quantity", "reason"},
     "StockReleased"},
    {"account", "PaymentCaptured", "payments", "accountId", {"orderId", "amount"}},
    {"account", "PaymentRefunded", "payments", "accountId", {"orderId", "amount"}},
    {"account",
     "AccountCharged",
     "payments",
     "accountId",
     {"orderId", "amount"},
     "PaymentCaptured",
     true},
    {"account",
     "AccountRefunded",
     "payments",
     "accountId",
     {"orderId", "amount"},
     "PaymentRefunded",
     true},
    {"shipment", "ShipmentArranged", "shipping", "orderId", {"shipmentId", "trackingNumber"}},
    {"shipment", "ShipmentCancelled", "shipping", "orderId", {"reason"}},
    {"shipment", "ShipmentDispatched", "shipping", "orderId", {"dispatchedAt"}},
    /* the choreographed PlaceOrder's outcomes (--saga-mode choreography), keyed by order */
    {"reservation", "OrderStockReserved", "inventory", "orderId", {"items"}},
    {"reservation", "StockReservationFailed", "inventory", "orderId", {"reason"}},
    {"reservation", "OrderStockReleased", "inventory", "orderId", {"reason"}},
    {"payment", "OrderPaymentCaptured", "payments", "orderId", {"accountId", "amount"}},
    {"payment", "PaymentFailed", "payments", "orderId", {"reason"}},
    {"payment", "OrderPaymentRefunded", "payments", "orderId", {"accountId", "amount"}},
    {"shipment", "ShipmentFailed", "shipping", "orderId", {"reason"}},
    {"product", "ProductAdded", "catalog", "productId", {"sku", "name", "price"}},
    {"product", "ProductPriceChanged", "catalog", "productId", {"price"}},
    {"product", "ProductDiscontinued", "catalog", "productId", {NULL}},
};

/* `s` (NUL-terminated) is the `n` bytes at `p`: bounded by both, no strlen (the
 * relay looks up every event of $all in the whole table). */
static bool same(const char *s, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] && s[i] == p[i]) i++;
    return i == n && !s[i];
}

/* The stream is "<prefix>-<id>". */
static bool prefixed(const char *prefix, const char *stream, size_t len)
{
    size_t i = 0;
    while (prefix[i] && i < len && stream[i] == prefix[i]) i++;
    return !prefix[i] && i + 1 < len && stream[i] == '-';
}

static const struct pl_event *lookup(const struct ag_event *ev, const char **id)
{
    for (size_t i = 0; i < AG_ARRAY_SIZE(language); i++) {
        const struct pl_event *e = &language[i];
        if (same(e->type, ev->type, ev->type_len) &&
            prefixed(e->prefix, ev->stream, ev->stream_len)) {
            *id = ev->stream + strlen(e->prefix) + 1;
            return e;
        }
    }
    return NULL;
}

/* customerId and items of the order, folded from its stream up to `ev`. */
static int order_lines(struct ag_store *s, const struct ag_event *ev, json_t *out)
{
    struct ag_event_page pg;
    int rc = ag_store_read_stream(s, ev->stream, ev->stream_len, 0, AG_READ_FORWARD,
                                  (size_t)ev->version + 1, &pg, NULL);
    if (rc) return rc;
    json_t *items = json_array();
    for (size_t i = 0; i < pg.count; i++) {
        const struct ag_event *e = &pg.events[i];
        json_t *d = ag_es_event_data(e, NULL); /* upcast (es/upcast.c) */
#define IS(t) (e->type_len == strlen(t) && memcmp(e->type, t, e->type_len) == 0)
        if (IS("OrderCreated"))
            json_object_set(out, "customerId", json_object_get(d, "customerId"));
        const char *pid = json_string_value(json_object_get(d, "productId"));
        size_t k = 0;
        for (; pid && k < json_array_size(items); k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(items, k), "productId")),
                       pid) == 0)
                break;
        if (IS("ItemAdded") && pid && k < json_array_size(items)) {
            json_t *it = json_array_get(items, k);
            json_object_set_new(it, "quantity",
                                json_integer(json_integer_value(json_object_get(it, "quantity")) +
                                             json_integer_value(json_object_get(d, "quantity"))));
        } else if (IS("ItemAdded") && pid) {
            json_array_append_new(items, json_pack("{s:s, s:O?, s:O?}", "productId", pid,
                                                   "quantity", json_object_get(d, "quantity"),
                                                   "unitPrice", json_object_get(d, "unitPrice")));
        } else if (IS("ItemRemoved") && pid && k < json_array_size(items)) {
            json_array_remove(items, k);
        }
#undef IS
        json_decref(d);
    }
    json_object_set_new(out, "items", items);
    ag_event_page_free(&pg);
    return 0;
}

/* `amount` (minor units) → {amount, currency}, the currency from the account's
 * AccountOpened (its stream's first event). 1: no currency found, so nothing valid
 * to publish (the event is skipped rather than blocking the relay). */
static int account_money(struct ag_store *s, const struct ag_event *ev, json_t *o)
{
    json_t *amount = json_object_get(o, "amount");
    if (!json_is_integer(amount)) return 0;
    struct ag_event_page pg;
    int rc = ag_store_read_stream(s, ev->stream, ev->stream_len, 0, AG_READ_FORWARD, 1, &pg, NULL);
    if (rc) return rc;
    json_t *d = pg.count ? json_loadb(pg.events[0].data, pg.events[0].data_len, 0, NULL) : NULL;
    json_t *cur = json_object_get(d, "currency");
    if (json_is_string(cur))
        json_object_set_new(o, "amount",
                            json_pack("{s:O, s:O}", "amount", amount, "currency", cur));
    else
        rc = 1;
    json_decref(d);
    ag_event_page_free(&pg);
    return rc;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A JSON string as jansson writes it: ag_buf_json_str's escapes, but a control
 * character without a short escape as \u00XX in upper case (jansson's), not
 * ag_buf_json_str's lower case. */
static int put_jstr(struct ag_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0;
    while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') i++;
    if (i == n) { /* the usual case: nothing to escape, one copy */
        int rc = ag_buf_reserve(b, n + 2);
        if (rc) return rc;
        b->data[b->len++] = '"';
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len++] = '"';
        b->data[b->len] = 0;
        return 0;
    }
    i = 0;
    while (i < n && ((unsigned char)s[i] >= 0x20 || s[i] == '\n' || s[i] == '\t')) i++;
    if (i == n) return ag_buf_json_str(b, s, n); /* short escapes only */
    int rc = ag_buf_putc(b, '"');
    for (i = 0; !rc && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        if (c >= 0x20 && c != '"' && c != '\\') {
            rc = ag_buf_putc(b, (char)c);
            continue;
        }
        const char *e = c == '"'    ? "\\\""
                        : c == '\\' ? "\\\\"
                        : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                        : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f"
                                    : u;
        rc = ag_buf_puts(b, e);
    }
    return rc ? rc : ag_buf_putc(b, '"');
}

/* `v` as json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) writes it (same bytes), into
 * `b`: the relay encodes every event, and jansson's dump (a callback per piece,
 * the keys sorted through an allocated array) was a fifth of its CPU. Reals, rare
 * here, are left to jansson. */
static int dump_sorted(const json_t *v, struct ag_buf *b)
{
    if (json_is_object(v)) {
        size_t n = json_object_size(v), i = 0;
        const char *stack_keys[16], **keys = n <= 16 ? stack_keys : ag_calloc(n, sizeof *keys);
        if (!keys) return AG_ENOMEM;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) keys[i++] = k;
        qsort(keys, n, sizeof *keys, key_cmp);
        int rc = ag_buf_putc(b, '{');
        for (i = 0; !rc && i < n; i++) {
            if (i) ag_buf_putc(b, ',');
            put_jstr(b, keys[i], strlen(keys[i]));
            ag_buf_putc(b, ':');
            rc = dump_sorted(json_object_get(v, keys[i]), b);
        }
        if (keys != stack_keys) ag_free(keys);
        return rc ? rc : ag_buf_putc(b, '}');
    }
    if (json_is_array(v)) {
        int rc = ag_buf_putc(b, '[');
        for (size_t i = 0; !rc && i < json_array_size(v); i++) {
            if (i) ag_buf_putc(b, ',');
            rc = dump_sorted(json_array_get(v, i), b);
        }
        return rc ? rc : ag_buf_putc(b, ']');
    }
    if (json_is_string(v)) return put_jstr(b, json_string_value(v), json_string_length(v));
    if (json_is_integer(v)) return ag_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_true(v)) return ag_buf_puts(b, "true");
    if (json_is_false(v)) return ag_buf_puts(b, "false");
    if (json_is_null(v)) return ag_buf_puts(b, "null");
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY); /* a real */
    int rc = t ? ag_buf_puts(b, t) : AG_ENOMEM;
    ag_free(t);
    return rc;
}

/* a b c d into out (truncated to `size`): the relay maps every event, no printf. */
static void concat4(char *out, size_t size, const char *a, const char *b, const char *c,
                    const char *d)
{
    const char *parts[] = {a, b, c, d};
    size_t o = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(parts[i]);
        if (n > size - 1 - o) n = size - 1 - o;
        memcpy(out + o, parts[i], n);
        o += n;
    }
    out[o] = 0;
}

/* ---- the data, straight from the stored text ----
 *
 * The relay maps every event of the published language, and parsing the stored
 * payload into a jansson tree only to copy two or three members out of it was
 * most of the mapping's cost. The fast path scans the stored object's top level
 * (the store keeps only checked JSON: ag_json_check on append, so UTF-8, no
 * duplicate keys, numbers that fit) and writes the published members in sorted
 * order, each value copied as stored when that is how dump_sorted would write it
 * (a string without escapes, a canonical integer, true/false/null) and otherwise
 * parsed alone and written by dump_sorted: the bytes are the tree path's
 * (tests/unit/services/test_pl_encode.c checks every event type; debug builds
 * compare the two on every event). OrderPlaced (reads the order's stream), the
 * account's money (reads its currency), types with upcasters, and anything the
 * scan does not expect take the tree path. */

struct member {
    const char *key; /* the published name (static, or the entry's id key) */
    const char *v;   /* the value's stored text (NULL: `lit`) */
    size_t n;
    bool raw;        /* the stored text is written as is */
    const char *lit; /* a literal JSON value instead ("": the aggregate id) */
};

/* dump_sorted writes the stored text of this value unchanged: a string without
 * escapes, true/false/null, an integer -?(0|[1-9][0-9]*) of up to 18 digits. */
static bool as_stored(const struct ag_json_span *v)
{
    if (v->kind == AG_JSON_STRING) return !v->escapes;
    if (v->kind == AG_JSON_LITERAL) return true;
    if (v->kind != AG_JSON_NUMBER) return false;
    const char *s = v->p;
    size_t n = v->n, d = *s == '-' ? 1 : 0;
    if (n <= d || n - d > 18 || (s[d] == '0' && (n - d > 1 || d))) return false;
    for (size_t i = d; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static int member_cmp(const void *a, const void *b)
{
    return strcmp(((const struct member *)a)->key, ((const struct member *)b)->key);
}

/* One member's value into `b`; 1: a value the tree path must decide. */
static int put_value(struct ag_buf *b, const struct member *m)
{
    if (m->raw) return ag_buf_append(b, m->v, m->n);
    json_t *v = json_loadb(m->v, m->n, JSON_DECODE_ANY, NULL);
    if (!v) return 1;
    int rc = dump_sorted(v, b);
    json_decref(v);
    return rc;
}

/* The data of `e` from the stored text into out->data: 1 done, 0 not here (the
 * tree path), < 0 an AG_E* error. */
static int data_fast(const struct pl_event *e, const struct ag_event *ev, const char *id,
                     size_t id_len, char **out)
{
    if (e->money || strcmp(e->type, "OrderPlaced") == 0 ||
        ag_es_has_upcasters(ev->type, ev->type_len))
        return 0;
    for (size_t i = 0; i < id_len; i++)
        if ((unsigned char)id[i] >= 0x80) return 0; /* json_stringn's check is the tree's */
    struct member m[AG_ARRAY_SIZE(e->fields) + 2];
    struct ag_json_span v[AG_ARRAY_SIZE(e->fields)];
    size_t nm = 0;
    for (; nm < AG_ARRAY_SIZE(e->fields) && e->fields[nm]; nm++)
        if (strcmp(e->fields[nm], e->id_key) == 0) return 0; /* would replace the id */
    if (ag_json_members(ev->data, ev->data_len, e->fields, nm, v)) return 0;
    for (size_t i = 0; i < nm; i++)
        m[i] =
            (struct member){.key = e->fields[i], .v = v[i].p, .n = v[i].n, .raw = as_stored(&v[i])};
    size_t k = 0; /* the members present, the id, the default reason */
    bool reason = false;
    for (size_t i = 0; i < nm; i++)
        if (m[i].v) m[k++] = m[i], reason |= strcmp(m[i].key, "reason") == 0;
    m[k++] = (struct member){.key = e->id_key, .lit = ""};
    if (e->as && strcmp(e->as, "StockReleased") == 0 && !reason)
        m[k++] = (struct member){.key = "reason", .lit = "\"released\""};
    qsort(m, k, sizeof *m, member_cmp);
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_buf_reserve(&b, ev->data_len + id_len + 64);
    for (size_t i = 0; !rc && i < k; i++) {
        rc = ag_buf_putc(&b, i ? ',' : '{');
        if (!rc) rc = put_jstr(&b, m[i].key, strlen(m[i].key));
        if (!rc) rc = ag_buf_putc(&b, ':');
        if (!rc && m[i].lit && m[i].lit[0])
            rc = ag_buf_puts(&b, m[i].lit);
        else if (!rc && m[i].lit)
            rc = put_jstr(&b, id, id_len);
        else if (!rc)
            rc = put_value(&b, &m[i]);
    }
    if (!rc) rc = ag_buf_putc(&b, '}');
    if (rc) {
        ag_buf_free(&b);
        return rc > 0 ? 0 : rc;
    }
    *out = ag_buf_steal(&b, NULL);
    return *out ? 1 : AG_ENOMEM;
}

/* The data of `e` through a jansson tree (upcast, enriched): 1 done, 0 skip the
 * event, < 0 an AG_E* error. */
static int data_tree(struct ag_store *s, const struct pl_event *e, const struct ag_event *ev,
                     const char *id, size_t id_len, char **out)
{
    struct ag_err ue;
    json_t *d = ag_es_event_data(ev, &ue); /* the current shape, whatever version is stored */
    if (!d) return ue.code;
    json_t *o = json_object();
    json_object_set_new(o, e->id_key, json_stringn(id, id_len));
    for (size_t i = 0; i < AG_ARRAY_SIZE(e->fields) && e->fields[i]; i++) {
        json_t *v = json_object_get(d, e->fields[i]);
        if (v) json_object_set(o, e->fields[i], v);
    }
    int rc = strcmp(e->type, "OrderPlaced") == 0 ? order_lines(s, ev, o) : 0;
    if (!rc && e->money) rc = account_money(s, ev, o);
    if (!rc && e->as && strcmp(e->as, "StockReleased") == 0 && !json_object_get(o, "reason"))
        json_object_set_new(o, "reason", json_string("released"));
    json_decref(d);
    if (!rc) {
        struct ag_buf b;
        ag_buf_init(&b);
        if (dump_sorted(o, &b) == 0)
            *out = ag_buf_steal(&b, NULL);
        else
            ag_buf_free(&b);
#ifndef NDEBUG /* debug builds (every test run): the same bytes as jansson's */
        char *j = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        if (*out && j && strcmp(j, *out) != 0) {
            AG_ERROR("bus.encoding_differs", AG_LS("ours", *out), AG_LS("jansson", j));
            abort();
        }
        ag_free(j);
#endif
    }
    json_decref(o);
    if (rc) return rc > 0 ? 0 : rc;
    return *out ? 1 : AG_ENOMEM;
}

int svc_published_language_tree(const struct ag_event *ev, char **data)
{
    const char *id;
    const struct pl_event *e = lookup(ev, &id);
    *data = NULL;
    if (e && (e->money || strcmp(e->type, "OrderPlaced") == 0)) return AG_EINVAL; /* the store's */
    return e ? data_tree(NULL, e, ev, id, ev->stream_len - (size_t)(id - ev->stream), data) : 0;
}

int svc_published_language(void *ud, struct ag_store *s, const struct ag_event *ev,
                           struct ag_relay_msg *out)
{
    AG_UNUSED(ud);
    const char *id;
    const struct pl_event *e = lookup(ev, &id);
    if (!e) return 0;
    size_t id_len = ev->stream_len - (size_t)(id - ev->stream);
    int rc = data_fast(e, ev, id, id_len, &out->data);
#ifndef NDEBUG /* debug builds (every test run): the fast path writes the tree's bytes */
    char *t = NULL;
    if (rc == 1 && data_tree(s, e, ev, id, id_len, &t) == 1 && strcmp(t, out->data) != 0) {
        AG_ERROR("bus.fast_encoding_differs", AG_LS("fast", out->data), AG_LS("tree", t));
        abort();
    }
    ag_free(t);
#endif
    if (rc == 0) rc = data_tree(s, e, ev, id, id_len, &out->data);
    if (rc <= 0) return rc;
    const char *type = e->as ? e->as : e->type;
    concat4(out->topic, sizeof out->topic, "agora.", e->context, ".", type);
    concat4(out->type, sizeof out->type, "agora.", e->context, ".", type);
    concat4(out->source, sizeof out->source, "/agora/", e->context, "", "");
    if (id_len >= sizeof out->subject) id_len = sizeof out->subject - 1;
    memcpy(out->subject, id, id_len);
    out->subject[id_len] = 0;
    out->data_checked = true; /* our writer's, from JSON the store checked on append */
    return 1; /* jansson allocates through ag_malloc: the relay frees with ag_free */
}

/* ---- ops: GET /admin/bus, readiness, metrics ---- */

int svc_bus_admin(struct svc_job *j)
{
    const struct svc_env *p = j->env;
    if (!p->bus) return svc_ok(j, 200, json_pack("{s:b, s:n, s:n}", "enabled", 0, "relay", "bus"));
    struct ag_bus_health h;
    ag_bus_health(p->bus, &h);
    struct ag_relay_stats r;
    ag_relay_stats(p->relay, &r);
    return svc_ok(
        j, 200,
        json_pack("{s:b, s:{s:s, s:s, s:b, s:s*, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:f, s:I, "
                  "s:I, s:s, s:s*}}",
                  "enabled", 1, "bus", "adapter", ag_bus_name(p->bus), "uri", p->bus->uri,
                  "connected", h.connected, "error", h.connected ? NULL : h.message, "published",
                  (json_int_t)h.published, "duplicates", (json_int_t)h.duplicates, "reconnects",
                  (json_int_t)h.reconnects, "relay", "checkpoint", (json_int_t)r.checkpoint,
                  "position", (json_int_t)r.position, "head", (json_int_t)r.head, "lagEvents",
                  (json_int_t)r.lag_events, "lagSeconds", r.lag_seconds, "published",
                  (json_int_t)r.published, "failures", (json_int_t)r.failures, "status",
                  r.standby   ? "standby"
                  : r.failing ? "retrying"
                              : "running",
                  "error", r.failing ? r.error : NULL));
}

int ag_platform_bus_ready(void *ud, struct ag_buf *detail)
{
    struct ag_platform *p = ud;
    if (!p->bus) return ag_buf_puts(detail, "no bus configured"), 0;
    struct ag_bus_health h;
    ag_bus_health(p->bus, &h);
    if (h.connected) return ag_buf_printf(detail, "%s connected", ag_bus_name(p->bus)), 0;
    ag_buf_printf(detail, "the bus is unreachable: %s (the relay retries; nothing is lost)",
                  h.message);
    return AG_EUNAVAILABLE;
}

static struct ag_obs_series *gauge(struct ag_obs_registry *r, enum ag_obs_type t, const char *name,
                                   const char *help)
{
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    if (ag_obs_family_define(r, &(struct ag_obs_family_spec){t, name, help}, &f) == 0)
        ag_obs_series_get(f, NULL, &s);
    return s;
}

static void bus_collect(void *ud)
{
    struct ag_platform *p = ud;
    if (!p->relay) return; /* stopped */
    struct ag_relay_stats r;
    ag_relay_stats(p->relay, &r);
    struct ag_bus_health h;
    ag_bus_health(p->bus, &h);
    struct ag_obs_registry *m = p->metrics;
    ag_obs_gauge_set(gauge(m, AG_OBS_GAUGE, "agora_relay_lag_events",
                           "Events of $all the outbox relay has not handled yet."),
                     (double)r.lag_events);
    ag_obs_gauge_set(gauge(m, AG_OBS_GAUGE, "agora_relay_lag_seconds",
                           "Age of the oldest event the relay could not publish yet."),
                     r.lag_seconds);
    ag_obs_gauge_set(gauge(m, AG_OBS_GAUGE, "agora_relay_published_messages",
                           "Integration events the broker acknowledged since start."),
                     (double)r.published);
    ag_obs_gauge_set(gauge(m, AG_OBS_GAUGE, "agora_bus_connected",
                           "1 while the bus's broker is reachable, else 0."),
                     h.connected ? 1 : 0);
}

/* cfg.shared: the relay's lease, on a read-write handle of its own (the read
 * model "leases", on the relay's thread only), pinged once a second so a lost
 * connection (and with it the lease) is noticed. */
static int relay_lease(void *ud, bool *held, bool *taken)
{
    struct ag_platform *p = ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (now - p->lease_pinged >= 1.0) {
        p->lease_pinged = now;
        ag_rm_ping(p->lease_rm, NULL);
    }
    return ag_rm_lease(p->lease_rm, "relay:outbox", held, taken, NULL);
}

int svc_bus_start(struct ag_platform *p, struct ag_err *err)
{
    if (!p->cfg.bus_uri) return 0;
    struct ag_bus_options o = {.store = p->store};
    int rc = ag_bus_open(p->cfg.bus_uri, &o, &p->bus, err);
    struct ag_relay_config rc_cfg = {
        .store = p->store, .bus = p->bus, .name = "outbox", .map = svc_published_language};
    if (!rc && p->cfg.shared) {
        rc = ag_rm_open(p->rms.dir, "leases", AG_RM_READWRITE, &p->lease_rm, err);
        rc_cfg.lease = relay_lease;
        rc_cfg.lease_ud = p;
    }
    if (!rc) rc = ag_relay_start(&rc_cfg, &p->relay, err);
    if (rc) return rc;
    for (size_t i = 0; i < SVC_MAX_CONTEXTS; i++)
        p->envs[i].bus = p->bus, p->envs[i].relay = p->relay;
    p->env.bus = p->bus;
    p->env.relay = p->relay;
    AG_INFO("bus.started", AG_LS("uri", p->cfg.bus_uri));
    return 0;
}

void svc_bus_observe(struct ag_platform *p)
{
    ag_obs_health_add(p->health, AG_OBS_READY, "bus", ag_platform_bus_ready, p);
    if (p->bus) ag_obs_registry_collector(p->metrics, bus_collect, p);
}

void svc_bus_stop(struct ag_platform *p)
{
    ag_relay_stop(p->relay);
    p->relay = NULL;
    ag_rm_close(p->lease_rm); /* after its one user, the relay's thread */
    p->lease_rm = NULL;
    ag_bus_close(p->bus);
    p->bus = NULL;
}
