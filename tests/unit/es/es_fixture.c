/* The repository tests' fixture (es_fixture.h): a temporary directory, a log store
 * in it and a repository over that store. */
#include "es_fixture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "agora/store_log.h"

void fx_tmpdir(char *dir, const char *name)
{
    snprintf(dir, 64, "/tmp/agora-%s-XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

void fx_rmdir(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

void es_fx_open(struct es_fx *fx, const char *name, struct ag_es_repo_config rc)
{
    fx_tmpdir(fx->dir, name);
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(fx->dir, &o, &fx->store, NULL), 0);
    rc.store = fx->store;
    cr_assert_eq(ag_es_repo_new(&rc, &fx->repo), 0);
}

void es_fx_close(struct es_fx *fx)
{
    ag_es_repo_free(fx->repo);
    ag_store_close(fx->store);
    fx_rmdir(fx->dir);
}
