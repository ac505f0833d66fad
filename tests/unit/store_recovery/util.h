/*
 * Helpers for the store's recovery tests: scratch directories, a model of what was
 * written, "crashing" a writer, walking a segment's records, dumping a store.
 */
#ifndef AGORA_TEST_STORE_RECOVERY_UTIL_H
#define AGORA_TEST_STORE_RECOVERY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/store_log.h"

#define SEG0      "seg-00000000000000000000.log"
#define MODEL_MAX 4096

/* What the test wrote, in position order. */
struct model_ev {
    char stream[8];
    int64_t version;
    struct ag_uuid id;
    size_t batch; /* index of its batch */
};
struct model {
    struct model_ev ev[MODEL_MAX];
    size_t n;
    size_t batches;
};

/* A record found by walking a segment file. */
struct seg_rec {
    uint64_t off;
    uint32_t size;
    uint8_t kind;
    uint32_t batch_left;
};

/* mkdtemp under /tmp (the path is static per call site: copy it). */
void scratch_dir(char out[64]);
void rm_tree(const char *dir);
void path_in(char *out, size_t cap, const char *dir, const char *name);
uint64_t file_size_of(const char *path);
/* Whole file into a malloc'ed buffer (caller frees). */
uint8_t *slurp(const char *path, size_t *len);
void spit(const char *path, const uint8_t *p, size_t len);
void truncate_to(const char *path, uint64_t len);
/* Overwrite bytes [off, off+n) of a file with `p`. */
void poke(const char *path, uint64_t off, const void *p, size_t n);
void flip_byte(const char *path, uint64_t off);

/* Open with no_sync (tests that do not check durability) and optional segment size. */
struct ag_store *open_ok(const char *dir, uint64_t segment_bytes);

/* Append a batch of `n` events to `stream` (exact expected version from the model)
 * with `data_bytes` bytes of padding in each payload; records it in the model. */
void append_batch(struct ag_store *s, struct model *m, const char *stream, size_t n,
                  size_t data_bytes);
/* Write `nb` batches of the sizes in `sizes`, alternating streams "a" and "b", in a
 * child process that exits without closing the store: a crash, with no checkpoint
 * written at close. */
void crash_append(const char *dir, struct model *m, const size_t *sizes, size_t nb,
                  size_t data_bytes, uint64_t segment_bytes);
/* The same, in this process, closing the store normally (checkpoint written). */
void clean_append(const char *dir, struct model *m, const size_t *sizes, size_t nb,
                  size_t data_bytes, uint64_t segment_bytes);

/* Records of a segment file, in order. Returns how many (at most `max`). */
size_t walk_segment(const char *path, struct seg_rec *out, size_t max);
/* Events that survive a cut at byte `cut` of the (single-segment) log: whole
 * batches whose records all end at or before `cut`. Also the offset they end at. */
size_t survivors(const struct seg_rec *r, size_t nr, uint64_t cut, uint64_t *end_off);

/* Assert the store holds exactly the first `k` events of the model. */
void assert_store_is(struct ag_store *s, const struct model *m, size_t k);
/* Append one event to "a" and check it lands at the next version and position. */
void assert_appends_after(struct ag_store *s, struct model *m);

/* Capture the JSON logger's output (warnings and up) in a scratch file. */
void log_capture_start(void);
/* Stop capturing; true when the captured text contains `needle`. */
bool log_capture_has(const char *needle);
/* How many times `needle` occurs in the captured text. */
size_t log_capture_count(const char *needle);
void log_capture_stop(void);

/* A canonical text dump of everything in a store (events, streams, snapshots). */
char *dump_store(struct ag_store *s);

#endif
