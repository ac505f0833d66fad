/*
 * Open connections per peer IP address, shared by every worker of a server, so
 * one client cannot fill the server's connection budget (max_conns_per_peer).
 *
 * Layout. AG__PEER_SHARDS shards, each a mutex and a small open-addressing table
 * of {address, count}; the shard is chosen by a hash of the address, so workers
 * accepting from different peers rarely meet on a lock. A slot whose count drops
 * to zero is removed with backward-shift deletion (no tombstones), so a table
 * holds exactly the peers with open connections and lookups stay short. Tables
 * grow by doubling; if growing fails the connection is admitted uncounted (an
 * allocation failure must not lock clients out).
 *
 * Keys. IPv4 and IPv6 addresses are 16 bytes (IPv4 as the v4-mapped IPv6
 * address), so a client reaching us over both forms counts once. The port is not
 * part of the key: the limit is per address.
 */
#include <string.h>

#include "http/internal.h"

struct peer_slot {
    uint8_t addr[16]; /* v4-mapped or IPv6 */
    uint32_t count;   /* open connections; 0 = free slot */
};

struct peer_shard {
    uv_mutex_t lock;        /* guards the fields below */
    struct peer_slot *slot; /* open addressing, power-of-two size */
    size_t cap;             /* slots */
    size_t used;            /* slots with count > 0 */
};

struct ag__peers {
    struct peer_shard shard[AG__PEER_SHARDS];
};

int ag__peers_new(struct ag__peers **out)
{
    struct ag__peers *p = ag_calloc(1, sizeof *p);
    if (!p) return AG_ENOMEM;
    for (int i = 0; i < AG__PEER_SHARDS; i++) uv_mutex_init(&p->shard[i].lock);
    *out = p;
    return 0;
}

void ag__peers_free(struct ag__peers *p)
{
    if (!p) return;
    for (int i = 0; i < AG__PEER_SHARDS; i++) {
        uv_mutex_destroy(&p->shard[i].lock);
        ag_free(p->shard[i].slot);
    }
    ag_free(p);
}

bool ag__peer_key(const struct sockaddr *sa, uint8_t key[16] /* OUT */)
{
    if (sa->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

static uint64_t key_hash(const uint8_t k[16])
{
    uint64_t a, b;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
}

/* The slot holding k, or the free slot where it would go. */
static struct peer_slot *find(struct peer_shard *s, const uint8_t k[16], uint64_t h)
{
    size_t m = s->cap - 1, i = (size_t)(h >> 8) & m;
    while (s->slot[i].count && memcmp(s->slot[i].addr, k, 16) != 0) i = (i + 1) & m;
    return &s->slot[i];
}

static int grow(struct peer_shard *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 16;
    struct peer_slot *old = s->slot, *ns = ag_calloc(ncap, sizeof *ns);
    if (!ns) return AG_ENOMEM;
    size_t ocap = s->cap;
    s->slot = ns;
    s->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].count) *find(s, old[i].addr, key_hash(old[i].addr)) = old[i];
    ag_free(old);
    return 0;
}

int ag__peers_acquire(struct ag__peers *p, const uint8_t key[16], uint32_t cap)
{
    uint64_t h = key_hash(key);
    struct peer_shard *s = &p->shard[h % AG__PEER_SHARDS];
    int rc = 0;
    uv_mutex_lock(&s->lock);
    if ((s->used + 1) * 4 > s->cap * 3 && grow(s) != 0) {
        rc = 1; /* admitted, uncounted */
        goto out;
    }
    struct peer_slot *e = find(s, key, h);
    if (e->count >= cap) {
        rc = AG_EAGAIN;
        goto out;
    }
    if (e->count++ == 0) {
        memcpy(e->addr, key, 16);
        s->used++;
    }
out:
    uv_mutex_unlock(&s->lock);
    return rc;
}

void ag__peers_release(struct ag__peers *p, const uint8_t key[16])
{
    uint64_t h = key_hash(key);
    struct peer_shard *s = &p->shard[h % AG__PEER_SHARDS];
    uv_mutex_lock(&s->lock);
    struct peer_slot *e = s->cap ? find(s, key, h) : NULL;
    if (e && e->count && --e->count == 0) {
        /* backward-shift deletion: pull later members of the run into the hole */
        size_t m = s->cap - 1, hole = (size_t)(e - s->slot), j = hole;
        s->used--;
        for (;;) {
            j = (j + 1) & m;
            if (!s->slot[j].count) break;
            size_t home = (size_t)(key_hash(s->slot[j].addr) >> 8) & m;
            /* move j into the hole unless its home lies cyclically in (hole, j] */
            bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
            if (stays) continue;
            s->slot[hole] = s->slot[j];
            hole = j;
        }
        s->slot[hole].count = 0;
    }
    uv_mutex_unlock(&s->lock);
}

uint32_t ag__peers_count(struct ag__peers *p, const uint8_t key[16])
{
    uint64_t h = key_hash(key);
    struct peer_shard *s = &p->shard[h % AG__PEER_SHARDS];
    uv_mutex_lock(&s->lock);
    uint32_t n = s->cap ? find(s, key, h)->count : 0;
    uv_mutex_unlock(&s->lock);
    return n;
}
