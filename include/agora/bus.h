/*
 * The message bus port.
 *
 * A bus carries CloudEvents 1.0 (JSON structured mode: the message body is the
 * whole CloudEvent — specversion, id, source, type, subject, time,
 * datacontenttype, the `traceparent` extension and `data`) on subjects
 * `agora.<context>.<EventType>`. Publishing is at-least-once towards the broker and
 * deduplicated by the CloudEvent id (the event's UUID): publishing the same id
 * again within the dedup window stores nothing new, so a publisher that did not
 * hear the broker's ack simply publishes again.
 *
 * Consumers are durable and named: a consumer's position survives restarts (the
 * broker's, or the store's for the local adapter). A delivery is acknowledged
 * (done), negatively acknowledged with a delay (redelivered no sooner than the
 * delay; without one, after the consumer's backoff for that delivery count), or
 * terminated (never redelivered). A delivery neither acked nor naked within the
 * ack wait is redelivered. When a delivery fails for the `max_deliver`-th time
 * (a nak at the last allowed delivery, a terminate, or the last ack wait running
 * out) the message is dead-lettered: a record (struct ag_bus_dead_letter's JSON,
 * see ag_bus_dead_letter_json) carrying the consumer, the original subject and
 * CloudEvent, the delivery count, the error and the aggregate id (the CloudEvent
 * `subject`) goes to the dead-letter subject `dlq.<consumer>`.
 *
 * Adapters, by URI (ag_bus_open):
 *   local:            in-process, durable through the event store (opts->store):
 *                     messages in stream `_bus-messages`, each consumer's ack floor
 *                     in `_bus-consumer-<name>`, dead letters in `_bus-dlq`;
 *   nats://HOST:PORT[,HOST:PORT...][?replicas=N]
 *                     NATS JetStream through libnats: stream AGORA (subjects
 *                     `agora.>`) and AGORA_DLQ (`dlq.>` and the MAX_DELIVERIES
 *                     advisories), durable pull consumers, Nats-Msg-Id = the id.
 *                     Created if missing, with N replicas (a cluster; default 1).
 *                     A broker that is down at open or later
 *                     is reconnected in the background; health() says so.
 *
 * Threads: every call here may block (on the broker or the disk) and is meant for
 * worker threads (the relay's own thread, a consumer's thread, the libuv
 * threadpool) — never a libuv loop thread. A handle is safe to share between
 * threads; a consumer is used by one thread at a time.
 *
 * Memory: inputs are borrowed for the duration of a call. Deliveries and dead
 * letters are owned by the caller and freed with ag_bus_delivery_free.
 */
#ifndef AGORA_BUS_H
#define AGORA_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"

#define AG_BUS_SUBJECT_MAX  255  /* bytes of a subject */
#define AG_BUS_CONSUMER_MAX 64   /* bytes of a consumer name: [A-Za-z0-9_-] */
#define AG_BUS_BACKOFF_MAX  16   /* steps of a consumer's backoff */
#define AG_BUS_PUBLISH_MAX  4096 /* messages in one publish call */

/* One message to publish: a CloudEvent and where it goes. Everything borrowed. */
struct ag_bus_msg {
    const char *topic;       /* bus subject, "agora.<context>.<EventType>" */
    const char *id;          /* CloudEvent id: the event's UUID, the dedup key */
    const char *source;      /* CloudEvent source, e.g. "/agora/ordering" */
    const char *type;        /* CloudEvent type, e.g. "agora.ordering.OrderPlaced" */
    const char *subject;     /* CloudEvent subject: the aggregate id (NULL: none) */
    uint64_t time_ns;        /* CloudEvent time (Unix ns; 0: now) */
    const char *traceparent; /* W3C traceparent extension (NULL: none) */
    const char *data;        /* JSON text of `data` (NULL: {}) */
    size_t data_len;
    bool data_checked; /* the sender wrote `data` from JSON already checked (the relay's
                          mapping): the bus does not check it again */
};

/* A received message. Strings point into the delivery; free the delivery with
 * ag_bus_delivery_free (after acking it, or not: then it is redelivered). */
