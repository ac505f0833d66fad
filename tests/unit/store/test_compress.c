/* Record compression with trained dictionaries (src/store/log/dict.c): records
 * appended after a dictionary exists are stored compressed and read back equal
 * (before and after a reopen, with and without the index checkpoint, across two
 * dictionaries), a corrupt compressed body is a checksum error or a decode error
 * naming its position, a missing or corrupt dictionary file is an error at open
 * naming it, and a format-1 log (written with the old, raw encoding) opens, reads
 * and takes compressed appends. Training is requested explicitly
 * (AGORA_STORE_DICT_TRAIN_BYTES=0: no background trainer), so nothing waits. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/store_log.h"
#include "store/log/internal.h"

static char dir[64];
static struct ag_store *s;

static struct ag_store *reopen_rc(int *rc_out, struct ag_err *err)
{
    struct ag_store *st = NULL;
    ag_err_clear(err);
    struct ag_store_options o = {.no_sync = true};
    *rc_out = ag_store_log_open(dir, &o, &st, err);
    return st;
}

static struct ag_store *reopen(void)
{
    struct ag_err err;
    int rc;
    struct ag_store *st = reopen_rc(&rc, &err);
    cr_assert_eq(rc, 0, "open %s: %s", dir, ag_err_msg(&err, rc));
    return st;
}

static void setup(void)
{
    setenv("AGORA_STORE_DICT_TRAIN_BYTES", "0", 1);
    unsetenv("AGORA_STORE_COMPRESS");
    strcpy(dir, "/tmp/agora-zstd-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    s = reopen();
}

static void teardown(void)
{
    if (s) ag_store_close(s);
    s = NULL;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Remove what setup's open wrote (a format-3 segment), so the next open creates
 * the log in the format the test asks for. */
static void fresh_dir(void)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -f %s/seg-* %s/index.ckpt", dir, dir);
    cr_assert_eq(system(cmd), 0);
}

/* The metadata and data of event i of saga k: shaped like the saga's events. */
static void event_of(int k, int i, char *meta, size_t ml, char *data, size_t dl)
{
    snprintf(meta, ml,
             "{\"correlationId\":\"saga-%08d-1111-4222-8333-%012d\",\"actor\":{\"sub\":"
             "\"customer-%d\",\"onBehalfOf\":\"gateway\"},\"traceparent\":\"00-%032d-%016d-01\","
             "\"requestId\":\"req-%d\"}",
             k, k, k % 17, k * 7919, i, k);
    snprintf(data, dl,
             "{\"step\":%d,\"orderId\":\"order-%08d\",\"amount\":{\"currency\":\"EUR\","
             "\"minor\":%d},\"sku\":\"SKU-%d\",\"quantity\":%d}",
             i, k, 1000 + k, k % 50, 1 + i % 3);
}

static void append_sagas(int from, int to)
{
    for (int k = from; k < to; k++) {
        char stream[64], meta[8][400], data[8][300];
        struct ag_event_data ev[4];
        snprintf(stream, sizeof stream, "saga-%08d", k);
        for (int i = 0; i < 4; i++) {
            event_of(k, i, meta[i], sizeof meta[i], data[i], sizeof data[i]);
            ev[i] = (struct ag_event_data){.type = "StepSucceeded",
                                           .type_len = 13,
                                           .metadata = meta[i],
                                           .metadata_len = strlen(meta[i]),
                                           .data = data[i],
                                           .data_len = strlen(data[i])};
        }
        struct ag_append_result res;
        struct ag_err err;
        ag_err_clear(&err);
        int rc = ag_store_append(s, stream, strlen(stream), AG_STORE_NO_STREAM, ev, 4, &res, &err);
        cr_assert_eq(rc, 0, "append %s: %s", stream, ag_err_msg(&err, rc));
    }
}

