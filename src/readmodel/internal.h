/*
 * Private to the read-model port: what an adapter provides (a `const struct
 * ag_rm_ops`, one per engine, in its own file) and the part of a handle and of a
 * row that every adapter's structs begin with, so the port can dispatch.
 */
#ifndef AGORA_READMODEL_INTERNAL_H
#define AGORA_READMODEL_INTERNAL_H

#include "agora/base.h"
#include "agora/readmodel.h"

struct ag_rm_ops {
    const char *scheme; /* "sqlite": URIs "sqlite:<loc>" */
    /* `loc` is the URI after "<scheme>:" (the whole URI for a bare directory) */
    int (*open)(const char *loc, const char *name, enum ag_rm_mode mode, struct ag_rm **out,
                struct ag_err *err);
    void (*close)(struct ag_rm *rm);
    void (*locate)(const char *loc, const char *name, char *out, size_t n);
    int (*set_aside)(const char *loc, const char *name, char *kept_as, size_t n,
                     struct ag_err *err);
    int (*drop)(const char *loc, const char *name, struct ag_err *err);
    int (*check)(struct ag_rm *rm, struct ag_err *err);
    /* can the database be reached (NULL: always, as a local file) */
    int (*ping)(struct ag_rm *rm, struct ag_err *err);
    /* ag_rm_lease (NULL: always held, as a file only one process writes) */
    int (*lease)(struct ag_rm *rm, const char *key, bool *held, bool *taken, struct ag_err *err);
    int (*exec)(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                struct ag_err *err);
    int (*query)(struct ag_rm *rm, const char *sql, const struct ag_rm_arg *args, size_t nargs,
                 ag_rm_row_fn row, void *ud, struct ag_err *err);
    int (*script)(struct ag_rm *rm, const char *sql, struct ag_err *err);
    int (*begin)(struct ag_rm *rm, struct ag_err *err);
    int (*commit)(struct ag_rm *rm, struct ag_err *err);
    void (*rollback)(struct ag_rm *rm);
    /* the current row's columns */
    const char *(*text)(const struct ag_rm_row *row, int col);
    int64_t (*int64)(const struct ag_rm_row *row, int col);
    bool (*is_null)(const struct ag_rm_row *row, int col);
    int (*ncols)(const struct ag_rm_row *row);
    /* a BLOB column's bytes (see ag_rm_blob) */
    bool (*blob)(const struct ag_rm_row *row, int col, void *buf, size_t cap, size_t *len);
};

/* The head of every adapter's handle. */
struct ag_rm {
    const struct ag_rm_ops *ops;
    enum ag_rm_mode mode;
    int last_code;      /* read-write handles: the outcome of the most recent call */
    char last_msg[256]; /* its engine message */
};

/* The head of every adapter's row. */
struct ag_rm_row {
    const struct ag_rm_ops *ops;
};

/* Record the outcome of a call on `rm` (read-write handles only: a read-only
 * handle is shared between threads) and fill `err`; returns `code`. */
int ag__rm_outcome(struct ag_rm *rm, int code, const char *msg, struct ag_err *err);

extern const struct ag_rm_ops ag__rm_sqlite_ops;
#ifdef AG_HAVE_PQ
extern const struct ag_rm_ops ag__rm_pg_ops;
#endif

#endif