struct ag_bus_delivery {
    struct ag_bus_msg msg; /* the parsed CloudEvent (topic = the bus subject) */
    const char *body;      /* the CloudEvent JSON as received */
    size_t body_len;
    uint32_t deliveries; /* 1 on the first delivery */
    uint64_t seq;        /* the message's sequence in its stream (1-based) */
    bool last;           /* this is the last delivery max_deliver allows */
    void *impl;          /* adapter's */
};

/* Why a message was dead-lettered. */
enum ag_bus_dl_reason { AG_BUS_DL_MAX_DELIVER, AG_BUS_DL_TERMINATED };

/* A dead letter as the DLQ holds it (JSON, ag_bus_dead_letter_json):
 * {"consumer","topic","seq","deliveries","reason":"max_deliver"|"terminated",
 *  "error","aggregate","id","type","time","event":<the CloudEvent>}. */
struct ag_bus_dead_letter {
    const char *consumer;
    const struct ag_bus_delivery *d; /* the failed delivery */
    enum ag_bus_dl_reason reason;
    const char *error; /* the consumer's last error ("" if none) */
    uint64_t at_ns;    /* when it was parked */
};

struct ag_bus_consumer_config {
    const char *name;     /* durable name, [A-Za-z0-9_-], 1..64 bytes */
    const char *filter;   /* subject filter ("agora.>", "agora.ordering.*"); NULL: "agora.>" */
    uint32_t max_deliver; /* deliveries before dead-lettering; 0 → 5 */
    uint64_t ack_wait_ms; /* redeliver an unanswered delivery after this; 0 → 30 s */
    /* Redelivery delay after the n-th failed delivery (nak without a delay, or an ack
     * wait running out): backoff_ms[min(n, nbackoff) - 1]; none → 1 s. */
    uint64_t backoff_ms[AG_BUS_BACKOFF_MAX];
    size_t nbackoff;
    uint32_t max_pending; /* deliveries in flight at once; 0 → 1000 */
};

struct ag_store;
struct ag_bus_options {
    struct ag_store *store;       /* local: the store that keeps messages (required) */
    const struct ag_clock *clock; /* NULL → system clock (the local adapter's timers) */
    uint64_t dedup_window_ms;     /* nats: the stream's duplicate window; 0 → 10 min */
    const char *stream;           /* nats: the events stream's name; NULL → "AGORA" */
};

/* Health for readiness checks and /admin/bus. */
struct ag_bus_health {
    bool connected;      /* the broker is reachable and the streams exist */
    char message[256];   /* what is wrong ("" when connected) */
    uint64_t reconnects; /* times the connection came back */
    uint64_t published;  /* messages acknowledged by the broker since open */
    uint64_t duplicates; /* of those, ones the broker already had (dedup) */
};

struct ag_bus;
struct ag_bus_consumer;

/* The operations an adapter provides; the port validates arguments first. */
/* The state of a bus's pipelined publishing (ag_bus_pipe_acked). */
struct ag_bus_pipe_stat {
    uint64_t mark;   /* the mark of the latest ag_bus_pipe_send whose messages, and every
                        earlier call's, are all acknowledged */
    bool marked;     /* `mark` is set: some call got that far since the last reset */
    uint64_t acked;  /* messages acknowledged since the last reset */
    size_t inflight; /* messages sent and not acknowledged yet */
};

