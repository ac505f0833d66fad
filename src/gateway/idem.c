/*
 * The Idempotency-Key store: the first answer to a POST per (key, user) is kept
 * for a TTL (24 h by default) and replayed to later requests with the same key;
 * a request arriving while the first is still being answered gets 409.
 *
 * A chained hash table under one mutex (requests with a key are a small share
 * of traffic), bounded by max_entries: when full, expired entries are swept and
 * then the oldest finished entry is evicted; if every entry is in progress the
 * new key is refused (fail closed: the caller answers 503). Entries remember a
 * fingerprint of the request (method, path, body) so reusing a key for a
 * different request is refused (422) instead of replaying the wrong answer.
 */
#include <string.h>

#include "gateway/internal.h"

struct ientry {
    struct ientry *next;  /* hash chain */
    struct ientry *older; /* insertion order (oldest first list) */
    struct ientry *newer;
    char *key; /* "user\0key" (owned) */
    size_t key_len;
    uint64_t fp;              /* request fingerprint */
    uint64_t expires;         /* mono ns */
    bool done;                /* resp is stored */
    struct gw_idem_resp resp; /* the stored answer */
};

struct gw_idem {
    pthread_mutex_t lock;
    struct ientry **buckets;
    size_t nbuckets; /* power of two */
    size_t n, max;
    uint64_t ttl;
    struct ientry *oldest, *newest;
    const struct ag_clock *clock;
};

int ag__gw_idem_new(uint32_t max_entries, uint64_t ttl_ns, const struct ag_clock *clock,
                    struct gw_idem **out)
{
    struct gw_idem *s = ag_calloc(1, sizeof *s);
    if (!s) return AG_ENOMEM;
    s->max = max_entries ? max_entries : 100000;
    s->nbuckets = 1024;
    while (s->nbuckets < s->max) s->nbuckets <<= 1;
    if (!(s->buckets = ag_calloc(s->nbuckets, sizeof *s->buckets))) {
        ag_free(s);
        return AG_ENOMEM;
    }
    s->ttl = ttl_ns;
    s->clock = clock ? clock : ag_clock_system();
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

void ag__gw_idem_resp_free(struct gw_idem_resp *r)
{
    ag_free(r->headers);
    ag_free(r->body);
    ag_free(r->content_type);
    memset(r, 0, sizeof *r);
}

static void entry_unlink(struct gw_idem *s, struct ientry *e)
{
    struct ientry **pp = &s->buckets[ag_xxh3(e->key, e->key_len) & (s->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        s->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        s->newest = e->older;
    s->n--;
    ag__gw_idem_resp_free(&e->resp);
    ag_free(e->key);
    ag_free(e);
}

void ag__gw_idem_free(struct gw_idem *s)
{
    if (!s) return;
    while (s->oldest) entry_unlink(s, s->oldest);
    ag_free(s->buckets);
    pthread_mutex_destroy(&s->lock);
    ag_free(s);
}

static struct ientry *lookup(struct gw_idem *s, const char *k, size_t kl)
{
    for (struct ientry *e = s->buckets[ag_xxh3(k, kl) & (s->nbuckets - 1)]; e; e = e->next)
        if (e->key_len == kl && !memcmp(e->key, k, kl)) return e;
    return NULL;
}

/* Make room for one entry; false when every entry is in progress. */
static bool make_room(struct gw_idem *s, uint64_t now)
{
    for (struct ientry *e = s->oldest, *n; e && s->n >= s->max; e = n) {
        n = e->newer;
        if (e->expires <= now && e->done) entry_unlink(s, e);
    }
    for (struct ientry *e = s->oldest, *n; e && s->n >= s->max; e = n) {
        n = e->newer;
        if (e->done) entry_unlink(s, e);
    }
    return s->n < s->max;
}

static size_t make_key(char *buf, size_t cap, const char *key, const char *user)
{
    size_t ul = strlen(user), kl = strlen(key);
    if (ul + kl + 1 > cap) return 0;
    memcpy(buf, user, ul + 1);
    memcpy(buf + ul + 1, key, kl);
    return ul + 1 + kl;
}

static int copy_resp(const struct gw_idem_resp *src, struct gw_idem_resp *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->status = src->status;
    dst->body_len = src->body_len;
    dst->headers = src->headers ? ag_strdup(src->headers) : NULL;
    dst->content_type = src->content_type ? ag_strdup(src->content_type) : NULL;
    dst->body = ag_malloc(src->body_len + 1);
    if (dst->body) {
        memcpy(dst->body, src->body ? src->body : "", src->body_len);
        dst->body[src->body_len] = 0;
    }
    if (!dst->body || (src->headers && !dst->headers) ||
        (src->content_type && !dst->content_type)) {
        ag__gw_idem_resp_free(dst);
        return AG_ENOMEM;
    }
    return 0;
}

enum gw_idem_state ag__gw_idem_begin(struct gw_idem *s, const char *key, const char *user,
                                     uint64_t fp, struct gw_idem_resp *resp)
{
    char k[512];
    size_t kl = make_key(k, sizeof k, key, user);
    if (!kl) return GW_IDEM_MISMATCH;
    uint64_t now = ag_clock_mono(s->clock);
    enum gw_idem_state st = GW_IDEM_IN_PROGRESS;
    pthread_mutex_lock(&s->lock);
    struct ientry *e = lookup(s, k, kl);
    if (e && e->expires <= now && e->done) entry_unlink(s, e), e = NULL;
    if (e) {
        st = e->fp != fp                      ? GW_IDEM_MISMATCH
             : !e->done                       ? GW_IDEM_IN_PROGRESS
             : copy_resp(&e->resp, resp) == 0 ? GW_IDEM_DONE
                                              : GW_IDEM_IN_PROGRESS;
        goto out_unlock;
    }
    if (!make_room(s, now) || !(e = ag_calloc(1, sizeof *e)) || !(e->key = ag_malloc(kl))) {
        ag_free(e);
        goto out_unlock; /* IN_PROGRESS: the caller refuses for now */
    }
    memcpy(e->key, k, kl);
    e->key_len = kl;
    e->fp = fp;
    e->expires = now + s->ttl;
    size_t b = ag_xxh3(k, kl) & (s->nbuckets - 1);
    e->next = s->buckets[b];
    s->buckets[b] = e;
    e->older = s->newest;
    if (s->newest)
        s->newest->newer = e;
    else
        s->oldest = e;
    s->newest = e;
    s->n++;
    st = GW_IDEM_NEW;
out_unlock:
    pthread_mutex_unlock(&s->lock);
    return st;
}

void ag__gw_idem_finish(struct gw_idem *s, const char *key, const char *user,
                        struct gw_idem_resp *resp)
{
    char k[512];
    size_t kl = make_key(k, sizeof k, key, user);
    pthread_mutex_lock(&s->lock);
    struct ientry *e = kl ? lookup(s, k, kl) : NULL;
    if (e && !e->done) {
        if (!resp || resp->status >= 500) {
            entry_unlink(s, e); /* let the client retry */
        } else {
            e->resp = *resp;
            memset(resp, 0, sizeof *resp);
            e->done = true;
            e->expires = ag_clock_mono(s->clock) + s->ttl;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (resp) ag__gw_idem_resp_free(resp);
}

size_t ag__gw_idem_size(struct gw_idem *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}
