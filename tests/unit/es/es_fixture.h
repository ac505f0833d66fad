/* Shared by the repository tests of this folder (test_es.c, test_multi.c,
 * test_meta.c, test_upcast.c, test_cache.c; async_fixture.h, relay_fixture.c): a
 * temporary directory for one test, and in it a log store (no fsync) with a
 * repository over it. es_fixture.c is linked into the folder's one test executable
 * (every .c of tests/unit/<module>/) and defines no test; every function asserts, failing
 * the calling test (Criterion runs each test in its own process). */
#ifndef AG_TEST_ES_FIXTURE_H
#define AG_TEST_ES_FIXTURE_H

#include "agora/es.h"

/* Creates dir (64 bytes) as /tmp/agora-<name>-XXXXXX. */
void fx_tmpdir(char *dir, const char *name);
/* Removes dir and all it holds. */
void fx_rmdir(const char *dir);

struct es_fx {
    char dir[64];            /* /tmp/agora-<name>-XXXXXX, removed by es_fx_close */
    struct ag_store *store;  /* the log store in dir */
    struct ag_es_repo *repo; /* over store */
};

/* Creates fx->dir, the log store there and a repository configured as rc (whose
 * .store is set here). */
void es_fx_open(struct es_fx *fx, const char *name, struct ag_es_repo_config rc);
/* Frees the repository, closes the store, removes the directory. */
void es_fx_close(struct es_fx *fx);

#endif
