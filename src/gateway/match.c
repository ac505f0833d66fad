/*
 * Route matching: VirtualService http routes in order, first match wins. A
 * route matches when any of its match blocks does (none = everything); a block
 * matches when its uri, method and every header condition do.
 *
 * uri kinds: exact, prefix (segment-agnostic, like Istio), regex (POSIX ERE,
 * anchored) and pattern: "/"-separated segments where "{name}" matches one
 * non-empty segment and a final "**" matches the rest (possibly empty).
 */
#include <string.h>
#include <strings.h>

#include "gateway/internal.h"

bool ag__gw_pattern_match(const char *pat, const char *path)
{
    while (*pat && *path) {
        if (pat[0] == '*' && pat[1] == '*' && pat[2] == '\0') return true;
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            if (!close || *path == '/') return false;
            while (*path && *path != '/') path++;
            pat = close + 1;
            continue;
        }
        if (*pat != *path) return false;
        pat++, path++;
    }
    if (pat[0] == '*' && pat[1] == '*' && pat[2] == '\0') return true;
    if (pat[0] == '/' && pat[1] == '*' && pat[2] == '*' && !pat[3]) return true;
    return !*pat && !*path;
}

static bool str_ok(const struct gw_strmatch *m, const char *s, bool ci)
{
    switch (m->kind) {
    case GW_M_ANY:
        return true;
    case GW_M_PRESENT:
        return s != NULL;
    default:
        break;
    }
    const char *v = m->hvalue ? m->hvalue : m->value;
    if (!s) return false;
    switch (m->kind) {
    case GW_M_EXACT:
        return ci ? !strcasecmp(s, v) : !strcmp(s, v);
    case GW_M_PREFIX:
        return ci ? !strncasecmp(s, v, strlen(v)) : !strncmp(s, v, strlen(v));
    case GW_M_PATTERN:
        return ag__gw_pattern_match(v, s);
    case GW_M_REGEX:
        return regexec(&m->re, s, 0, NULL, 0) == 0;
    default:
        return false;
    }
}

static bool block_ok(const struct gw_match *m, const char *method, const char *path,
                     const struct ag_http_req *req)
{
    if (!str_ok(&m->uri, path, false) || !str_ok(&m->method, method, false)) return false;
    for (size_t h = 0; h < m->nheaders; h++)
        if (!str_ok(&m->headers[h], ag_http_req_header(req, m->headers[h].value), false))
            return false;
    return true;
}

const struct gw_route *ag__gw_route_find(const struct gw_conf *c, const char *method,
                                         const char *path, const struct ag_http_req *req,
                                         size_t *prefix_len)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct gw_route *r = &c->routes[i];
        if (!r->nmatches) {
            *prefix_len = 0;
            return r;
        }
        for (size_t m = 0; m < r->nmatches; m++) {
            if (!block_ok(&r->matches[m], method, path, req)) continue;
            const struct gw_strmatch *u = &r->matches[m].uri;
            *prefix_len = u->kind == GW_M_PREFIX || u->kind == GW_M_EXACT ? strlen(u->value) : 0;
            return r;
        }
    }
    return NULL;
}
