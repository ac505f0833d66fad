/* Port-private declarations shared by the store port (store.c) and its adapters. */
#ifndef AGORA_STORE_INTERNAL_H
#define AGORA_STORE_INTERNAL_H

#include <pthread.h>

#include "agora/store.h"

/* A libuv loop bound to a store for async append completions. Adapters finish a
 * request with ag__store_loop_complete from any thread; the callback then runs on
 * the loop. */
struct ag_store_loop {
    struct ag_store *store;
    void *async;                       /* uv_async_t (heap; freed in its close_cb) */
    pthread_mutex_t lock;              /* guards the list */
    struct ag_append_req *head, *tail; /* completed, awaiting their callbacks */
};

/* Hand a finished request (status, result and err filled) to its loop. */
void ag__store_loop_complete(struct ag_append_req *req);

#endif
