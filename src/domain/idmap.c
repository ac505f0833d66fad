/*
 * A hash map from order id (a short string) to (int64 value, flag), used for the
 * StockItem's reservations and the Account's charges, which can number thousands.
 *
 * Open addressing, linear probing, XXH3 of the key, capacity a power of two kept
 * at most 70% full; deletion shifts the following cluster back (no tombstones), so
 * lookups stay O(1) expected however many reservations come and go.
 *
 * Size. A table starts at 4 slots (a reservation holds a line or two: 16 slots
 * cost 900 bytes where 4 cost 230, issue 19) and doubles past 70% full; a delete
 * that leaves it under a quarter of 70% halves it (not below 4), and an empty
 * map frees its table, so a burst does not keep its high-water size.
 */
#include <string.h>

#include "domain/internal.h"

void ag__idmap_init(struct ag_dom_idmap *m)
{
    m->slots = NULL;
    m->n = m->cap = 0;
}

void ag__idmap_free(struct ag_dom_idmap *m)
{
    ag_free(m->slots);
    ag__idmap_init(m);
}

static size_t home(const struct ag_dom_idmap *m, const char *key)
{
    return (size_t)ag_xxh3(key, strlen(key)) & (m->cap - 1);
}

struct ag_dom_idmap_slot *ag__idmap_get(const struct ag_dom_idmap *m, const char *key)
{
    if (!m->cap || !key || !key[0]) return NULL;
    for (size_t i = home(m, key);; i = (i + 1) & (m->cap - 1)) {
        struct ag_dom_idmap_slot *s = &m->slots[i];
        if (!s->key[0]) return NULL;
        if (strcmp(s->key, key) == 0) return s;
    }
}

static void place(struct ag_dom_idmap *m, const struct ag_dom_idmap_slot *src)
{
    size_t i = home(m, src->key);
    while (m->slots[i].key[0]) i = (i + 1) & (m->cap - 1);
    m->slots[i] = *src;
}

#define IDMAP_MIN_CAP 4

size_t ag_dom_heap_block(size_t n)
{
    if (!n) return 0;
    size_t b = (n + 8 + 15) & ~(size_t)15;
    return b < 32 ? 32 : b;
}

size_t ag_dom_idmap_bytes(const struct ag_dom_idmap *m)
{
    return ag_dom_heap_block(m->cap * sizeof *m->slots);
}

/* Rehash into ncap slots (a power of two that holds every entry). */
static int resize(struct ag_dom_idmap *m, size_t ncap)
{
    struct ag_dom_idmap_slot *old = m->slots;
    size_t ocap = m->cap;
    struct ag_dom_idmap_slot *ns = ag_calloc(ncap, sizeof *ns);
    if (!ns) return AG_ENOMEM;
    m->slots = ns;
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].key[0]) place(m, &old[i]);
    ag_free(old);
    return 0;
}

int ag__idmap_put(struct ag_dom_idmap *m, const char *key, int64_t value, bool flag)
{
    struct ag_dom_idmap_slot s;
    memset(&s, 0, sizeof s);
    if (ag__dom_copy(s.key, sizeof s.key, key)) return AG_EINVAL;
    struct ag_dom_idmap_slot *cur = ag__idmap_get(m, key);
    if (cur) {
        cur->value = value;
        cur->flag = flag;
        return 0;
    }
    if ((m->n + 1) * 10 > m->cap * 7) {
        int rc = resize(m, m->cap ? m->cap * 2 : IDMAP_MIN_CAP);
        if (rc) return rc;
    }
    s.value = value;
    s.flag = flag;
    place(m, &s);
    m->n++;
    return 0;
}

void ag__idmap_del(struct ag_dom_idmap *m, const char *key)
{
    struct ag_dom_idmap_slot *s = ag__idmap_get(m, key);
    if (!s) return;
    size_t mask = m->cap - 1, hole = (size_t)(s - m->slots);
    memset(s, 0, sizeof *s);
    m->n--;
    /* Backward shift: move each following entry into the hole when its home
     * position does not lie cyclically in (hole, i]. */
    for (size_t i = (hole + 1) & mask; m->slots[i].key[0]; i = (i + 1) & mask) {
        size_t h = home(m, m->slots[i].key);
        bool stays = hole <= i ? (hole < h && h <= i) : (hole < h || h <= i);
        if (stays) continue;
        m->slots[hole] = m->slots[i];
        memset(&m->slots[i], 0, sizeof m->slots[i]);
        hole = i;
    }
    if (m->n == 0) {
        ag__idmap_free(m);
    } else if (m->cap > IDMAP_MIN_CAP && m->n * 40 < m->cap * 7) {
        (void)resize(m, m->cap / 2); /* out of memory: keep the larger table */
    }
}
