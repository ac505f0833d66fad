/* Record and segment-header encoding for the embedded log. The layout is
 * documented at the top of log.c; this file is its only encoder and decoder:
 * the rest of the log reads records through the functions below and never
 * through byte offsets.
 *
 * FORMAT 3 (compact records, segments of format 3). A record is self-contained:
 * it decodes from its own bytes, without the segment header or the record before
 * it, so an index location pointing anywhere into a segment (and a scavenged
 * segment with holes in its positions) needs nothing else. Its first byte tells
 * it from a format-1/2 record (whose first byte is the low byte of a size that
 * is a multiple of 8): bit 0 is always 1.
 *   u8 tag          bit 0 = 1; bits 1..2 kind; bit 3 body compressed; bit 4
 *                   name compact; bit 5 time from the id; bits 6..7 zero
 *   varint rest     bytes after this varint, checksum included
 *   varint position absolute (events; batch header: its first event; snapshot 0)
 *   varint version  (batch header: streams)
 *   16B id          events only
 *   u64 time        commit time, Unix ns (a varint of a 2026 time takes 9 bytes);
 *                   with tag bit 5 (events whose id is a UUIDv7, RFC 9562, made
 *                   at most ~6.5 days before the commit: every id agora makes),
 *                   a varint of the commit time minus the id's Unix ms × 10^6
 *                   instead — 3 or 4 bytes for a commit milliseconds after the id
 *                   was made. Still self-contained: the id is in the record.
 *                   Added in issue 19 (compact events) without a format number:
 *                   a log is written and read by the same binary, and an older
 *                   one refuses the bit ("unknown record kind or flags").
 *   varint batch_left
 *   name            not in batch headers. Compact: u8 prefix length, the prefix
 *                   (up to and with the first '-'), the lowercase UUID after it
 *                   as 16 bytes. Else: u8 length (1..255), the name.
 *   varint type_len, varint meta_len, varint data_len (raw lengths; not in batch
 *                   headers), varint dictionary id (compressed only)
 *   body            type|metadata|data, or the zstd frame up to the checksum
 *   u32 checksum    low 32 bits of the XXH3-64 of every byte before it
 * No padding: records follow each other back to back, at any byte offset (every
 * reader goes through memcpy-based loads). */
#include "store/log/internal.h"

/* Record fields (log.c, RECORD). */
enum {
    REC_SIZE = 0,
    REC_KIND = 4,
    REC_FLAGS = 5,
    REC_STREAM_LEN = 6,
    REC_POSITION = 8,
    REC_VERSION = 16,
    REC_ID = 24,
    REC_TIME = 40,
    REC_BATCH_LEFT = 48,
    REC_TYPE_LEN = 52,
    REC_DICT = 54,
    REC_META_LEN = 56,
    REC_DATA_LEN = 60,
};

/* Segment header fields (log.c, SEGMENT HEADER). */
enum {
    SEG_MAGIC = 0,
    SEG_VERSION = 8,
    SEG_HDR_SIZE = 12,
    SEG_BASE_POSITION = 16,
    SEG_NUMBER = 24,
    SEG_TIME = 32,
    SEG_FLAGS = 40,
    SEG_CHECKSUM = 56,
};

static inline uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

size_t ag__log_rec_size(size_t stream_len, size_t type_len, size_t meta_len, size_t data_len)
{
    size_t body = stream_len + type_len + meta_len + data_len;
    size_t raw = LOG_REC_HDR + body + LOG_REC_TRAILER;
    return (raw + LOG_REC_ALIGN - 1) & ~(size_t)(LOG_REC_ALIGN - 1);
}

size_t ag__log_rec_size_z(size_t stream_len, size_t zbody_len)
{
    size_t raw = LOG_REC_HDR + stream_len + zbody_len + LOG_REC_TRAILER;
    return (raw + LOG_REC_ALIGN - 1) & ~(size_t)(LOG_REC_ALIGN - 1);
}

