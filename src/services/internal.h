/* Private declarations shared by the bounded-context services (src/services). */
#ifndef AGORA_SERVICES_INTERNAL_H
#define AGORA_SERVICES_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <uv.h>

#include "agora/domain.h"
#include "agora/es.h"
#include "agora/http.h"
#include "agora/platform.h"
#include "agora/saga.h"

/* Read models, one SQLite file each (index into platform.rm[]). */
enum rm_id {
    RM_CUSTOMERS,
    RM_PRODUCTS,
    RM_ACCOUNTS,
    RM_STOCK,
    RM_ORDERS,
    RM_SHIPMENTS,
    RM_SAGAS,
    RM_COUNT
};

struct ag_platform {
    struct ag_platform_config cfg;
    char *rm_dir; /* <data>/readmodels */
    struct ag_store *store;
    struct ag_es_repo *repo;
    struct ag_projector *projector;
    struct ag_projection projs[RM_COUNT + 1]; /* + the saga starter */
    sqlite3 *rm[RM_COUNT];                    /* read-only query handles (serialised) */
    pthread_rwlock_t rm_lock[RM_COUNT];       /* queries read-lock; reopening write-locks */
    uint64_t rm_gen[RM_COUNT];                /* the read model's generation rm[i] was opened on */
    bool rm_locks_init;                       /* rm_lock[] initialised */
    struct ag_saga_engine *sagas;
    struct ag_saga_def saga_defs[1];
    struct ag_saga_step place_order_steps[5];
    struct ag_pipeline step_policy[5]; /* retry + breaker per saga step */
    struct ag_cb *breakers[5];         /* one per participant (step) */
    struct ag_http_router *router;
    struct ag_http_server *server;
    struct ag_obs_registry *metrics;
    struct ag_obs_health *health;
    /* the monitor thread: publishes projection lag, saga and store figures as metrics */
    pthread_t monitor;
    bool monitor_started;
    pthread_mutex_t monitor_lock;
    pthread_cond_t monitor_cond;
    bool monitor_stop;
};

/* Start/stop the metrics monitor (platform.c). */
int svc_monitor_start(struct ag_platform *p);
void svc_monitor_stop(struct ag_platform *p);

/* Aggregate types for the repository (from the domain's tables). */
extern const struct ag_es_type svc_customer_type, svc_product_type, svc_order_type, svc_stock_type,
    svc_account_type, svc_shipment_type;

/* ---- work off the loop ---- */

/* A request handled on the libuv threadpool. Everything the work needs is copied
 * from the request on the loop thread before it is queued; the work never touches
 * the request. */
struct svc_job {
    uv_work_t work;
    struct ag_http_req *req;
    struct ag_platform *p;
    int (*fn)(struct svc_job *j);
    json_t *body;         /* parsed request body or NULL */
    char param[128];      /* the route's {id} parameter, if any */
    const char *q[4];     /* selected query parameters (copied) */
    char idem_key[256];   /* Idempotency-Key header, "" when none */
    bool idem_claimed;    /* svc_idem_begin claimed the key for this request */
    int64_t idem_version; /* the version of that claim in the key's stream */
    char meta[512];       /* event metadata JSON (request id, traceparent) */
    /* answer */
    int status;   /* HTTP status */
    json_t *resp; /* JSON body (success) */
    bool problem; /* answer with problem+json */
    char title[64];
    char detail[512];
    json_t *errors;       /* problem errors[] or NULL */
    char location[256];   /* Location header, "" for none */
    char replayed;        /* answered from the idempotency record */
    uint64_t rm_position; /* projection position the answer reflects (0: n/a) */
};

/* Queue `fn` for `req` with its {id} parameter and these query names copied. */
int svc_offload(struct ag_platform *p, struct ag_http_req *req, int (*fn)(struct svc_job *),
                const char *param, const char *const *query_names);
