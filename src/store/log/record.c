/* Record and segment-header encoding for the embedded log. The layout is
 * documented at the top of log.c; this file is its only encoder and decoder:
 * the rest of the log reads records through the functions below and never
 * through byte offsets. */
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

void ag__log_rec_set_batch_left(uint8_t *p, uint32_t batch_left)
{
    ag__put32(p + REC_BATCH_LEFT, batch_left);
}

uint32_t ag__log_rec_len(const uint8_t *p)
{
    return ag__le32(p + REC_SIZE);
}

uint8_t ag__log_rec_kind(const uint8_t *p)
{
    return p[REC_KIND];
}

void ag__log_rec_id(const uint8_t *p, struct ag_uuid *out)
{
    memcpy(out->b, p + REC_ID, 16);
}

void ag__log_rec_fields(const uint8_t *p, struct log_rec *r)
{
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
    memset(out, 0, LOG_SEG_HDR);
    memcpy(out + SEG_MAGIC, LOG_SEG_MAGIC, 8);
    ag__put32(out + SEG_VERSION, LOG_FORMAT_VERSION);
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
    if (fv != LOG_FORMAT_VERSION && fv != LOG_FORMAT_V1)
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