static void check_sagas(int from, int to)
{
    for (int k = from; k < to; k++) {
        char stream[64], meta[400], data[300];
        snprintf(stream, sizeof stream, "saga-%08d", k);
        struct ag_event_page pg;
        struct ag_err err;
        ag_err_clear(&err);
        int rc = ag_store_read_stream(s, stream, strlen(stream), 0, AG_READ_FORWARD, 10, &pg, &err);
        cr_assert_eq(rc, 0, "read %s: %s", stream, ag_err_msg(&err, rc));
        cr_assert_eq(pg.count, 4);
        for (int i = 0; i < 4; i++) {
            event_of(k, i, meta, sizeof meta, data, sizeof data);
            const struct ag_event *e = &pg.events[i];
            cr_assert_eq(e->type_len, 13);
            cr_assert(memcmp(e->type, "StepSucceeded", 13) == 0);
            cr_assert_eq(e->metadata_len, strlen(meta));
            cr_assert(memcmp(e->metadata, meta, e->metadata_len) == 0, "%s event %d meta", stream,
                      i);
            cr_assert_eq(e->data_len, strlen(data));
            cr_assert(memcmp(e->data, data, e->data_len) == 0);
        }
        ag_event_page_free(&pg);
    }
}

/* Records of the log by dictionary: n[0] raw, n[d] compressed with dictionary d. */
static void count_records(size_t n[4])
{
    struct lstore *ls = (struct lstore *)s;
    memset(n, 0, 4 * sizeof *n);
    for (size_t si = 0; si < ls->nsegs; si++)
        for (uint64_t off = LOG_SEG_HDR; off < ls->segs[si].end;) {
            struct log_rec r;
            ag__log_rec_fields(ls->segs[si].map + off, &r);
            if (r.kind == LOG_KIND_EVENT) n[r.zbody ? (r.dict < 3 ? r.dict : 3) : 0]++;
            off += r.size;
        }
}

static void train(void)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag__log_dict_train((struct lstore *)s, &err);
    cr_assert_eq(rc, 0, "train: %s", ag_err_msg(&err, rc));
}

/* Where the first compressed event record is: segment file and offset. */
static uint64_t first_compressed(struct log_rec *out)
{
    struct lstore *ls = (struct lstore *)s;
    for (uint64_t off = LOG_SEG_HDR; off < ls->segs[0].end;) {
        ag__log_rec_fields(ls->segs[0].map + off, out);
        if (out->zbody) return off;
        off += out->size;
    }
    cr_assert_fail("no compressed record");
    return 0;
}

TestSuite(compress, .init = setup, .fini = teardown, .timeout = 60);

Test(compress, round_trip_after_training_and_reopen)
{
    append_sagas(0, 300);
    size_t n[4];
    count_records(n);
    cr_assert_eq(n[0], 1200);
    cr_assert_eq(n[1], 0, "nothing is compressed before a dictionary exists");
    train();
    char path[128];
    snprintf(path, sizeof path, "%s/dict-00001.zd", dir);
    cr_assert_eq(access(path, F_OK), 0);
    append_sagas(300, 600);
    count_records(n);
    cr_assert_eq(n[0], 1200);
    cr_assert_eq(n[1], 1200, "raw %zu compressed %zu", n[0], n[1]);
    check_sagas(0, 600);
    /* $all reads expand the same records */
    struct ag_event_page pg;
    struct ag_err err;
    cr_assert_eq(ag_store_read_all(s, 1200, AG_READ_FORWARD, 8, &pg, &err), 0);
    cr_assert_eq(pg.count, 8);
    cr_assert_eq(pg.events[0].position, 1200);
    ag_event_page_free(&pg);
    ag_store_close(s);
    s = reopen(); /* with the checkpoint */
    check_sagas(0, 600);
    ag_store_close(s);
    snprintf(path, sizeof path, "%s/index.ckpt", dir);
    unlink(path);
    s = reopen(); /* the index rebuilt by scanning compressed records */
    check_sagas(0, 600);
    struct ag_log_verify_report rep;
    ag_store_close(s);
    s = NULL;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0);
    cr_assert(rep.ok, "verify: %s", rep.problem);
}

