/* The error table's strings and the ag_err helpers. */
#include <stdio.h>
#include <string.h>

#include "agora/error.h"

static const char *const messages[] = {
#define AG__X(name, msg) msg,
    AG_ERROR_TABLE(AG__X)
#undef AG__X
};

static const char *const names[] = {
#define AG__X(name, msg) "AG_E" #name,
    AG_ERROR_TABLE(AG__X)
#undef AG__X
};

static int index_of(int code)
{
    int i = -code - 1000;
    return (i >= 0 && i < AG__EI_COUNT) ? i : -1;
}

const char *ag_strerror(int code)
{
    if (code == 0) return "success";
    int i = index_of(code);
    if (i >= 0) return messages[i];
    if (code < 0 && code > -1000) return strerror(-code);
    return "unknown error";
}

const char *ag_errname(int code)
{
    if (code == 0) return "AG_OK";
    int i = index_of(code);
    return i >= 0 ? names[i] : "AG_EUNKNOWN";
}

int ag_err_vset(struct ag_err *err, int code, const char *fmt, va_list ap)
{
    if (!err) return code;
    err->code = code;
    if (fmt)
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    else
        snprintf(err->msg, sizeof err->msg, "%s", ag_strerror(code));
    return code;
}

int ag_err_set(struct ag_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ag_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void ag_err_clear(struct ag_err *err)
{
    if (!err) return;
    err->code = 0;
    err->aux = 0;
    err->msg[0] = '\0';
}

const char *ag_err_msg(const struct ag_err *err, int code)
{
    if (err && err->msg[0]) return err->msg;
    return ag_strerror(code);
}