/* Flags of a record: bit 0 = body compressed; bits 1..3 = padding bytes (compressed
 * records only: the frame's exact length is size - header - stream - padding - trailer). */
#define FLAG_PAD_SHIFT 1
#define FLAG_PAD_MASK  (7u << FLAG_PAD_SHIFT)

static size_t zbody_len(const uint8_t *p, uint32_t size, uint16_t stream_len)
{
    size_t pad = (p[REC_FLAGS] & FLAG_PAD_MASK) >> FLAG_PAD_SHIFT;
    return size - LOG_REC_HDR - stream_len - LOG_REC_TRAILER - pad;
}

/* ---- format 3 ---- */

enum {
    T3_KIND_SHIFT = 1,
    T3_COMPRESSED = 8,
    T3_COMPACT_NAME = 16,
    T3_TIME_ID = 32,
    T3_KNOWN = 0x3f,
    T3_TRAILER = 4,
    T3_NAME_UUID = 16,
};

size_t ag__log_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) p[n++] = (uint8_t)(v | 0x80), v >>= 7;
    p[n++] = (uint8_t)v;
    return n;
}

size_t ag__log_varint_get(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        if (i == 9 && p[i] > 1) return 0; /* more than 64 bits */
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) return i + 1;
    }
    return 0;
}

#define T3_TIME_DELTA_MAX (1ull << 49) /* ~6.5 days in ns: a varint of at most 7 bytes */
#define T3_ID_MS_MAX      (UINT64_MAX / 1000000u)

/* The Unix ms of a UUIDv7 (its first 48 bits), or UINT64_MAX when `id` is not one. */
static uint64_t id_ms(const struct ag_uuid *id)
{
    if (id->b[6] >> 4 != 7) return UINT64_MAX;
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++) ms = ms << 8 | id->b[i];
    return ms;
}

/* The commit time as a delta from the event's id (tag bit 5), when that fits. */
static bool time_from_id(const struct log_rec *r, uint64_t *delta)
{
    uint64_t ms = r->kind == LOG_KIND_EVENT ? id_ms(&r->id) : UINT64_MAX;
    if (ms > T3_ID_MS_MAX || r->time_ns < ms * 1000000u) return false;
    *delta = r->time_ns - ms * 1000000u;
    return *delta < T3_TIME_DELTA_MAX;
}

/* Everything between `rest` and the body (see FORMAT 3) into `h`; its bytes. */
static size_t v3_head(uint8_t *h, const struct log_rec *r, uint8_t *tag)
{
    uint8_t *o = h;
    o += ag__log_varint_put(o, r->position);
    o += ag__log_varint_put(o, (uint64_t)r->version);
    if (r->kind == LOG_KIND_EVENT) memcpy(o, r->id.b, 16), o += 16;
    uint64_t delta;
    if (time_from_id(r, &delta)) {
        *tag |= T3_TIME_ID;
        o += ag__log_varint_put(o, delta);
    } else {
        ag__put64(o, r->time_ns), o += 8;
    }
    o += ag__log_varint_put(o, r->batch_left);
    if (r->kind == LOG_KIND_BATCH) return (size_t)(o - h);
    const char *dash = memchr(r->stream, '-', r->stream_len);
    size_t plen = dash ? (size_t)(dash - r->stream) + 1 : 0;
    if (dash && ag__log_uuid_pack(r->stream + plen, r->stream_len - plen, o + 1 + plen)) {
        *tag |= T3_COMPACT_NAME;
        *o++ = (uint8_t)plen;
        memcpy(o, r->stream, plen), o += plen + T3_NAME_UUID;
    } else {
        *o++ = (uint8_t)r->stream_len;
        memcpy(o, r->stream, r->stream_len), o += r->stream_len;
    }
    o += ag__log_varint_put(o, r->type_len);
    o += ag__log_varint_put(o, r->meta_len);
    o += ag__log_varint_put(o, r->data_len);
    if (r->zbody) o += ag__log_varint_put(o, r->dict);
    return (size_t)(o - h);
}