Test(compress, compressed_records_are_smaller_and_deduplicate)
{
    append_sagas(0, 300);
    struct lstore *ls = (struct lstore *)s;
    uint64_t before = ls->segs[0].end;
    train();
    append_sagas(300, 600);
    uint64_t raw = before - LOG_SEG_HDR, z = ls->segs[0].end - before;
    cr_assert_lt(z * 2, raw, "compressed %llu bytes vs raw %llu", (unsigned long long)z,
                 (unsigned long long)raw);
    /* an identical re-append with the same ids is answered from the (compressed) log */
    struct ag_event_page pg;
    struct ag_err err;
    cr_assert_eq(ag_store_read_stream(s, "saga-00000400", 13, 0, AG_READ_FORWARD, 4, &pg, &err), 0);
    struct ag_event_data ev[4];
    for (int i = 0; i < 4; i++)
        ev[i] = (struct ag_event_data){.id = pg.events[i].id,
                                       .type = pg.events[i].type,
                                       .type_len = pg.events[i].type_len,
                                       .metadata = pg.events[i].metadata,
                                       .metadata_len = pg.events[i].metadata_len,
                                       .data = pg.events[i].data,
                                       .data_len = pg.events[i].data_len};
    struct ag_append_result res;
    int rc = ag_store_append(s, "saga-00000400", 13, AG_STORE_ANY, ev, 4, &res, &err);
    cr_assert_eq(rc, 0, "re-append: %s", ag_err_msg(&err, rc));
    cr_assert_eq(res.first_version, 0);
    cr_assert_eq(res.last_version, 3);
    ev[2].data = "{\"other\":1}";
    ev[2].data_len = 11;
    rc = ag_store_append(s, "saga-00000400", 13, AG_STORE_ANY, ev, 4, &res, &err);
    cr_assert_eq(rc, AG_EIDEMPOTENCY);
    ag_event_page_free(&pg);
}

Test(compress, dictionary_switch_keeps_old_records_readable)
{
    append_sagas(0, 200);
    train();
    append_sagas(200, 400);
    train();
    append_sagas(400, 600);
    size_t n[4];
    count_records(n);
    cr_assert_eq(n[1], 800);
    cr_assert_eq(n[2], 800);
    check_sagas(0, 600);
    ag_store_close(s);
    s = reopen();
    check_sagas(0, 600);
    append_sagas(600, 650); /* the newest dictionary is used after a reopen */
    count_records(n);
    cr_assert_eq(n[2], 1000);
}

/* Set a reserved bit in the first compressed record's frame header (the frame can
 * then never decode); reseal its checksum when `reseal`. Returns its offset. */
static uint64_t damage(bool reseal, int64_t *position)
{
    append_sagas(0, 200);
    train();
    append_sagas(200, 400);
    struct log_rec r;
    uint64_t off = first_compressed(&r);
    struct lstore *ls = (struct lstore *)s;
    uint8_t rec[4096];
    memcpy(rec, ls->segs[0].map + off, r.size);
    size_t frame = (size_t)(r.zbody - (ls->segs[0].map + off));
    *position = (int64_t)r.position;
    ag_store_close(s);
    s = NULL;
    rec[frame] |= 0x08;                 /* Frame_Header_Descriptor's reserved bit */
    if (reseal && ag__log_rec_is3(rec)) /* format 3: 4-byte checksum */
        ag__put32(rec + r.size - 4, (uint32_t)ag_xxh3(rec, r.size - 4));
    else if (reseal)
        ag__put64(rec + r.size - LOG_REC_TRAILER, ag_xxh3(rec, r.size - LOG_REC_TRAILER));
    char path[128];
    snprintf(path, sizeof path, "%s/seg-%020d.log", dir, 0);
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, rec, r.size, (off_t)off), (ssize_t)r.size);
    close(fd);
    return off;
}

