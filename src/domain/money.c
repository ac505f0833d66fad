/*
 * Value objects: Money and Address.
 *
 * Money is an int64 count of minor units plus an ISO 4217 code; there is no
 * floating point anywhere. Arithmetic refuses to mix currencies (AG_EDOMAIN) and
 * detects int64 overflow (AG_EINVAL) with the compiler's checked builtins.
 * Percentages are integer basis points; ag_money_percent multiplies in 128 bits
 * and rounds half away from zero, which is half-up for the non-negative amounts
 * prices and discounts are.
 *
 * Parsing names the JSON pointer of the bad field so the HTTP layer can put it in
 * a problem+json `errors[]` entry unchanged.
 */
#include <stdio.h>
#include <string.h>

#include "domain/internal.h"

/* ---- Money ---- */

bool ag_currency_valid(const char *s)
{
    if (!s) return false;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z') return false;
    return s[3] == '\0';
}

struct ag_money ag_money_zero(const char *currency)
{
    struct ag_money m = {0};
    if (ag_currency_valid(currency)) memcpy(m.currency, currency, 4);
    return m;
}

int ag_money_from_json(const json_t *j, struct ag_money *out, const char *pointer,
                       struct ag_err *err)
{
    const char *p = pointer ? pointer : "";
    if (!json_is_object(j)) return ag_err_set(err, AG_EINVAL, "%s: must be an object", p);
    json_t *amount = json_object_get(j, "amount");
    if (!json_is_integer(amount))
        return ag_err_set(err, AG_EINVAL, "%s/amount: must be an integer", p);
    const char *cur = json_string_value(json_object_get(j, "currency"));
    if (!ag_currency_valid(cur))
        return ag_err_set(err, AG_EINVAL, "%s/currency: must be a 3-letter ISO 4217 code", p);
    out->amount = json_integer_value(amount);
    memcpy(out->currency, cur, 4);
    return 0;
}

json_t *ag_money_to_json(const struct ag_money *m)
{
    return json_pack("{s:I,s:s}", "amount", (json_int_t)m->amount, "currency", m->currency);
}

static int same_currency(const struct ag_money *a, const struct ag_money *b, struct ag_err *err)
{
    if (strcmp(a->currency, b->currency) != 0)
        return ag_err_set(err, AG_EDOMAIN, "currency mismatch: %s and %s", a->currency,
                          b->currency);
    return 0;
}

int ag_money_add(const struct ag_money *a, const struct ag_money *b, struct ag_money *out,
                 struct ag_err *err)
{
    int64_t r;
    int rc = same_currency(a, b, err);
    if (rc) return rc;
    if (__builtin_add_overflow(a->amount, b->amount, &r))
        return ag_err_set(err, AG_EINVAL, "money overflow: %lld + %lld %s", (long long)a->amount,
                          (long long)b->amount, a->currency);
    memmove(out->currency, a->currency, 4);
    out->amount = r;
    return 0;
}

int ag_money_sub(const struct ag_money *a, const struct ag_money *b, struct ag_money *out,
                 struct ag_err *err)
{
    int64_t r;
    int rc = same_currency(a, b, err);
    if (rc) return rc;
    if (__builtin_sub_overflow(a->amount, b->amount, &r))
        return ag_err_set(err, AG_EINVAL, "money overflow: %lld - %lld %s", (long long)a->amount,
                          (long long)b->amount, a->currency);
    memmove(out->currency, a->currency, 4);
    out->amount = r;
    return 0;
}

int ag_money_mul(const struct ag_money *a, int64_t k, struct ag_money *out, struct ag_err *err)
{
    int64_t r;
    if (__builtin_mul_overflow(a->amount, k, &r))
        return ag_err_set(err, AG_EINVAL, "money overflow: %lld x %lld %s", (long long)a->amount,
                          (long long)k, a->currency);
    memmove(out->currency, a->currency, 4);
    out->amount = r;
    return 0;
}

int ag_money_cmp(const struct ag_money *a, const struct ag_money *b)
{
    return (a->amount > b->amount) - (a->amount < b->amount);
}

bool ag_money_eq(const struct ag_money *a, const struct ag_money *b)
{
    return a->amount == b->amount && strcmp(a->currency, b->currency) == 0;
}

int ag_money_percent(const struct ag_money *a, int64_t basis_points, struct ag_money *out)
{
    __int128 p = (__int128)a->amount * basis_points;
    bool neg = p < 0;
    __int128 q = ((neg ? -p : p) + 5000) / 10000;
    if (neg) q = -q;
    if (q > INT64_MAX || q < INT64_MIN) return AG_EINVAL;
    memmove(out->currency, a->currency, 4);
    out->amount = (int64_t)q;
    return 0;
}