size_t ag__log_rec3_encode(uint8_t *p, const struct log_rec *r)
{
    uint8_t h[64 + AG_STORE_STREAM_MAX];
    uint8_t tag =
        (uint8_t)(1u | (unsigned)r->kind << T3_KIND_SHIFT | (r->zbody ? T3_COMPRESSED : 0));
    size_t hl = v3_head(h, r, &tag);
    size_t body = r->kind == LOG_KIND_BATCH ? 0
                  : r->zbody                ? r->zbody_len
                                            : (size_t)r->type_len + r->meta_len + r->data_len;
    uint8_t *o = p;
    *o++ = tag;
    o += ag__log_varint_put(o, hl + body + T3_TRAILER);
    memcpy(o, h, hl), o += hl;
    if (r->zbody) {
        memcpy(o, r->zbody, r->zbody_len), o += r->zbody_len;
    } else if (r->kind != LOG_KIND_BATCH) {
        if (r->type_len) memcpy(o, r->type, r->type_len), o += r->type_len;
        if (r->meta_len) memcpy(o, r->meta, r->meta_len), o += r->meta_len;
        if (r->data_len) memcpy(o, r->data, r->data_len), o += r->data_len;
    }
    size_t n = (size_t)(o - p);
    ag__put32(o, (uint32_t)ag_xxh3(p, n));
    return n + T3_TRAILER;
}

static int bad3(const char **why, const char *what)
{
    *why = what;
    return AG_ECORRUPT;
}

