/*
 * Record compression with dictionaries trained on the log's own records.
 *
 * An event record's body (type | metadata | data) is one zstd frame when that is
 * shorter than the raw body (record flag bit 0; the header keeps the raw lengths
 * and the dictionary id, see RECORD in log.c). The stream name stays raw: the
 * recovery scan, the index and a scavenge read it without decompressing. Frames
 * are magicless, without content size, checksum or dictionary id (the record's
 * header and checksum carry all of that): ~9 bytes a record less than a default
 * frame.
 *
 * DICTIONARIES
 *   dict-<5-digit id>.zd, ids from 1, each immutable once written:
 *     "AGORADC1" | u32 id | u32 bytes | u64 XXH3-64 of the dictionary | dictionary
 *   A dictionary is written to a .tmp file, fdatasynced, renamed, and the directory
 *   fsynced, all BEFORE any record can name it: `cur` (the id new records use) is
 *   published only after that. Dictionaries are never deleted (a scavenge copies
 *   compressed records as they are), so a record's dictionary exists as long as
 *   the record does. At open every dict-*.zd is loaded and checked (magic, id,
 *   checksum) and the ids must run 1..n without a gap: a corrupt or missing one is
 *   an error naming the file, never a crash or a silent cut. A record naming an
 *   id that is not loaded is reported by the scan (open refuses, verify reports).
 *
 * TRAINING (a background thread; never on an appender's or the writer's path)
 *   The first dictionary is trained once the log holds `train_at` bytes (4 MiB;
 *   AGORA_STORE_DICT_TRAIN_BYTES for tests), from the bodies of the newest event
 *   records (up to 8 MiB, 30,000 records): event shapes of one deployment change
 *   rarely, so a 64 KiB dictionary from the first few MB captures the keys, the
 *   type names and the repeated metadata. It is retrained when the ratio degrades:
 *   appenders add raw and compressed bytes to two counters; each time 8 × train_at
 *   raw bytes went through the current dictionary, the window's ratio is compared
 *   with the first window measured after it was made, and a ratio 15% worse (event
 *   shapes changed: new types, new fields) trains a new one. Old dictionaries stay
 *   for the records that use them. The thread runs at nice 10: training takes a
 *   second or two of CPU, which should come from idle time, not from requests.
 *
 * CODEC CONTEXTS
 *   Compression happens in the appending thread as it encodes its records, with a
 *   per-thread ZSTD_CCtx and the dictionary's digested ZSTD_CDict (level 3);
 *   readers decompress with a per-thread ZSTD_DCtx and the dictionary's ZSTD_DDict,
 *   both made once when the dictionary is loaded or trained.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_format / ZSTD_d_format: magicless frames */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zdict.h>
#include <zstd.h>

#include "store/log/internal.h"

#define DICT_MAGIC        "AGORADC1"
#define DICT_HDR          24
#define DICT_BYTES        (64u << 10)
#define DICT_LEVEL        3
#define DICT_TRAIN_AT     (4ull << 20)
#define DICT_SAMPLE_BYTES (8u << 20)
#define DICT_SAMPLE_MAX   30000
#define DICT_DEGRADE      1.15
#define TRAINER_NICE      10

struct ldict {
    uint16_t id;
    ZSTD_CDict *c;
    ZSTD_DDict *d;
    size_t bytes;
};

/* ---- per-thread contexts ---- */

static pthread_key_t cctx_key, dctx_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void free_cctx(void *p)
{
    ZSTD_freeCCtx(p);
}
static void free_dctx(void *p)
{
    ZSTD_freeDCtx(p);
}
static void keys_make(void)
{
    pthread_key_create(&cctx_key, free_cctx);
    pthread_key_create(&dctx_key, free_dctx);
}

static ZSTD_CCtx *thread_cctx(void)
{
    pthread_once(&key_once, keys_make);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (c) return c;
    if (!(c = ZSTD_createCCtx())) return NULL;
    ZSTD_CCtx_setParameter(c, ZSTD_c_format, ZSTD_f_zstd1_magicless);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0);
    pthread_setspecific(cctx_key, c);
    return c;
}

static ZSTD_DCtx *thread_dctx(void)
{
    pthread_once(&key_once, keys_make);
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (d) return d;
    if (!(d = ZSTD_createDCtx())) return NULL;
    ZSTD_DCtx_setParameter(d, ZSTD_d_format, ZSTD_f_zstd1_magicless);
    pthread_setspecific(dctx_key, d);
    return d;
}

/* ---- dictionaries ---- */

