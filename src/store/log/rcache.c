/*
 * The decoded-record cache: every in-process reader of the log's tail (each
 * projection's subscription, the relay, the saga starter, blocking reads) reads
 * the same new records within milliseconds of each other, and a compressed
 * record costs a zstd decompression each time it is read. This cache keeps the
 * expanded (raw, sealed) form of the newest compressed records, so a record is
 * decompressed about once and the other readers copy it (issue 11: zstd was a
 * tenth of the server's CPU per order, most of it decompressing the same record
 * for each reader).
 *
 * Direct-mapped by position: RC_SLOTS slots, slot = position mod RC_SLOTS, each
 * holding one record's expanded bytes (a buffer reused by the slot, at most
 * RC_MAX_RAW bytes: larger records are not cached). A hit needs the position AND
 * the event id to match, so a slot can never answer for another event (a
 * position's event never changes in a log, but the id makes the check
 * independent of that). Only records within RC_SLOTS positions of the head are
 * stored, so an old aggregate's replay does not evict the tail the subscribers
 * are about to read. Sixteen mutexes guard the slots (slot i: mutex i mod 16, so
 * consecutive positions take different locks and readers woken by the same commit
 * seldom wait for each other), each held for a lookup + copy or a store, never
 * while decompressing; two readers missing the same record at
 * once both decompress it (harmless). Uncompressed records are not cached:
 * expanding them is a copy already.
 *
 * Memory: at most RC_SLOTS * RC_MAX_RAW bytes (16 MiB), in practice the size of
 * the newest RC_SLOTS records (~3 MiB for the bench's orders). Off in a
 * read-only store (the CLI; another process writes) and with
 * AGORA_STORE_READ_CACHE=0 (for A/B measurements).
 */
#include <stdlib.h>
#include <string.h>

#include "store/log/internal.h"

#define RC_SLOTS   4096 /* a power of two */
#define RC_MAX_RAW 4096
#define RC_STRIPES 16 /* locks: the readers woken by one commit seldom wait */

struct rc_slot {
    uint64_t position; /* UINT64_MAX: empty */
    struct ag_uuid id;
    uint32_t len, cap;
    uint8_t *raw;
};

struct rc_stripe {
    pthread_mutex_t m;
    uint64_t hits, misses;
    char pad[64 - (sizeof(pthread_mutex_t) + 16) % 64]; /* less false sharing */
};

struct lrcache {
    struct rc_stripe lock[RC_STRIPES]; /* slot i's: lock[i % RC_STRIPES] */
    struct rc_slot slots[RC_SLOTS];
};

void ag__log_rc_open(struct lstore *ls)
{
    const char *env = getenv("AGORA_STORE_READ_CACHE");
    if (ls->read_only || (env && strcmp(env, "0") == 0)) return;
    struct lrcache *c = ag_calloc(1, sizeof *c);
    if (!c) return; /* no cache: every read decompresses */
    for (size_t i = 0; i < RC_STRIPES; i++) pthread_mutex_init(&c->lock[i].m, NULL);
    for (size_t i = 0; i < RC_SLOTS; i++) c->slots[i].position = UINT64_MAX;
    ls->rcache = c;
}

void ag__log_rc_close(struct lstore *ls)
{
    struct lrcache *c = ls->rcache;
    if (!c) return;
    for (size_t i = 0; i < RC_SLOTS; i++) ag_free(c->slots[i].raw);
    for (size_t i = 0; i < RC_STRIPES; i++) pthread_mutex_destroy(&c->lock[i].m);
    ag_free(c);
    ls->rcache = NULL;
}

void ag__log_rc_counts(const struct lstore *ls, uint64_t *hits, uint64_t *misses)
{
    struct lrcache *c = ls->rcache;
    *hits = *misses = 0;
    if (!c) return;
    for (size_t i = 0; i < RC_STRIPES; i++) {
        pthread_mutex_lock(&c->lock[i].m);
        *hits += c->lock[i].hits;
        *misses += c->lock[i].misses;
        pthread_mutex_unlock(&c->lock[i].m);
    }
}

/* Copy the cached expansion of `r` to `dst` (`len` bytes); false: not cached. */
static bool rc_get(struct lrcache *c, const struct log_rec *r, uint8_t *dst, size_t len)
{
    size_t i = (size_t)(r->position & (RC_SLOTS - 1));
    struct rc_slot *s = &c->slots[i];
    struct rc_stripe *l = &c->lock[i % RC_STRIPES];
    pthread_mutex_lock(&l->m);
    bool hit = s->position == r->position && s->len == len &&
               memcmp(s->id.b, r->id.b, sizeof s->id.b) == 0;
    if (hit) memcpy(dst, s->raw, len);
    *(hit ? &l->hits : &l->misses) += 1;
    pthread_mutex_unlock(&l->m);
    return hit;
}

static void rc_put(struct lrcache *c, const struct log_rec *r, const uint8_t *raw, size_t len)
{
    size_t i = (size_t)(r->position & (RC_SLOTS - 1));
    struct rc_slot *s = &c->slots[i];
    pthread_mutex_t *m = &c->lock[i % RC_STRIPES].m;
    pthread_mutex_lock(m);
    if (s->cap < len) {
        uint8_t *n = ag_realloc(s->raw, RC_MAX_RAW); /* one size: a slot grows once */
        if (!n) {
            s->position = UINT64_MAX;
            pthread_mutex_unlock(m);
            return;
        }
        s->raw = n;
        s->cap = RC_MAX_RAW;
    }
    memcpy(s->raw, raw, len);
    s->len = (uint32_t)len;
    s->id = r->id;
    s->position = r->position;
    pthread_mutex_unlock(m);
}

int ag__log_rec_expand_cached(const struct lstore *ls, const uint8_t *p, uint8_t *dst,
                              struct ag_buf *scratch, const char **why)
{
    struct lrcache *c = ls->rcache;
    if (!c) return ag__log_rec_expand(ls, p, dst, scratch, why);
    struct log_rec r;
    ag__log_rec_fields(p, &r);
    if (!r.zbody || r.kind != LOG_KIND_EVENT) return ag__log_rec_expand(ls, p, dst, scratch, why);
    size_t len = ag__log_rec_size(r.stream_len, r.type_len, r.meta_len, r.data_len);
    if (rc_get(c, &r, dst, len)) return 0;
    int rc = ag__log_rec_expand(ls, p, dst, scratch, why);
    uint64_t head = ag__log_head(ls);
    if (!rc && len <= RC_MAX_RAW && r.position + RC_SLOTS > head) rc_put(c, &r, dst, len);
    return rc;
}
