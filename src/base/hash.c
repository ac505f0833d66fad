/* XXH3 helpers (xxHash, the library). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "agora/base.h"

uint64_t ag_xxh3(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

uint64_t ag_xxh3_seed(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}