/* Decode a format-3 record's fields; with `check`, verify every one. */
static int v3_fields(const uint8_t *p, size_t avail, struct log_rec *r, bool check,
                     const char **why)
{
    const uint8_t *end = p + avail, *o = p + 1;
    uint64_t rest, v;
    r->size = 0;
    size_t n = ag__log_varint_get(o, end, &rest);
    if (!n) return bad3(why, "truncated record header");
    o += n;
    if (rest < T3_TRAILER || rest > (uint64_t)(end - o))
        return bad3(why, "record runs past the end of the segment");
    uint8_t tag = p[0];
    memset(r, 0, offsetof(struct log_rec, name_buf));
    r->size = (uint32_t)((size_t)(o - p) + rest);
    end = p + r->size - T3_TRAILER;
    r->kind = (uint8_t)(tag >> T3_KIND_SHIFT & 3);
    if (check && (tag & ~T3_KNOWN || r->kind == 0 ||
                  (tag & (T3_COMPRESSED | T3_COMPACT_NAME) && r->kind == LOG_KIND_BATCH) ||
                  (tag & (T3_COMPRESSED | T3_TIME_ID) && r->kind != LOG_KIND_EVENT)))
        return bad3(why, "unknown record kind or flags");
#define TAKE(dst)                                                                                  \
    do {                                                                                           \
        if (!(n = ag__log_varint_get(o, end, &v)))                                                 \
            return bad3(why, "record fields do not fit its size");                                 \
        o += n, (dst) = v;                                                                         \
    } while (0)
    uint64_t ver, bl;
    TAKE(r->position);
    TAKE(ver);
    if (r->kind == LOG_KIND_EVENT) {
        if (end - o < 16) return bad3(why, "record fields do not fit its size");
        memcpy(r->id.b, o, 16), o += 16;
    }
    if (tag & T3_TIME_ID) {
        uint64_t delta, ms = id_ms(&r->id);
        TAKE(delta);
        if (ms > T3_ID_MS_MAX || delta >= T3_TIME_DELTA_MAX || r->kind != LOG_KIND_EVENT ||
            ms * 1000000u > UINT64_MAX - delta)
            return bad3(why, "record time out of range");
        r->time_ns = ms * 1000000u + delta;
    } else {
        if (end - o < 8) return bad3(why, "record fields do not fit its size");
        r->time_ns = ag__le64(o), o += 8;
    }
    TAKE(bl);
    r->version = (int64_t)ver;
    r->batch_left = (uint32_t)bl;
    if (check && (ver > INT64_MAX || bl > UINT32_MAX))
        return bad3(why, "record fields out of range");
    r->stream = r->name_buf;
    if (r->kind == LOG_KIND_BATCH) {
        if (check && (o != end || bl == 0 || ver < 1 || ver > bl))
            return bad3(why, "malformed multi-stream batch header");
        return 0;
    }
    if (o >= end) return bad3(why, "record fields do not fit its size");
    size_t nl = *o++;
    if (tag & T3_COMPACT_NAME) {
        if (nl + T3_NAME_UUID > (size_t)(end - o) || nl + 36 > AG_STORE_STREAM_MAX)
            return bad3(why, "record fields do not fit its size");
        memcpy(r->name_buf, o, nl);
        ag__log_uuid_unpack(o + nl, r->name_buf + nl);
        o += nl + T3_NAME_UUID;
        r->stream_len = (uint16_t)(nl + 36);
        if (check && (nl == 0 || r->name_buf[nl - 1] != '-' ||
                      memchr(r->name_buf, '-', nl) != r->name_buf + nl - 1))
            return bad3(why, "malformed compact stream name");
    } else {
        if (nl == 0 || nl > (size_t)(end - o))
            return bad3(why, "record fields do not fit its size");
        r->stream = (const char *)o, r->stream_len = (uint16_t)nl, o += nl;
    }
    uint64_t tl, ml, dl, dict = 0;
    TAKE(tl);
    TAKE(ml);
    TAKE(dl);
    if (tag & T3_COMPRESSED) TAKE(dict);
#undef TAKE
    if (tl > UINT16_MAX || ml > UINT32_MAX || dl > UINT32_MAX || dict > UINT16_MAX)
        return bad3(why, "record fields out of range");
    r->type_len = (uint16_t)tl, r->meta_len = (uint32_t)ml, r->data_len = (uint32_t)dl;
    r->dict = (uint16_t)dict;
    size_t body = (size_t)(end - o);
    if (tag & T3_COMPRESSED) {
        if (check && (body == 0 || tl + ml + dl > LOG_ZRAW_MAX))
            return bad3(why, "compressed record fields do not fit its size");
        r->zbody = o, r->zbody_len = (uint32_t)body;
        return 0;
    }
    if (tl + ml + dl != body) return bad3(why, "record fields do not fit its size");
    r->type = (const char *)o;
    r->meta = r->type + tl;
    r->data = r->meta + ml;
    return 0;
}

static bool v3_sum_ok(const uint8_t *p, uint32_t size)
{
    return ag__le32(p + size - T3_TRAILER) == (uint32_t)ag_xxh3(p, size - T3_TRAILER);
}

/* With `check`: a record whose bytes changed is a checksum error even when the
 * change also broke a field (the fields are read first only to learn the size). */
static int v3_parse(const uint8_t *p, size_t avail, struct log_rec *r, bool check, const char **why)
{
    int rc = v3_fields(p, avail, r, check, why);
    if (!check) return rc;
    if (r->size && r->size <= avail && !v3_sum_ok(p, r->size))
        return bad3(why, "checksum mismatch");
    return rc;
}

bool ag__log_rec3_intact(const uint8_t *p, size_t avail)
{
    struct log_rec r;
    const char *why;
    /* the fields first: garbage rarely parses, and the caller tries every offset */
    return v3_fields(p, avail, &r, true, &why) == 0 && v3_sum_ok(p, r.size);
}

size_t ag__log_rec_rebatch(const uint8_t *p, uint32_t batch_left, uint8_t *dst)
{
    struct log_rec r;
    ag__log_rec_fields(p, &r);
    if (ag__log_rec_is3(p)) {
        r.batch_left = batch_left;
        return ag__log_rec3_encode(dst, &r);
    }
    memcpy(dst, p, r.size);
    ag__log_rec_set_batch_left(dst, batch_left);
    ag__log_rec_seal(dst, r.position, r.version, r.time_ns);
    return r.size;
}

