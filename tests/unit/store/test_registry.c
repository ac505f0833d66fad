/* The store backend registry: ag_store_open picks the adapter by URI scheme
 * (file:PATH, file://PATH, a bare path) and names the known schemes when it has
 * no adapter for one. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/store.h"

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/agora-registry-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(store_registry, .init = setup, .fini = teardown);

/* Open `uri`, append one event, close, and check the log landed in `sub`. */
static void open_append_close(const char *uri, const char *sub)
{
    struct ag_store_options o = {.no_sync = true};
    struct ag_store *s = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_open(uri, &o, &s, &err);
    cr_assert_eq(rc, 0, "%s: %s", uri, ag_err_msg(&err, rc));
    cr_assert_str_eq(s->ops->name, "log");
    struct ag_event_data ev = {.type = "T", .type_len = 1};
    struct ag_append_result res;
    cr_assert_eq(ag_store_append(s, "s-1", 3, AG_STORE_ANY, &ev, 1, &res, &err), 0, "%s", err.msg);
    ag_store_close(s);
    char seg[256];
    snprintf(seg, sizeof seg, "%s/seg-%020d.log", sub, 0);
    cr_assert_eq(access(seg, F_OK), 0, "%s: no %s", uri, seg);
}

Test(store_registry, file_scheme_opens_the_log)
{
    char uri[128], sub[96];
    snprintf(sub, sizeof sub, "%s/a", dir);
    snprintf(uri, sizeof uri, "file:%s", sub);
    open_append_close(uri, sub);
    snprintf(sub, sizeof sub, "%s/b", dir);
    snprintf(uri, sizeof uri, "file://%s", sub); /* file:///tmp/... */
    open_append_close(uri, sub);
}

Test(store_registry, bare_path_means_file)
{
    char sub[96];
    snprintf(sub, sizeof sub, "%s/c", dir);
    open_append_close(sub, sub);
    /* a relative path, and one with a colon that is not a scheme */
    cr_assert_eq(chdir(dir), 0);
    open_append_close("d", "d");
    open_append_close("./e:1", "./e:1");
}

Test(store_registry, unknown_scheme_is_unsupported_and_lists_the_known)
{
    struct ag_store *s = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_store_open("mysql://localhost/agora", NULL, &s, &err), AG_EUNSUPPORTED);
    cr_assert_str_eq(
        err.msg, "no store adapter for scheme 'mysql' (known: file, postgresql, postgres, shards)");
    cr_assert_null(s);
    cr_assert_eq(ag_store_open("", NULL, &s, &err), AG_EINVAL);
    cr_assert_eq(ag_store_open("file:", NULL, &s, &err), AG_EINVAL);
    cr_assert_str_eq(err.msg, "store URI 'file:' names no directory");
}

Test(store_registry, postgresql_unreachable_at_open_is_unavailable_with_the_reason)
{
    struct ag_store *s = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_store_open("postgresql:///agora?host=/nonexistent-agora-dir&connect_timeout=2",
                           NULL, &s, &err);
    cr_assert_eq(rc, AG_EUNAVAILABLE, "%s", ag_errname(rc));
    cr_assert(strstr(err.msg, "postgresql unreachable: ") &&
                  strstr(err.msg, "nonexistent-agora-dir"),
              "%s", err.msg);
    cr_assert_null(s);
    cr_assert_eq(ag_store_open("postgres:///agora?pool_size=0", NULL, &s, &err), AG_EINVAL);
    cr_assert(strstr(err.msg, "pool_size"), "%s", err.msg);
    cr_assert_eq(ag_store_open("postgres:///agora?schema=Bad-Name", NULL, &s, &err), AG_EINVAL);
}
