/*
 * crash_segseeds OUTDIR: writes the seed corpus of the segment fuzzer
 * (fuzz/store_segment.c) into OUTDIR: small real segments made through the API
 * (deterministic: fake clock, seeded RNG), then damaged the ways the recovery
 * tests damage them. Regenerate with
 *   build/debug/crash_segseeds fuzz/corpus/store_segment          (format 3: v3_*)
 *   AGORA_STORE_FORMAT=2 build/debug/crash_segseeds fuzz/corpus/store_segment
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/store_log.h"

#define SEG "seg-00000000000000000000.log"

static void die(const char *what)
{
    fprintf(stderr, "crash_segseeds: %s\n", what);
    exit(1);
}

static uint8_t *seg_bytes(const char *dir, size_t *len)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, SEG);
    int fd = open(p, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) die("cannot read the segment");
    uint8_t *b = malloc((size_t)st.st_size);
    if (!b || read(fd, b, (size_t)st.st_size) != st.st_size) die("short read");
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

static void put(const char *out, const char *name, const uint8_t *p, size_t len)
{
    /* segment format 3 by default; AGORA_STORE_FORMAT=2 writes the unprefixed,
     * format-2 seeds */
    const char *fmt = getenv("AGORA_STORE_FORMAT");
    char path[512];
    snprintf(path, sizeof path, "%s/%s%s", out, fmt && !strcmp(fmt, "2") ? "" : "v3_", name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f)) die(path);
    printf("%s: %zu bytes\n", path, len);
}

/* A record's bytes: format 3 (first byte odd) is a tag and a varint of the rest;
 * formats 1-2 start with a u32 size. Enough to walk a segment this tool wrote. */
static size_t rec_size(const uint8_t *p)
{
    if (!(p[0] & 1)) {
        uint32_t sz;
        memcpy(&sz, p, 4);
        return sz;
    }
    size_t rest = 0, i = 1;
    for (unsigned shift = 0;; shift += 7, i++) {
        rest |= (size_t)(p[i] & 0x7f) << shift;
        if (!(p[i] & 0x80)) break;
    }
    return 1 + i + rest;
}

static void append(struct ag_store *s, const char *stream, size_t n, const char *data)
{
    struct ag_event_data ev[8];
    for (size_t i = 0; i < n; i++)
        ev[i] = (struct ag_event_data){.type = "Seeded",
                                       .type_len = 6,
                                       .data = data,
                                       .data_len = strlen(data),
                                       .metadata = "{\"m\":1}",
                                       .metadata_len = 7};
    struct ag_err err;
    if (ag_store_append(s, stream, strlen(stream), AG_STORE_ANY, ev, n, NULL, &err)) die(err.msg);
}

/* A multi-stream unit: 2 events of order-1, 1 of cart-7. */
static void append_unit(struct ag_store *s)
{
    struct ag_event_data ev[3];
    for (size_t i = 0; i < 3; i++)
        ev[i] = (struct ag_event_data){
            .type = "Unit", .type_len = 4, .data = "{\"u\":1}", .data_len = 7};
    struct ag_append_part p[2] = {{"order-1", 7, AG_STORE_ANY, ev, 2},
                                  {"cart-7", 6, AG_STORE_ANY, ev + 2, 1}};
    struct ag_err err;
    if (ag_store_append_multi(s, p, 2, NULL, &err)) die(err.msg);
}

/* The log every seed starts from; returns the offset of its last record. With
 * `units`, multi-stream units in the middle and at the end. */
static size_t build(const char *dir, bool snapshots, bool last_batch3, bool units)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1763726400000000000ull);
    struct ag_xoshiro x;
    ag_xoshiro_seed(&x, 42);
    struct ag_store_options o = {.no_sync = true, .clock = &fc.clock, .rng = &x.rng};
    struct ag_store *s;
    struct ag_err err;
    if (ag_store_log_open(dir, &o, &s, &err)) die(err.msg);
    static const size_t sizes[] = {1, 2, 1, 1, 3, 1, 2, 1, 1, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        append(s, i % 3 ? "order-1" : "cart-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", sizes[i],
               i % 2 ? "{\"qty\":2,\"sku\":\"A-1\"}" : "[1,true,null]");
        ag_fake_clock_advance(&fc, 1000);
        if (snapshots && i % 4 == 3 &&
            ag_store_save_snapshot(s, "order-1", 7, 0, "{\"s\":1}", 7, &err))
            die(err.msg);
    }
    if (last_batch3) append(s, "cart-7", 3, "{}");
    if (units) {
        append_unit(s);
        append(s, "cart-7", 1, "{}");
        append_unit(s);
    }
    ag_store_close(s);
    size_t len;
    uint8_t *b = seg_bytes(dir, &len);
    size_t off = 64, last = 64;
    while (off < len) {
        last = off;
        off += rec_size(b + off);
    }
    free(b);
    return last;
}

static void scratch(char *dir)
{
    strcpy(dir, "/tmp/agora-seeds-XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp");
}

static void clean(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) die("rm");
}

int main(int argc, char **argv)
{
    if (argc != 2) die("usage: crash_segseeds OUTDIR");
    const char *out = argv[1];
    char dir[64];
    size_t len;
    uint8_t *b;

    scratch(dir);
    size_t last = build(dir, false, false, false);
    b = seg_bytes(dir, &len);
    put(out, "clean.seg", b, len);
    put(out, "header_only.seg", b, 64);
    put(out, "torn_mid_record.seg", b, last + (len - last) / 2);
    uint8_t *g = malloc(len + 200);
    memcpy(g, b, len);
    for (size_t i = 0; i < 200; i++) g[len + i] = (uint8_t)(i * 37 + 11);
    put(out, "garbage_tail.seg", g, len + 200);
    memcpy(g, b, len);
    g[64 + (len - 64) / 3] ^= 0x20; /* a flipped bit with intact records after it */
    put(out, "flipped_middle.seg", g, len);
    free(g);
    free(b);
    clean(dir);

    scratch(dir);
    build(dir, true, false, false);
    b = seg_bytes(dir, &len);
    put(out, "snapshots.seg", b, len);
    free(b);
    clean(dir);

    scratch(dir);
    last = build(dir, false, true, false);
    b = seg_bytes(dir, &len);
    put(out, "incomplete_batch.seg", b, last); /* the 3-event batch without its 3rd record */
    free(b);
    clean(dir);

    scratch(dir);
    last = build(dir, false, false, true);
    b = seg_bytes(dir, &len);
    put(out, "multi_stream.seg", b, len);
    put(out, "multi_stream_torn.seg", b, last); /* the last unit without its last event */
    free(b);
    clean(dir);
    return 0;
}
