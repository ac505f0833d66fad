/*
 * Consuming the bus safely: the inbox and sequenced dead letters.
 *
 * Inbox. A consumer's effect and the record "consumer C has handled message M"
 * commit together, so a redelivered message (at-least-once) is recognised and
 * skipped:
 *   - store effects: ag_bus_inbox_append appends the effect's parts plus one more
 *     part, stream `_inbox-<consumer>-<message id>` expected not to exist, in one
 *     multi-stream append. If the message was handled already, nothing is
 *     written and the call answers 1 (skipped);
 *   - read-model effects: ag_es_inbox_seen (agora/es.h) inside the read model's
 *     transaction (the ag_inbox table every projection database has).
 * The worker checks the store inbox before calling the handler, so a handler
 * that used ag_bus_inbox_append is not even called for a redelivery.
 *
 * Sequenced dead letters. A worker wraps a durable consumer and a handler. A
 * delivery that fails is naked (redelivered with the consumer's backoff); at its
 * last allowed delivery (max_deliver), or at once when the handler says the
 * message can never succeed (AG_EJSON, AG_EINVAL, AG_EDOMAIN), it is *parked*
 * with its error and acknowledged on the bus. From then on, every later message
 * of the same aggregate (the CloudEvent `subject`) is parked as "waiting" behind
 * it, in arrival order, without calling the handler; other aggregates flow.
 * Messages without a subject are never held back.
 *
 * The parking lot is the store stream `_dlq-<consumer>`: Parked {record},
 * Failed {"id","error"} (a replay failed again, or a waiting message became the
 * head and failed), Replayed {"id"}, Dropped {"id"}. A parked message's id is
 * its Parked event's version + 1 (1, 2, ... per consumer). Being in the store,
 * the lot is durable and the same for every adapter (local:, nats://).
 *
 * Replay (of the head of an aggregate's line, after the fault is fixed) calls the
 * handler again; on success the messages waiting behind it are handled in order
 * until one fails (it becomes the new head, with its error) or none is left.
 * Drop resolves a message without handling it; dropping a head releases the
 * ones behind it the same way. Replaying a waiting message is AG_ECONFLICT (it
 * would overtake the head).
 *
 * Lanes. With `lanes` > 1, a fetched batch is split by aggregate (a hash of the
 * subject; messages without one share lane 0) and the lanes are handled at once,
 * each in order, so an aggregate's messages keep their order and never overlap
 * while different aggregates' handlers (and their store appends) run in parallel;
 * the next fetch waits for every lane. The handler must then be thread-safe.
 *
 * Threads: a worker is polled by one thread; replay, drop and the listings may be
 * called from any thread. A mutex serialises them with the worker's decisions
 * (held or not, park, retry); the handler runs outside it, so a replay's handler
 * may run while a delivery of another aggregate is handled — never two messages
 * of the same aggregate at once.
 */
#ifndef AGORA_BUS_WORKER_H
#define AGORA_BUS_WORKER_H

#include "agora/bus.h"
#include "agora/store.h"

#define AG_BUS_MSG_ID_MAX 160 /* bytes of a message id the inbox accepts */

/* Handle one delivery: 0 when done (or already done: skipped), else an AG_E*
 * code with the reason in `err`. */
typedef int (*ag_bus_handler_fn)(void *ud, const struct ag_bus_delivery *d, struct ag_err *err);

struct ag_bus_worker_config {
    struct ag_bus_consumer_config consumer; /* the durable consumer to open */
    struct ag_store *store;                 /* the parking lot and the inbox (required) */
    ag_bus_handler_fn handler;              /* required */
    void *ud;
    int64_t retry_delay_ms; /* nak delay after a failure; < 0 or 0: the consumer's backoff */
    size_t lanes;           /* aggregates handled at once per batch; 0, 1: one at a time */
    /* false: the message is not for this handler — acknowledged without the inbox
     * check or the handler (when its aggregate is not held back). NULL: all are. */
    bool (*wants)(void *ud, const struct ag_bus_delivery *d);
};

struct ag_bus_worker;

AG_EXTERN int ag_bus_worker_open(struct ag_bus *b, const struct ag_bus_worker_config *cfg,
                                 struct ag_bus_worker **out, struct ag_err *err);
AG_EXTERN void ag_bus_worker_close(struct ag_bus_worker *w);
AG_EXTERN const char *ag_bus_worker_name(const struct ag_bus_worker *w);

/* Fetch up to `max` deliveries (waiting up to `timeout_ms` for the first) and
 * handle them; `*handled` (optional) counts the ones acknowledged (done, skipped
 * or parked). */
AG_EXTERN int ag_bus_worker_poll(struct ag_bus_worker *w, size_t max, int timeout_ms,
                                 size_t *handled, struct ag_err *err);

/* The unresolved parked messages as a JSON array of
 * {"id","consumer","aggregate","topic","msgId","type","error","deliveries",
 *  "waiting","behind","parkedAt"} (`behind`: the head's id for a waiting one). */
AG_EXTERN int ag_bus_worker_list(struct ag_bus_worker *w, struct ag_buf *out, struct ag_err *err);
/* One parked message (resolved ones too: "state":"parked"|"replayed"|"dropped"),
 * with its CloudEvent under "event". AG_ENOTFOUND if there is no such id. */
AG_EXTERN int ag_bus_worker_show(struct ag_bus_worker *w, uint64_t id, struct ag_buf *out,
                                 struct ag_err *err);
/* Handle parked message `id` again and release what waits behind it. 0 when it
 * succeeded (`*released`, optional: how many waiting ones were then handled);
 * the handler's code when it failed again (it stays parked with the new error);
 * AG_ENOTFOUND; AG_ECONFLICT when `id` waits behind another or is resolved. */
AG_EXTERN int ag_bus_worker_replay(struct ag_bus_worker *w, uint64_t id, size_t *released,
                                   struct ag_err *err);
/* Resolve parked message `id` without handling it; a head releases the ones
 * behind it. AG_ENOTFOUND; AG_ECONFLICT when already resolved. */
AG_EXTERN int ag_bus_worker_drop(struct ag_bus_worker *w, uint64_t id, size_t *released,
                                 struct ag_err *err);

/* ---- the inbox (store effects) ---- */

/* Has `consumer` recorded message `msg_id`? 1 yes, 0 no, < 0 an error. */
AG_EXTERN int ag_bus_inbox_seen(struct ag_store *s, const char *consumer, const char *msg_id,
                                struct ag_err *err);
/* Append `parts` (the effect; may be 0 parts) and the inbox record of (`consumer`,
 * `msg_id`) in one multi-stream append. 0 when written, 1 when the message had
 * been handled already (nothing written), else an error (AG_ECONFLICT from the
 * effect's own parts, ...). */
AG_EXTERN int ag_bus_inbox_append(struct ag_store *s, const char *consumer, const char *msg_id,
                                  const struct ag_append_part *parts, size_t nparts,
                                  struct ag_err *err);

#endif
