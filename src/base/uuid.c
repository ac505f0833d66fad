/*
 * UUIDv7 (RFC 9562 §5.7) with method 1 of §6.2: the 12-bit rand_a field is a
 * counter seeded randomly each new millisecond and incremented within it, so ids
 * made by one process sort in creation order. If the counter overflows within one
 * millisecond the timestamp is advanced by one (still monotonic).
 */
#include <pthread.h>
#include <string.h>

#include "agora/base.h"

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint32_t last_seq;

void ag_uuid_v7(struct ag_uuid *out, const struct ag_clock *clock, const struct ag_rng *rng)
{
    if (!clock) clock = ag_clock_system();
    if (!rng) rng = ag_rng_system();
    uint64_t ms = ag_clock_now(clock) / 1000000ull;
    uint64_t rnd = ag_rng_next(rng);
    pthread_mutex_lock(&uuid_lock);
    if (ms > last_ms) {
        last_ms = ms;
        last_seq = (uint32_t)(rnd >> 52) & 0x7FF; /* leave headroom for increments */
    } else if (++last_seq > 0xFFF) {
        last_ms++;
        last_seq = 0;
    }
    ms = last_ms;
    uint32_t seq = last_seq;
    pthread_mutex_unlock(&uuid_lock);

    uint64_t tail = ag_rng_next(rng);
    for (int i = 0; i < 6; i++) out->b[i] = (uint8_t)(ms >> (40 - 8 * i));
    out->b[6] = (uint8_t)(0x70 | (seq >> 8));
    out->b[7] = (uint8_t)seq;
    for (int i = 8; i < 16; i++) out->b[i] = (uint8_t)(tail >> (8 * (i - 8)));
    out->b[8] = (uint8_t)(0x80 | (out->b[8] & 0x3F)); /* variant 10 */
}

void ag_uuid_format(const struct ag_uuid *u, char out[AG_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[u->b[i] >> 4];
        out[o++] = hex[u->b[i] & 15];
    }
    out[o] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ag_uuid_parse(const char *s, size_t n, struct ag_uuid *out)
{
    if (n != AG_UUID_STRLEN) return AG_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return AG_EINVAL;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) return AG_EINVAL;
        out->b[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

bool ag_uuid_is_nil(const struct ag_uuid *u)
{
    static const uint8_t zero[16];
    return memcmp(u->b, zero, 16) == 0;
}
