/*
 * The in-memory stream index: an open-addressing hash table (linear probing,
 * load ≤ 1/2) from stream name to `struct lstream`, which holds the location and
 * id-hash of each of the stream's events. A stream with one event stores it
 * inline, so a million single-event streams cost one small allocation each.
 * Only the writer thread (or open) mutates it, under the store's ix_lock.
 */
#include "store/log/internal.h"

int ag__lindex_init(struct lindex *ix, size_t hint)
{
    size_t n = 64;
    while (n < hint * 2) n <<= 1;
    ix->slots = ag_calloc(n, sizeof *ix->slots);
    if (!ix->slots) return AG_ENOMEM;
    ix->mask = n - 1;
    ix->count = 0;
    ix->bytes = n * sizeof *ix->slots;
    return 0;
}

void ag__lindex_free(struct lindex *ix)
{
    if (!ix->slots) return;
    for (size_t i = 0; i <= ix->mask; i++) {
        struct lstream *s = ix->slots[i];
        if (!s) continue;
        if (s->cap > 1) ag_free(s->e.many);
        ag_free(s);
    }
    ag_free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

struct lstream *ag__lindex_find(const struct lindex *ix, const char *name, size_t len, uint64_t h)
{
    for (size_t i = h & ix->mask;; i = (i + 1) & ix->mask) {
        struct lstream *s = ix->slots[i];
        if (!s) return NULL;
        if (s->hash == h && s->name_len == len && memcmp(s->name, name, len) == 0) return s;
    }
}

static int grow(struct lindex *ix)
{
    size_t n = (ix->mask + 1) * 2;
    struct lstream **slots = ag_calloc(n, sizeof *slots);
    if (!slots) return AG_ENOMEM;
    for (size_t i = 0; i <= ix->mask; i++) {
        struct lstream *s = ix->slots[i];
        if (!s) continue;
        size_t j = s->hash & (n - 1);
        while (slots[j]) j = (j + 1) & (n - 1);
        slots[j] = s;
    }
    ix->bytes += (n - (ix->mask + 1)) * sizeof *slots;
    ag_free(ix->slots);
    ix->slots = slots;
    ix->mask = n - 1;
    return 0;
}

struct lstream *ag__lindex_add(struct lindex *ix, const char *name, size_t len, uint64_t h)
{
    if ((ix->count + 1) * 2 > ix->mask + 1 && grow(ix)) return NULL;
    struct lstream *s = ag_malloc(LSTREAM_BYTES(len) < sizeof *s ? sizeof *s : LSTREAM_BYTES(len));
    if (!s) return NULL;
    memset(s, 0, offsetof(struct lstream, name));
    s->hash = h;
    s->snap_loc = UINT64_MAX;
    s->cap = 1;
    s->name_len = (uint16_t)len;
    memcpy(s->name, name, len);
    size_t i = h & ix->mask;
    while (ix->slots[i]) i = (i + 1) & ix->mask;
    ix->slots[i] = s;
    ix->count++;
    ix->bytes += ((LSTREAM_BYTES(len) + 8 + 15) & ~(size_t)15); /* malloc's chunk size */
    return s;
}

int ag__lindex_adopt(struct lindex *ix, struct lstream *s)
{
    if ((ix->count + 1) * 2 > ix->mask + 1 && grow(ix)) return AG_ENOMEM;
    size_t i = s->hash & ix->mask;
    while (ix->slots[i]) i = (i + 1) & ix->mask;
    ix->slots[i] = s;
    ix->count++;
    ix->bytes += ((LSTREAM_BYTES(s->name_len) + 8 + 15) & ~(size_t)15) +
                 (s->cap > 1 ? (size_t)s->cap * sizeof(struct lentry) : 0);
    return 0;
}

int ag__lindex_reserve(struct lindex *ix, struct lstream *s, size_t extra)
{
    size_t need = (size_t)s->count + extra;
    if (need <= s->cap) return 0;
    if (need > UINT32_MAX) return AG_ETOOBIG;
    size_t cap = s->cap < 4 ? 4 : s->cap;
    while (cap < need) cap = cap + cap / 2;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    struct lentry *e;
    if (s->cap <= 1) {
        e = ag_malloc(cap * sizeof *e);
        if (!e) return AG_ENOMEM;
        if (s->count) e[0] = s->e.one;
    } else {
        e = ag_realloc(s->e.many, cap * sizeof *e);
        if (!e) return AG_ENOMEM;
    }
    ix->bytes += (cap - s->cap) * sizeof *e;
    s->e.many = e;
    s->cap = (uint32_t)cap;
    return 0;
}

void ag__lindex_remove(struct lindex *ix, struct lstream *s)
{
    size_t i = s->hash & ix->mask;
    while (ix->slots[i] != s) i = (i + 1) & ix->mask;
    ix->slots[i] = NULL;
    /* backward-shift deletion: re-place the run after the hole (linear probing) */
    for (size_t j = (i + 1) & ix->mask; ix->slots[j]; j = (j + 1) & ix->mask) {
        struct lstream *t = ix->slots[j];
        size_t home = t->hash & ix->mask;
        /* t may move into the hole when its home is not cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        ix->slots[i] = t;
        ix->slots[j] = NULL;
        i = j;
    }
    ix->count--;
    if (s->count) ix->live--;
    ix->bytes -= ((LSTREAM_BYTES(s->name_len) + 8 + 15) & ~(size_t)15);
    if (s->cap > 1) {
        ix->bytes -= (size_t)(s->cap - 1) * sizeof(struct lentry);
        ag_free(s->e.many);
    }
    ag_free(s);
}
