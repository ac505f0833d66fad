/* The services' test harness (svc_test.h): a platform per test, requests through
 * its router over the memory transport, answers read back from memory. */
#include "svc_test.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/internal.h"

struct ag_platform *t_plat;
static char dir[64];
static char sock[96];
static uv_loop_t loop;

void t_start(void)
{
    ag_log_set_level(ag_log_level_parse("warn"));
    snprintf(dir, sizeof dir, "/tmp/agora-svct-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    struct ag_platform_config cfg = {.data_dir = dir,
                                     .workers = 1,
                                     .seed = true,
                                     .no_sync = true,
                                     .saga_threads = 4,
                                     .behind_gateway = true,
                                     .unix_path = sock};
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_platform_start(&cfg, &t_plat, &err), 0, "%s", err.msg);
    cr_assert_eq(uv_loop_init(&loop), 0);
}

void t_stop(void)
{
    ag_platform_stop(t_plat);
    t_plat = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "a request was left unanswered");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void request_text(struct ag_buf *b, const char *method, const char *path, const char *who,
                         const char *body, const char *headers)
{
    ag_buf_printf(b, "%s %s HTTP/1.1\r\nHost: test\r\n", method, path);
    if (who) {
        const char *bar = strchr(who, '|');
        ag_buf_printf(b, "x-user-id: %.*s\r\nx-user-roles: %s\r\n", (int)(bar - who), who, bar + 1);
    }
    if (headers) ag_buf_puts(b, headers);
    if (body)
        ag_buf_printf(b, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(body), body);
    else
        ag_buf_puts(b, "\r\n");
}

/* Split the one answer in `out` into r. */
static void parse_answer(struct t_resp *r, const char *out, size_t len)
{
    const char *end = memmem(out, len, "\r\n\r\n", 4);
    cr_assert_not_null(end, "no complete answer: %.*s", (int)len, out);
    size_t hl = (size_t)(end - out);
    snprintf(r->head, sizeof r->head, "%.*s", (int)hl, out);
    cr_assert_eq(sscanf(out, "HTTP/1.1 %d", &r->status), 1, "%s", r->head);
    const char *body = end + 4;
    size_t bl = len - hl - 4;
    snprintf(r->text, sizeof r->text, "%.*s", (int)bl, body);
    r->body = bl ? json_loadb(body, bl, 0, NULL) : NULL;
}

int t_call(struct t_resp *r, const char *method, const char *path, const char *who,
           const char *body, const char *headers)
{
    memset(r, 0, sizeof *r);
    struct ag__http_memconn *m;
    cr_assert_eq(ag__http_memconn_new(t_plat->router, NULL, &m), 0);
    m->ctx.loop = &loop; /* the handlers' work is queued on (and answered from) this loop */
    struct ag_buf b;
    ag_buf_init(&b);
    request_text(&b, method, path, who, body, headers);
    ag__http_memconn_feed(m, b.data, b.len);
    ag_buf_free(&b);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the queued work has answered */
    parse_answer(r, m->output.data ? m->output.data : "", m->output.len);
    ag__http_memconn_free(m);
    return r->status;
}

void t_free(struct t_resp *r)
{
    json_decref(r->body);
    r->body = NULL;
}

const char *t_header(const struct t_resp *r, const char *name)
{
    static char v[512];
    v[0] = '\0';
    size_t n = strlen(name);
    for (const char *l = strstr(r->head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *s = h + n + 1;
            while (*s == ' ') s++;
            size_t vl = strcspn(s, "\r");
            snprintf(v, sizeof v, "%.*s", (int)vl, s);
            break;
        }
    }
    return v;
}

bool t_has_pointer(const struct t_resp *r, const char *pointer)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r->body, "errors"), i, e)
    {
        const char *p = json_string_value(json_object_get(e, "pointer"));
        if (p && strcmp(p, pointer) == 0) return true;
    }
    return false;
}

const char *t_str(const struct t_resp *r, const char *key)
{
    const char *s = json_string_value(json_object_get(r->body, key));
    return s ? s : "";
}

/* ---- scenario helpers ---- */

void t_register(const char *who, const char *email, char id[40], char account[40])
{
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Test Person\"}", email);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/customers", who, body, NULL), 201, "%s", r.text);
    if (id) snprintf(id, 40, "%s", t_str(&r, "id"));
    if (account) snprintf(account, 40, "%s", t_str(&r, "accountId"));
    t_free(&r);
}

void t_deposit(const char *who, const char *account, long long cents)
{
    char path[128], body[128];
    snprintf(path, sizeof path, "/api/v1/accounts/%s/deposits", account);
    snprintf(body, sizeof body, "{\"amount\":{\"amount\":%lld,\"currency\":\"USD\"}}", cents);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", path, who, body, NULL), 200, "%s", r.text);
    t_free(&r);
}

void t_product(int n, char id[40])
{
    t_catch_up();
    struct t_resp r;
    cr_assert_eq(t_call(&r, "GET", "/api/v1/products?limit=100", ANON, NULL, NULL), 200);
    json_t *p = json_array_get(json_object_get(r.body, "items"), (size_t)n);
    cr_assert_not_null(p, "no product %d: %s", n, r.text);
    snprintf(id, 40, "%s", json_string_value(json_object_get(p, "id")));
    t_free(&r);
}

void t_order(const char *who, const char *product, int qty, char order[40], char saga[40])
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"items\":[{\"productId\":\"%s\",\"quantity\":%d}],\"shippingAddress\":"
             "{\"street\":\"1 Main St\",\"city\":\"Springfield\",\"state\":\"IL\","
             "\"zipCode\":\"62701\",\"country\":\"US\"}}",
             product, qty);
    struct t_resp r;
    cr_assert_eq(t_call(&r, "POST", "/api/v1/orders", who, body, NULL), 202, "%s", r.text);
    if (order) snprintf(order, 40, "%s", t_str(&r, "orderId"));
    if (saga) snprintf(saga, 40, "%s", t_str(&r, "sagaId"));
    t_free(&r);
}

void t_catch_up(void)
{
    svc_rm_catch_up(&t_plat->env);
}

const char *t_saga_wait(const char *saga, char status[32])
{
    char path[128];
    snprintf(path, sizeof path, "/api/v1/sagas/%s", saga);
    for (int i = 0; i < 2000; i++) { /* bounded: 20 s */
        t_catch_up();
        struct t_resp r;
        int st = t_call(&r, "GET", path, ADMIN, NULL, NULL);
        snprintf(status, 32, "%s", t_str(&r, "status"));
        t_free(&r);
        if (st == 200 && strcmp(status, "running") != 0) return status;
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    cr_assert_fail("saga %s still %s after 20 s", saga, status);
    return status;
}
