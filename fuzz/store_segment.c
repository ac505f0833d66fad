/*
 * libFuzzer harness over arbitrary segment bytes: they become segment 0 of a
 * scratch directory, which is opened (decode + the recovery rule, with repair
 * when open refuses) and read back in full. Anything but a clean return is a bug.
 *
 *   cmake --preset fuzz && cmake --build --preset fuzz --target fuzz_store_segment
 *   build/fuzz/fuzz_store_segment -max_total_time=120 /tmp/scratch fuzz/corpus/store_segment
 *
 * Seeds (fuzz/corpus/store_segment/) are real segments written through the API:
 * clean, with batches and snapshots, torn mid-record, with a flipped byte in the
 * middle, and with garbage after the last record.
 */
#include <stddef.h>
#include <stdint.h>

#include "agora/store_log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ag_log_set_level(AG_LOG_OFF); /* recovery warns on nearly every input */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) return 0; /* a segment of the scratch store is 8 MiB at most */
    long n = ag__store_log_fuzz_segment(data, size);
    (void)n; /* any event count or error code is fine; a crash or a leak is not */
    return 0;
}
