/*
 * The embedded event log: agora's default event store adapter.
 *
 * Append-only segment files under a data directory, group-committed by one writer
 * thread, with an in-memory stream index rebuilt at open from an index checkpoint
 * plus a scan of the tail. The format and the recovery rule are documented at the
 * top of src/store/log/log.c and in docs/internals/store.md.
 */
#ifndef AGORA_STORE_LOG_H
#define AGORA_STORE_LOG_H

#include "agora/store.h"

/* Open (creating if needed) the log in directory `dir`. On success `*out` is an
 * owned store; close with ag_store_close. Errors: AG_ELOCKED (another process has
 * it open for writing), AG_ECORRUPT (a bad record before the tail; err names the
 * file and offset — open with opts->repair or run `agora store verify --repair`),
 * AG_EIO. */
AG_EXTERN int ag_store_log_open(const char *dir, const struct ag_store_options *opts,
                                struct ag_store **out, struct ag_err *err);

/* What `verify` found. */
struct ag_log_verify_report {
    uint64_t segments; /* segment files checked */
    uint64_t records;  /* intact records */
    uint64_t events;   /* intact events */
    uint64_t bytes;    /* bytes checked */
    bool ok;           /* no problem found */
    bool repaired;     /* a problem was found and the log was cut there */
    char problem[512]; /* the first problem: file, offset, what */
};

/* Check every record of every segment (checksums, sizes, positions, versions,
 * batches) without the index checkpoint. With `repair`, cut the log at the first
 * bad record: the cut-off bytes are kept beside the segment as
 * `<segment>.corrupt-<unix-time>` and the index checkpoint is dropped. Needs the
 * writer lock. Returns 0 when the check ran (see report->ok), or an error. */
AG_EXTERN int ag_store_log_verify(const char *dir, bool repair, struct ag_log_verify_report *report,
                                  struct ag_err *err);

/* ---- retention and scavenging (src/store/log/scavenge.c) ----
 *
 * Deleting is two steps. First, events are marked deleted: by a tombstone (the
 * event StreamTruncated {"stream", "before"} in the system stream `$retention`,
 * written by ag_store_log_truncate: the stream's events with version < before are
 * deleted) or by the retention rules below, which the scavenge applies itself.
 * Deleted events stay readable until, second, a scavenge rewrites the sealed
 * segments (all but the last) that hold them: each is written anew without them
 * (new file, fdatasync, rename over the old one, then the writer thread maps it
 * and updates the index), so it runs while the store serves. The $all positions
 * of kept events do not change; a stream whose every event is gone leaves the
 * index (a new append to it starts again at version 0). */
struct ag_log_retention {
    /* idempotency-* streams whose last event is older than this are deleted; 0 = kept */
    uint64_t idempotency_ns;
    /* saga-* streams that ended (SagaCompleted, SagaCompensated) longer ago than this
     * are deleted; 0 = kept */
    uint64_t saga_ns;
    /* streams named `released_prefix`* whose last event is of type `released_type`
     * are deleted, whatever their age (a released claim: its name must go); NULL =
     * no such rule */
    const char *released_prefix;
    const char *released_type;
};

struct ag_log_scavenge_report {
    uint64_t segments;        /* sealed segments looked at */
    uint64_t rewritten;       /* segments rewritten */
    uint64_t events_kept;     /* events in the segments looked at that stay */
    uint64_t events_dropped;  /* events removed */
    uint64_t streams_deleted; /* streams that left the index */
    uint64_t bytes_before;    /* bytes of the sealed segments looked at, before */
    uint64_t bytes_after;     /* and after */
};

/* Mark the events of `stream` with version < `before` deleted (before < 0: every
 * event it has now). Appends the tombstone to `$retention`. */
AG_EXTERN int ag_store_log_truncate(struct ag_store *s, const char *stream, size_t stream_len,
                                    int64_t before, struct ag_err *err);
/* Scavenge an open, writable log store (see above). `progress`, when not NULL, is
 * called after each segment with the figures so far. One scavenge at a time
 * (AG_EAGAIN otherwise); AG_EINVAL for a read-only or non-log store. */
AG_EXTERN int ag_store_log_scavenge(struct ag_store *s, const struct ag_log_retention *ret,
                                    void (*progress)(void *ud, uint64_t segno,
                                                     const struct ag_log_scavenge_report *so_far),
                                    void *ud, struct ag_log_scavenge_report *out,
                                    struct ag_err *err);

/* ---- I/O fault injection (tests) ----
 *
 * Every write, fdatasync and truncate the log does to a segment goes through one
 * place that can be told to fail. A fault makes calls of one kind fail with an
 * errno after `after` of them succeeded, `times` times (0: until cleared). A torn
 * write first writes half of its bytes, as a full disk does mid-record. The same
 * can be set for a whole process with the environment, read at open:
 *   AGORA_STORE_FAULT=<op>:<errno>[:<after>[:<times>[:torn]]]
 *   op = write | sync; errno = enospc | eio | erofs
 *   e.g. AGORA_STORE_FAULT=write:enospc:500:0:torn
 */
enum ag_log_fault_op { AG_LOG_FAULT_WRITE, AG_LOG_FAULT_SYNC };

struct ag_log_fault {
    enum ag_log_fault_op op; /* which calls fail */
    int error;               /* the errno they fail with (ENOSPC, EIO, EROFS); 0 clears */
    uint64_t after;          /* calls of that kind that still succeed first */
    uint64_t times;          /* calls that then fail; 0 = every one until cleared */
    bool torn;               /* a failing write first writes half its bytes */
};

/* Arm (or with f->error == 0, clear) the fault for f->op on an open log store.
 * Counting starts now. AG_EINVAL for a store that is not the log. */
AG_EXTERN int ag_store_log_inject_fault(struct ag_store *s, const struct ag_log_fault *f);
/* Parse the AGORA_STORE_FAULT syntax above. AG_EINVAL when malformed. */
AG_EXTERN int ag_store_log_parse_fault(const char *spec, struct ag_log_fault *out);

/* Bytes one event record takes in a segment: the fixed header, stream name, type,
 * metadata, data and checksum, rounded up to the record alignment (for size
 * reports such as `agora store stats --by-type`). */
AG_EXTERN size_t ag_store_log_record_bytes(size_t stream_len, size_t type_len, size_t meta_len,
                                           size_t data_len);

/* Decode-and-recover arbitrary bytes as if they were segment 0 (fuzzing hook):
 * never crashes; returns the number of intact events found, or a negative code. */
AG_EXTERN long ag__store_log_fuzz_segment(const uint8_t *bytes, size_t len);

#endif