Test(compress, corrupt_body_fails_its_checksum)
{
    int64_t pos;
    uint64_t off = damage(false, &pos);
    char want[64];
    snprintf(want, sizeof want, "offset %llu", (unsigned long long)off);
    s = reopen(); /* the checkpoint covers it: found when read */
    struct ag_event_page pg;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_read_all(s, (uint64_t)pos, AG_READ_FORWARD, 4, &pg, &err);
    cr_assert_eq(rc, AG_ECORRUPT);
    cr_assert(strstr(err.msg, want) && strstr(err.msg, "checksum"), "%s", err.msg);
    ag_store_close(s);
    s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/index.ckpt", dir);
    unlink(path);
    s = reopen_rc(&rc, &err); /* a scan meets it, intact records after it: refused */
    cr_assert_eq(rc, AG_ECORRUPT);
    cr_assert(strstr(err.msg, want) && strstr(err.msg, "checksum"), "%s", err.msg);
}

Test(compress, undecodable_body_is_a_read_error_with_its_position)
{
    int64_t pos;
    uint64_t off = damage(true, &pos);
    s = reopen(); /* intact by its checksum: the open takes it */
    struct ag_event_page pg;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_read_all(s, (uint64_t)pos, AG_READ_FORWARD, 4, &pg, &err);
    cr_assert_eq(rc, AG_ECORRUPT);
    char want[64];
    snprintf(want, sizeof want, "position %lld", (long long)pos);
    cr_assert(strstr(err.msg, want) && strstr(err.msg, "does not decode"), "%s", err.msg);
    check_sagas(0, 200); /* the raw ones still read */
    ag_store_close(s);
    s = NULL;
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0);
    cr_assert_not(rep.ok);
    snprintf(want, sizeof want, "offset %llu", (unsigned long long)off);
    cr_assert(strstr(rep.problem, want), "%s", rep.problem);
}

Test(compress, missing_or_corrupt_dictionary_is_an_error_at_open)
{
    append_sagas(0, 200);
    train();
    append_sagas(200, 300);
    ag_store_close(s);
    s = NULL;
    char path[128], aside[140];
    snprintf(path, sizeof path, "%s/dict-00001.zd", dir);
    snprintf(aside, sizeof aside, "%s.aside", path);
    cr_assert_eq(rename(path, aside), 0);
    struct ag_err err;
    int rc;
    s = reopen_rc(&rc, &err); /* the checkpoint names one dictionary: the scan finds the use */
    cr_assert_eq(rc, AG_ECORRUPT);
    cr_assert(strstr(err.msg, "dict-00001.zd is missing"), "%s", err.msg);
    struct ag_log_verify_report rep;
    cr_assert_eq(ag_store_log_verify(dir, false, &rep, &err), 0);
    cr_assert_not(rep.ok);
    cr_assert(strstr(rep.problem, "dict-00001.zd"), "%s", rep.problem);
    /* corrupt: one byte of the dictionary changed */
    cr_assert_eq(rename(aside, path), 0);
    int fd = open(path, O_RDWR);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, 100), 1);
    b ^= 0xff;
    cr_assert_eq(pwrite(fd, &b, 1, 100), 1);
    close(fd);
    s = reopen_rc(&rc, &err);
    cr_assert_eq(rc, AG_ECORRUPT);
    cr_assert(strstr(err.msg, "dict-00001.zd") && strstr(err.msg, "checksum"), "%s", err.msg);
}

Test(compress, format_1_log_opens_reads_and_takes_compressed_appends)
{
    /* the previous encoder, every record raw, then the header says format 1 */
    ag_store_close(s);
    fresh_dir();
    setenv("AGORA_STORE_COMPRESS", "0", 1);
    setenv("AGORA_STORE_FORMAT", "2", 1);
    s = reopen();
    append_sagas(0, 200);
    ag_store_close(s);
    unsetenv("AGORA_STORE_COMPRESS");
    unsetenv("AGORA_STORE_FORMAT");
    char path[128];
    snprintf(path, sizeof path, "%s/seg-%020d.log", dir, 0);
    int fd = open(path, O_RDWR);
    uint8_t hdr[LOG_SEG_HDR];
    cr_assert_eq(pread(fd, hdr, LOG_SEG_HDR, 0), LOG_SEG_HDR);
    ag__put32(hdr + 8, LOG_FORMAT_V1);
    ag__put64(hdr + 56, ag_xxh3(hdr, 56));
    cr_assert_eq(pwrite(fd, hdr, LOG_SEG_HDR, 0), LOG_SEG_HDR);
    close(fd);
    s = reopen();
    check_sagas(0, 200);
    struct lstore *ls = (struct lstore *)s;
    cr_assert_eq(ls->nsegs, 2, "appends continue in a new segment");
    cr_assert_eq(ag__log_seg_format(ls->segs[0].map), LOG_FORMAT_V1, "the old one is untouched");
    cr_assert_eq(ag__log_seg_format(ls->segs[1].map), LOG_FORMAT_VERSION);
    train();
    append_sagas(200, 300);
    size_t n[4];
    count_records(n);
    cr_assert_eq(n[0], 800);
    cr_assert_eq(n[1], 400);
    ag_store_close(s);
    s = reopen();
    check_sagas(0, 300);
}

