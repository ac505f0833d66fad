/*
 * The personal-data codec: which fields of which events and snapshots are
 * personal data, and sealing/opening them with the data key of the customer they
 * belong to (the vault, include/agora/vault.h). Every context that writes
 * personal data goes through here, so a new personal field is one row of
 * `fields` below (and, for a snapshot, one entry of its aggregate's list).
 *
 * What is personal (ARCHITECTURE §8): a customer's email, name and addresses;
 * an order's shipping address; a shipment's address. Each is replaced, before
 * its event or snapshot reaches the store, by one envelope string sealing the
 * field's JSON value (a string or an address object): "pii1:<customer id>:...".
 * The envelope names its key, so opening needs no context.
 *
 * Where: new events are sealed after the domain decided them (svc_exec's
 * run_dom, ordering's place), snapshots by the aggregate types' snapshot
 * wrappers below; events and snapshots are opened by the evolve and restore
 * wrappers, so the domain only ever sees plain values. Opening a plain value is
 * a no-op (events written before this codec existed stay readable). Read models
 * copy envelopes as they are and the HTTP answers open them (svc_pii_open_*),
 * so no read model holds personal data in clear.
 *
 * After erasure the key is gone: an opened field reads "[erased]" (an address:
 * every part "[erased]", country "XX" so it still parses), commands that would
 * seal new personal data for the customer fail with AG_EDOMAIN, and a snapshot
 * of an erased customer's aggregate stores the placeholders (nothing personal).
 */
#include <string.h>

#include "agora/vault.h"
#include "services/internal.h"

static struct ag_vault *g_vault; /* the platform's (one per process) */

void svc_pii_set_vault(struct ag_vault *v)
{
    g_vault = v;
}

struct ag_vault *svc_pii_vault(void)
{
    return g_vault;
}

/* ---- placeholders ---- */

static json_t *erased_value(const char *field)
{
    if (strcmp(field, "addresses") == 0) return json_array();
    if (strstr(field, "ddress")) /* address, shippingAddress */
        return json_pack("{s:s,s:s,s:s,s:s,s:s}", "street", AG_CUSTOMER_ERASED, "city",
                         AG_CUSTOMER_ERASED, "state", AG_CUSTOMER_ERASED, "zipCode",
                         AG_CUSTOMER_ERASED, "country", "XX");
    return json_string(AG_CUSTOMER_ERASED);
}

/* ---- one field ---- */

int svc_pii_seal_field(json_t *obj, const char *field, const char *subject, struct ag_err *err)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) return 0;
    const char *s = json_string_value(v);
    if (s && ag_vault_is_envelope(s, strlen(s))) return 0; /* sealed already */
    if (!g_vault) return ag_err_set(err, AG_ECONFIG, "no vault for personal data");
    if (!subject || !subject[0])
        return ag_err_set(err, AG_EINVAL, "personal field %s without its customer", field);
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *env = NULL;
    int rc = text ? ag_vault_seal(g_vault, subject, text, strlen(text), &env, err)
                  : ag_err_set(err, AG_ENOMEM, "out of memory");
    free(text);
    if (!rc && json_object_set_new(obj, field, json_string(env)))
        rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    ag_free(env);
    return rc;
}

/* The value an envelope holds (new reference), the field's placeholder when its
 * key is gone, or NULL when `s` is no envelope. */
static json_t *open_text(const char *s, const char *field)
{
    if (!s || !ag_vault_is_envelope(s, strlen(s))) return NULL;
    char *pt = NULL;
    size_t n = 0;
    struct ag_err err;
    json_t *v = NULL;
    int rc = g_vault ? ag_vault_unseal(g_vault, s, strlen(s), &pt, &n, &err) : AG_ENOTFOUND;
    if (!rc) v = json_loadb(pt, n, JSON_DECODE_ANY, NULL);
    if (rc && rc != AG_ENOTFOUND)
        AG_WARN("pii.open_failed", AG_LS("field", field), AG_LS("error", err.msg));
    ag_free(pt);
    return v ? v : erased_value(field);
}

char *svc_pii_column_pack(const char *text, const char *subject)
{
    char head[AG_DOM_ID_MAX + 16];
    int hn = snprintf(head, sizeof head, "\"%s%s:", AG_VAULT_PREFIX, subject ? subject : "");
    size_t n = text ? strlen(text) : 0;
    bool packable = subject && *subject && hn > 0 && (size_t)hn < sizeof head &&
                    n > (size_t)hn + 1 && memcmp(text, head, (size_t)hn) == 0 &&
                    text[n - 1] == '"' && !memchr(text, '\\', n);
    if (!packable) return text ? ag_strdup(text) : NULL;
    size_t body = n - (size_t)hn - 1; /* between the subject's ':' and the closing quote */
    char *out = ag_malloc(body + 2);
    if (!out) return NULL;
    out[0] = '~';
    memcpy(out + 1, text + hn, body);
    out[body + 1] = 0;
    return out;
}

