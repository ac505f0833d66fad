/*
 * The read-model port's front: the registry of adapters by URI scheme, dispatch to
 * the adapter's ops, and what is the same on every engine (the projection
 * checkpoint, written with portable SQL through the adapter's own exec).
 *
 * Adding an engine: write src/readmodel/<engine>.c exporting a `const struct
 * ag_rm_ops` (see internal.h) and add it to `adapters[]` below. A URI without a
 * scheme (no ':') is a directory for the SQLite adapter, as `--data` paths are.
 */
#include <stdio.h>
#include <string.h>

#include "readmodel/internal.h"

static const struct ag_rm_ops *const adapters[] = {
    &ag__rm_sqlite_ops,
#ifdef AG_HAVE_PQ
    &ag__rm_pg_ops, /* postgresql://... */
#endif
};

/* The adapter of `uri` and where its location starts, or NULL. */
static const struct ag_rm_ops *adapter_for(const char *uri, const char **loc)
{
    if (!uri) return NULL;
    const char *colon = strchr(uri, ':');
    if (!colon) {
        *loc = uri;
        return &ag__rm_sqlite_ops;
    }
    for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++) {
        size_t n = strlen(adapters[i]->scheme);
        if ((size_t)(colon - uri) == n && memcmp(uri, adapters[i]->scheme, n) == 0) {
            *loc = colon + 1;
            return adapters[i];
        }
    }
    return NULL;
}

static int unknown(const char *uri, struct ag_err *err)
{
    return ag_err_set(err, AG_EINVAL,
                      "%s: unknown read-model scheme (want sqlite:<dir> or postgresql://...)",
                      uri ? uri : "(null)");
}

int ag__rm_outcome(struct ag_rm *rm, int code, const char *msg, struct ag_err *err)
{
    if (rm && rm->mode == AG_RM_READWRITE) {
        rm->last_code = code;
        if (code)
            snprintf(rm->last_msg, sizeof rm->last_msg, "%s", msg ? msg : "");
        else
            rm->last_msg[0] = '\0';
    }
    if (code) ag_err_set(err, code, "%s", msg ? msg : ag_strerror(code));
    return code;
}

/* ---- opening ---- */

int ag_rm_open(const char *uri, const char *name, enum ag_rm_mode mode, struct ag_rm **out,
               struct ag_err *err)
{
    const char *loc;
    const struct ag_rm_ops *ops = adapter_for(uri, &loc);
    *out = NULL;
    if (!ops) return unknown(uri, err);
    int rc = ops->open(loc, name, mode, out, err);
    if (rc) return rc;
    (*out)->ops = ops;
    (*out)->mode = mode;
    return 0;
}

void ag_rm_close(struct ag_rm *rm)
{
    if (rm) rm->ops->close(rm);
}

void ag_rm_locate(const char *uri, const char *name, char *out, size_t n)
{
    const char *loc;
    const struct ag_rm_ops *ops = adapter_for(uri, &loc);
    if (ops)
        ops->locate(loc, name, out, n);
    else
        snprintf(out, n, "%s/%s", uri ? uri : "?", name);
}

int ag_rm_set_aside(const char *uri, const char *name, char *kept_as, size_t n, struct ag_err *err)
{
    const char *loc;
    const struct ag_rm_ops *ops = adapter_for(uri, &loc);
    return ops ? ops->set_aside(loc, name, kept_as, n, err) : unknown(uri, err);
}

int ag_rm_drop(const char *uri, const char *name, struct ag_err *err)
{
    const char *loc;
    const struct ag_rm_ops *ops = adapter_for(uri, &loc);
    return ops ? ops->drop(loc, name, err) : unknown(uri, err);
}

int ag_rm_check(struct ag_rm *rm, struct ag_err *err)
{
    return rm->ops->check(rm, err);
}

int ag_rm_ping(struct ag_rm *rm, struct ag_err *err)
{
    return rm->ops->ping ? rm->ops->ping(rm, err) : 0;
}

int ag_rm_lease(struct ag_rm *rm, const char *key, bool *held, bool *taken, struct ag_err *err)
{
    bool t = false;
    *held = true;
    int rc = rm->ops->lease ? rm->ops->lease(rm, key, held, &t, err) : 0;
    if (taken) *taken = t;
    return rc;
}

