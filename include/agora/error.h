/*
 * agora error codes.
 *
 * Every fallible function returns 0 on success or a negative AG_E* code from the
 * table below. Richer context (which field, which stream, which offset) travels in
 * an optional `struct ag_err` out-parameter that the callee fills with a message.
 * The table is an X-macro so names, codes and messages never drift apart.
 */
#ifndef AGORA_ERROR_H
#define AGORA_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define AG_EXTERN __attribute__((visibility("default")))

/* X(name, message) */
#define AG_ERROR_TABLE(X)                                                                          \
    X(NOMEM, "out of memory")                                                                      \
    X(INVAL, "invalid argument")                                                                   \
    X(IO, "input/output error")                                                                    \
    X(AGAIN, "resource temporarily unavailable")                                                   \
    X(NOTFOUND, "not found")                                                                       \
    X(EXISTS, "already exists")                                                                    \
    X(CONFLICT, "wrong expected version")                                                          \
    X(IDEMPOTENCY, "event id already used with different content")                                 \
    X(CORRUPT, "corrupt data")                                                                     \
    X(LOCKED, "locked by another process")                                                         \
    X(TOOBIG, "too large")                                                                         \
    X(CLOSED, "closed")                                                                            \
    X(TIMEDOUT, "timed out")                                                                       \
    X(CANCELED, "canceled")                                                                        \
    X(JSON, "malformed JSON")                                                                      \
    X(FAILED, "store failed; reopen required")                                                     \
    X(UNSUPPORTED, "not supported")                                                                \
    X(REJECTED, "rejected")                                                                        \
    X(CIRCUIT_OPEN, "circuit breaker open")                                                        \
    X(BULKHEAD_FULL, "bulkhead full")                                                              \
    X(RATE_LIMITED, "rate limited")                                                                \
    X(CONNECT, "connection failed")                                                                \
    X(RESET, "connection reset")                                                                   \
    X(PROTOCOL, "protocol error")                                                                  \
    X(POOL_TIMEOUT, "timed out waiting for a pooled connection")                                   \
    X(UPSTREAM, "upstream error")                                                                  \
    X(DOMAIN, "business rule violated")                                                            \
    X(CONFIG, "invalid configuration")                                                             \
    X(UNAVAILABLE, "store unavailable: writes are failing")

enum ag__err_index {
#define AG__X(name, msg) AG__EI_##name,
    AG_ERROR_TABLE(AG__X)
#undef AG__X
        AG__EI_COUNT
};

enum ag_errno {
    AG_OK = 0,
#define AG__X(name, msg) AG_E##name = -(1000 + AG__EI_##name),
    AG_ERROR_TABLE(AG__X)
#undef AG__X
};

/* Context for an error: the code plus a human-readable message naming what failed.
 * Callers may pass NULL wherever a `struct ag_err *` is accepted. */
struct ag_err {
    int code;      /* the AG_E* code (or 0) */
    long long aux; /* code-specific detail: the actual version on AG_ECONFLICT, ... */
    char msg[512]; /* NUL-terminated message, empty when none */
};

/* Static message for a code; also maps negative errno values (-ENOENT...). */
AG_EXTERN const char *ag_strerror(int code);
/* Name of the code, e.g. "AG_ECONFLICT"; "AG_OK" for 0. */
AG_EXTERN const char *ag_errname(int code);

/* Fill `err` (if not NULL) with `code` and a printf-style message; returns `code`. */
AG_EXTERN int ag_err_set(struct ag_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
AG_EXTERN int ag_err_vset(struct ag_err *err, int code, const char *fmt, va_list ap);
AG_EXTERN void ag_err_clear(struct ag_err *err);
/* The message if one was set, else ag_strerror(code). Borrowed pointer. */
AG_EXTERN const char *ag_err_msg(const struct ag_err *err, int code);

#endif
