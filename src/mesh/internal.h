/* Private declarations of the mesh module: endpoint state shared by the
 * balancer (cluster.c), calls (call.c) and the health checker (health.c). */
#ifndef AGORA_MESH_INTERNAL_H
#define AGORA_MESH_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "agora/mesh.h"

struct ag__mesh_ep {
    struct ag_mesh_endpoint_config cfg;   /* host and labels point into the copies below */
    char host[AG_HTTP_HOST_MAX];          /* numeric address or "unix:/path" */
    char *labels_mem[AG_MESH_MAX_LABELS]; /* owned label copies */
    uint64_t pool_key;                    /* identifies its pool on a loop */
    _Atomic uint32_t active;              /* tries in flight (least request) */
    _Atomic uint32_t cons_5xx;            /* consecutive 5xx or gateway failures */
    _Atomic uint32_t cons_gw;             /* consecutive gateway failures */
    _Atomic uint64_t ejected_until;       /* mono ns; 0 or past = not ejected */
    _Atomic bool hc_down;                 /* marked down by active health checks */
    _Atomic uint64_t requests;            /* tries reported */
    _Atomic uint64_t failures;            /* tries that were 5xx or gateway failures */
    uint32_t ejections;                   /* ejection multiplier (under the cluster lock) */
    uint64_t last_eject_end;              /* end of the last ejection (under the lock) */
    uint64_t total_ejections;             /* ever (under the lock) */
    /* health-checker thread only */
    uint64_t hc_next_ns;     /* next check due */
    bool hc_inflight;        /* a check is running */
    uint32_t hc_ok_streak;   /* consecutive successes */
    uint32_t hc_fail_streak; /* consecutive failures */
};

struct ag__mesh_ring_node {
    uint64_t hash; /* position on the ring */
    uint32_t ep;   /* endpoint index */
};

/* A consistent-hash ring: swapped whole when the endpoints change (dynamic
 * clusters); an old one is kept until the cluster is freed (a pick may still be
 * walking it). */
struct ag__mesh_ring {
    struct ag__mesh_ring *older; /* retired rings */
    size_t n;
    struct ag__mesh_ring_node nodes[];
};

struct ag_mesh_cluster {
    char *name;                        /* owned */
    struct ag_mesh_cluster_config cfg; /* copy with defaults resolved */
    struct ag__mesh_ep eps[AG_MESH_MAX_ENDPOINTS];
    _Atomic size_t neps; /* slots ever used (only grows); the live ones are in `live` */
    char *subset_names[AG_MESH_MAX_SUBSETS];   /* owned */
    uint64_t subset_mask[AG_MESH_MAX_SUBSETS]; /* member endpoints per subset */
    size_t nsubsets;
    /* The endpoints in use: a slot's bit is set once it is initialised, and cleared
     * when ag_mesh_cluster_set_endpoints removes it (drain: no new pick; its
     * in-flight tries finish). A removed slot is reused only when it has been out
     * for AG__MESH_SLOT_GRACE_NS and has no try in flight. */
    _Atomic uint64_t live;
    uint64_t removed_at[AG_MESH_MAX_ENDPOINTS]; /* mono ns (under the lock) */
    _Atomic(struct ag__mesh_ring *) ring;       /* sorted (AG_MESH_LB_HASH) */
    _Atomic uint64_t rr;                        /* round-robin counter */
    pthread_mutex_t lock;                       /* ejection decisions */
    struct ag_cb *breaker;                      /* NULL when off */
    struct ag_retry_budget *budget;             /* always set */
    const struct ag_clock *clock;               /* borrowed */
    const struct ag_rng *rng;                   /* borrowed */
};

#define AG__MESH_SLOT_GRACE_NS 30000000000ull /* 30 s */

/* The live endpoints' mask (acquire: their slots are initialised). */
static inline uint64_t ag__mesh_live(struct ag_mesh_cluster *c)
{
    return atomic_load_explicit(&c->live, memory_order_acquire);
}

/* The pool for endpoint idx of cluster c on this loop (created on first use). */
struct ag_http_upstream *ag__mesh_pools_get(struct ag_mesh_pools *p, struct ag_mesh_cluster *c,
                                            size_t idx);

#endif
