/* The compact record encoding (format 3, src/store/log/record.c): every field
 * round-trips at its limits (zero and maximum positions, versions, times,
 * batch_left, ids, name and body lengths, dictionary ids), names of the form
 * `prefix-<lowercase uuid>` are stored as 16 bytes and come back as the same
 * text while any other name is stored as it is, every truncation and every
 * flipped byte of a record is refused, and the framing is what the format says:
 * an `order-<uuid>` event with a 110-byte compressed body takes 110 + 65 bytes
 * at most (the fixed-header format: 110 + 114, plus padding). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/store_log.h"
#include "store/log/internal.h"

static const char UUID_NAME[] = "order-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

static uint8_t *encode(const struct log_rec *r, size_t *n)
{
    size_t room =
        (r->zbody ? ag__log_rec_size_z(r->stream_len, r->zbody_len)
                  : ag__log_rec_size(r->stream_len, r->type_len, r->meta_len, r->data_len)) +
        LOG_REC3_SLACK;
    uint8_t *p = malloc(room);
    cr_assert_not_null(p);
    *n = ag__log_rec3_encode(p, r);
    cr_assert_leq(*n, room);
    cr_assert(ag__log_rec_is3(p));
    cr_assert_eq(ag__log_rec_len(p), *n);
    cr_assert_eq(ag__log_rec_kind(p), r->kind);
    return p;
}

static void same(const struct log_rec *a, const struct log_rec *b)
{
    cr_assert_eq(a->kind, b->kind);
    cr_assert_eq(a->position, b->position, "position %llu", (unsigned long long)b->position);
    cr_assert_eq(a->version, b->version);
    cr_assert_eq(a->time_ns, b->time_ns);
    cr_assert_eq(a->batch_left, b->batch_left);
    if (a->kind == LOG_KIND_BATCH) return;
    if (a->kind == LOG_KIND_EVENT) cr_assert_eq(memcmp(a->id.b, b->id.b, 16), 0);
    cr_assert_eq(a->stream_len, b->stream_len);
    cr_assert_eq(memcmp(a->stream, b->stream, a->stream_len), 0);
    cr_assert_eq(a->type_len, b->type_len);
    cr_assert_eq(a->meta_len, b->meta_len);
    cr_assert_eq(a->data_len, b->data_len);
    if (a->zbody) {
        cr_assert_eq(a->dict, b->dict);
        cr_assert_eq(a->zbody_len, b->zbody_len);
        cr_assert_eq(memcmp(a->zbody, b->zbody, a->zbody_len), 0);
        return;
    }
    cr_assert_null(b->zbody);
    cr_assert_eq(memcmp(a->type, b->type, a->type_len), 0);
    cr_assert_eq(memcmp(a->meta, b->meta, a->meta_len), 0);
    cr_assert_eq(memcmp(a->data, b->data, a->data_len), 0);
}

/* Encode, decode checked and trusted, compare; every shorter prefix is refused. */
static size_t round_trip(const struct log_rec *r, bool prefixes)
{
    size_t n;
    uint8_t *p = encode(r, &n);
    struct log_rec d;
    const char *why = NULL;
    cr_assert_eq(ag__log_rec_decode(p, n, &d, &why), 0, "%s", why);
    cr_assert_eq(d.size, n);
    same(r, &d);
    ag__log_rec_fields(p, &d);
    same(r, &d);
    for (size_t k = 0; prefixes && k < n; k++)
        cr_assert_neq(ag__log_rec_decode(p, k, &d, &why), 0, "a %zu-byte prefix decoded", k);
    free(p);
    return n;
}

TestSuite(record3); /* declared for the TSan shim (scripts/tsan.sh), which needs it */

Test(record3, event_fields_at_their_limits)
{
    static char type[UINT16_MAX], name[AG_STORE_STREAM_MAX];
    memset(type, 't', sizeof type);
    memset(name, 'n', sizeof name);
    struct log_rec r = {.kind = LOG_KIND_EVENT,
                        .position = UINT64_MAX,
                        .version = INT64_MAX,
                        .time_ns = UINT64_MAX,
                        .batch_left = UINT32_MAX,
                        .stream = name,
                        .stream_len = AG_STORE_STREAM_MAX,
                        .type = type,
                        .type_len = UINT16_MAX,
                        .meta = "{}",
                        .meta_len = 2,
                        .data = "{\"a\":1}",
                        .data_len = 7};
    memset(r.id.b, 0xff, 16);
    round_trip(&r, false);
    /* the smallest values */
    struct log_rec z = {
        .kind = LOG_KIND_EVENT, .stream = "s", .stream_len = 1, .type = "", .meta = "", .data = ""};
    round_trip(&z, true);
}