json_t *svc_pii_open_column(const char *column, const char *subject, const char *field)
{
    if (!column || column[0] != '~' || !subject) return svc_pii_open_text(column, field);
    struct ag_buf b;
    ag_buf_init(&b);
    json_t *v = NULL;
    if (ag_buf_printf(&b, "%s%s:%s", AG_VAULT_PREFIX, subject, column + 1) == 0)
        v = open_text(b.data, field);
    ag_buf_free(&b);
    return v;
}

/* ---- the packed column as bytes (issue 19) ----
 * "~<base64>" is stored as a BLOB: the byte 0x01, then the base64's bytes (3/4 of
 * the text); read back, they are encoded again, so the envelope is the same text.
 * Only a base64 that encodes back to itself (padding as the vault writes it) is
 * packed. The leading 0x01 tells these bytes from a text column that PostgreSQL
 * returns as bytea (a column declared BLOB holds both kinds there): text never
 * starts with it. */
#define PACKED_TAG 0x01

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
    const char *p = c ? strchr(b64_alphabet, c) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

/* Encode `n` bytes as base64 with padding into out (4 * ((n + 2) / 3) + 1 bytes). */
static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = (char)(i + 1 < n ? b64_alphabet[v >> 6 & 63] : '=');
        out[o++] = (char)(i + 2 < n ? b64_alphabet[v & 63] : '=');
    }
    out[o] = '\0';
}