/* Answer helpers (on the worker thread, fill the job). */
int svc_ok(struct svc_job *j, int status, json_t *body);
int svc_problem(struct svc_job *j, int status, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Map an AG_E* code + message to a problem. */
int svc_error(struct svc_job *j, int code, const struct ag_err *err);
/* Field validation: collect {pointer, detail} entries. */
void svc_field_error(struct svc_job *j, const char *pointer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answer 400 (or `status`) with the collected field errors; 0 when there are none. */
int svc_fields_failed(struct svc_job *j, int status);

/* ---- commands ---- */

/* Run a domain decide function as a repository command. `decide` has the shape of
 * the domain's functions: (state, cmd, out, err). */
typedef int (*svc_dom_fn)(const void *state, const void *cmd, struct ag_dom_events *out,
                          struct ag_err *err);
int svc_exec(struct ag_platform *p, const struct ag_es_type *t, const char *stream, svc_dom_fn fn,
             const void *cmd, const char *meta, ag_es_view_fn view, void *view_ud,
             struct ag_es_result *res, struct ag_err *err);
/* Copy of the current state through `view` (AG_ENOTFOUND when the stream is empty). */
int svc_read(struct ag_platform *p, const struct ag_es_type *t, const char *stream,
             ag_es_view_fn view, void *ud, struct ag_err *err);
/* "<prefix>-<id>" into out. */
void svc_stream(char *out, size_t n, const char *prefix, const char *id);
/* A new UUIDv7 string, or (with a key) a UUID derived from `scope` + `key`. */
void svc_new_id(char out[AG_UUID_STRLEN + 1], const char *scope, const char *key);
int64_t svc_now_ms(void);
bool svc_stream_exists(struct ag_platform *p, const char *prefix, const char *id);

/* ---- idempotency keys on creating POSTs ---- */

/* Returns 1 when the job was answered from an earlier identical request (or
 * refused: key reused with another body, or still in progress), 0 to go on. */
int svc_idem_begin(struct svc_job *j, const char *scope);
/* Record the job's answer for its key (after the work); after a 5xx, or a 409 from
 * a lost concurrency race, release the key instead so a retry proceeds as new. */
void svc_idem_end(struct svc_job *j, const char *scope);

/* ---- read models ---- */

/* Reopen read model `rm`'s query handle (the file was replaced by a rebuild). */
int svc_rm_reopen(struct ag_platform *p, enum rm_id rm);
/* Wait (bounded) until the read models include everything up to the store's head:
 * used when a just-written resource is not in the read model yet. */
void svc_rm_catch_up(struct ag_platform *p);
/* Bind text parameters and run a query returning one JSON object per row through
 * `row` (column name → value). */
json_t *svc_rm_query(struct ag_platform *p, enum rm_id rm, const char *sql, const char *const *args,
                     size_t nargs, json_t *(*row)(sqlite3_stmt *st));
/* GET one resource by the job's {id} from a read model (`sql` has one parameter).
 * When the row is not there but the stream `<prefix>-<id>` exists (just written),
 * waits for the read model first; 404 is `title` with "<missing> <id>". */
int svc_get_one(struct svc_job *j, enum rm_id rm, const char *sql, json_t *(*row)(sqlite3_stmt *),
                const char *prefix, const char *title, const char *missing);
/* A list answer {items, nextCursor} from `rows` (stolen) fetched with LIMIT limit+1:
 * the extra row, if any, says there is a next page, which starts after the last id. */
json_t *svc_page(json_t *rows, int limit);
/* Parse ?limit (default 20, 1..100). AG_EINVAL with a field error otherwise. */
int svc_limit(struct svc_job *j, const char *s, int *out);

/* ---- the contexts ---- */

void svc_customers_routes(struct ag_platform *p);
void svc_catalog_routes(struct ag_platform *p);
void svc_payments_routes(struct ag_platform *p);
void svc_inventory_routes(struct ag_platform *p);
void svc_ordering_routes(struct ag_platform *p);
void svc_admin_routes(struct ag_platform *p);
void svc_shipping_routes(struct ag_platform *p);

void svc_customers_projection(struct ag_projection *out);
void svc_catalog_projection(struct ag_projection *out);
void svc_payments_projection(struct ag_projection *out);
void svc_inventory_projection(struct ag_projection *out);
void svc_ordering_projection(struct ag_projection *out);
void svc_shipping_projection(struct ag_projection *out);
/* The projection that starts a PlaceOrder saga for every OrderPlaced. */
void svc_saga_starter_projection(struct ag_platform *p, struct ag_projection *out);
/* The PlaceOrder saga definition (steps, policy, faults from the environment). */
int svc_place_order_saga(struct ag_platform *p, struct ag_err *err);

/* Demo data on first start. */
int svc_seed(struct ag_platform *p, struct ag_err *err);

/* Commands used by the seed and by the saga. */
int svc_register_customer(struct ag_platform *p, const char *id, const char *email,
                          const char *name, bool premium, const char *meta, char account_id[40],
                          struct ag_err *err);
int svc_deposit(struct ag_platform *p, const char *account_id, const struct ag_money *amount,
                const char *meta, struct ag_err *err);

#endif
