/* Data-driven protocol cases: every tests/data/http/<group>/<name>.req is fed to a
 * connection over the memory transport, in one piece and then byte by byte; the
 * output (Date lines removed, CRLF shown as LF) plus "== open" or "== closed" must
 * equal <name>.resp. AG_HTTP_REGEN=1 rewrites the .resp files (review the diff). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "testrouter.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct ag_buf b;
    ag_buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) ag_buf_append(&b, tmp, n);
    fclose(f);
    if (!b.data) ag_buf_puts(&b, "");
    return ag_buf_steal(&b, len);
}

/* Output without Date lines, CRLF -> LF, then the connection state. */
static void normalize(const struct ag_buf *out, bool closed, struct ag_buf *norm)
{
    const char *p = out->data ? out->data : "", *end = p + out->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
        if (!(len > 6 && strncmp(p, "Date: ", 6) == 0)) {
            size_t keep = len;
            if (nl && keep >= 2 && p[keep - 2] == '\r') {
                ag_buf_append(norm, p, keep - 2);
                ag_buf_putc(norm, '\n');
            } else {
                ag_buf_append(norm, p, keep);
            }
        }
        p += len;
    }
    ag_buf_puts(norm, closed ? "\n== closed\n" : "\n== open\n");
}

static void run(const char *req, size_t n, size_t step, struct ag_buf *norm)
{
    struct ag_http_router *r = test_router_new();
    struct ag__http_memconn *m;
    cr_assert_eq(ag__http_memconn_new(r, NULL, &m), 0);
    for (size_t i = 0; i < n; i += step) ag__http_memconn_feed(m, req + i, AG_MIN(step, n - i));
    normalize(&m->output, m->closed, norm);
    ag__http_memconn_free(m);
    ag_http_router_free(r);
}

static const char *data_dir(void)
{
    const char *src = getenv("AG_SOURCE_DIR");
    static char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/http", src ? src : ".");
    return path;
}

static int check_case(const char *dir, const char *name)
{
    char path[2048];
    size_t n, en;
    snprintf(path, sizeof path, "%s/%s.req", dir, name);
    char *req = slurp(path, &n);
    cr_assert_not_null(req, "cannot read %s", path);
    struct ag_buf whole, bytewise;
    ag_buf_init(&whole), ag_buf_init(&bytewise);
    run(req, n, n ? n : 1, &whole);
    run(req, n, 1, &bytewise);
    snprintf(path, sizeof path, "%s/%s.resp", dir, name);
    if (getenv("AG_HTTP_REGEN")) {
        FILE *f = fopen(path, "wb");
        fwrite(whole.data, 1, whole.len, f);
        fclose(f);
    }
    char *expect = slurp(path, &en);
    cr_assert_not_null(expect, "missing %s", path);
    cr_expect_str_eq(whole.data, expect, "%s/%s (whole)", dir, name);
    if (!strstr(name, "expect_continue")) /* the 100 depends on how the bytes arrive */
        cr_expect_str_eq(bytewise.data, expect, "%s/%s (byte by byte)", dir, name);
    ag_free(req), ag_free(expect);
    ag_buf_free(&whole), ag_buf_free(&bytewise);
    return 1;
}

static int run_group(const char *group)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/%s", data_dir(), group);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".req") != 0) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), e->d_name);
        count += check_case(dir, name);
    }
    closedir(d);
    return count;
}

Test(cases, good)
{
    cr_assert_gt(run_group("good"), 10);
}
Test(cases, edge)
{
    cr_assert_gt(run_group("edge"), 5);
}
Test(cases, malformed)
{
    cr_assert_gt(run_group("malformed"), 5);
}
Test(cases, smuggling)
{
    cr_assert_gt(run_group("smuggling"), 10);
}
