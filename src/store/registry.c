/*
 * Store adapters by URI scheme: `ag_store_open("file:/var/lib/agora", ...)`.
 *
 * The port (store.c) knows no adapter; this table is the one place that names
 * them, so a new backend is one more row and one more folder under src/store/
 * (file: the embedded log, postgresql:/postgres: src/store/pg, shards: src/store/shard). A URI is
 * `scheme:rest`; a value without a scheme (a path such as `./data`, `/var/lib/agora` or `data`)
 * means `file:` and is the whole path. A scheme is a letter then letters, digits, '+', '-' or '.'
 * (RFC 3986), at least two characters, so a path never reads as one unless it has such a prefix.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "agora/store_log.h"
#include "agora/store_pg.h"
#include "agora/store_shard.h"
#include "store/internal.h"

typedef int (*open_fn)(const char *rest, const struct ag_store_options *opts, struct ag_store **out,
                       struct ag_err *err);

struct adapter {
    const char *scheme; /* without the ':' */
    open_fn open;       /* gets what follows "scheme:" */
};

/* file:PATH, file://PATH (so file:///abs works too): the embedded log in PATH. */
static int open_file(const char *rest, const struct ag_store_options *opts, struct ag_store **out,
                     struct ag_err *err)
{
    if (strncmp(rest, "//", 2) == 0) rest += 2;
    if (!*rest) return ag_err_set(err, AG_EINVAL, "store URI 'file:' names no directory");
    return ag_store_log_open(rest, opts, out, err);
}

/* postgresql://... and postgres://...: the whole URI goes to the adapter (libpq
 * reads both spellings). */
static int open_pg(const char *scheme, const char *rest, const struct ag_store_options *opts,
                   struct ag_store **out, struct ag_err *err)
{
    size_t n = strlen(scheme) + 1 + strlen(rest) + 1;
    char *uri = ag_malloc(n);
    if (!uri) return ag_err_set(err, AG_ENOMEM, "out of memory");
    snprintf(uri, n, "%s:%s", scheme, rest);
    int rc = ag_store_pg_open(uri, opts, out, err);
    ag_free(uri);
    return rc;
}

static int open_postgresql(const char *rest, const struct ag_store_options *opts,
                           struct ag_store **out, struct ag_err *err)
{
    return open_pg("postgresql", rest, opts, out, err);
}

static int open_postgres(const char *rest, const struct ag_store_options *opts,
                         struct ag_store **out, struct ag_err *err)
{
    return open_pg("postgres", rest, opts, out, err);
}

/* shards:URI,URI,...: the shard router over those stores (src/store/shard). */
static int open_shards(const char *rest, const struct ag_store_options *opts, struct ag_store **out,
                       struct ag_err *err)
{
    return ag_store_shard_open(rest, opts, out, err);
}

static const struct adapter adapters[] = {
    {"file", open_file},
    {"postgresql", open_postgresql},
    {"postgres", open_postgres},
    {"shards", open_shards},
};

/* Length of the scheme `uri` starts with, or 0 when it has none (a bare path). */
static size_t scheme_len(const char *uri)
{
    size_t n = 0;
    if (!((uri[0] >= 'a' && uri[0] <= 'z') || (uri[0] >= 'A' && uri[0] <= 'Z'))) return 0;
    while (uri[n] && (strchr("+-.", uri[n]) || (uri[n] >= '0' && uri[n] <= '9') ||
                      (uri[n] >= 'a' && uri[n] <= 'z') || (uri[n] >= 'A' && uri[n] <= 'Z')))
        n++;
    return uri[n] == ':' && n >= 2 ? n : 0;
}

int ag_store_open(const char *uri, const struct ag_store_options *opts, struct ag_store **out,
                  struct ag_err *err)
{
    if (!uri || !*uri) return ag_err_set(err, AG_EINVAL, "no store URI given");
    size_t n = scheme_len(uri);
    if (n == 0) return open_file(uri, opts, out, err);
    for (size_t i = 0; i < AG_ARRAY_SIZE(adapters); i++)
        if (strlen(adapters[i].scheme) == n && strncasecmp(uri, adapters[i].scheme, n) == 0)
            return adapters[i].open(uri + n + 1, opts, out, err);
    char known[128] = "";
    for (size_t i = 0; i < AG_ARRAY_SIZE(adapters); i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                 adapters[i].scheme);
    return ag_err_set(err, AG_EUNSUPPORTED, "no store adapter for scheme '%.*s' (known: %s)",
                      (int)n, uri, known);
}
