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
 * are about to read. One mutex guards the slots, held for a lookup + copy or a
 * store, never while decompressing; two readers missing the same record at
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

struct rc_slot {
    uint64_t position; /* UINT64_MAX: empty */
    struct ag_uuid id;
    uint32_t len, cap;
    uint8_t *raw;
};

struct lrcache {
    pthread_mutex_t lock;
    struct rc_slot slots[RC_SLOTS];
    uint64_t hits, misses; /* under lock */
};

void ag__log_rc_open(struct lstore *ls)
{
    const char *env = getenv("AGORA_STORE_READ_CACHE");
    if (ls->read_only || (env && strcmp(env, "0") == 0)) return;
    struct lrcache *c = ag_calloc(1, sizeof *c);
    if (!c) return; /* no cache: every read decompresses */
    pthread_mutex_init(&c->lock, NULL);
    for (size_t i = 0; i < RC_SLOTS; i++) c->slots[i].position = UINT64_MAX;
    ls->rcache = c;
}

void ag__log_rc_close(struct lstore *ls)
{
    struct lrcache *c = ls->rcache;
    if (!c) return;
    for (size_t i = 0; i < RC_SLOTS; i++) ag_free(c->slots[i].raw);
    pthread_mutex_destroy(&c->lock);
    ag_free(c);
    ls->rcache = NULL;
}

void ag__log_rc_counts(const struct lstore *ls, uint64_t *hits, uint64_t *misses)
{
    struct lrcache *c = ls->rcache;
    *hits = *misses = 0;
    if (!c) return;
    pthread_mutex_lock(&c->lock);
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->lock);
}

/* Copy the cached expansion of `r` to `dst` (`len` bytes); false: not cached. */
static bool rc_get(struct lrcache *c, const struct log_rec *r, uint8_t *dst, size_t len)
{
    struct rc_slot *s = &c->slots[r->position & (RC_SLOTS - 1)];
    pthread_mutex_lock(&c->lock);
    bool hit = s->position == r->position && s->len == len &&
               memcmp(s->id.b, r->id.b, sizeof s->id.b) == 0;
    if (hit) memcpy(dst, s->raw, len);
    if (hit)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void rc_put(struct lrcache *c, const struct log_rec *r, const uint8_t *raw, size_t len)
{
    struct rc_slot *s = &c->slots[r->position & (RC_SLOTS - 1)];
    pthread_mutex_lock(&c->lock);
    if (s->cap < len) {
        uint8_t *n = ag_realloc(s->raw, RC_MAX_RAW); /* one size: a slot grows once */
        if (!n) {
            s->position = UINT64_MAX;
            pthread_mutex_unlock(&c->lock);
            return;
        }
        s->raw = n;
        s->cap = RC_MAX_RAW;
    }
    memcpy(s->raw, raw, len);
    s->len = (uint32_t)len;
    s->id = r->id;
    s->position = r->position;
    pthread_mutex_unlock(&c->lock);
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
