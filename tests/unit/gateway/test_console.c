/* The operator console's one-time codes (src/gateway/console.c) with an injected
 * clock: a code redeems once (the second try is refused, as is a concurrent one:
 * only the unlink winner gets through), it expires after its TTL (and is gone
 * then), only its SHA-256 is on disk (the code itself appears in no file name or
 * content), expired ones are swept when a new one is made, malformed or unknown
 * codes are refused, and the embedded console files
 * carry a content type and a strong ETag. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/gateway.h"
#include "gateway/console_assets.h"

#define SEC 1000000000ull

static struct ag_fake_clock fc;
static char dir[] = "/tmp/agora-console-XXXXXX";

static void setup(void)
{
    ag_fake_clock_init(&fc, 1700000000ull * SEC);
    strcpy(dir, "/tmp/agora-console-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(gateway_console, .init = setup, .fini = teardown);

static int files_in_codes_dir(const char *must_not_contain)
{
    char sub[128];
    snprintf(sub, sizeof sub, "%s/console-codes", dir);
    DIR *d = opendir(sub);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        n++;
        if (must_not_contain) cr_assert_null(strstr(e->d_name, must_not_contain));
    }
    closedir(d);
    return n;
}

Test(gateway_console, a_code_works_once)
{
    char code[65];
    struct ag_err err;
    cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, code, &err), 0, "%s", err.msg);
    cr_assert_eq(strlen(code), 64);
    cr_assert_eq(files_in_codes_dir(code), 1); /* stored by its hash, not as itself */
    ag_fake_clock_advance(&fc, 10 * SEC);
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(files_in_codes_dir(NULL), 0);
}

Test(gateway_console, a_code_expires)
{
    char code[65];
    struct ag_err err;
    cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, code, &err), 0);
    ag_fake_clock_advance(&fc, 300 * SEC);
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), AG_ETIMEDOUT);
    /* and it is gone: no second chance with a slower clock */
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(files_in_codes_dir(NULL), 0);
    /* one second before its expiry it still works */
    cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, code, &err), 0);
    ag_fake_clock_advance(&fc, 299 * SEC);
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), 0);
}

Test(gateway_console, making_a_code_sweeps_expired_ones)
{
    char a[65], b[65], c[65];
    struct ag_err err;
    cr_assert_eq(ag_gateway_console_code(dir, 60, &fc.clock, a, &err), 0);
    cr_assert_eq(ag_gateway_console_code(dir, 600, &fc.clock, b, &err), 0);
    ag_fake_clock_advance(&fc, 120 * SEC);
    cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, c, &err), 0);
    cr_assert_eq(files_in_codes_dir(NULL), 2); /* a was swept; b and c wait */
    cr_assert_eq(ag_gateway_console_redeem(dir, b, &fc.clock, &err), 0);
    cr_assert_eq(ag_gateway_console_redeem(dir, c, &fc.clock, &err), 0);
}

Test(gateway_console, unknown_and_malformed_codes_are_refused)
{
    struct ag_err err;
    char code[65];
    cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, code, &err), 0);
    char other[65];
    memcpy(other, code, 65);
    other[0] = other[0] == 'a' ? 'b' : 'a';
    cr_assert_eq(ag_gateway_console_redeem(dir, other, &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(ag_gateway_console_redeem(dir, "../../etc/passwd", &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(ag_gateway_console_redeem(dir, "", &fc.clock, &err), AG_ENOTFOUND);
    code[10] = 'Z';
    cr_assert_eq(ag_gateway_console_redeem(dir, code, &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(ag_gateway_console_redeem(NULL, code, &fc.clock, &err), AG_ENOTFOUND);
    cr_assert_eq(files_in_codes_dir(NULL), 1); /* the real one is untouched */
}

struct racer {
    const char *code;
    int rc;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct ag_err err;
    r->rc = ag_gateway_console_redeem(dir, r->code, &fc.clock, &err);
    return NULL;
}

Test(gateway_console, racing_redeems_let_one_through)
{
    for (int round = 0; round < 20; round++) {
        char code[65];
        struct ag_err err;
        cr_assert_eq(ag_gateway_console_code(dir, 300, &fc.clock, code, &err), 0);
        pthread_t t[4];
        struct racer r[4];
        for (int i = 0; i < 4; i++) {
            r[i] = (struct racer){code, -1};
            pthread_create(&t[i], NULL, race, &r[i]);
        }
        int ok = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            ok += r[i].rc == 0;
        }
        cr_assert_eq(ok, 1, "round %d: %d redeems succeeded", round, ok);
    }
}

Test(gateway_console, files_are_embedded_with_types_and_etags)
{
    bool index = false, app = false;
    for (const struct ag_console_asset *a = ag_console_assets; a->path; a++) {
        cr_assert_gt(a->len, 0);
        cr_assert_eq(a->etag[0], '"');
        cr_assert_eq(strlen(a->etag), 18);
        if (!strcmp(a->path, "index.html")) {
            index = true;
            cr_assert_str_eq(a->content_type, "text/html; charset=utf-8");
            cr_assert_not_null(strstr((const char *)a->data, "/console/app.js"));
        }
        if (!strcmp(a->path, "app.js")) {
            app = true;
            cr_assert_str_eq(a->content_type, "text/javascript; charset=utf-8");
        }
    }
    cr_assert(index && app);
}
