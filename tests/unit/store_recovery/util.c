/* Helpers for the store's recovery tests (see util.h). */
#include "util.h"

#include "store/log/internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- files ---- */

void scratch_dir(char out[64])
{
    snprintf(out, 64, "/tmp/agora-recovery-XXXXXX");
    cr_assert_not_null(mkdtemp(out), "mkdtemp");
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void path_in(char *out, size_t cap, const char *dir, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

uint64_t file_size_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s", path);
    return (uint64_t)st.st_size;
}

uint8_t *slurp(const char *path, size_t *len)
{
    *len = (size_t)file_size_of(path);
    uint8_t *p = malloc(*len ? *len : 1);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0 && p, "open %s", path);
    cr_assert_eq(pread(fd, p, *len, 0), (ssize_t)*len);
    close(fd);
    return p;
}

void spit(const char *path, const uint8_t *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "create %s", path);
    cr_assert_eq(write(fd, p, len), (ssize_t)len);
    close(fd);
}

void truncate_to(const char *path, uint64_t len)
{
    cr_assert_eq(truncate(path, (off_t)len), 0, "truncate %s", path);
}

void poke(const char *path, uint64_t off, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0, "open %s", path);
    cr_assert_eq(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
    close(fd);
}

void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    cr_assert(fd >= 0, "open %s", path);
    uint8_t b;
    cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* ---- writing ---- */

struct ag_store *open_ok(const char *dir, uint64_t segment_bytes)
{
    struct ag_store_options o = {.no_sync = true, .segment_bytes = segment_bytes};
    struct ag_store *s = NULL;
    struct ag_err err;
    int rc = ag_store_log_open(dir, &o, &s, &err);
    cr_assert_eq(rc, 0, "open %s: %s: %s", dir, ag_errname(rc), err.msg);
    return s;
}

static int64_t model_version(const struct model *m, const char *stream)
{
    int64_t v = -1;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->ev[i].stream, stream) == 0) v = m->ev[i].version;
    return v;
}

void append_batch(struct ag_store *s, struct model *m, const char *stream, size_t n,
                  size_t data_bytes)
{
    cr_assert(n <= 16 && m->n + n <= MODEL_MAX);
    struct ag_event_data ev[16];
    char *data[16];
    int64_t v = model_version(m, stream);
    for (size_t i = 0; i < n; i++) {
        data[i] = malloc(data_bytes + 64);
        int len = snprintf(data[i], data_bytes + 64, "{\"p\":%zu,\"pad\":\"%0*d\"}", m->n + i,
                           (int)data_bytes, 0);
        ev[i] = (struct ag_event_data){
            .type = "Tested", .type_len = 6, .data = data[i], .data_len = (size_t)len};
        ag_uuid_v7(&ev[i].id, NULL, NULL);
    }
    struct ag_append_result res;
    struct ag_err err;
    int rc = ag_store_append(s, stream, strlen(stream), v, ev, n, &res, &err);
    cr_assert_eq(rc, 0, "append: %s: %s", ag_errname(rc), err.msg);
    cr_assert_eq(res.first_position, m->n);
    for (size_t i = 0; i < n; i++) {
        struct model_ev *e = &m->ev[m->n++];
        snprintf(e->stream, sizeof e->stream, "%s", stream);
        e->version = v + 1 + (int64_t)i;
        e->id = ev[i].id;
        e->batch = m->batches;
        free(data[i]);
    }
    m->batches++;
}

static void append_all(struct ag_store *s, struct model *m, const size_t *sizes, size_t nb,
                       size_t data_bytes)
{
    for (size_t i = 0; i < nb; i++)
        append_batch(s, m, m->batches % 2 ? "b" : "a", sizes[i], data_bytes);
}