struct ag_bus_ops {
    const char *name;
    int (*publish)(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, int timeout_ms,
                   struct ag_err *err);
    int (*consumer_open)(struct ag_bus *b, const struct ag_bus_consumer_config *cfg,
                         struct ag_bus_consumer **out, struct ag_err *err);
    int (*fetch)(struct ag_bus_consumer *c, size_t max, int timeout_ms,
                 struct ag_bus_delivery **out, size_t *n, struct ag_err *err);
    int (*ack)(struct ag_bus_consumer *c, struct ag_bus_delivery *d, struct ag_err *err);
    int (*nak)(struct ag_bus_consumer *c, struct ag_bus_delivery *d, int64_t delay_ms,
               const char *error, struct ag_err *err);
    int (*term)(struct ag_bus_consumer *c, struct ag_bus_delivery *d, const char *error,
                struct ag_err *err);
    void (*delivery_free)(struct ag_bus_delivery *d);
    void (*consumer_close)(struct ag_bus_consumer *c);
    /* Dead letters from sequence `from` (1-based, in the DLQ): up to `max` records'
     * JSON into `out` (an array), `*next` the sequence to continue from. */
    int (*dlq_read)(struct ag_bus *b, uint64_t from, size_t max, struct ag_buf *out, uint64_t *next,
                    struct ag_err *err);
    void (*health)(struct ag_bus *b, struct ag_bus_health *out);
    void (*close)(struct ag_bus *b);
    /* Pipelined publishing (optional: without it ag_bus_pipe_* publish through
     * `publish`, synchronously). */
    int (*pipe_send)(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n, uint64_t mark,
                     int timeout_ms, struct ag_err *err);
    int (*pipe_acked)(struct ag_bus *b, int wait_ms, int lost_ms, struct ag_bus_pipe_stat *out,
                      struct ag_err *err);
    void (*pipe_reset)(struct ag_bus *b);
};

/* Every adapter's handle starts with this. */
struct ag_bus {
    const struct ag_bus_ops *ops;
    struct ag_bus_options opts;   /* as given, defaults filled in */
    char uri[512];                /* as opened (for /admin/bus) */
    struct ag_bus_pipe_stat pipe; /* the synchronous ag_bus_pipe_* (no pipe ops) */
};

/* Every adapter's consumer starts with this. */
struct ag_bus_consumer {
    struct ag_bus *bus;
    struct ag_bus_consumer_config cfg; /* defaults filled in; name/filter copied below */
    char name[AG_BUS_CONSUMER_MAX + 1];
    char filter[AG_BUS_SUBJECT_MAX + 1];
};

/* ---- opening a bus by URI ---- */

/* Open the bus `uri` names: "local:" or "nats://HOST:PORT". `opts` may be NULL
 * for nats. On success `*out` is owned: close with ag_bus_close (consumers first).
 * AG_EUNSUPPORTED for an unknown scheme, AG_EINVAL for a malformed URI. A nats
 * broker that is down is not an error: the adapter connects in the background. */
AG_EXTERN int ag_bus_open(const char *uri, const struct ag_bus_options *opts, struct ag_bus **out,
                          struct ag_err *err);
AG_EXTERN void ag_bus_close(struct ag_bus *b);

/* ---- the API callers use ---- */

/* Publish `n` messages and wait (up to `timeout_ms`) until the broker has
 * acknowledged every one (a duplicate id counts as acknowledged). 0 only when all
 * were; AG_EUNAVAILABLE when the broker is unreachable, AG_ETIMEDOUT when acks did
 * not come: then some may have been stored — publish them again (dedup). */
AG_EXTERN int ag_bus_publish(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n,
                             int timeout_ms, struct ag_err *err);

/* Pipelined publishing, for one publisher per bus (the outbox relay): messages
 * go out at once and the broker's acks are collected in the background, so the
 * publisher prepares the next messages while the broker stores these. Each call
 * carries a `mark` (the caller's position after its messages); ag_bus_pipe_acked
 * reports the latest mark whose messages and all earlier ones are acknowledged —
 * the prefix a checkpoint may cover, never past an unacknowledged message.
 *
 * ag_bus_pipe_send blocks (up to `timeout_ms`) while AG_BUS_PIPE_WINDOW messages
 * are in flight; AG_EUNAVAILABLE when the broker is unreachable or an earlier
 * message of the pipe failed (sticky until ag_bus_pipe_reset). n may be 0 (the
 * mark is reached once everything before it is). ag_bus_pipe_acked waits up to
 * `wait_ms` for everything in flight (0: just look), fills `out`, and fails
 * (AG_EUNAVAILABLE / AG_ETIMEDOUT) when a message failed or its ack is older than
 * `lost_ms`: then ag_bus_pipe_reset (takes back what is in flight; nothing of it
 * is sent later) and publish again from `out->mark` (the broker's dedup drops
 * what it already had). An adapter without pipelining publishes synchronously. */
