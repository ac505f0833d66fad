/*
 * Shared plumbing for the aggregates: the list of new events a decide function
 * returns, bounded string copies, and typed getters for recorded event data.
 *
 * Getters are strict on purpose: a recorded event whose field is missing, of the
 * wrong type or too long for its buffer makes evolve return AG_EINVAL instead of
 * silently building a wrong state.
 */
#include <string.h>

#include "domain/internal.h"

/* ---- event list ---- */

void ag_dom_events_init(struct ag_dom_events *e)
{
    e->v = NULL;
    e->n = e->cap = 0;
}

int ag_dom_events_push(struct ag_dom_events *e, const char *type, json_t *data)
{
    if (!data) return AG_EINVAL;
    if (e->n == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 4;
        struct ag_dom_event *v = ag_realloc(e->v, ncap * sizeof *v);
        if (!v) {
            json_decref(data);
            return AG_ENOMEM;
        }
        e->v = v;
        e->cap = ncap;
    }
    e->v[e->n].type = type;
    e->v[e->n].data = data;
    e->n++;
    return 0;
}

void ag_dom_events_free(struct ag_dom_events *e)
{
    for (size_t i = 0; i < e->n; i++) json_decref(e->v[i].data);
    ag_free(e->v);
    ag_dom_events_init(e);
}

int ag__dom_emit(struct ag_dom_events *out, const char *type, json_t *data, struct ag_err *err)
{
    if (ag_dom_events_push(out, type, data))
        return ag_err_set(err, AG_ENOMEM, "out of memory building %s", type);
    return 0;
}

/* ---- strings ---- */

int ag__dom_copy(char *dst, size_t cap, const char *src)
{
    if (!src || !src[0]) return AG_EINVAL;
    size_t n = strlen(src);
    if (n >= cap) return AG_EINVAL;
    memcpy(dst, src, n + 1);
    return 0;
}

int ag__dom_copy_or(char *dst, size_t cap, const char *src, const char *dflt)
{
    return ag__dom_copy(dst, cap, src && src[0] ? src : dflt);
}

int ag__dom_need(char *dst, size_t cap, const char *src, const char *what, struct ag_err *err)
{
    if (ag__dom_copy(dst, cap, src) || !ag_utf8_valid(dst, strlen(dst)))
        return ag_err_set(err, AG_EINVAL,
                          "%s must be a non-empty UTF-8 string of at most %zu bytes", what,
                          cap - 1);
    return 0;
}

void ag__dom_reason(char *dst, size_t cap, const char *src, const char *dflt)
{
    size_t n = src ? strlen(src) : 0;
    if (n == 0 || !ag_utf8_valid(src, n)) src = dflt, n = strlen(dflt);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--; /* do not split a multi-byte character */
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- reading event data ---- */

int ag__dom_get_str(const json_t *o, const char *key, char *dst, size_t cap)
{
    return ag__dom_copy(dst, cap, json_string_value(json_object_get(o, key)));
}

int ag__dom_get_str_opt(const json_t *o, const char *key, char *dst, size_t cap)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        dst[0] = '\0';
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= cap) return AG_EINVAL;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

int ag__dom_get_i64(const json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return AG_EINVAL;
    *out = json_integer_value(v);
    return 0;
}

int ag__dom_get_bool(const json_t *o, const char *key, bool *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v)) return AG_EINVAL;
    *out = json_is_true(v);
    return 0;
}

int ag__dom_get_money(const json_t *o, const char *key, struct ag_money *out)
{
    return ag_money_from_json(json_object_get(o, key), out, key, NULL) ? AG_EINVAL : 0;
}

int ag__dom_get_address(const json_t *o, const char *key, struct ag_address *out)
{
    return ag_address_from_json(json_object_get(o, key), out, key, NULL) ? AG_EINVAL : 0;
}