void crash_append(const char *dir, struct model *m, const size_t *sizes, size_t nb,
                  size_t data_bytes, uint64_t segment_bytes)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork");
    if (pid == 0) {
        struct ag_store_options o = {.no_sync = true, .segment_bytes = segment_bytes};
        struct ag_store *s;
        if (ag_store_log_open(dir, &o, &s, NULL)) _exit(3);
        append_all(s, m, sizes, nb, data_bytes);
        _exit(0); /* no close: no checkpoint, as after a crash */
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the crashing writer failed (%d)", st);
    /* the child's appends are in the files; replay them in our model */
    for (size_t i = 0; i < nb; i++) {
        const char *stream = m->batches % 2 ? "b" : "a";
        int64_t v = model_version(m, stream);
        for (size_t k = 0; k < sizes[i]; k++) {
            struct model_ev *e = &m->ev[m->n++];
            snprintf(e->stream, sizeof e->stream, "%s", stream);
            e->version = v + 1 + (int64_t)k;
            memset(&e->id, 0, sizeof e->id); /* filled in by reading back, below */
            e->batch = m->batches;
        }
        m->batches++;
    }
    /* learn the ids the child chose from a read-only look at the log */
    struct ag_store_options ro = {.read_only = true};
    struct ag_store *s;
    cr_assert_eq(ag_store_log_open(dir, &ro, &s, NULL), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, MODEL_MAX, &p, NULL), 0);
    cr_assert_eq(p.count, m->n, "read-only open sees %zu events, wrote %zu", p.count, m->n);
    for (size_t i = 0; i < p.count; i++) m->ev[i].id = p.events[i].id;
    ag_event_page_free(&p);
    ag_store_close(s);
}

void clean_append(const char *dir, struct model *m, const size_t *sizes, size_t nb,
                  size_t data_bytes, uint64_t segment_bytes)
{
    struct ag_store *s = open_ok(dir, segment_bytes);
    append_all(s, m, sizes, nb, data_bytes);
    ag_store_close(s);
}

/* ---- segment files ---- */

/* Records through the log's own decoder (record.c): segments of format 3 hold
 * compact records at any byte offset, older ones fixed-header records. */
size_t walk_segment(const char *path, struct seg_rec *out, size_t max)
{
    size_t len;
    uint8_t *p = slurp(path, &len);
    size_t n = 0;
    for (uint64_t off = 64; off < len && n < max;) {
        struct log_rec r;
        const char *why;
        if (ag__log_rec_decode(p + off, len - off, &r, &why)) break;
        out[n++] = (struct seg_rec){
            .off = off, .size = r.size, .kind = r.kind, .batch_left = r.batch_left};
        off += r.size;
    }
    free(p);
    return n;
}

size_t survivors(const struct seg_rec *r, size_t nr, uint64_t cut, uint64_t *end_off)
{
    size_t events = 0, pending = 0;
    *end_off = 64;
    for (size_t i = 0; i < nr && r[i].off + r[i].size <= cut; i++) {
        if (r[i].kind != 1) continue;
        pending++;
        if (r[i].batch_left == 0) {
            events += pending;
            pending = 0;
            *end_off = r[i].off + r[i].size;
        }
    }
    return events;
}

/* ---- checking ---- */

void assert_store_is(struct ag_store *s, const struct model *m, size_t k)
{
    struct ag_event_page p;
    struct ag_err err;
    int rc = ag_store_read_all(s, 0, AG_READ_FORWARD, MODEL_MAX, &p, &err);
    cr_assert_eq(rc, 0, "read_all: %s", err.msg);
    cr_assert_eq(p.count, k, "the store holds %zu events, expected %zu", p.count, k);
    for (size_t i = 0; i < k; i++) {
        const struct ag_event *e = &p.events[i];
        cr_assert_eq(e->position, i);
        cr_assert_eq(e->version, m->ev[i].version, "position %zu: version %lld, expected %lld", i,
                     (long long)e->version, (long long)m->ev[i].version);
        cr_assert_eq(memcmp(&e->id, &m->ev[i].id, 16), 0, "position %zu: wrong event id", i);
        cr_assert_eq(e->stream_len, strlen(m->ev[i].stream));
        cr_assert_eq(memcmp(e->stream, m->ev[i].stream, e->stream_len), 0);
    }
    ag_event_page_free(&p);
    struct ag_store_stats st;
    cr_assert_eq(ag_store_stats(s, &st), 0);
    cr_assert_eq(st.events, k);
    /* the stream index agrees with $all */
    const char *names[] = {"a", "b"};
    for (int j = 0; j < 2; j++) {
        int64_t want = -1, got = -2;
        for (size_t i = 0; i < k; i++)
            if (strcmp(m->ev[i].stream, names[j]) == 0) want = m->ev[i].version;
        cr_assert_eq(ag_store_stream_version(s, names[j], 1, &got), 0);
        cr_assert_eq(got, want, "stream %s at version %lld, expected %lld", names[j],
                     (long long)got, (long long)want);
    }
}

