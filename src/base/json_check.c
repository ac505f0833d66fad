/*
 * A strict JSON validator (RFC 8259) that allocates nothing for ordinary input:
 * one pass over the bytes with an explicit container stack, checking UTF-8,
 * string escapes (surrogate pairs included), number syntax, nesting depth, and
 * duplicate keys per object (compared on their decoded text, so "a" and "\u0061"
 * collide, as they do in jansson's JSON_REJECT_DUPLICATES).
 *
 * It exists because the event store validates every payload on the append path;
 * building a jansson tree for that costs microseconds and dozens of mallocs per
 * event. Duplicate keys: each key's decoded text is hashed (FNV-1a) while it is
 * scanned; when an object closes, its key hashes are compared (pairwise for small
 * objects, sorted for large ones) and equal hashes are confirmed by decoding both
 * keys again.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

#define MAX_DEPTH 512

struct key {
    uint64_t hash;
    uint32_t start; /* offset of the opening quote */
};

struct jv {
    const unsigned char *p, *end, *base;
    const char *why;
    const unsigned char *at;
    /* keys of every open object, innermost last */
    struct key small[64];
    struct key *keys;
    size_t nkeys, cap;
};

static int fail(struct jv *v, const unsigned char *at, const char *why)
{
    v->why = why;
    v->at = at;
    return -1;
}

static void skip_ws(struct jv *v)
{
    while (v->p < v->end && (*v->p == ' ' || *v->p == '\t' || *v->p == '\n' || *v->p == '\r'))
        v->p++;
}

static int hexval(unsigned c)
{
    if (c >= '0' && c <= '9') return (int)(c - '0');
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10) : -1;
}

static int read_u4(struct jv *v, const unsigned char *p, unsigned *out)
{
    if (v->end - p < 4) return -1;
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        x = x << 4 | (unsigned)h;
    }
    *out = x;
    return 0;
}

static uint64_t fnv(uint64_t h, unsigned char c)
{
    return (h ^ c) * 0x100000001b3ull;
}

/* Hash a code point in one canonical form, however the text spelled it. */
static uint64_t hash_cp(uint64_t h, unsigned cp)
{
    return fnv(fnv(fnv(h, (unsigned char)cp), (unsigned char)(cp >> 8)), (unsigned char)(cp >> 16));
}

/* Scan a string at v->p (the opening quote). Hash its decoded bytes into *hash. */
static int scan_string(struct jv *v, uint64_t *hash)
{
    const unsigned char *start = v->p++;
    uint64_t h = 0xcbf29ce484222325ull;
    while (v->p < v->end) {
        unsigned c = *v->p;
        if (c == '"') {
            v->p++;
            if (hash) *hash = h;
            return 0;
        }
        if (c < 0x20) return fail(v, v->p, "control character in a string");
        if (c == '\\') {
            if (v->end - v->p < 2) break;
            unsigned e = v->p[1], cp;
            const char *simple = strchr("\"\\/bfnrt", (int)e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                h = hash_cp(h, (unsigned char)map[simple - "\"\\/bfnrt"]);
                v->p += 2;
                continue;
            }
            if (e != 'u' || read_u4(v, v->p + 2, &cp))
                return fail(v, v->p, "invalid escape in a string");
            v->p += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(v, v->p - 6, "lone low surrogate \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (v->end - v->p < 6 || v->p[0] != '\\' || v->p[1] != 'u' ||
                    read_u4(v, v->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(v, v->p - 6, "high surrogate \\u escape without its low half");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                v->p += 6;
            }
            if (cp == 0) return fail(v, v->p - 6, "\\u0000 in a string");
            h = hash_cp(h, cp);
            continue;
        }
        if (c < 0x80) {
            h = hash_cp(h, c);
            v->p++;
            continue;
        }
        size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || (size_t)(v->end - v->p) < len || !ag_utf8_valid((const char *)v->p, len))
            return fail(v, v->p, "invalid UTF-8 in a string");
        /* hash the code point the same way an escape would */
        unsigned cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
        for (size_t k = 1; k < len; k++) cp = cp << 6 | (v->p[k] & 0x3F);
        h = hash_cp(h, cp);
        v->p += len;
    }
    return fail(v, start, "unterminated string");
}

/* Numbers jansson cannot hold are refused too (integers beyond int64, reals that
 * overflow a double): the store's payloads are read back with jansson. */
