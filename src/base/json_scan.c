/*
 * Top-level members of a JSON object, found in its text without building a tree
 * (include/agora/base.h, ag_json_members).
 *
 * For text already known to be well-formed — what the store keeps (ag_json_check
 * on append) — so the scan checks only what it needs to find its way: the shape
 * of the object's top level, strings (to skip them, noting escapes and control
 * bytes) and brackets (to skip nested values). Anything else it does not expect
 * (a key with an escape, text after the object's end, an unterminated string) is
 * refused, and the caller takes its general path (a parser). It never reads past
 * s[n).
 */
#include <string.h>

#include "agora/base.h"

static const char *ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Past the string at p (its '"'); *plain stays true without escapes or control
 * bytes. NULL when unterminated. */
static const char *skip_str(const char *p, const char *e, bool *plain)
{
    for (p++; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c == '\\')
            *plain = false, p++;
        else if (c < 0x20)
            *plain = false;
    }
    return NULL;
}

/* Past the object or array at p (balanced brackets, strings skipped). */
static const char *skip_nested(const char *p, const char *e)
{
    bool plain = true;
    for (int depth = 0; p < e; p++) {
        if (*p == '"') {
            if (!(p = skip_str(p, e, &plain))) return NULL;
            p--;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

/* Past the value at p, its kind in *sp. NULL when not understood. */
static const char *skip_value(const char *p, const char *e, struct ag_json_span *sp)
{
    sp->p = p;
    sp->escapes = false;
    const char *end;
    if (p >= e) return NULL;
    if (*p == '"') {
        bool plain = true;
        end = skip_str(p, e, &plain);
        sp->kind = AG_JSON_STRING;
        sp->escapes = !plain;
    } else if (*p == '{' || *p == '[') {
        end = skip_nested(p, e);
        sp->kind = AG_JSON_NESTED;
    } else {
        end = p;
        while (end < e && *end != ',' && *end != '}' && *end != ' ' && *end != '\t' &&
               *end != '\n' && *end != '\r')
            end++;
        sp->kind = *p == 't' || *p == 'f' || *p == 'n' ? AG_JSON_LITERAL : AG_JSON_NUMBER;
        if (end == p) return NULL;
    }
    if (end) sp->n = (size_t)(end - p);
    return end;
}

/* keys[i] (NUL-terminated) is the `n` bytes at `k`. */
static size_t key_index(const char *const *keys, size_t nkeys, const char *k, size_t n)
{
    for (size_t i = 0; i < nkeys; i++)
        if (strncmp(keys[i], k, n) == 0 && keys[i][n] == 0) return i;
    return nkeys;
}

int ag_json_members(const char *s, size_t n, const char *const *keys, size_t nkeys,
                    struct ag_json_span *out)
{
    for (size_t i = 0; i < nkeys; i++) out[i] = (struct ag_json_span){0};
    const char *p = s, *e = s + n;
    p = ws(p, e);
    if (p >= e || *p != '{') return AG_EJSON;
    p = ws(p + 1, e);
    bool first = true;
    for (;;) {
        if (p < e && *p == '}' && first) break;
        bool plain = true;
        const char *k = p, *ke = p < e && *p == '"' ? skip_str(p, e, &plain) : NULL;
        if (!ke || !plain) return AG_EJSON; /* a key with an escape: the parser's */
        p = ws(ke, e);
        if (p >= e || *p != ':') return AG_EJSON;
        struct ag_json_span v;
        const char *ve = skip_value(ws(p + 1, e), e, &v);
        if (!ve) return AG_EJSON;
        size_t i = key_index(keys, nkeys, k + 1, (size_t)(ke - k) - 2);
        if (i < nkeys) out[i] = v; /* the last of a key wins, as in jansson */
        p = ws(ve, e);
        first = false;
        if (p < e && *p == '}') break;
        if (p >= e || *p != ',') return AG_EJSON;
        p = ws(p + 1, e);
    }
    return ws(p + 1, e) == e ? 0 : AG_EJSON;
}