void ag__log_rec_encode(uint8_t *p, const struct log_rec *r)
{
    memset(p, 0, LOG_REC_HDR);
    ag__put32(p + REC_SIZE, r->size);
    p[REC_KIND] = r->kind;
    p[REC_FLAGS] = 0;
    if (r->zbody) {
        size_t used = LOG_REC_HDR + r->stream_len + r->zbody_len + LOG_REC_TRAILER;
        p[REC_FLAGS] =
            (uint8_t)(LOG_REC_F_COMPRESSED | (uint8_t)((r->size - used) << FLAG_PAD_SHIFT));
        put16(p + REC_DICT, r->dict);
    }
    put16(p + REC_STREAM_LEN, r->stream_len);
    ag__put64(p + REC_POSITION, r->position);
    ag__put64(p + REC_VERSION, (uint64_t)r->version);
    memcpy(p + REC_ID, r->id.b, 16);
    ag__put64(p + REC_TIME, r->time_ns);
    ag__put32(p + REC_BATCH_LEFT, r->batch_left);
    put16(p + REC_TYPE_LEN, r->type_len);
    ag__put32(p + REC_META_LEN, r->meta_len);
    ag__put32(p + REC_DATA_LEN, r->data_len);
    uint8_t *b = p + LOG_REC_HDR;
    memcpy(b, r->stream, r->stream_len), b += r->stream_len;
    if (r->zbody) {
        memcpy(b, r->zbody, r->zbody_len), b += r->zbody_len;
        memset(b, 0, (size_t)(p + r->size - b));
        return;
    }
    if (r->type_len) memcpy(b, r->type, r->type_len), b += r->type_len;
    if (r->meta_len) memcpy(b, r->meta, r->meta_len), b += r->meta_len;
    if (r->data_len) memcpy(b, r->data, r->data_len), b += r->data_len;
    memset(b, 0, (size_t)(p + r->size - b)); /* padding and checksum */
}

void ag__log_rec_seal(uint8_t *p, uint64_t position, int64_t version, uint64_t time_ns)
{
    uint32_t size = ag__le32(p + REC_SIZE);
    ag__put64(p + REC_POSITION, position);
    ag__put64(p + REC_VERSION, (uint64_t)version);
    ag__put64(p + REC_TIME, time_ns);
    ag__put64(p + size - LOG_REC_TRAILER, ag_xxh3(p, size - LOG_REC_TRAILER));
}

void ag__log_batch_encode(uint8_t *p, uint32_t events, uint32_t streams, uint64_t position,
                          uint64_t time_ns)
{
    struct log_rec r = {
        .size = LOG_BATCH_REC_SIZE, .kind = LOG_KIND_BATCH, .batch_left = events, .stream = ""};
    ag__log_rec_encode(p, &r);
    ag__log_rec_seal(p, position, (int64_t)streams, time_ns);
}

size_t ag__log_batch_encode_fmt(uint8_t *p, uint32_t fmt, uint32_t events, uint32_t streams,
                                uint64_t position, uint64_t time_ns)
{
    if (fmt < LOG_FORMAT_VERSION) {
        ag__log_batch_encode(p, events, streams, position, time_ns);
        return LOG_BATCH_REC_SIZE;
    }
    struct log_rec r = {.kind = LOG_KIND_BATCH,
                        .batch_left = events,
                        .position = position,
                        .version = (int64_t)streams,
                        .time_ns = time_ns};
    return ag__log_rec3_encode(p, &r);
}

void ag__log_rec_set_batch_left(uint8_t *p, uint32_t batch_left)
{
    ag__put32(p + REC_BATCH_LEFT, batch_left);
}

uint32_t ag__log_rec_len(const uint8_t *p)
{
    if (!ag__log_rec_is3(p)) return ag__le32(p + REC_SIZE);
    uint64_t rest;
    size_t n = ag__log_varint_get(p + 1, p + 11, &rest);
    return (uint32_t)(1 + n + rest);
}

