/* Record and segment-header encoding for the embedded log. The layout is
 * documented at the top of log.c; this file is its only encoder and decoder. */
#include "store/log/internal.h"

size_t ag__log_rec_size(size_t stream_len, size_t type_len, size_t meta_len, size_t data_len)
{
    size_t body = stream_len + type_len + meta_len + data_len;
    size_t raw = LOG_REC_HDR + body + LOG_REC_TRAILER;
    return (raw + LOG_REC_ALIGN - 1) & ~(size_t)(LOG_REC_ALIGN - 1);
}

void ag__log_rec_encode(uint8_t *p, const struct log_rec *r)
{
    memset(p, 0, LOG_REC_HDR);
    ag__put32(p + 0, r->size);
    p[4] = r->kind;
    p[5] = 0;
    p[6] = (uint8_t)r->stream_len;
    p[7] = (uint8_t)(r->stream_len >> 8);
    ag__put64(p + 8, r->position);
    ag__put64(p + 16, (uint64_t)r->version);
    memcpy(p + 24, r->id.b, 16);
    ag__put64(p + 40, r->time_ns);
    ag__put32(p + 48, r->batch_left);
    p[52] = (uint8_t)r->type_len;
    p[53] = (uint8_t)(r->type_len >> 8);
    ag__put32(p + 56, r->meta_len);
    ag__put32(p + 60, r->data_len);
    uint8_t *b = p + LOG_REC_HDR;
    memcpy(b, r->stream, r->stream_len), b += r->stream_len;
    if (r->type_len) memcpy(b, r->type, r->type_len), b += r->type_len;
    if (r->meta_len) memcpy(b, r->meta, r->meta_len), b += r->meta_len;
    if (r->data_len) memcpy(b, r->data, r->data_len), b += r->data_len;
    memset(b, 0, (size_t)(p + r->size - b)); /* padding and checksum */
}

void ag__log_rec_seal(uint8_t *p, uint64_t position, int64_t version, uint64_t time_ns)
{
    uint32_t size = ag__le32(p);
    ag__put64(p + 8, position);
    ag__put64(p + 16, (uint64_t)version);
    ag__put64(p + 40, time_ns);
    ag__put64(p + size - 8, ag_xxh3(p, size - 8));
}

int ag__log_rec_decode(const uint8_t *p, size_t avail, struct log_rec *r, const char **why)
{
    if (avail < LOG_REC_MIN) return *why = "truncated record header", AG_ECORRUPT;
    r->size = ag__le32(p);
    if (r->size == 0) return *why = "zeroed bytes where a record should start", AG_ECORRUPT;
    if (r->size < LOG_REC_MIN || r->size % LOG_REC_ALIGN)
        return *why = "impossible record size", AG_ECORRUPT;
    if (r->size > avail) return *why = "record runs past the end of the segment", AG_ECORRUPT;
    if (ag__le64(p + r->size - 8) != ag_xxh3(p, r->size - 8))
        return *why = "checksum mismatch", AG_ECORRUPT;
    r->kind = p[4];
    if (r->kind != LOG_KIND_EVENT && r->kind != LOG_KIND_SNAPSHOT)
        return *why = "unknown record kind", AG_ECORRUPT;
    r->stream_len = (uint16_t)(p[6] | p[7] << 8);
    r->position = ag__le64(p + 8);
    r->version = (int64_t)ag__le64(p + 16);
    memcpy(r->id.b, p + 24, 16);
    r->time_ns = ag__le64(p + 40);
    r->batch_left = ag__le32(p + 48);
    r->type_len = (uint16_t)(p[52] | p[53] << 8);
    r->meta_len = ag__le32(p + 56);
    r->data_len = ag__le32(p + 60);
    uint64_t body = (uint64_t)r->stream_len + r->type_len + r->meta_len + r->data_len;
    if (ag__log_rec_size(0, 0, 0, 0) + body > r->size || r->stream_len == 0 ||
        r->stream_len > AG_STORE_STREAM_MAX || r->version < 0)
        return *why = "record fields do not fit its size", AG_ECORRUPT;
    const char *b = (const char *)p + LOG_REC_HDR;
    r->stream = b, b += r->stream_len;
    r->type = b, b += r->type_len;
    r->meta = b, b += r->meta_len;
    r->data = b;
    return 0;
}

void ag__log_seg_header(uint8_t out[LOG_SEG_HDR], uint64_t segno, uint64_t base_position,
                        uint64_t now_ns)
{
    memset(out, 0, LOG_SEG_HDR);
    memcpy(out, LOG_SEG_MAGIC, 8);
    ag__put32(out + 8, LOG_FORMAT_VERSION);
    ag__put32(out + 12, LOG_SEG_HDR);
    ag__put64(out + 16, base_position);
    ag__put64(out + 24, segno);
    ag__put64(out + 32, now_ns);
    ag__put64(out + 56, ag_xxh3(out, 56));
}

int ag__log_seg_header_check(const uint8_t *p, size_t avail, uint64_t segno, const char **why)
{
    if (avail < LOG_SEG_HDR) return *why = "segment header truncated", AG_ECORRUPT;
    if (memcmp(p, LOG_SEG_MAGIC, 8) != 0)
        return *why = "not an agora segment (bad magic)", AG_ECORRUPT;
    if (ag__le64(p + 56) != ag_xxh3(p, 56))
        return *why = "segment header checksum mismatch", AG_ECORRUPT;
    if (ag__le32(p + 8) != LOG_FORMAT_VERSION)
        return *why = "segment written by an unknown format version", AG_ECORRUPT;
    if (ag__le64(p + 24) != segno)
        return *why = "segment number does not match its file name", AG_ECORRUPT;
    return 0;
}