static int number_fits(struct jv *v, const unsigned char *s, size_t n, bool integer)
{
    char stack[128];
    char *buf = n < sizeof stack ? stack : ag_malloc(n + 1);
    if (!buf) return fail(v, s, "out of memory");
    memcpy(buf, s, n);
    buf[n] = 0;
    errno = 0;
    bool ok;
    if (integer) {
        (void)strtoll(buf, NULL, 10);
        ok = errno != ERANGE;
    } else {
        double d = strtod(buf, NULL);
        ok = !(errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL));
    }
    if (buf != stack) ag_free(buf);
    return ok ? 0
              : fail(v, s,
                     integer ? "integer out of the 64-bit range" : "number overflows a double");
}

static int scan_number(struct jv *v)
{
    const unsigned char *p = v->p;
    bool integer = true;
    if (p < v->end && *p == '-') p++;
    if (p >= v->end) return fail(v, v->p, "invalid number");
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < v->end && *p >= '0' && *p <= '9') p++;
    else
        return fail(v, v->p, "invalid number");
    if (p < v->end && *p == '.') {
        integer = false;
        const unsigned char *d = ++p;
        while (p < v->end && *p >= '0' && *p <= '9') p++;
        if (p == d) return fail(v, p, "a digit must follow the decimal point");
    }
    if (p < v->end && (*p == 'e' || *p == 'E')) {
        integer = false;
        p++;
        if (p < v->end && (*p == '+' || *p == '-')) p++;
        const unsigned char *d = p;
        while (p < v->end && *p >= '0' && *p <= '9') p++;
        if (p == d) return fail(v, p, "a digit must follow the exponent");
    }
    if (number_fits(v, v->p, (size_t)(p - v->p), integer)) return -1;
    v->p = p;
    return 0;
}

static int scan_literal(struct jv *v)
{
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(v->end - v->p) >= n && memcmp(v->p, words[i], n) == 0) {
            v->p += n;
            return 0;
        }
    }
    return fail(v, v->p, "invalid literal");
}

/* ---- duplicate keys ---- */

static int push_key(struct jv *v, uint64_t hash, const unsigned char *start)
{
    if (v->nkeys == v->cap) {
        size_t cap = v->cap * 2;
        struct key *k =
            v->keys == v->small ? ag_malloc(cap * sizeof *k) : ag_realloc(v->keys, cap * sizeof *k);
        if (!k) return fail(v, start, "out of memory");
        if (v->keys == v->small) memcpy(k, v->small, sizeof v->small);
        v->keys = k;
        v->cap = cap;
    }
    v->keys[v->nkeys++] = (struct key){hash, (uint32_t)(start - v->base)};
    return 0;
}

/* Decode the string at `s` into out (at most cap bytes); returns the length. */
static size_t decode(const unsigned char *s, unsigned char *out, size_t cap)
{
    struct jv tmp = {.p = s, .end = s + (1u << 30)};
    size_t n = 0;
    tmp.p++;
    while (*tmp.p != '"' && n + 4 < cap) {
        if (*tmp.p == '\\') { /* reuse the scanner on a one-escape string to step */
            unsigned cp = 0;
            if (tmp.p[1] == 'u') {
                read_u4(&tmp, tmp.p + 2, &cp);
                tmp.p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo = 0;
                    read_u4(&tmp, tmp.p + 2, &lo);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    tmp.p += 6;
                }
            } else {
                static const char map[] = "\"\\/\b\f\n\r\t";
                cp = (unsigned char)map[strchr("\"\\/bfnrt", tmp.p[1]) - "\"\\/bfnrt"];
                tmp.p += 2;
            }
            memcpy(out + n, &cp, 4); /* a canonical 4-byte form per code point */
            n += 4;
        } else {
            unsigned c = *tmp.p;
            size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
            unsigned cp = len == 1 ? c : c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
            for (size_t k = 1; k < len; k++) cp = cp << 6 | (tmp.p[k] & 0x3F);
            memcpy(out + n, &cp, 4);
            n += 4;
            tmp.p += len;
        }
    }
    return n;
}

static bool same_key(const struct jv *v, const struct key *a, const struct key *b)
{
    static _Thread_local unsigned char x[4096], y[4096];
    size_t nx = decode(v->base + a->start, x, sizeof x),
           ny = decode(v->base + b->start, y, sizeof y);
    return nx == ny && memcmp(x, y, nx) == 0;
}

static int cmp_key(const void *a, const void *b)
{
    uint64_t x = ((const struct key *)a)->hash, y = ((const struct key *)b)->hash;
    return x < y ? -1 : x > y;
}