uint8_t *svc_pii_column_bytes(const char *packed, size_t *n)
{
    size_t tn = packed && packed[0] == '~' ? strlen(packed + 1) : 0;
    if (!tn || tn % 4) return NULL;
    const char *t = packed + 1;
    uint8_t *out = ag_malloc(tn / 4 * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    out[o++] = PACKED_TAG;
    for (size_t i = 0; i < tn; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) v[k] = b64_value(t[i + (size_t)k]);
        bool last = i + 4 == tn;
        int pad = last && t[i + 3] == '=' ? (t[i + 2] == '=' ? 2 : 1) : 0;
        if (v[0] < 0 || v[1] < 0 || (pad < 2 && v[2] < 0) || (pad < 1 && v[3] < 0)) {
            ag_free(out);
            return NULL;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (pad < 2 ? (uint32_t)v[2] << 6 : 0) | (pad < 1 ? (uint32_t)v[3] : 0);
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    char *back = ag_malloc(tn + 1);
    bool same = back && (b64_encode(out + 1, o - 1, back), strcmp(back, t) == 0);
    ag_free(back);
    if (!same) { /* not canonical: keep the text */
        ag_free(out);
        return NULL;
    }
    *n = o;
    return out;
}

json_t *svc_pii_open_cell(const struct ag_rm_row *r, int col, const char *subject,
                          const char *field)
{
    uint8_t small[256];
    size_t n;
    if (!ag_rm_blob(r, col, small, sizeof small, &n))
        return svc_pii_open_column(ag_rm_text(r, col), subject, field);
    uint8_t *bytes = n <= sizeof small ? small : ag_malloc(n + 1);
    char *text = ag_malloc(2 + (n + 2) / 3 * 4);
    json_t *v = NULL;
    if (bytes && text && (bytes == small || ag_rm_blob(r, col, bytes, n, &n))) {
        if (n && bytes[0] == PACKED_TAG) {
            text[0] = '~';
            b64_encode(bytes + 1, n - 1, text + 1);
        } else { /* text kept as bytes (PostgreSQL bytea) */
            memcpy(text, bytes, n);
            text[n] = '\0';
        }
        v = svc_pii_open_column(text, subject, field);
    }
    if (bytes != small) ag_free(bytes);
    ag_free(text);
    return v;
}

int svc_pii_open_field(json_t *obj, const char *field)
{
    json_t *v = open_text(json_string_value(json_object_get(obj, field)), field);
    if (!v) return 0;
    return json_object_set_new(obj, field, v) ? AG_ENOMEM : 1;
}

json_t *svc_pii_open_text(const char *text, const char *field)
{
    if (!text) return NULL;
    json_t *v = open_text(text, field);
    if (v) return v;
    /* a read-model column holding the field's JSON (an envelope string in quotes,
     * or a plain value written before the codec) */
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    if (json_is_string(j) && (v = open_text(json_string_value(j), field))) {
        json_decref(j);
        return v;
    }
    return j ? j : json_string(text);
}

/* ---- events ---- */

/* Where an event's customer comes from. */
enum subject_from {
    FROM_DATA,  /* its "customerId" */
    FROM_STATE, /* the aggregate's customer (customer id, order's customer) */
};

static const struct pii_event {
    const char *type;
    const char *fields[3]; /* NULL-terminated */
    enum subject_from from;
} events[] = {
    {AG_EV_CUSTOMER_REGISTERED, {"email", "name", NULL}, FROM_DATA},
    {AG_EV_ADDRESS_ADDED, {"address", NULL}, FROM_STATE},
    {AG_EV_ORDER_PLACED, {"shippingAddress", NULL}, FROM_STATE},
    {AG_EV_SHIPMENT_ARRANGED, {"address", NULL}, FROM_DATA},
};

static const struct pii_event *event_of(const char *type)
{
    for (size_t i = 0; i < AG_ARRAY_SIZE(events); i++)
        if (strcmp(events[i].type, type) == 0) return &events[i];
    return NULL;
}

/* The customer an aggregate's state belongs to ("" unknown). */
static const char *state_subject(const struct ag_es_type *t, const void *state)
{
    if (!state) return "";
    if (t == &svc_customer_type) return ((const struct ag_customer *)state)->id;
    if (t == &svc_order_type) return ((const struct ag_order *)state)->customer_id;
    if (t == &svc_shipment_type) return ((const struct ag_shipment *)state)->customer_id;
    return "";
}

int svc_pii_seal_events(const struct ag_es_type *t, const void *state, struct ag_es_batch *b,
                        size_t from, struct ag_err *err)
{
    const char *subject = state_subject(t, state);
    for (size_t i = from; i < b->n; i++) { /* an order made in this batch names its customer */
        const char *c = json_string_value(json_object_get(b->v[i].data, "customerId"));
        if (!subject[0] && c && strcmp(b->v[i].type, AG_EV_ORDER_CREATED) == 0) subject = c;
    }
    for (size_t i = from; i < b->n; i++) {
        const struct pii_event *e = event_of(b->v[i].type);
        if (!e) continue;
        const char *s = e->from == FROM_DATA
                            ? json_string_value(json_object_get(b->v[i].data, "customerId"))
                            : subject;
        for (size_t f = 0; e->fields[f]; f++) {
            int rc = svc_pii_seal_field(b->v[i].data, e->fields[f], s, err);
            if (rc == AG_EDOMAIN)
                return ag_err_set(err, rc, "customer %s was erased: no new personal data", s);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Evolve with the event's personal fields opened (a copy when there are any). */
static int evolve_open(int (*evolve)(void *, const char *, const json_t *), void *state,
                       const char *type, const json_t *data)
{
    const struct pii_event *e = event_of(type);
    bool sealed = false;
    for (size_t f = 0; e && e->fields[f]; f++) {
        const char *s = json_string_value(json_object_get(data, e->fields[f]));
        sealed = sealed || (s && ag_vault_is_envelope(s, strlen(s)));
    }
    if (!sealed) return evolve(state, type, data);
    json_t *copy = json_copy((json_t *)data); /* shallow: only top-level fields change */
    if (!copy) return AG_ENOMEM;
    for (size_t f = 0; e->fields[f]; f++) svc_pii_open_field(copy, e->fields[f]);
    int rc = evolve(state, type, copy);
    json_decref(copy);
    return rc;
}

/* ---- snapshots ---- */

static json_t *snapshot_seal(json_t *snap, const char *const *fields)
{
    if (!snap || json_is_true(json_object_get(snap, "erased"))) return snap;
    const char *subject = json_string_value(json_object_get(snap, "customerId"));
    if (!subject || !subject[0]) return snap; /* not one of a customer (old shipment) */
    for (size_t f = 0; fields[f]; f++) {
        struct ag_err err;
        int rc = svc_pii_seal_field(snap, fields[f], subject, &err);
        if (rc == AG_EDOMAIN) { /* erased: the state holds placeholders only */
            json_object_set_new(snap, fields[f], erased_value(fields[f]));
        } else if (rc) {
            AG_WARN("pii.snapshot_not_sealed", AG_LS("customer", subject), AG_LS("error", err.msg));
            json_decref(snap);
            return NULL; /* no snapshot rather than one in clear */
        }
    }
    return snap;
}

static int restore_open(int (*restore)(void *, const json_t *), void *state, const json_t *snap,
                        const char *const *fields)
{
    json_t *copy = json_copy((json_t *)snap);
    if (!copy) return AG_ENOMEM;
    for (size_t f = 0; fields[f]; f++) svc_pii_open_field(copy, fields[f]);
    int rc = restore(state, copy);
    json_decref(copy);
    return rc;
}

static const char *const customer_fields[] = {"email", "name", "addresses", NULL};
static const char *const order_fields[] = {"shippingAddress", NULL};
static const char *const shipment_fields[] = {"address", NULL};

#define PII_TYPE(var, dom, fields, bytes)                                                          \
    static int dom##_evolve(void *s, const char *type, const json_t *d)                            \
    {                                                                                              \
        return evolve_open(ag_##dom##_evolve, s, type, d);                                         \
    }                                                                                              \
    static json_t *dom##_snapshot(const void *s)                                                   \
    {                                                                                              \
        return snapshot_seal(ag_##dom##_snapshot(s), fields);                                      \
    }                                                                                              \
    static int dom##_restore(void *s, const json_t *snap)                                          \
    {                                                                                              \
        return restore_open(ag_##dom##_restore, s, snap, fields);                                  \
    }                                                                                              \
    const struct ag_es_type var = {                                                                \
        #dom,         sizeof(struct ag_##dom), ag_##dom##_init, ag_##dom##_free,                   \
        dom##_evolve, dom##_snapshot,          dom##_restore,   bytes}

PII_TYPE(svc_customer_type, customer, customer_fields, NULL);
PII_TYPE(svc_order_type, order, order_fields, ag_order_bytes);
PII_TYPE(svc_shipment_type, shipment, shipment_fields, NULL);
