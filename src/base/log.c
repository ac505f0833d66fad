/* A structured logger: one JSON object per line, written with a single write(2)
 * so lines from several threads never interleave. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agora/base.h"

static atomic_int log_level = AG_LOG_INFO;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void ag_log_set_level(int level)
{
    atomic_store(&log_level, level);
}
int ag_log_get_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}
void ag_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

int ag_log_level_parse(const char *s)
{
    for (int i = 0; i <= AG_LOG_OFF; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    if (strcmp(s, "warning") == 0) return AG_LOG_WARN;
    return -1;
}

static void put_field(struct ag_buf *b, const struct ag_log_field *f)
{
    ag_buf_putc(b, ',');
    ag_buf_json_str(b, f->key, strlen(f->key));
    ag_buf_putc(b, ':');
    switch (f->kind) {
    case AG_LF_STR:
        if (f->v.s)
            ag_buf_json_str(b, f->v.s, strlen(f->v.s));
        else
            ag_buf_puts(b, "null");
        break;
    case AG_LF_RAW:
        ag_buf_puts(b, f->v.s ? f->v.s : "null");
        break;
    case AG_LF_INT:
        ag_buf_printf(b, "%lld", f->v.i);
        break;
    case AG_LF_UINT:
        ag_buf_printf(b, "%llu", f->v.u);
        break;
    case AG_LF_DBL:
        ag_buf_printf(b, "%.6g", f->v.d);
        break;
    case AG_LF_BOOL:
        ag_buf_puts(b, f->v.i ? "true" : "false");
        break;
    default:
        ag_buf_puts(b, "null");
        break;
    }
}

void ag_log_write(int level, const char *msg, const struct ag_log_field *f, size_t n)
{
    if (level < ag_log_get_level() || level < 0 || level >= AG_LOG_OFF) return;
    char ts[32];
    ag_time_rfc3339(ag_clock_now(ag_clock_system()), ts);
    struct ag_buf heap;
    ag_buf_init(&heap);
    ag_buf_printf(&heap, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
    ag_buf_json_str(&heap, msg, strlen(msg));
    for (size_t i = 0; i < n; i++)
        if (f[i].key) put_field(&heap, &f[i]);
    ag_buf_puts(&heap, "}\n");
    if (heap.data) {
        ssize_t w = write(atomic_load(&log_fd), heap.data, heap.len);
        (void)w;
    }
    ag_buf_free(&heap);
}