uint8_t ag__log_rec_kind(const uint8_t *p)
{
    return ag__log_rec_is3(p) ? (uint8_t)(p[0] >> T3_KIND_SHIFT & 3) : p[REC_KIND];
}

void ag__log_rec_id(const uint8_t *p, struct ag_uuid *out)
{
    if (!ag__log_rec_is3(p)) {
        memcpy(out->b, p + REC_ID, 16);
        return;
    }
    struct log_rec r;
    ag__log_rec_fields(p, &r);
    *out = r.id;
}

void ag__log_rec_fields(const uint8_t *p, struct log_rec *r)
{
    if (ag__log_rec_is3(p)) {
        const char *why;
        (void)v3_parse(p, UINT32_MAX, r, false, &why); /* checked when written or recovered */
        return;
    }
    r->size = ag__le32(p + REC_SIZE);
    r->kind = p[REC_KIND];
    r->stream_len = le16(p + REC_STREAM_LEN);
    r->position = ag__le64(p + REC_POSITION);
    r->version = (int64_t)ag__le64(p + REC_VERSION);
    memcpy(r->id.b, p + REC_ID, 16);
    r->time_ns = ag__le64(p + REC_TIME);
    r->batch_left = ag__le32(p + REC_BATCH_LEFT);
    r->type_len = le16(p + REC_TYPE_LEN);
    r->meta_len = ag__le32(p + REC_META_LEN);
    r->data_len = ag__le32(p + REC_DATA_LEN);
    r->dict = le16(p + REC_DICT);
    const char *b = (const char *)p + LOG_REC_HDR;
    r->stream = b, b += r->stream_len;
    r->zbody = NULL, r->zbody_len = 0;
    if (p[REC_FLAGS] & LOG_REC_F_COMPRESSED) {
        /* type, metadata and data are inside the frame: ag__log_rec_body expands them */
        r->zbody = (const uint8_t *)b;
        r->zbody_len = (uint32_t)zbody_len(p, r->size, r->stream_len);
        r->type = r->meta = r->data = NULL;
        return;
    }
    r->type = b, b += r->type_len;
    r->meta = b, b += r->meta_len;
    r->data = b;
}

int ag__log_rec_decode(const uint8_t *p, size_t avail, struct log_rec *r, const char **why)
{
    if (avail && ag__log_rec_is3(p))
        return v3_parse(p, AG_MIN(avail, (size_t)UINT32_MAX), r, true, why);
    if (avail < LOG_REC_MIN) return *why = "truncated record header", AG_ECORRUPT;
    uint32_t size = ag__le32(p + REC_SIZE);
    if (size == 0) return *why = "zeroed bytes where a record should start", AG_ECORRUPT;
    if (size < LOG_REC_MIN || size % LOG_REC_ALIGN)
        return *why = "impossible record size", AG_ECORRUPT;
    if (size > avail) return *why = "record runs past the end of the segment", AG_ECORRUPT;
    if (ag__le64(p + size - LOG_REC_TRAILER) != ag_xxh3(p, size - LOG_REC_TRAILER))
        return *why = "checksum mismatch", AG_ECORRUPT;
    if (p[REC_KIND] != LOG_KIND_EVENT && p[REC_KIND] != LOG_KIND_SNAPSHOT &&
        p[REC_KIND] != LOG_KIND_BATCH)
        return *why = "unknown record kind", AG_ECORRUPT;
    ag__log_rec_fields(p, r);
    if (r->kind == LOG_KIND_BATCH) {
        if (r->size != LOG_BATCH_REC_SIZE || r->stream_len || r->type_len || r->meta_len ||
            r->data_len || r->batch_left == 0 || r->version < 1 ||
            r->version > (int64_t)r->batch_left)
            return *why = "malformed multi-stream batch header", AG_ECORRUPT;
        return 0;
    }
    uint8_t fl = p[REC_FLAGS];
    if (fl & ~(LOG_REC_F_COMPRESSED | FLAG_PAD_MASK) ||
        (!(fl & LOG_REC_F_COMPRESSED) && (fl || r->dict)) ||
        (fl & LOG_REC_F_COMPRESSED && r->kind != LOG_KIND_EVENT))
        return *why = "unknown record flags", AG_ECORRUPT;
    uint64_t body = (uint64_t)r->stream_len + r->type_len + r->meta_len + r->data_len;
    if (fl & LOG_REC_F_COMPRESSED) {
        size_t pad = (fl & FLAG_PAD_MASK) >> FLAG_PAD_SHIFT;
        if ((uint64_t)LOG_REC_HDR + r->stream_len + LOG_REC_TRAILER + pad >= r->size ||
            ag__log_rec_size_z(r->stream_len, r->zbody_len) != r->size ||
            (uint64_t)r->type_len + r->meta_len + r->data_len > LOG_ZRAW_MAX)
            return *why = "compressed record fields do not fit its size", AG_ECORRUPT;
        body = r->stream_len; /* the raw lengths are checked when the body is expanded */
    }
    if (ag__log_rec_size(0, 0, 0, 0) + body > r->size || r->stream_len == 0 ||
        r->stream_len > AG_STORE_STREAM_MAX || r->version < 0)
        return *why = "record fields do not fit its size", AG_ECORRUPT;
    return 0;
}

