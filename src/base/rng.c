/* xoshiro256** (Blackman & Vigna), a seeded deterministic RNG for tests and a
 * per-thread OS-seeded one for production. */
#include <sys/random.h>
#include <time.h>

#include "agora/base.h"

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next_state(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t xoshiro_next(void *ctx)
{
    return xoshiro_next_state(((struct ag_xoshiro *)ctx)->s);
}

void ag_xoshiro_seed(struct ag_xoshiro *x, uint64_t seed)
{
    for (int i = 0; i < 4; i++) x->s[i] = splitmix64(&seed);
    x->rng.next = xoshiro_next;
    x->rng.ctx = x;
}

static _Thread_local uint64_t tls_state[4];
static _Thread_local bool tls_seeded;

static uint64_t system_next(void *ctx)
{
    AG_UNUSED(ctx);
    if (AG_UNLIKELY(!tls_seeded)) {
        uint64_t seed;
        if (getrandom(&seed, sizeof seed, 0) != sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)&ts;
        }
        for (int i = 0; i < 4; i++) tls_state[i] = splitmix64(&seed);
        tls_seeded = true;
    }
    return xoshiro_next_state(tls_state);
}

static const struct ag_rng system_rng = {system_next, NULL};

const struct ag_rng *ag_rng_system(void)
{
    return &system_rng;
}

double ag_rng_double(const struct ag_rng *r)
{
    return (double)(ag_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t ag_rng_below(const struct ag_rng *r, uint64_t n)
{
    /* Lemire's nearly divisionless method. */
    uint64_t x = ag_rng_next(r);
    __uint128_t m = (__uint128_t)x * n;
    uint64_t l = (uint64_t)m;
    if (l < n) {
        uint64_t t = -n % n;
        while (l < t) {
            x = ag_rng_next(r);
            m = (__uint128_t)x * n;
            l = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}
