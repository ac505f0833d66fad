/* The shard router's private declarations (src/store/shard; see shard.c). */
#ifndef AGORA_STORE_SHARD_INTERNAL_H
#define AGORA_STORE_SHARD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "agora/store_shard.h"
#include "store/internal.h"

/* Key hash → shard for keys that keep the shard they had before a shard was
 * added (open addressing, power-of-two capacity; 0 marks a free slot, so a hash
 * of 0 is stored as 1: a collision only pins one more key the same way). */
struct shard_pins {
    uint64_t *keys;
    uint8_t *shard;
    size_t cap, count;
};

#define SHARD_XS_WORKERS 64 /* cross-shard async units run at once (their appends group-commit) */

struct shard_store {
    struct ag_store base;
    size_t n;
    struct ag_store *sh[AG_STORE_SHARDS_MAX];
    char *uri[AG_STORE_SHARDS_MAX];
    struct shard_pins pins;
    _Atomic bool unlaid; /* a new store: the layout is written before the first append */
    pthread_mutex_t layout_lock;
    pthread_mutex_t lock;               /* guards everything below */
    pthread_cond_t moved;               /* a head moved, or closing */
    uint64_t head[AG_STORE_SHARDS_MAX]; /* each shard's head as its watcher last saw it */
    bool closing;
    pthread_t watcher[AG_STORE_SHARDS_MAX];
    bool watching[AG_STORE_SHARDS_MAX];
    /* cross-shard units (xs.c) */
    pthread_cond_t xs_cond;
    struct ag_append_multi_req *xs_head, *xs_tail; /* linked by req.next_done */
    pthread_t xs_thread[SHARD_XS_WORKERS];
    size_t xs_threads;
    bool xs_started;
    uint64_t xs_inflight; /* units whose coordinator committed and others not yet */
    uint64_t xs_units;    /* cross-shard units committed since open */
};

/* The shard that holds `stream`. */
size_t ag__shard_route(const struct shard_store *ss, const char *stream, size_t len);
/* Jump consistent hash (Lamping & Veach 2014): a bucket in [0, n). */
uint32_t ag__shard_jump(uint64_t key, uint32_t n);
/* The hash of the part of `stream` that is hashed (its aggregate id). */
uint64_t ag__shard_key_hash(const char *stream, size_t len);

int ag__shard_pin_get(const struct shard_pins *p, uint64_t h, uint32_t *shard);
int ag__shard_pin_put(struct shard_pins *p, uint64_t h, uint32_t shard);
void ag__shard_pins_free(struct shard_pins *p);

/* Positions of a shard's page/result as the router's. */
void ag__shard_encode_page(struct ag_event_page *pg, size_t shard);
void ag__shard_encode_result(struct ag_append_result *r, size_t shard);

/* Multi-stream appends (xs.c): one shard → that shard's; several → the
 * cross-shard unit (intent on the coordinator, then the others, rolled forward
 * by ag__shard_xs_recover after a crash). */
int ag__shard_append_multi(struct ag_store *s, const struct ag_append_part *parts, size_t nparts,
                           struct ag_append_result *out, struct ag_err *err);
int ag__shard_append_multi_async(struct ag_store *s, struct ag_append_multi_req *req);
int ag__shard_xs_start(struct shard_store *ss, struct ag_err *err);
void ag__shard_xs_stop(struct shard_store *ss);
int ag__shard_xs_recover(struct shard_store *ss, struct ag_err *err);
void ag__shard_xs_settle(struct shard_store *ss);

/* The layout (layout.c): each shard's `_shards` snapshot says its index, the
 * shard count and (shard 0) the pinned keys. Checked at open, written when new. */
int ag__shard_layout_load(struct shard_store *ss, bool allow_new, struct ag_err *err);
/* Before an append: a new store's layout is written (once), so that a store
 * nothing was appended to stays empty (`agora run` seeds an empty store). */
int ag__shard_layout_ensure(struct shard_store *ss, struct ag_err *err);

/* The members of `list`, opened, without layout checks or threads (add-shard). */
int ag__shard_open_raw(const char *list, const struct ag_store_options *opts,
                       struct shard_store **out, struct ag_err *err);
void ag__shard_close_raw(struct shard_store *ss);

#define SHARD_LAYOUT_STREAM "_shards"
#define SHARD_XS_PREFIX     "_xshard-"

#endif