Test(record3, compressed_snapshot_and_batch_header)
{
    static uint8_t frame[1000];
    for (size_t i = 0; i < sizeof frame; i++) frame[i] = (uint8_t)(i * 7);
    struct log_rec c = {.kind = LOG_KIND_EVENT,
                        .position = 1ull << 35,
                        .version = 300,
                        .time_ns = 1795000000000000000ull,
                        .stream = UUID_NAME,
                        .stream_len = sizeof UUID_NAME - 1,
                        .type_len = UINT16_MAX,
                        .meta_len = UINT32_MAX,
                        .data_len = UINT32_MAX,
                        .zbody = frame,
                        .zbody_len = sizeof frame,
                        .dict = UINT16_MAX};
    /* raw lengths beyond LOG_ZRAW_MAX are refused by the checked decode */
    size_t n;
    uint8_t *p = encode(&c, &n);
    struct log_rec d;
    const char *why;
    cr_assert_eq(ag__log_rec_decode(p, n, &d, &why), AG_ECORRUPT);
    free(p);
    c.meta_len = LOG_ZRAW_MAX / 2, c.data_len = LOG_ZRAW_MAX / 2 - UINT16_MAX;
    round_trip(&c, true);
    struct log_rec s = {.kind = LOG_KIND_SNAPSHOT,
                        .version = 41,
                        .time_ns = 5,
                        .stream = UUID_NAME,
                        .stream_len = sizeof UUID_NAME - 1,
                        .type = "",
                        .meta = "",
                        .data = "{\"state\":true}",
                        .data_len = 14};
    round_trip(&s, true);
    uint8_t h[LOG_BATCH_REC_SIZE];
    size_t hn =
        ag__log_batch_encode_fmt(h, LOG_FORMAT_VERSION, UINT32_MAX, 3, UINT64_MAX - 5, UINT64_MAX);
    cr_assert_leq(hn, sizeof h);
    cr_assert_eq(ag__log_rec_decode(h, hn, &d, &why), 0, "%s", why);
    cr_assert_eq(d.kind, LOG_KIND_BATCH);
    cr_assert_eq(d.batch_left, UINT32_MAX);
    cr_assert_eq(d.version, 3);
    cr_assert_eq(d.position, UINT64_MAX - 5);
    cr_assert_eq(d.time_ns, UINT64_MAX);
    /* a header announcing more streams than events is malformed */
    hn = ag__log_batch_encode_fmt(h, LOG_FORMAT_VERSION, 2, 3, 0, 0);
    cr_assert_eq(ag__log_rec_decode(h, hn, &d, &why), AG_ECORRUPT);
}

Test(record3, names_compact_only_when_they_round_trip)
{
    const char *names[] = {UUID_NAME,
                           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",       /* no prefix: raw */
                           "order-0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", /* uppercase: raw */
                           "a-b-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", /* prefix to the first '-' */
                           "-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                           "$retention",
                           "order-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5"};
    size_t sizes[7];
    for (size_t i = 0; i < 7; i++) {
        struct log_rec r = {.kind = LOG_KIND_EVENT,
                            .position = 10,
                            .version = 2,
                            .stream = names[i],
                            .stream_len = (uint16_t)strlen(names[i]),
                            .type = "T",
                            .type_len = 1,
                            .meta = "{}",
                            .meta_len = 2,
                            .data = "{}",
                            .data_len = 2};
        sizes[i] = round_trip(&r, true);
    }
    cr_assert_eq(sizes[0] + 20, sizes[2], "compact: 1 + 6 + 16 bytes instead of 1 + 42");
    /* the longest name with a uuid tail (a 219-byte prefix) */
    char longname[AG_STORE_STREAM_MAX + 1];
    memset(longname, 'p', sizeof longname);
    memcpy(longname + 255 - 37, "-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 37);
    struct log_rec l = {.kind = LOG_KIND_EVENT,
                        .stream = longname,
                        .stream_len = 255,
                        .type = "",
                        .meta = "",
                        .data = ""};
    round_trip(&l, false);
}

Test(record3, every_flipped_byte_is_refused)
{
    uint8_t frame[40];
    memset(frame, 0x5a, sizeof frame);
    struct log_rec r = {.kind = LOG_KIND_EVENT,
                        .position = 123456,
                        .version = 7,
                        .time_ns = 1795000000123456789ull,
                        .batch_left = 2,
                        .stream = UUID_NAME,
                        .stream_len = sizeof UUID_NAME - 1,
                        .type_len = 12,
                        .meta_len = 90,
                        .data_len = 80,
                        .zbody = frame,
                        .zbody_len = sizeof frame,
                        .dict = 1};
    r.id.b[0] = 1;
    size_t n;
    uint8_t *p = encode(&r, &n);
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1 << bit);
            struct log_rec d;
            const char *why;
            cr_assert_neq(ag__log_rec_decode(p, n, &d, &why), 0, "byte %zu bit %d", i, bit);
            p[i] ^= (uint8_t)(1 << bit);
        }
    free(p);
}