static void dict_name(char out[40], uint16_t id, bool tmp)
{
    snprintf(out, 40, "dict-%05u.zd%s", (unsigned)id, tmp ? ".tmp" : "");
}

static const struct ldict *dict_get(const struct lstore *ls, uint16_t id)
{
    if (id == 0 || id > LOG_DICT_MAX) return NULL;
    return __atomic_load_n(&ls->dicts.v[id - 1], __ATOMIC_ACQUIRE);
}

bool ag__log_dict_present(const struct lstore *ls, uint16_t id)
{
    return id == 0 || dict_get(ls, id) != NULL;
}

static void dict_free(struct ldict *d)
{
    if (!d) return;
    ZSTD_freeCDict(d->c);
    ZSTD_freeDDict(d->d);
    ag_free(d);
}

static struct ldict *dict_make(uint16_t id, const void *bytes, size_t len)
{
    struct ldict *d = ag_calloc(1, sizeof *d);
    if (!d) return NULL;
    d->id = id;
    d->bytes = len;
    d->c = ZSTD_createCDict(bytes, len, DICT_LEVEL);
    d->d = ZSTD_createDDict(bytes, len);
    if (!d->c || !d->d) dict_free(d), d = NULL;
    return d;
}

static int read_file(int dir_fd, const char *name, struct ag_buf *b)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    int rc = fstat(fd, &st) ? -errno : 0;
    if (!rc && ag_buf_reserve(b, (size_t)st.st_size + 1)) rc = -ENOMEM;
    while (!rc && b->len < (size_t)st.st_size) {
        ssize_t n = read(fd, b->data + b->len, (size_t)st.st_size - b->len);
        if (n <= 0)
            rc = n < 0 ? -errno : -EIO;
        else
            b->len += (size_t)n;
    }
    close(fd);
    return rc;
}

/* Load one dictionary file: 0, or AG_ECORRUPT / AG_EIO / AG_ENOMEM with err set. */
static int dict_load(struct lstore *ls, uint16_t id, struct ag_err *err)
{
    char name[40];
    dict_name(name, id, false);
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = read_file(ls->dir_fd, name, &b);
    const uint8_t *p = (const uint8_t *)b.data;
    const char *why = NULL;
    if (rc == -ENOMEM)
        why = "out of memory";
    else if (rc)
        why = strerror(-rc);
    else if (b.len < DICT_HDR || memcmp(p, DICT_MAGIC, 8) != 0)
        why = "not a dictionary file (bad magic)";
    else if (ag__le32(p + 8) != id || ag__le32(p + 12) != b.len - DICT_HDR)
        why = "header does not match the file";
    else if (ag__le64(p + 16) != ag_xxh3(p + DICT_HDR, b.len - DICT_HDR))
        why = "checksum mismatch";
    struct ldict *d = why ? NULL : dict_make(id, p + DICT_HDR, b.len - DICT_HDR);
    if (!why && !d) why = "zstd refused it";
    ag_buf_free(&b);
    if (why)
        return ag_err_set(err,
                          rc == -ENOMEM ? AG_ENOMEM
                          : rc          ? AG_EIO
                                        : AG_ECORRUPT,
                          "%s/%s: %s (records compressed with this dictionary cannot be read; "
                          "restore the file from a backup)",
                          ls->dir, name, why);
    ls->dicts.v[id - 1] = d;
    return 0;
}

int ag__log_dicts_load(struct lstore *ls, struct ag_err *err)
{
    /* its own descriptor: a dup would share (and leave at the end) the offset */
    int fd = openat(ls->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d && fd >= 0) close(fd);
    if (!d) return ag_err_set(err, AG_EIO, "%s: %s", ls->dir, strerror(errno));
    uint32_t max = 0, n = 0;
    bool seen[LOG_DICT_MAX] = {false};
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned id;
        char tail[8];
        if (sscanf(de->d_name, "dict-%5u.%7s", &id, tail) != 2) continue;
        if (strcmp(tail, "zd.tmp") == 0) {
            if (!ls->read_only) unlinkat(ls->dir_fd, de->d_name, 0); /* never published */
            continue;
        }
        if (strcmp(tail, "zd") != 0 || id == 0 || id > LOG_DICT_MAX) continue;
        if (!seen[id - 1]) seen[id - 1] = true, n++;
        if (id > max) max = id;
    }
    closedir(d);
    for (uint32_t id = 1; id <= max; id++) {
        if (!seen[id - 1]) {
            char name[40];
            dict_name(name, (uint16_t)id, false);
            return ag_err_set(err, AG_ECORRUPT,
                              "%s/%s is missing (dictionaries 1..%u exist otherwise; records "
                              "compressed with it cannot be read: restore it from a backup)",
                              ls->dir, name, (unsigned)max);
        }
        int rc = dict_load(ls, (uint16_t)id, err);
        if (rc) return rc;
    }
    ls->dicts.n = (uint16_t)max;
    __atomic_store_n(&ls->dicts.cur, (uint16_t)max, __ATOMIC_RELEASE);
    (void)n;
    return 0;
}