#define AG_BUS_PIPE_WINDOW 8192
AG_EXTERN int ag_bus_pipe_send(struct ag_bus *b, const struct ag_bus_msg *msgs, size_t n,
                               uint64_t mark, int timeout_ms, struct ag_err *err);
AG_EXTERN int ag_bus_pipe_acked(struct ag_bus *b, int wait_ms, int lost_ms,
                                struct ag_bus_pipe_stat *out, struct ag_err *err);
AG_EXTERN void ag_bus_pipe_reset(struct ag_bus *b);

/* Open (creating if missing) the durable consumer `cfg->name`. Owned: close with
 * ag_bus_consumer_close. */
AG_EXTERN int ag_bus_consumer_open(struct ag_bus *b, const struct ag_bus_consumer_config *cfg,
                                   struct ag_bus_consumer **out, struct ag_err *err);
/* Up to `max` deliveries, waiting up to `timeout_ms` for the first. `*out` is an
 * owned array of `*n` pointers (free each delivery, then the array with ag_free).
 * 0 with *n = 0 when none came. */
AG_EXTERN int ag_bus_fetch(struct ag_bus_consumer *c, size_t max, int timeout_ms,
                           struct ag_bus_delivery ***out, size_t *n, struct ag_err *err);
AG_EXTERN int ag_bus_ack(struct ag_bus_consumer *c, struct ag_bus_delivery *d, struct ag_err *err);
/* Failed: redeliver after `delay_ms` (< 0: the consumer's backoff). At the last
 * delivery (d->last) the message is dead-lettered with `error` instead. */
AG_EXTERN int ag_bus_nak(struct ag_bus_consumer *c, struct ag_bus_delivery *d, int64_t delay_ms,
                         const char *error, struct ag_err *err);
/* Poison: never redeliver; dead-letter it with `error`. */
AG_EXTERN int ag_bus_term(struct ag_bus_consumer *c, struct ag_bus_delivery *d, const char *error,
                          struct ag_err *err);
AG_EXTERN void ag_bus_delivery_free(struct ag_bus_consumer *c, struct ag_bus_delivery *d);
AG_EXTERN void ag_bus_consumer_close(struct ag_bus_consumer *c);

/* Dead letters from DLQ sequence `from` (1-based): up to `max` records appended to
 * `out` as a JSON array; `*next` is where the next read starts. */
AG_EXTERN int ag_bus_dlq_read(struct ag_bus *b, uint64_t from, size_t max, struct ag_buf *out,
                              uint64_t *next, struct ag_err *err);
AG_EXTERN void ag_bus_health(struct ag_bus *b, struct ag_bus_health *out);
/* The adapter's name ("local", "nats"). */
AG_EXTERN const char *ag_bus_name(const struct ag_bus *b);

/* ---- CloudEvents (shared by adapters, the relay and tests) ---- */

/* The CloudEvent JSON of `m` (structured mode) appended to `b`. */
AG_EXTERN int ag_bus_cloudevent_json(const struct ag_bus_msg *m, struct ag_buf *b);
/* Parse a CloudEvent body into `d->msg` (strings allocated in `*mem`, owned: ag_free).
 * AG_EJSON for malformed JSON or a missing required attribute. */
AG_EXTERN int ag_bus_cloudevent_parse(const char *body, size_t len, const char *topic,
                                      struct ag_bus_delivery *d, void **mem, struct ag_err *err);
/* The dead-letter record's JSON appended to `b`. */
AG_EXTERN int ag_bus_dead_letter_json(const struct ag_bus_dead_letter *dl, struct ag_buf *b);
/* Redelivery delay for a message that failed its `deliveries`-th delivery. */
AG_EXTERN uint64_t ag_bus_backoff_ms(const struct ag_bus_consumer_config *cfg, uint32_t deliveries);
/* Does `topic` match the NATS-style `filter` ('*' one token, '>' the rest)? */
AG_EXTERN bool ag_bus_subject_match(const char *filter, const char *topic);

#endif