void ag__log_seg_header(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                        uint64_t now_ns)
{
    ag__log_seg_header_flags(out, segno, base_position, now_ns, 0);
}

uint32_t ag__log_seg_flags(const uint8_t *hdr)
{
    return ag__le32(hdr + SEG_FLAGS);
}

void ag__log_seg_header_flags(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                              uint64_t now_ns, uint32_t flags)
{
    ag__log_seg_header_fmt(out, segno, base_position, now_ns, flags, LOG_FORMAT_VERSION);
}

void ag__log_seg_header_fmt(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                            uint64_t now_ns, uint32_t flags, uint32_t fmt)
{
    memset(out, 0, LOG_SEG_HDR);
    memcpy(out + SEG_MAGIC, LOG_SEG_MAGIC, 8);
    ag__put32(out + SEG_VERSION, fmt);
    ag__put32(out + SEG_HDR_SIZE, LOG_SEG_HDR);
    ag__put64(out + SEG_BASE_POSITION, base_position);
    ag__put64(out + SEG_NUMBER, segno);
    ag__put64(out + SEG_TIME, now_ns);
    ag__put32(out + SEG_FLAGS, flags);
    ag__put64(out + SEG_CHECKSUM, ag_xxh3(out, SEG_CHECKSUM));
}

int ag__log_seg_header_check(const uint8_t *p, size_t avail, uint64_t segno, const char **why)
{
    if (avail < LOG_SEG_HDR) return *why = "segment header truncated", AG_ECORRUPT;
    if (memcmp(p + SEG_MAGIC, LOG_SEG_MAGIC, 8) != 0)
        return *why = "not an agora segment (bad magic)", AG_ECORRUPT;
    if (ag__le64(p + SEG_CHECKSUM) != ag_xxh3(p, SEG_CHECKSUM))
        return *why = "segment header checksum mismatch", AG_ECORRUPT;
    uint32_t fv = ag__le32(p + SEG_VERSION);
    if (fv != LOG_FORMAT_VERSION && fv != LOG_FORMAT_V2 && fv != LOG_FORMAT_V1)
        return *why = "segment written by an unknown format version", AG_ECORRUPT;
    if (ag__le64(p + SEG_NUMBER) != segno)
        return *why = "segment number does not match its file name", AG_ECORRUPT;
    return 0;
}

uint32_t ag__log_seg_format(const uint8_t *hdr)
{
    return ag__le32(hdr + SEG_VERSION);
}

uint64_t ag__log_seg_base_position(const uint8_t *hdr)
{
    return ag__le64(hdr + SEG_BASE_POSITION);
}
