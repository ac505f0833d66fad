/* Growable byte buffers and string helpers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

void ag_buf_init(struct ag_buf *b)
{
    memset(b, 0, sizeof *b);
}

void ag_buf_free(struct ag_buf *b)
{
    ag_free(b->data);
    ag_buf_init(b);
}

void ag_buf_reset(struct ag_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

int ag_buf_reserve(struct ag_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len) return AG_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *d = ag_realloc(b->data, cap);
    if (!d) return AG_ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

int ag_buf_append(struct ag_buf *b, const void *p, size_t n)
{
    int rc = ag_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int ag_buf_puts(struct ag_buf *b, const char *s)
{
    return ag_buf_append(b, s, strlen(s));
}

int ag_buf_putc(struct ag_buf *b, char c)
{
    return ag_buf_append(b, &c, 1);
}

int ag_buf_vprintf(struct ag_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return AG_EINVAL;
    int rc = ag_buf_reserve(b, (size_t)n);
    if (rc) return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int ag_buf_printf(struct ag_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ag_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int ag_buf_json_str(struct ag_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = ag_buf_reserve(b, n + 2);
    if (rc) return rc;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc = 0;
        switch (c) {
        case '"':
            esc = '"';
            break;
        case '\\':
            esc = '\\';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        case '\b':
            esc = 'b';
            break;
        case '\f':
            esc = 'f';
            break;
        default:
            break;
        }
        if (esc) {
            char e[2] = {'\\', esc};
            rc = ag_buf_append(b, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = ag_buf_append(b, e, 6);
        } else {
            rc = ag_buf_append(b, &s[i], 1);
        }
        if (rc) return rc;
    }
    return ag_buf_putc(b, '"');
}

char *ag_buf_steal(struct ag_buf *b, size_t *len_out)
{
    char *d = b->data;
    if (len_out) *len_out = b->len;
    ag_buf_init(b);
    return d;
}

int ag_file_read(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -errno;
    struct ag_buf b;
    ag_buf_init(&b);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while (!rc && (n = fread(chunk, 1, sizeof chunk, f)) > 0) rc = ag_buf_append(&b, chunk, n);
    if (!rc && ferror(f)) rc = -EIO;
    fclose(f);
    if (!rc) rc = ag_buf_putc(&b, '\0');
    if (rc) {
        ag_buf_free(&b);
        return rc;
    }
    *len = b.len - 1;
    *out = ag_buf_steal(&b, NULL);
    return 0;
}

/* ---- strings ---- */

bool ag_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned min;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            min = 0x80;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            min = 0x800;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            min = 0x10000;
            c &= 0x07;
        } else
            return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

int ag_parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s) return AG_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s) return AG_EINVAL;
    *out = v;
    return 0;
}

int ag_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return AG_EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s) return AG_EINVAL;
    *out = v;
    return 0;
}

int ag_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s < '0' || *s > '9') return AG_EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return AG_EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 0:
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    default:
        return AG_EINVAL;
    }
    if (*end) {
        end++;
        if (*end == 'i' && end[1] == 'B')
            end += 2; /* 64MiB */
        else if (*end == 'B')
            end++; /* 64MB */
        if (*end) return AG_EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift)) return AG_EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}