/* A format-2 log (compressed, fixed-header records) opens, reads, continues in
 * format 3, and both read back after a reopen without the checkpoint. */
Test(compress, format_2_log_opens_and_continues_in_format_3)
{
    ag_store_close(s);
    fresh_dir();
    setenv("AGORA_STORE_FORMAT", "2", 1);
    s = reopen();
    append_sagas(0, 200);
    train();
    append_sagas(200, 300);
    ag_store_close(s);
    unsetenv("AGORA_STORE_FORMAT");
    s = reopen();
    struct lstore *ls = (struct lstore *)s;
    cr_assert_eq(ls->nsegs, 2);
    cr_assert_eq(ag__log_seg_format(ls->segs[0].map), LOG_FORMAT_V2);
    cr_assert_eq(ag__log_seg_format(ls->segs[1].map), LOG_FORMAT_VERSION);
    append_sagas(300, 600);
    size_t n[4];
    count_records(n);
    cr_assert_eq(n[1], 400 + 1200, "format 3 compresses with the same dictionary");
    check_sagas(0, 600);
    ag_store_close(s);
    char path[128];
    snprintf(path, sizeof path, "%s/index.ckpt", dir);
    unlink(path);
    s = reopen();
    check_sagas(0, 600);
}

/* The decoded-record cache (rcache.c): the second read of a compressed record near
 * the head is a copy of the first's expansion, equal to it; it is keyed by the
 * event id too, and it is off with AGORA_STORE_READ_CACHE=0. */
Test(compress, tail_reads_share_one_decompression)
{
    append_sagas(0, 100);
    train();
    append_sagas(100, 200); /* positions 400..799 compressed */
    struct lstore *ls = (struct lstore *)s;
    uint64_t hits, misses;
    ag__log_rc_counts(ls, &hits, &misses);
    cr_assert_eq(hits, 0);
    check_sagas(100, 200); /* first readers: decompress and store */
    ag__log_rc_counts(ls, &hits, &misses);
    cr_assert_eq(hits, 0);
    cr_assert_eq(misses, 400);
    check_sagas(100, 200); /* the same records again: from the cache, byte for byte */
    struct ag_event_page pg;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_read_all(s, 400, AG_READ_FORWARD, 400, &pg, &err), 0);
    cr_assert_eq(pg.count, 400);
    for (size_t i = 0; i < pg.count; i++) cr_assert_eq(pg.events[i].position, 400 + i);
    ag_event_page_free(&pg);
    ag__log_rc_counts(ls, &hits, &misses);
    cr_assert_eq(hits, 800, "hits %llu", (unsigned long long)hits);
    cr_assert_eq(misses, 400);
    check_sagas(0, 100); /* raw records never go through it */
    ag__log_rc_counts(ls, &hits, &misses);
    cr_assert_eq(hits + misses, 1200);

    ag_store_close(s);
    setenv("AGORA_STORE_READ_CACHE", "0", 1);
    s = reopen();
    unsetenv("AGORA_STORE_READ_CACHE");
    check_sagas(100, 200);
    check_sagas(100, 200);
    ag__log_rc_counts((struct lstore *)s, &hits, &misses);
    cr_assert_eq(hits + misses, 0);
}
