/*
 * Promotions (admin-managed codes) and their use in orders.
 *
 * A promotion's stream is `promotion-<uuid derived from its code>`, so an order's
 * `promotionCodes` are looked up by name without an index, and a code is created
 * once (a second creation loses the no-stream append: 409).
 *
 * In an order: every code is read and checked (unknown → 422, not valid yet,
 * expired, exhausted, another currency, or a non-stackable code with others → 422
 * naming the code at /promotionCodes/<i>) before pricing; PricingService applies
 * them with the premium discount (the stacking rule in domain.h). Just before the
 * order is appended each code is redeemed (PromotionRedeemed, an append at the
 * version the limit was checked on, so a limit holds under concurrency); a
 * redemption is idempotent per order, so a retried placement spends nothing twice.
 * Known gap: a crash between the redemption and the order's append spends a use
 * for an order that does not exist (a saga would give it back).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "services/internal.h"

const struct ag_es_type svc_promo_type = {
    "promotion",      sizeof(struct ag_promo_code),
    ag_promo_init,    ag_promo_free,
    ag_promo_evolve,  ag_promo_snapshot,
    ag_promo_restore,
};

void svc_promo_id(const char *code, char out[AG_UUID_STRLEN + 1])
{
    svc_new_id(out, "promotion", code);
}

/* "2026-12-01T00:00:00Z" (optional fraction) → Unix ms; -1 when not that shape. */
static int64_t parse_time(const char *s)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        n != 19)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {
        }
    if (strcmp(p, "Z") != 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60 || y < 1970)
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    return (int64_t)timegm(&tm) * 1000;
}

static json_t *promo_json(const struct ag_promo_code *p, const char *id)
{
    char from[32], until[32];
    ag_time_rfc3339((uint64_t)p->valid_from_ms * 1000000ull, from);
    ag_time_rfc3339((uint64_t)p->valid_until_ms * 1000000ull, until);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s*, s:o*, s:I, s:b}", "id", id, "code",
                  p->promo.code, "kind", p->promo.kind == AG_PROMO_PERCENT ? "percent" : "fixed",
                  "value", (json_int_t)p->promo.value, "validFrom", from, "validUntil",
                  p->valid_until_ms ? until : NULL, "usageLimit",
                  p->usage_limit ? json_integer(p->usage_limit) : NULL, "used", (json_int_t)p->used,
                  "stackable", p->stackable);
    if (o && p->currency[0]) json_object_set_new(o, "currency", json_string(p->currency));
    return o;
}

struct promo_view {
    json_t *body;
    const char *id;
};

static void view_promo(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    struct promo_view *v = ud;
    json_decref(v->body);
    v->body = promo_json(state, v->id);
}

static int d_create(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_promo_create(st, cmd, out, err);
}

static int64_t time_field(struct svc_job *j, const char *name, int64_t dflt)
{
    json_t *v = json_object_get(j->body, name);
    if (!v || json_is_null(v)) return dflt;
    int64_t ms = parse_time(json_string_value(v));
    if (ms < 0)
        svc_field_error(j, name[5] == 'F' ? "/validFrom" : "/validUntil",
                        "%s must be an RFC 3339 UTC time such as 2026-12-01T00:00:00Z", name);
    return ms < 0 ? dflt : ms;
}

/* Validate the body into c (strings borrowed from j->body). */
static void parse_promo(struct svc_job *j, struct ag_promo_create *c)
{
    static const char *const fields[] = {"code",       "kind",      "value",
                                         "currency",   "validFrom", "validUntil",
                                         "usageLimit", "stackable", NULL};
    json_t *b = j->body;
    svc_body_object(j, fields);
    c->code = json_string_value(json_object_get(b, "code"));
    if (!ag_promo_code_ok(c->code))
        svc_field_error(j, "/code", "code is required: 1 to 31 characters of A-Z, 0-9, - and _");
    const char *kind = json_string_value(json_object_get(b, "kind"));
    if (kind && strcmp(kind, "percent") == 0)
        c->kind = AG_PROMO_PERCENT;
    else if (kind && strcmp(kind, "fixed") == 0)
        c->kind = AG_PROMO_FIXED;
    else
        svc_field_error(j, "/kind", "kind must be \"percent\" or \"fixed\"");
    json_t *v = json_object_get(b, "value");
    c->value = json_integer_value(v);
    if (!json_is_integer(v) || c->value < 1 || (c->kind == AG_PROMO_PERCENT && c->value > 10000))
        svc_field_error(j, "/value",
                        "value must be an integer: basis points 1..10000 for a percentage "
                        "(1500 = 15%%), minor units >= 1 for a fixed amount");
    json_t *cur = json_object_get(b, "currency");
    c->currency = json_string_value(cur);
    if (c->kind == AG_PROMO_FIXED && !ag_currency_valid(c->currency))
        svc_field_error(j, "/currency", "a fixed amount needs a currency (ISO 4217, e.g. USD)");
    else if (c->kind == AG_PROMO_PERCENT && cur && !json_is_null(cur))
        svc_field_error(j, "/currency", "only a fixed amount has a currency");
    if (c->kind == AG_PROMO_PERCENT) c->currency = NULL;
    c->valid_from_ms = time_field(j, "validFrom", svc_now_ms());
    c->valid_until_ms = time_field(j, "validUntil", 0);
    if (c->valid_until_ms && c->valid_until_ms <= c->valid_from_ms)
        svc_field_error(j, "/validUntil", "validUntil must be after validFrom");
    json_t *lim = json_object_get(b, "usageLimit");
    c->usage_limit = json_integer_value(lim);
    if (lim && !json_is_null(lim) && (!json_is_integer(lim) || c->usage_limit < 1))
        svc_field_error(j, "/usageLimit", "usageLimit must be an integer >= 1 (absent: unlimited)");
    json_t *st = json_object_get(b, "stackable");
    c->stackable = !st || json_is_true(st);
    if (st && !json_is_boolean(st)) svc_field_error(j, "/stackable", "stackable must be a boolean");
}

