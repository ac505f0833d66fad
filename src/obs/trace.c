/*
 * W3C trace context (https://www.w3.org/TR/trace-context/) and request ids.
 *
 * traceparent = version "-" trace-id "-" parent-id "-" trace-flags, all lower-case
 * hex: 2, 32, 16 and 2 digits. Version ff is invalid; version 00 is exactly 55
 * characters; a later version may append "-..." fields, which we ignore (the spec
 * asks a parser to read the 00 fields of a higher version). All-zero ids are invalid.
 */
#include <string.h>

#include "agora/obs.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decode 2*n lower-case hex digits into out[n]; false when one is not hex. */
static bool unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

int ag_obs_trace_parse(const char *s, size_t n, struct ag_obs_trace *out)
{
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    uint8_t version;
    if (n < AG_OBS_TRACEPARENT_LEN || !unhex(s, &version, 1) || version == 0xff) return AG_EINVAL;
    if (version == 0 && n != AG_OBS_TRACEPARENT_LEN) return AG_EINVAL;
    if (n > AG_OBS_TRACEPARENT_LEN && s[AG_OBS_TRACEPARENT_LEN] != '-') return AG_EINVAL;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return AG_EINVAL;
    struct ag_obs_trace t;
    if (!unhex(s + 3, t.trace_id, 16) || !unhex(s + 36, t.span_id, 8) ||
        !unhex(s + 53, &t.flags, 1))
        return AG_EINVAL;
    if (all_zero(t.trace_id, 16) || all_zero(t.span_id, 8)) return AG_EINVAL;
    *out = t;
    return 0;
}

static void random_bytes(uint8_t *p, size_t n, const struct ag_rng *rng)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = ag_rng_next(rng);
            memcpy(p + i, &r, AG_MIN(8, n - i));
        }
    } while (all_zero(p, n));
}

void ag_obs_trace_new(struct ag_obs_trace *out, const struct ag_rng *rng)
{
    if (!rng) rng = ag_rng_system();
    random_bytes(out->trace_id, sizeof out->trace_id, rng);
    random_bytes(out->span_id, sizeof out->span_id, rng);
    out->flags = 1;
}

void ag_obs_trace_child(const struct ag_obs_trace *parent, struct ag_obs_trace *out,
                        const struct ag_rng *rng)
{
    if (!rng) rng = ag_rng_system();
    memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
    out->flags = parent->flags;
    do random_bytes(out->span_id, sizeof out->span_id, rng);
    while (memcmp(out->span_id, parent->span_id, sizeof out->span_id) == 0);
}

static char *put_hex(char *o, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *o++ = digits[p[i] >> 4];
        *o++ = digits[p[i] & 15];
    }
    return o;
}

void ag_obs_trace_format(const struct ag_obs_trace *t, char out[AG_OBS_TRACEPARENT_LEN + 1])
{
    char *o = out;
    *o++ = '0', *o++ = '0', *o++ = '-';
    o = put_hex(o, t->trace_id, 16);
    *o++ = '-';
    o = put_hex(o, t->span_id, 8);
    *o++ = '-';
    o = put_hex(o, &t->flags, 1);
    *o = '\0';
}

bool ag_obs_request_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > AG_OBS_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
    }
    return true;
}

void ag_obs_request_id_new(char out[AG_UUID_STRLEN + 1])
{
    struct ag_uuid u;
    ag_uuid_v7(&u, NULL, NULL);
    ag_uuid_format(&u, out);
}
