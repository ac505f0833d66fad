/*
 * The one HOST:PORT parser. Every address a user types (`agora run --listen`, the
 * gateway's `listen` and endpoint `address`, a JWKS URL's authority, `agora load`'s
 * target) goes through here, so they all accept and refuse the same things:
 *
 *   127.0.0.1:8080    IPv4
 *   [::1]:8080        IPv6, always in brackets (a bare "::1:8080" is ambiguous)
 *   localhost:8080    a host name (refused with AG_HOSTPORT_NUMERIC)
 *
 * The port is 1..65535 in decimal digits; 0 ("any free port") only with
 * AG_HOSTPORT_PORT0; leaving it out only with AG_HOSTPORT_OPT_PORT. Names are not
 * resolved here. "unix:/path" is not a HOST:PORT: callers that take Unix sockets
 * recognise that prefix before calling.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static int parse_port(const char *s, const char *p, unsigned flags, uint16_t *port,
                      struct ag_err *err)
{
    unsigned long v = 0;
    size_t n = strlen(p);
    bool digits = n > 0 && n <= 5 && strspn(p, "0123456789") == n;
    if (digits) v = strtoul(p, NULL, 10);
    if (!digits || v > 65535)
        return ag_err_set(err, AG_EINVAL, "'%s': port '%s' is not a number from %d to 65535", s, p,
                          flags & AG_HOSTPORT_PORT0 ? 0 : 1);
    if (v == 0 && !(flags & AG_HOSTPORT_PORT0))
        return ag_err_set(err, AG_EINVAL, "'%s': port 0 is not allowed here (1 to 65535)", s);
    *port = (uint16_t)v;
    return 0;
}

/* Split `s` into the host (start, length, bracketed or not) and the port text
 * (NULL when there is none). */
static int split(const char *s, const char **h, size_t *hl, bool *v6, const char **p,
                 struct ag_err *err)
{
    *v6 = s[0] == '[';
    if (*v6) {
        const char *rb = strchr(s, ']');
        if (!rb) return ag_err_set(err, AG_EINVAL, "'%s': missing ']' after the IPv6 address", s);
        if (rb[1] && rb[1] != ':')
            return ag_err_set(err, AG_EINVAL, "'%s': expected ':PORT' after ']'", s);
        *h = s + 1, *hl = (size_t)(rb - s - 1);
        *p = rb[1] ? rb + 2 : NULL;
        return 0;
    }
    const char *colon = strchr(s, ':');
    if (colon && strchr(colon + 1, ':'))
        return ag_err_set(err, AG_EINVAL, "'%s': an IPv6 address needs brackets, e.g. [::1]:8080",
                          s);
    *h = s, *hl = colon ? (size_t)(colon - s) : strlen(s);
    *p = colon ? colon + 1 : NULL;
    return 0;
}

static int check_host(const char *s, const char *host, bool v6, unsigned flags, struct ag_err *err)
{
    unsigned char a[16];
    if (v6) {
        if (inet_pton(AF_INET6, host, a) != 1)
            return ag_err_set(err, AG_EINVAL, "'%s': '%s' is not an IPv6 address", s, host);
        return 0;
    }
    if (inet_pton(AF_INET, host, a) == 1) return 0;
    if (flags & AG_HOSTPORT_NUMERIC)
        return ag_err_set(err, AG_EINVAL,
                          "'%s': '%s' is not a numeric IPv4 address or a [IPv6] address", s, host);
    for (const char *c = host; *c; c++)
        if (!name_char(*c))
            return ag_err_set(err, AG_EINVAL, "'%s': '%s' is not a host name", s, host);
    return 0;
}

int ag_hostport_parse(const char *s, unsigned flags, char *host, size_t hostcap, uint16_t *port,
                      struct ag_err *err)
{
    if (!s || !*s) return ag_err_set(err, AG_EINVAL, "empty address: expected HOST:PORT");
    const char *h = s, *p = NULL;
    size_t hl = 0;
    bool v6 = false;
    int rc = split(s, &h, &hl, &v6, &p, err);
    if (rc) return rc;
    if (hl == 0) return ag_err_set(err, AG_EINVAL, "'%s': no host before the port", s);
    if (hl >= hostcap)
        return ag_err_set(err, AG_EINVAL, "'%s': the host is longer than %zu bytes", s,
                          hostcap - 1);
    if (!p && !(flags & AG_HOSTPORT_OPT_PORT))
        return ag_err_set(err, AG_EINVAL, "'%s' has no port: expected HOST:PORT", s);
    char tmp[256];
    if (hl >= sizeof tmp) return ag_err_set(err, AG_EINVAL, "'%s': the host is too long", s);
    memcpy(tmp, h, hl);
    tmp[hl] = '\0';
    if ((rc = check_host(s, tmp, v6, flags, err))) return rc;
    uint16_t pv = 0;
    if (p && (rc = parse_port(s, p, flags, &pv, err))) return rc;
    memcpy(host, tmp, hl + 1);
    if (p) *port = pv;
    return 0;
}
