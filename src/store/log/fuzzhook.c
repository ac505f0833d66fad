/* A hook for the segment fuzzer (fuzz/store_segment.c): recover arbitrary bytes
 * as segment 0 of a scratch directory, exactly as open would, then read back
 * everything that survived. */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "store/log/internal.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    AG_UNUSED(st), AG_UNUSED(flag), AG_UNUSED(ftw);
    return remove(path);
}

static void rm_dir(const char *dir)
{
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static long read_everything(struct ag_store *s)
{
    long n = 0;
    uint64_t from = 0;
    for (;;) {
        struct ag_event_page p;
        if (ag_store_read_all(s, from, AG_READ_FORWARD, 256, &p, NULL)) return -1;
        n += (long)p.count;
        from = p.next_position;
        bool end = p.end || p.count == 0;
        ag_event_page_free(&p);
        if (end) return n;
    }
}

long ag__store_log_fuzz_segment(const uint8_t *bytes, size_t len)
{
    char dir[] = "/tmp/agora-fuzz-XXXXXX";
    if (!mkdtemp(dir)) return AG_EIO;
    char path[128];
    snprintf(path, sizeof path, "%s/seg-%020d.log", dir, 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    long rc = AG_EIO;
    if (fd >= 0 && write(fd, bytes, len) == (ssize_t)len) rc = 0;
    if (fd >= 0) close(fd);
    struct ag_store_options o = {.no_sync = true, .segment_bytes = 8u << 20};
    struct ag_store *s = NULL;
    if (!rc) {
        rc = ag_store_log_open(dir, &o, &s, NULL);
        if (rc == AG_ECORRUPT) {
            o.repair = true;
            rc = ag_store_log_open(dir, &o, &s, NULL);
        }
    }
    if (!rc) {
        rc = read_everything(s);
        ag_store_close(s);
    }
    rm_dir(dir);
    return rc;
}
