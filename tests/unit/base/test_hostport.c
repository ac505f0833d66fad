/* The one HOST:PORT parser: IPv4, [IPv6], names, port 0 and a missing port by
 * flag, and an error message that names the address and the problem. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/base.h"

static int parse(const char *s, unsigned flags, char host[64], uint16_t *port, struct ag_err *e)
{
    ag_err_clear(e);
    return ag_hostport_parse(s, flags, host, 64, port, e);
}

Test(hostport, ipv4_ipv6_and_names)
{
    char host[64];
    uint16_t port = 0;
    struct ag_err e;
    cr_assert_eq(parse("127.0.0.1:8080", 0, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "127.0.0.1");
    cr_expect_eq(port, 8080);
    cr_assert_eq(parse("[::1]:443", AG_HOSTPORT_NUMERIC, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "::1");
    cr_expect_eq(port, 443);
    cr_assert_eq(parse("[fe80::1:2]:65535", 0, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "fe80::1:2");
    cr_expect_eq(port, 65535);
    cr_assert_eq(parse("localhost:9", 0, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "localhost");
    cr_expect_eq(port, 9);
}

Test(hostport, port_zero_only_by_flag)
{
    char host[64];
    uint16_t port = 7;
    struct ag_err e;
    cr_assert_eq(parse("127.0.0.1:0", 0, host, &port, &e), AG_EINVAL);
    cr_expect(strstr(e.msg, "port 0 is not allowed"), "%s", e.msg);
    cr_expect_eq(port, 7, "a failed parse leaves the port alone");
    cr_assert_eq(parse("127.0.0.1:0", AG_HOSTPORT_PORT0, host, &port, &e), 0, "%s", e.msg);
    cr_expect_eq(port, 0);
    cr_assert_eq(parse("[::1]:0", AG_HOSTPORT_PORT0, host, &port, &e), 0, "%s", e.msg);
}

Test(hostport, optional_port_keeps_the_default)
{
    char host[64];
    uint16_t port = 80;
    struct ag_err e;
    cr_assert_eq(parse("10.0.0.1", AG_HOSTPORT_OPT_PORT, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "10.0.0.1");
    cr_expect_eq(port, 80);
    cr_assert_eq(parse("[::1]", AG_HOSTPORT_OPT_PORT, host, &port, &e), 0, "%s", e.msg);
    cr_expect_str_eq(host, "::1");
    cr_assert_eq(parse("10.0.0.1", 0, host, &port, &e), AG_EINVAL);
    cr_expect(strstr(e.msg, "has no port"), "%s", e.msg);
}

Test(hostport, numeric_refuses_names)
{
    char host[64];
    uint16_t port;
    struct ag_err e;
    cr_assert_eq(parse("localhost:80", AG_HOSTPORT_NUMERIC, host, &port, &e), AG_EINVAL);
    cr_expect(strstr(e.msg, "not a numeric IPv4"), "%s", e.msg);
    cr_assert_eq(parse("999.1.1.1:80", AG_HOSTPORT_NUMERIC, host, &port, &e), AG_EINVAL);
}

Test(hostport, malformed_addresses_say_why)
{
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"", "empty address"},
        {":8080", "no host"},
        {"::1:8080", "needs brackets"},
        {"[::1:8080", "missing ']'"},
        {"[::1]8080", "expected ':PORT'"},
        {"[nope]:80", "not an IPv6 address"},
        {"h:80x", "is not a number"},
        {"h:", "is not a number"},
        {"h:+80", "is not a number"},
        {"h:65536", "is not a number"},
        {"h:123456", "is not a number"},
        {"a b:80", "not a host name"},
        {"unix:/tmp/x.sock", "is not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char host[64] = "untouched";
        uint16_t port = 1;
        struct ag_err e;
        cr_expect_eq(parse(bad[i].in, 0, host, &port, &e), AG_EINVAL, "'%s' was accepted",
                     bad[i].in);
        cr_expect(strstr(e.msg, bad[i].why), "'%s': %s", bad[i].in, e.msg);
        cr_expect_str_eq(host, "untouched");
    }
    char small[8];
    uint16_t port;
    struct ag_err e;
    cr_expect_eq(ag_hostport_parse("example.com:80", 0, small, sizeof small, &port, &e), AG_EINVAL);
    cr_expect(strstr(e.msg, "longer than 7 bytes"), "%s", e.msg);
    cr_expect_eq(ag_hostport_parse(NULL, 0, small, sizeof small, &port, NULL), AG_EINVAL);
}