/* POST /api/v1/promotions (admin): 201 + Location. */
int svc_promo_create(struct svc_job *j)
{
    if (!j->body) return svc_problem(j, 400, "Invalid request", "the body must be a JSON object");
    struct ag_promo_create c = {0};
    parse_promo(j, &c);
    if (svc_fields_failed(j, 400) || svc_idem_begin(j, "promotions")) return 0;
    char id[AG_UUID_STRLEN + 1];
    svc_promo_id(c.code, id);
    struct ag_err err;
    ag_err_clear(&err);
    struct promo_view v = {NULL, id};
    int rc = svc_exec(j->env,
                      &(struct svc_cmd){&svc_promo_type, id, d_create, &c, j->meta, view_promo, &v},
                      &err);
    if (rc == AG_EEXISTS) {
        svc_field_error(j, "/code", "%s", err.msg);
        svc_fields_failed(j, 409);
        snprintf(j->title, sizeof j->title, "Promotion code exists");
    } else if (rc) {
        svc_error(j, rc, &err);
    } else {
        snprintf(j->location, sizeof j->location, "/api/v1/promotions/%s", id);
        svc_ok(j, 201, v.body), v.body = NULL;
    }
    json_decref(v.body);
    svc_idem_end(j, "promotions");
    return 0;
}

/* GET /api/v1/promotions/{id} (admin): the promotion with its uses so far. */
int svc_promo_get(struct svc_job *j)
{
    struct promo_view v = {NULL, j->param};
    if (!svc_stream_exists(j->env, "promotion", j->param) ||
        svc_read(j->env, &svc_promo_type, j->param, view_promo, &v, NULL) || !v.body) {
        json_decref(v.body);
        return svc_problem(j, 404, "Promotion not found", "no promotion with id %s", j->param);
    }
    return svc_ok(j, 200, v.body);
}

/* ---- in an order ---- */

struct usable {
    struct ag_promo_code st;
    bool found;
};

static void view_usable(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    struct usable *u = ud;
    memcpy(&u->st, state, sizeof u->st);
    u->found = true;
}

int svc_promos_parse(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t max)
{
    json_t *a = json_object_get(j->body, "promotionCodes");
    if (!a || json_is_null(a)) return 0;
    if (!json_is_array(a) || json_array_size(a) > max) {
        svc_field_error(j, "/promotionCodes",
                        "promotionCodes must be an array of at most %zu codes", max);
        return 0;
    }
    size_t i, n = 0;
    json_t *c;
    json_array_foreach(a, i, c)
    {
        char ptr[40];
        snprintf(ptr, sizeof ptr, "/promotionCodes/%zu", i);
        const char *s = json_string_value(c);
        bool dup = false;
        for (size_t k = 0; s && k < n; k++) dup = dup || strcmp(codes[k], s) == 0;
        if (!s || !ag_promo_code_ok(s))
            svc_field_error(j, ptr, "a promotion code is a string of 1 to 31 A-Z, 0-9, - and _");
        else if (dup)
            svc_field_error(j, ptr, "promotion code %s is listed twice", s);
        else
            snprintf(codes[n++], AG_PROMO_CODE_MAX, "%s", s);
    }
    return (int)n;
}

int svc_promos_check(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t n,
                     const char *currency, struct ag_promotion *out)
{
    int bad = 0;
    int64_t now = svc_now_ms();
    for (size_t i = 0; i < n; i++) {
        char id[AG_UUID_STRLEN + 1], ptr[40];
        snprintf(ptr, sizeof ptr, "/promotionCodes/%zu", i);
        svc_promo_id(codes[i], id);
        struct usable *u = ag_calloc(1, sizeof *u);
        if (!u) return -1;
        if (svc_stream_exists(j->env, "promotion", id))
            svc_read(j->env, &svc_promo_type, id, view_usable, u, NULL);
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_promo_usable(&u->st, codes[i], currency, now, &err)) {
            svc_field_error(j, ptr, "%s", err.msg);
            bad++;
        } else if (!u->st.stackable && n > 1) {
            svc_field_error(j, ptr, "promotion code %s cannot be combined with other codes",
                            codes[i]);
            bad++;
        } else {
            out[i] = u->st.promo;
        }
        ag_free(u);
    }
    return bad;
}

static int d_redeem(const void *st, const void *cmd, struct ag_dom_events *out, struct ag_err *err)
{
    return ag_promo_redeem(st, cmd, out, err);
}

int svc_promos_redeem(struct svc_job *j, char codes[][AG_PROMO_CODE_MAX], size_t n,
                      const char *order_id, const char *currency)
{
    for (size_t i = 0; i < n; i++) {
        char id[AG_UUID_STRLEN + 1];
        svc_promo_id(codes[i], id);
        struct ag_promo_redeem r = {order_id, currency, svc_now_ms()};
        struct ag_err err;
        ag_err_clear(&err);
        int rc = svc_exec(j->env,
                          &(struct svc_cmd){&svc_promo_type, id, d_redeem, &r, j->meta, NULL, NULL},
                          &err);
        if (rc == AG_EDOMAIN || rc == AG_ENOTFOUND) { /* lost a race for the last use */
            char ptr[40];
            snprintf(ptr, sizeof ptr, "/promotionCodes/%zu", i);
            svc_field_error(j, ptr, "%s", err.msg);
            return svc_fields_failed(j, 422);
        }
        if (rc) return svc_error(j, rc, &err), 1;
    }
    return 0;
}