/* ---- statements ---- */

int ag_rm_exec(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
               struct ag_err *err)
{
    return rm->ops->exec(rm, sql, args, nargs, err);
}

int ag_rm_query(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                ag_rm_row_fn row, void *ud, struct ag_err *err)
{
    return rm->ops->query(rm, sql, args, nargs, row, ud, err);
}

int ag_rm_script(struct ag_rm *rm, const char *sql, struct ag_err *err)
{
    return rm->ops->script(rm, sql, err);
}

const char *ag_rm_text(const struct ag_rm_row *row, int col)
{
    return row->ops->text(row, col);
}

int64_t ag_rm_int64(const struct ag_rm_row *row, int col)
{
    return row->ops->int64(row, col);
}

bool ag_rm_is_null(const struct ag_rm_row *row, int col)
{
    return row->ops->is_null(row, col);
}

int ag_rm_ncols(const struct ag_rm_row *row)
{
    return row->ops->ncols(row);
}

bool ag_rm_blob(const struct ag_rm_row *row, int col, void *buf, size_t cap, size_t *len)
{
    *len = 0;
    return row->ops->blob(row, col, buf, cap, len);
}

/* ---- ids ---- */

struct ag_rm_arg ag_rm_id_arg(const char *id, uint8_t buf[16])
{
    struct ag_uuid u;
    char canon[AG_UUID_STRLEN + 1];
    if (!id || ag_uuid_parse(id, strlen(id), &u)) return AG_RM_TEXT(id);
    ag_uuid_format(&u, canon);
    if (memcmp(canon, id, AG_UUID_STRLEN) != 0) return AG_RM_TEXT(id); /* not lower case */
    memcpy(buf, u.b, 16);
    return AG_RM_BLOB(buf, 16);
}

const char *ag_rm_id(const struct ag_rm_row *row, int col, char out[AG_RM_ID_MAX])
{
    uint8_t b[AG_RM_ID_MAX];
    size_t n;
    if (!ag_rm_blob(row, col, b, sizeof b, &n)) return ag_rm_text(row, col);
    if (n == 16) {
        struct ag_uuid u;
        memcpy(u.b, b, 16);
        ag_uuid_format(&u, out);
        return out;
    }
    if (n >= AG_RM_ID_MAX || memchr(b, 0, n)) return NULL; /* not an id */
    /* an id that is not a UUID, kept as bytes (PostgreSQL reads text into bytea) */
    memcpy(out, b, n);
    out[n] = '\0';
    return out;
}

/* ---- transactions and checkpoints ---- */

int ag_rm_begin(struct ag_rm *rm, struct ag_err *err)
{
    return rm->ops->begin(rm, err);
}

int ag_rm_commit(struct ag_rm *rm, struct ag_err *err)
{
    return rm->ops->commit(rm, err);
}

void ag_rm_rollback(struct ag_rm *rm)
{
    rm->ops->rollback(rm);
}

static int read_position(const struct ag_rm_row *row, void *ud)
{
    *(uint64_t *)ud = (uint64_t)ag_rm_int64(row, 0);
    return 1;
}

int ag_rm_checkpoint_get(struct ag_rm *rm, const char *name, uint64_t *pos, struct ag_err *err)
{
    *pos = 0;
    struct ag_rm_arg arg = AG_RM_TEXT(name);
    return ag_rm_query(rm, "SELECT position FROM ag_checkpoint WHERE name=?1", &arg, 1,
                       read_position, pos, err);
}

int ag_rm_checkpoint_set(struct ag_rm *rm, const char *name, uint64_t pos, struct ag_err *err)
{
    struct ag_rm_arg args[] = {AG_RM_TEXT(name), AG_RM_INT(pos)};
    return ag_rm_exec(rm,
                      "INSERT INTO ag_checkpoint(name, position) VALUES(?1, ?2) "
                      "ON CONFLICT(name) DO UPDATE SET position=excluded.position",
                      args, 2, err);
}

int ag_rm_last_error(const struct ag_rm *rm)
{
    return rm ? rm->last_code : 0;
}

const char *ag_rm_last_message(const struct ag_rm *rm)
{
    return rm ? rm->last_msg : "";
}