void ag__log_dicts_free(struct lstore *ls)
{
    for (size_t i = 0; i < ls->dicts.n; i++) dict_free(ls->dicts.v[i]), ls->dicts.v[i] = NULL;
    ls->dicts.n = 0;
}

/* Write dictionary `id` durably (file and directory) before anything names it. */
static int dict_write(struct lstore *ls, uint16_t id, const void *bytes, size_t len,
                      struct ag_err *err)
{
    char tmp[40], name[40];
    dict_name(tmp, id, true);
    dict_name(name, id, false);
    uint8_t hdr[DICT_HDR];
    memcpy(hdr, DICT_MAGIC, 8);
    ag__put32(hdr + 8, id);
    ag__put32(hdr + 12, (uint32_t)len);
    ag__put64(hdr + 16, ag_xxh3(bytes, len));
    int fd = openat(ls->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : 0;
    if (!rc && (pwrite(fd, hdr, DICT_HDR, 0) != DICT_HDR ||
                pwrite(fd, bytes, len, DICT_HDR) != (ssize_t)len))
        rc = errno ? -errno : -EIO;
    if (!rc && !ls->base.opts.no_sync && fdatasync(fd)) rc = -errno;
    if (fd >= 0) close(fd);
    if (!rc && renameat(ls->dir_fd, tmp, ls->dir_fd, name)) rc = -errno;
    if (!rc && !ls->base.opts.no_sync && fsync(ls->dir_fd)) rc = -errno;
    if (rc) {
        unlinkat(ls->dir_fd, tmp, 0);
        return ag_err_set(err, AG_EIO, "%s/%s: %s", ls->dir, name, strerror(-rc));
    }
    return 0;
}

/* ---- the codec ---- */

int ag__log_compress(struct lstore *ls, const struct log_rec *r, struct ag_buf *out, uint16_t *dict)
{
    uint16_t id = __atomic_load_n(&ls->dicts.cur, __ATOMIC_ACQUIRE);
    const struct ldict *d = dict_get(ls, id);
    if (!d || ls->dicts.off) return 0; /* nothing trained yet: stored raw */
    size_t raw = (size_t)r->type_len + r->meta_len + r->data_len;
    if (raw > LOG_ZRAW_MAX) return 0;
    ZSTD_CCtx *c = thread_cctx();
    out->len = 0;
    if (!c || ag_buf_reserve(out, raw * 2 + ZSTD_compressBound(raw))) return 0;
    char *src = out->data + ZSTD_compressBound(raw); /* raw body after the frame's room */
    memcpy(src, r->type, r->type_len);
    memcpy(src + r->type_len, r->meta, r->meta_len);
    memcpy(src + r->type_len + r->meta_len, r->data, r->data_len);
    ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
    size_t z = ZSTD_isError(ZSTD_CCtx_refCDict(c, d->c))
                   ? raw
                   : ZSTD_compress2(c, out->data, ZSTD_compressBound(raw), src, raw);
    __atomic_add_fetch(&ls->dicts.raw, raw, __ATOMIC_RELAXED);
    if (ZSTD_isError(z) || z >= raw) {
        __atomic_add_fetch(&ls->dicts.comp, raw, __ATOMIC_RELAXED);
        return 0;
    }
    __atomic_add_fetch(&ls->dicts.comp, z, __ATOMIC_RELAXED);
    out->len = z;
    *dict = id;
    return 1;
}

int ag__log_rec_body(const struct lstore *ls, const uint8_t *p, struct log_rec *r,
                     struct ag_buf *scratch, const char **why)
{
    ag__log_rec_fields(p, r);
    if (!r->zbody) return 0;
    size_t raw = (size_t)r->type_len + r->meta_len + r->data_len;
    const struct ldict *d = dict_get(ls, r->dict);
    if (r->dict && !d) return *why = "its compression dictionary is missing", AG_ECORRUPT;
    ZSTD_DCtx *dc = thread_dctx();
    scratch->len = 0;
    if (!dc || ag_buf_reserve(scratch, raw + 1)) return *why = "out of memory", AG_ENOMEM;
    ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
    size_t n = ZSTD_isError(ZSTD_DCtx_refDDict(dc, d ? d->d : NULL))
                   ? (size_t)-1
                   : ZSTD_decompressDCtx(dc, scratch->data, raw, r->zbody, r->zbody_len);
    if (ZSTD_isError(n) || n != raw)
        return *why = "compressed body does not decode to its recorded lengths", AG_ECORRUPT;
    scratch->len = raw;
    r->type = scratch->data;
    r->meta = r->type + r->type_len;
    r->data = r->meta + r->meta_len;
    return 0;
}

size_t ag__log_rec_raw_size(const uint8_t *p)
{
    struct log_rec r;
    ag__log_rec_fields(p, &r);
    if (!r.zbody && !ag__log_rec_is3(p)) return r.size;
    return ag__log_rec_size(r.stream_len, r.type_len, r.meta_len, r.data_len);
}

int ag__log_rec_expand(const struct lstore *ls, const uint8_t *p, uint8_t *dst,
                       struct ag_buf *scratch, const char **why)
{
    struct log_rec r;
    int rc = ag__log_rec_body(ls, p, &r, scratch, why);
    if (rc) return rc;
    if (!r.zbody && !ag__log_rec_is3(p)) {
        memcpy(dst, p, r.size);
        return 0;
    }
    /* compressed, or compact (format 3): the raw, fixed-header form */
    r.zbody = NULL;
    r.size = (uint32_t)ag__log_rec_size(r.stream_len, r.type_len, r.meta_len, r.data_len);
    ag__log_rec_encode(dst, &r);
    ag__log_rec_seal(dst, r.position, r.version, r.time_ns);
    return 0;
}

/* ---- training ---- */

/* The loc of the first event at or after `pos`, from the sparse index (ix_lock). */
static uint64_t loc_near(const struct lstore *ls, uint64_t pos)
{
    size_t k = (size_t)(pos / LOG_SPARSE_EVERY);
    while (k < ls->sparse_len && ls->sparse[k] == LOC_NONE) k++;
    return k < ls->sparse_len ? ls->sparse[k] : LOC_NONE;
}

/* Copy the raw bodies of the newest event records (read side of ix_lock held). */
static int gather(struct lstore *ls, struct ag_buf *all, size_t **sizes, size_t *n)
{
    uint64_t head = ag__log_head(ls);
    /* positions back from the head whose records about fill the sample */
    uint64_t back = DICT_SAMPLE_MAX;
    uint64_t loc = loc_near(ls, head > back ? head - back : 0);
    if (loc == LOC_NONE || ls->nsegs == 0) return 0;
    struct ag_buf scratch;
    ag_buf_init(&scratch);
    *sizes = ag_malloc(DICT_SAMPLE_MAX * sizeof **sizes);
    if (!*sizes) return AG_ENOMEM;
    size_t si = (size_t)(loc_seg(loc) - ls->segs[0].segno);
    uint64_t off = loc_off(loc);
    int rc = 0;
    for (; si < ls->nsegs && !rc; si++, off = LOG_SEG_HDR) {
        const struct lseg *sg = &ls->segs[si];
        while (off < sg->end && *n < DICT_SAMPLE_MAX && all->len < DICT_SAMPLE_BYTES) {
            const uint8_t *p = sg->map + off;
            off += ag__log_rec_len(p);
            if (ag__log_rec_kind(p) != LOG_KIND_EVENT) continue;
            struct log_rec r;
            const char *why;
            if (ag__log_rec_body(ls, p, &r, &scratch, &why)) continue;
            size_t raw = (size_t)r.type_len + r.meta_len + r.data_len;
            if (ag_buf_append(all, r.type, r.type_len) || ag_buf_append(all, r.meta, r.meta_len) ||
                ag_buf_append(all, r.data, r.data_len)) {
                rc = AG_ENOMEM;
                break;
            }
            (*sizes)[(*n)++] = raw;
        }
    }
    ag_buf_free(&scratch);
    return rc;
}

int ag__log_dict_train(struct lstore *ls, struct ag_err *err)
{
    struct ag_buf all;
    ag_buf_init(&all);
    size_t *sizes = NULL, n = 0;
    pthread_rwlock_rdlock(&ls->ix_lock);
    int rc = gather(ls, &all, &sizes, &n);
    pthread_rwlock_unlock(&ls->ix_lock);
    uint16_t id = (uint16_t)(ls->dicts.n + 1);
    void *dict = rc ? NULL : ag_malloc(DICT_BYTES);
    if (!rc && !dict) rc = AG_ENOMEM;
    if (!rc && (n < 64 || id > LOG_DICT_MAX))
        rc = ag_err_set(err, AG_EINVAL, "too few records (%zu) or dictionaries to train one", n);
    size_t len = 0;
    if (!rc) {
        len = ZDICT_trainFromBuffer(dict, DICT_BYTES, all.data, sizes, (unsigned)n);
        if (ZDICT_isError(len))
            rc = ag_err_set(err, AG_EINVAL, "dictionary training failed: %s",
                            ZDICT_getErrorName(len));
    }
    struct ldict *d = NULL;
    if (!rc) rc = dict_write(ls, id, dict, len, err);
    if (!rc && !(d = dict_make(id, dict, len))) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) {
        __atomic_store_n(&ls->dicts.v[id - 1], d, __ATOMIC_RELEASE);
        __atomic_store_n(&ls->dicts.n, id, __ATOMIC_RELAXED);
        __atomic_store_n(&ls->dicts.cur, id, __ATOMIC_RELEASE); /* durable: records may name it */
        ls->dicts.base_ratio = 0;
        __atomic_store_n(&ls->dicts.raw, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ls->dicts.comp, 0, __ATOMIC_RELAXED);
        AG_INFO("store.dictionary_trained", AG_LU("id", id), AG_LU("bytes", len),
                AG_LU("samples", n), AG_LU("sample_bytes", all.len));
    }
    ag_free(dict);
    ag_free(sizes);
    ag_buf_free(&all);
    return rc;
}