/* The object whose keys are keys[from..nkeys) closed: any duplicate? */
static int check_keys(struct jv *v, size_t from)
{
    struct key *k = v->keys + from;
    size_t n = v->nkeys - from;
    if (n > 16) qsort(k, n, sizeof *k, cmp_key);
    for (size_t i = 0; i < n; i++) {
        size_t lim = n > 16 ? AG_MIN(i + 2, n) : n;
        for (size_t j = i + 1; j < lim; j++)
            if (k[i].hash == k[j].hash && same_key(v, &k[i], &k[j]))
                return fail(v, v->base + AG_MAX(k[i].start, k[j].start),
                            "duplicate key in an object");
        if (n > 16) /* sorted: equal hashes are adjacent, possibly in a run */
            for (size_t j = i + 2; j < n && k[j].hash == k[i].hash; j++)
                if (same_key(v, &k[i], &k[j]))
                    return fail(v, v->base + AG_MAX(k[i].start, k[j].start),
                                "duplicate key in an object");
    }
    v->nkeys = from;
    return 0;
}

/* ---- the walk ---- */

struct frame {
    unsigned char close; /* the closing bracket */
    size_t keys_at;      /* objects: where their keys start in v->keys */
};

enum state { S_VALUE, S_KEY, S_AFTER };

static int pop(struct jv *v, struct frame *stack, int *depth)
{
    struct frame *f = &stack[--*depth];
    v->p++;
    return f->close == '}' ? check_keys(v, f->keys_at) : 0;
}

/* A value starts at v->p: scalars are consumed, containers pushed. */
static int value(struct jv *v, struct frame *stack, int *depth, enum state *st)
{
    unsigned c = *v->p;
    if (c != '{' && c != '[') {
        int r = c == '"'                               ? scan_string(v, NULL)
                : (c == '-' || (c >= '0' && c <= '9')) ? scan_number(v)
                                                       : scan_literal(v);
        *st = S_AFTER;
        return r;
    }
    if (*depth >= MAX_DEPTH) return fail(v, v->p, "nesting deeper than 512");
    stack[(*depth)++] = (struct frame){c == '{' ? '}' : ']', v->nkeys};
    v->p++;
    skip_ws(v);
    if (v->p < v->end && *v->p == stack[*depth - 1].close) {
        *st = S_AFTER;
        return pop(v, stack, depth);
    }
    *st = c == '{' ? S_KEY : S_VALUE;
    return 0;
}

static int key(struct jv *v, enum state *st)
{
    uint64_t h;
    const unsigned char *ks = v->p;
    if (*v->p != '"') return fail(v, v->p, "expected a string key");
    if (scan_string(v, &h) || push_key(v, h, ks)) return -1;
    skip_ws(v);
    if (v->p >= v->end || *v->p != ':') return fail(v, v->p, "expected ':' after a key");
    v->p++;
    *st = S_VALUE;
    return 0;
}

static int walk(struct jv *v)
{
    struct frame stack[MAX_DEPTH];
    int depth = 0;
    enum state st = S_VALUE;
    for (;;) {
        skip_ws(v);
        if (st == S_AFTER && depth == 0) return 0;
        if (v->p >= v->end)
            return fail(v, v->p, depth ? "unexpected end of input" : "no JSON value");
        int r = 0;
        if (st == S_VALUE)
            r = value(v, stack, &depth, &st);
        else if (st == S_KEY)
            r = key(v, &st);
        else if (*v->p == ',') {
            v->p++;
            st = stack[depth - 1].close == '}' ? S_KEY : S_VALUE;
            skip_ws(v);
            if (v->p < v->end && *v->p == stack[depth - 1].close)
                return fail(v, v->p, "trailing comma");
        } else if (*v->p == stack[depth - 1].close) {
            r = pop(v, stack, &depth);
        } else {
            return fail(v, v->p,
                        stack[depth - 1].close == '}' ? "expected ',' or '}'"
                                                      : "expected ',' or ']'");
        }
        if (r) return -1;
    }
}

int ag_json_check(const char *s, size_t n, bool object_only, char *msg, size_t msg_len)
{
    struct jv v = {.p = (const unsigned char *)s,
                   .end = (const unsigned char *)s + n,
                   .base = (const unsigned char *)s,
                   .keys = NULL,
                   .cap = 64};
    v.keys = v.small;
    int rc = 0;
    skip_ws(&v);
    if (object_only && (v.p >= v.end || *v.p != '{')) {
        fail(&v, v.p, "must be a JSON object");
        rc = AG_EJSON;
    } else if (walk(&v) != 0) {
        rc = AG_EJSON;
    } else {
        skip_ws(&v);
        if (v.p < v.end) fail(&v, v.p, "text after the JSON value"), rc = AG_EJSON;
    }
    if (rc && msg) {
        int line = 1, col = 1;
        for (const unsigned char *q = v.base; q < v.at && q < v.end; q++) {
            if (*q == '\n')
                line++, col = 1;
            else
                col++;
        }
        snprintf(msg, msg_len, "%s (line %d, column %d)", v.why, line, col);
    }
    if (v.keys != v.small) ag_free(v.keys);
    return rc;
}
