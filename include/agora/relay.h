/*
 * The outbox relay: the event log is the outbox. A relay tails `$all` from its
 * checkpoint, asks a mapping function which events are part of the published
 * language (and what their message looks like), publishes those to the bus with
 * the event id as the message id, and records its checkpoint in the store
 * (stream `_relay-<name>`, RelayCheckpoint {"next": position}; on a sharded store
 * {"next": sum, "cursor": "n0,n1,..."}, one next position per shard) only after
 * the broker acknowledged every message before that position — at most every 200 ms
 * while busy and once idle, written by a second thread so the log's fsyncs stay
 * off the publish path (a crash republishes at most those last 200 ms, which the
 * broker's dedup drops). Publishing is pipelined (ag_bus_pipe_send): the relay
 * maps and sends the next page while the broker acknowledges the previous ones, up
 * to AG_BUS_PIPE_WINDOW messages in flight; each page's mark is mapped back to the
 * cursor after it, so the acknowledged prefix is a cursor. A failed publish (broker down, an ack
 * that does not come within publish_timeout_ms) keeps the checkpoint, waits (100
 * ms doubling to 5 s) and publishes again from the acknowledged prefix: the
 * broker's dedup window drops what it already had, so nothing is lost and
 * consumers see no duplicate. Streams whose name starts with
 * '_' (the bus's and the relay's own) are never published.
 *
 * A page with nothing to publish moves the relay's position in memory but writes
 * no checkpoint (writing one would itself be a new event to tail); after a restart
 * such events are scanned again, and skipped again.
 *
 * The relay runs on its own thread; the mapping runs there too and may read the
 * store. Handles: ag_relay_start → ag_relay_stop.
 */
#ifndef AGORA_RELAY_H
#define AGORA_RELAY_H

#include "agora/bus.h"
#include "agora/store.h"

/* What the mapping fills for one event (the relay sets id and time from the event
 * beforehand, and after a mapping that publishes it without a traceparent, the
 * one in the event's metadata). */
struct ag_relay_msg {
    struct ag_bus_msg msg; /* pointers into the fields below, set by the relay */
    char topic[AG_BUS_SUBJECT_MAX + 1];
    char source[128];
    char type[AG_BUS_SUBJECT_MAX + 1];
    char subject[128]; /* "" → no CloudEvent subject */
    char id[AG_UUID_STRLEN + 1];
    char traceparent[64];
    char *data;        /* JSON text, ag_malloc'd: the relay frees it */
    bool data_checked; /* the mapping wrote `data` from checked JSON (ag_bus_msg) */
};

/* 1: publish `out`; 0: not part of the published language; < 0: an AG_E* error
 * (the page is retried). */
typedef int (*ag_relay_map_fn)(void *ud, struct ag_store *store, const struct ag_event *ev,
                               struct ag_relay_msg *out);

struct ag_relay_config {
    struct ag_store *store;
    struct ag_bus *bus;
    const char *name; /* checkpoint stream `_relay-<name>`; NULL → "outbox" */
    ag_relay_map_fn map;
    void *ud;
    size_t batch;           /* events read per page; 0 → 4096 (AG_BUS_PUBLISH_MAX) */
    int publish_timeout_ms; /* wait for the broker's acks; 0 → 5000 */
    /* Optional (several processes over one store, `agora serve`): the relay works
     * only while lease(lease_ud, &held, &taken) says held (0 and *held true), asked
     * before every page and every second while standing by; when lost, what is in
     * flight is taken back (ag_bus_pipe_reset) and no checkpoint of this relay is
     * written after; when taken it starts again from the checkpoint in the store
     * (the one before may have moved it). */
    int (*lease)(void *ud, bool *held, bool *taken);
    void *lease_ud;
};

struct ag_relay_stats {
    uint64_t checkpoint; /* next $all position to publish from (acknowledged) */
    uint64_t position;   /* next position not handled: everything below is published
                            and acknowledged, or not part of the published language */
    uint64_t head;       /* events in the store */
    uint64_t lag_events; /* head - position */
    double lag_seconds;  /* age of the oldest event not yet published (0: caught up) */
    uint64_t published;  /* messages acknowledged by the broker since start */
    uint64_t failures;   /* failed publish attempts since start */
    bool failing;        /* the last attempt failed */
    bool standby;        /* cfg.lease: another process holds it */
    char error[256];     /* its error */
};

struct ag_relay;

AG_EXTERN int ag_relay_start(const struct ag_relay_config *cfg, struct ag_relay **out,
                             struct ag_err *err);
AG_EXTERN void ag_relay_stats(struct ag_relay *r, struct ag_relay_stats *out);
/* Wait until everything below `position` is published (0) or AG_ETIMEDOUT. */
AG_EXTERN int ag_relay_wait(struct ag_relay *r, uint64_t position, int timeout_ms);
AG_EXTERN void ag_relay_stop(struct ag_relay *r);

#endif