static uint64_t log_bytes(struct lstore *ls)
{
    uint64_t b = 0;
    pthread_rwlock_rdlock(&ls->ix_lock);
    for (size_t i = 0; i < ls->nsegs; i++) b += ls->segs[i].end - LOG_SEG_HDR;
    pthread_rwlock_unlock(&ls->ix_lock);
    return b;
}

/* Whether to train now (TRAINING above). */
static bool want_training(struct lstore *ls)
{
    struct ldicts *t = &ls->dicts;
    if (t->n >= LOG_DICT_MAX || t->failed_at_head == ag__log_head(ls)) return false;
    if (__atomic_load_n(&t->cur, __ATOMIC_ACQUIRE) == 0) return log_bytes(ls) >= t->train_at;
    uint64_t raw = __atomic_load_n(&t->raw, __ATOMIC_RELAXED);
    if (raw < 8 * t->train_at) return false;
    double ratio = (double)__atomic_load_n(&t->comp, __ATOMIC_RELAXED) / (double)raw;
    __atomic_store_n(&t->raw, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&t->comp, 0, __ATOMIC_RELAXED);
    if (t->base_ratio == 0) {
        t->base_ratio = ratio;
        return false;
    }
    return ratio > t->base_ratio * DICT_DEGRADE;
}