void assert_appends_after(struct ag_store *s, struct model *m)
{
    size_t before = m->n;
    append_batch(s, m, "a", 1, 8); /* asserts the position itself */
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(s, "a", 1, -1, AG_READ_BACKWARD, 1, &p, NULL), 0);
    cr_assert_eq(p.count, 1);
    cr_assert_eq(p.events[0].position, before);
    cr_assert_eq(memcmp(&p.events[0].id, &m->ev[before].id, 16), 0);
    ag_event_page_free(&p);
}

/* ---- log capture ---- */

static FILE *cap;

void log_capture_start(void)
{
    cap = tmpfile();
    cr_assert_not_null(cap);
    ag_log_set_level(AG_LOG_WARN);
    ag_log_set_fd(fileno(cap));
}

bool log_capture_has(const char *needle)
{
    static char text[65536];
    ssize_t n = pread(fileno(cap), text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = 0;
    return strstr(text, needle) != NULL;
}

size_t log_capture_count(const char *needle)
{
    static char text[262144];
    ssize_t n = pread(fileno(cap), text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = 0;
    size_t k = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) k++;
    return k;
}

void log_capture_stop(void)
{
    ag_log_set_fd(2);
    if (cap) fclose(cap);
    cap = NULL;
}

/* ---- dump ---- */

static int dump_stream(void *ud, const char *name, size_t len, int64_t version)
{
    struct ag_buf *b = ud;
    ag_buf_printf(b, "stream %.*s v%lld\n", (int)len, name, (long long)version);
    return 0;
}

char *dump_store(struct ag_store *s)
{
    struct ag_buf b;
    ag_buf_init(&b);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(s, 0, AG_READ_FORWARD, MODEL_MAX, &p, NULL), 0);
    for (size_t i = 0; i < p.count; i++) {
        cr_assert_eq(ag_event_to_json(&p.events[i], &b), 0);
        ag_buf_putc(&b, '\n');
    }
    ag_event_page_free(&p);
    /* list_streams order is the hash table's: sort by collecting per known name */
    struct ag_buf sb;
    ag_buf_init(&sb);
    cr_assert_eq(ag_store_list_streams(s, dump_stream, &sb), 0);
    ag_buf_printf(&b, "streams: %zu bytes listed\n", sb.len);
    const char *names[] = {"a", "b", "c"};
    for (int j = 0; j < 3; j++) {
        int64_t v;
        cr_assert_eq(ag_store_stream_version(s, names[j], 1, &v), 0);
        ag_buf_printf(&b, "version %s %lld\n", names[j], (long long)v);
        struct ag_snapshot snap;
        int rc = ag_store_load_snapshot(s, names[j], 1, &snap, NULL);
        if (rc == 0) {
            ag_buf_printf(&b, "snapshot %s v%lld %.*s\n", names[j], (long long)snap.version,
                          (int)snap.state_len, snap.state);
            ag_snapshot_free(&snap);
        } else {
            ag_buf_printf(&b, "snapshot %s %s\n", names[j], ag_errname(rc));
        }
    }
    ag_buf_free(&sb);
    return ag_buf_steal(&b, NULL);
}