/* ISO 4217 currencies whose minor unit is not 1/100. */
static int exponent_of(const char *cur)
{
    static const char zero[][4] = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                                   "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"};
    static const char three[][4] = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"};
    for (size_t i = 0; i < AG_ARRAY_SIZE(zero); i++)
        if (strcmp(cur, zero[i]) == 0) return 0;
    for (size_t i = 0; i < AG_ARRAY_SIZE(three); i++)
        if (strcmp(cur, three[i]) == 0) return 3;
    return 2;
}

const char *ag_money_format(const struct ag_money *m, char buf[48])
{
    int e = exponent_of(m->currency);
    uint64_t mag = m->amount < 0 ? -(uint64_t)m->amount : (uint64_t)m->amount;
    uint64_t div = e == 0 ? 1 : e == 2 ? 100 : 1000;
    const char *sign = m->amount < 0 ? "-" : "";
    if (e == 0)
        snprintf(buf, 48, "%s%llu %.3s", sign, (unsigned long long)mag, m->currency);
    else
        snprintf(buf, 48, "%s%llu.%0*llu %.3s", sign, (unsigned long long)(mag / div), e,
                 (unsigned long long)(mag % div), m->currency);
    return buf;
}

/* ---- Address ---- */

struct addr_field {
    const char *name; /* JSON field */
    size_t off;       /* offset in struct ag_address */
    size_t cap;       /* buffer size */
};

static const struct addr_field addr_fields[] = {
    {"street", offsetof(struct ag_address, street), sizeof(((struct ag_address *)0)->street)},
    {"city", offsetof(struct ag_address, city), sizeof(((struct ag_address *)0)->city)},
    {"state", offsetof(struct ag_address, state), sizeof(((struct ag_address *)0)->state)},
    {"zipCode", offsetof(struct ag_address, zip_code), sizeof(((struct ag_address *)0)->zip_code)},
    {"country", offsetof(struct ag_address, country), sizeof(((struct ag_address *)0)->country)},
};

static bool country_valid(const char *s)
{
    return s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] == '\0';
}

int ag__dom_address_check(const struct ag_address *a, const char *pointer, struct ag_err *err)
{
    const char *p = pointer ? pointer : "";
    for (size_t i = 0; i < AG_ARRAY_SIZE(addr_fields); i++) {
        const struct addr_field *f = &addr_fields[i];
        const char *s = (const char *)a + f->off;
        size_t n = strnlen(s, f->cap);
        if (n == 0 || n == f->cap || !ag_utf8_valid(s, n))
            return ag_err_set(err, AG_EINVAL,
                              "%s/%s: must be a non-empty string of at most %zu bytes", p, f->name,
                              f->cap - 1);
    }
    if (!country_valid(a->country))
        return ag_err_set(err, AG_EINVAL,
                          "%s/country: must be an ISO 3166-1 alpha-2 code (2 upper-case letters)",
                          p);
    return 0;
}

int ag_address_from_json(const json_t *j, struct ag_address *out, const char *pointer,
                         struct ag_err *err)
{
    const char *p = pointer ? pointer : "";
    struct ag_address a;
    memset(&a, 0, sizeof a);
    if (!json_is_object(j)) return ag_err_set(err, AG_EINVAL, "%s: must be an object", p);
    for (size_t i = 0; i < AG_ARRAY_SIZE(addr_fields); i++) {
        const struct addr_field *f = &addr_fields[i];
        const char *s = json_string_value(json_object_get(j, f->name));
        if (ag__dom_copy((char *)&a + f->off, f->cap, s))
            return ag_err_set(err, AG_EINVAL,
                              "%s/%s: must be a non-empty string of at most %zu bytes", p, f->name,
                              f->cap - 1);
    }
    int rc = ag__dom_address_check(&a, pointer, err);
    if (rc == 0) *out = a;
    return rc;
}

json_t *ag_address_to_json(const struct ag_address *a)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "street", a->street, "city", a->city, "state",
                     a->state, "zipCode", a->zip_code, "country", a->country);
}

bool ag_address_eq(const struct ag_address *a, const struct ag_address *b)
{
    return strcmp(a->street, b->street) == 0 && strcmp(a->city, b->city) == 0 &&
           strcmp(a->state, b->state) == 0 && strcmp(a->zip_code, b->zip_code) == 0 &&
           strcmp(a->country, b->country) == 0;
}