static void train_if_wanted(struct lstore *ls)
{
    if (!want_training(ls)) return;
    struct ag_err err;
    ag_err_clear(&err);
    if (ag__log_dict_train(ls, &err)) {
        ls->dicts.failed_at_head = ag__log_head(ls);
        AG_WARN("store.dictionary_training_failed", AG_LS("error", err.msg));
    }
}

static void *trainer_main(void *arg)
{
    struct lstore *ls = arg;
    struct ldicts *t = &ls->dicts;
    ag_thread_background("ag-dict-trainer", TRAINER_NICE, true);
    pthread_mutex_lock(&t->lock);
    while (!t->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        if (t->quit) break;
        pthread_mutex_unlock(&t->lock);
        train_if_wanted(ls);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int ag__log_dict_start(struct lstore *ls)
{
    struct ldicts *t = &ls->dicts;
    /* tests and benchmarks: AGORA_STORE_COMPRESS=0 stores every record raw (the
     * format-1 encoding); AGORA_STORE_DICT_TRAIN_BYTES=0 trains only on request */
    const char *off = getenv("AGORA_STORE_COMPRESS");
    const char *env = getenv("AGORA_STORE_DICT_TRAIN_BYTES");
    t->off = off && strcmp(off, "0") == 0;
    t->train_at = env ? strtoull(env, NULL, 10) : DICT_TRAIN_AT;
    if (t->off || ls->read_only || t->train_at == 0) return 0;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    t->failed_at_head = UINT64_MAX;
    if (pthread_create(&t->th, NULL, trainer_main, ls) != 0) return AG_ENOMEM;
    t->started = true;
    return 0;
}

void ag__log_dict_stop(struct lstore *ls)
{
    struct ldicts *t = &ls->dicts;
    if (!t->started) return;
    pthread_mutex_lock(&t->lock);
    t->quit = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->th, NULL);
    t->started = false;
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
}