Test(record3, framing_of_a_typical_event)
{
    uint8_t frame[110];
    memset(frame, 1, sizeof frame);
    struct log_rec r = {.kind = LOG_KIND_EVENT,
                        .position = 400000,
                        .version = 3,
                        .time_ns = 1795000000123456789ull,
                        .stream = UUID_NAME,
                        .stream_len = sizeof UUID_NAME - 1,
                        .type_len = 12,
                        .meta_len = 166,
                        .data_len = 289,
                        .zbody = frame,
                        .zbody_len = sizeof frame,
                        .dict = 1};
    size_t n = round_trip(&r, false);
    size_t old = ag__log_rec_size_z(r.stream_len, r.zbody_len);
    cr_assert_leq(n, 110 + 65, "%zu bytes", n);
    cr_assert_geq(old - n, 45, "format 2: %zu, format 3: %zu", old, n);
}

/* An event whose id is a UUIDv7 stores its commit time as a delta from the id's
 * Unix ms (tag bit 5): 4 bytes less for a commit 2.3 ms after the id, and the same
 * time back; any other id version, a commit before the id's ms, or one more than
 * ~6.5 days after it keep the 8-byte time. Every flipped byte is still refused. */
Test(record3, time_as_a_delta_from_a_uuidv7_id)
{
    const uint64_t ms = 1795000000123ull;
    struct log_rec r = {.kind = LOG_KIND_EVENT,
                        .position = 400000,
                        .version = 3,
                        .time_ns = ms * 1000000u + 2345678u,
                        .stream = UUID_NAME,
                        .stream_len = sizeof UUID_NAME - 1,
                        .type = "OrderPlaced",
                        .type_len = 11,
                        .meta = "",
                        .data = "{}",
                        .data_len = 2};
    for (int i = 0; i < 6; i++) r.id.b[i] = (uint8_t)(ms >> (40 - 8 * i));
    r.id.b[6] = 0x71, r.id.b[8] = 0x80, r.id.b[15] = 0x5a;
    size_t n = round_trip(&r, true);
    struct log_rec v4 = r;
    v4.id.b[6] = 0x41;
    size_t n8 = round_trip(&v4, true);
    cr_assert_eq(n8 - n, 4, "u64 time: %zu bytes, delta: %zu", n8, n);
    struct log_rec t = r;
    t.time_ns = ms * 1000000u; /* the id's own millisecond */
    cr_assert_lt(round_trip(&t, true), n8);
    t.time_ns = ms * 1000000u - 1; /* before the id was made (another clock) */
    cr_assert_eq(round_trip(&t, true), n8);
    t.time_ns = ms * 1000000u + 7ull * 86400 * 1000000000; /* a week later */
    cr_assert_eq(round_trip(&t, true), n8);
    size_t len;
    uint8_t *p = encode(&r, &len);
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1 << bit);
            struct log_rec d;
            const char *why;
            cr_assert_neq(ag__log_rec_decode(p, len, &d, &why), 0, "byte %zu bit %d", i, bit);
            p[i] ^= (uint8_t)(1 << bit);
        }
    free(p);
}

/* The segment fuzzer's seed corpus (both formats: v3_* are format 3) goes through
 * the fuzzer's entry point: open (with repair when refused) and read back, no
 * crash; the clean seeds read back whole. */
Test(record3, fuzz_seed_corpus_recovers)
{
    const char *src = getenv("AG_SOURCE_DIR");
    cr_assert_not_null(src, "AG_SOURCE_DIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fuzz/corpus/store_segment", src);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    size_t seeds = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f);
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        long rc = ag__store_log_fuzz_segment(buf, n);
        if (strstr(e->d_name, "clean") || strstr(e->d_name, "multi_stream.seg") ||
            strstr(e->d_name, "snapshots"))
            cr_assert_gt(rc, 0, "%s: %ld", e->d_name, rc);
        seeds++;
    }
    closedir(d);
    cr_assert_geq(seeds, 18);
}
