#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "agora/base.h"

Test(error, table_names_and_messages)
{
    cr_assert_str_eq(ag_errname(AG_ECONFLICT), "AG_ECONFLICT");
    cr_assert_str_eq(ag_strerror(AG_ECONFLICT), "wrong expected version");
    cr_assert_str_eq(ag_strerror(-2), strerror(2));
    cr_assert_str_eq(ag_strerror(0), "success");
    struct ag_err e;
    ag_err_clear(&e);
    cr_assert_eq(ag_err_set(&e, AG_EINVAL, "field %s", "x"), AG_EINVAL);
    cr_assert_str_eq(ag_err_msg(&e, AG_EINVAL), "field x");
    cr_assert_eq(ag_err_set(NULL, AG_EIO, "ignored"), AG_EIO);
}

Test(alloc, fail_nth_allocation)
{
    ag_alloc_fail_at(3);
    void *a = ag_malloc(8), *b = ag_malloc(8), *c = ag_malloc(8), *d = ag_malloc(8);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(c);
    cr_assert_null(d);
    ag_alloc_fail_at(0);
    void *e = ag_malloc(8);
    cr_assert_not_null(e);
    ag_free(a), ag_free(b), ag_free(e);
}

Test(buf, append_printf_json_escape)
{
    struct ag_buf b;
    ag_buf_init(&b);
    cr_assert_eq(ag_buf_printf(&b, "%d-%s", 42, "x"), 0);
    cr_assert_str_eq(b.data, "42-x");
    ag_buf_reset(&b);
    ag_buf_json_str(&b, "a\"b\\\n\x01", 6);
    cr_assert_str_eq(b.data, "\"a\\\"b\\\\\\n\\u0001\"");
    for (int i = 0; i < 1000; i++) ag_buf_putc(&b, 'z');
    cr_assert_eq(b.len, 16 + 1000);
    size_t n;
    char *s = ag_buf_steal(&b, &n);
    cr_assert_eq(n, 1016);
    cr_assert_null(b.data);
    ag_free(s);
}

Test(buf, out_of_memory_is_reported)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_alloc_fail_at(1);
    cr_assert_eq(ag_buf_puts(&b, "hello"), AG_ENOMEM);
    ag_alloc_fail_at(0);
    cr_assert_eq(b.len, 0);
    ag_buf_free(&b);
}

Test(utf8, accepts_valid_and_rejects_invalid)
{
    cr_assert(ag_utf8_valid("héllo €𝄞", strlen("héllo €𝄞")));
    cr_assert_not(ag_utf8_valid("\xc0\xaf", 2));         /* overlong */
    cr_assert_not(ag_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    cr_assert_not(ag_utf8_valid("\xe2\x82", 2));         /* truncated */
    cr_assert_not(ag_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    cr_assert_not(ag_utf8_valid("\xff", 1));
}

Test(parse, integers)
{
    int64_t v;
    uint64_t u;
    cr_assert_eq(ag_parse_i64("-17", &v), 0);
    cr_assert_eq(v, -17);
    cr_assert_eq(ag_parse_i64("12x", &v), AG_EINVAL);
    cr_assert_eq(ag_parse_i64("", &v), AG_EINVAL);
    cr_assert_eq(ag_parse_u64("-1", &u), AG_EINVAL);
    cr_assert_eq(ag_parse_u64("99999999999999999999999", &u), AG_EINVAL);
    cr_assert_eq(ag_parse_u64("18446744073709551615", &u), 0);
    cr_assert_eq(u, UINT64_MAX);
}

Test(clock, fake_clock_and_rfc3339)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1700000000ull * 1000000000ull);
    uint64_t m0 = ag_clock_mono(&fc.clock);
    ag_fake_clock_advance(&fc, 1500000);
    cr_assert_eq(ag_clock_mono(&fc.clock) - m0, 1500000);
    char ts[32];
    ag_time_rfc3339(ag_clock_now(&fc.clock), ts);
    cr_assert_str_eq(ts, "2023-11-14T22:13:20.001500Z");
}

Test(rng, deterministic_and_bounded)
{
    struct ag_xoshiro a, b;
    ag_xoshiro_seed(&a, 7);
    ag_xoshiro_seed(&b, 7);
    for (int i = 0; i < 100; i++) cr_assert_eq(ag_rng_next(&a.rng), ag_rng_next(&b.rng));
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint64_t x = ag_rng_below(&a.rng, 10);
        cr_assert_lt(x, 10);
        hist[x]++;
        double d = ag_rng_double(&a.rng);
        cr_assert(d >= 0.0 && d < 1.0);
    }
    for (int i = 0; i < 10; i++)
        cr_assert(hist[i] > 9000 && hist[i] < 11000, "bucket %d: %d", i, hist[i]);
}

Test(uuid, v7_layout_order_and_roundtrip)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 1700000000123ull * 1000000ull);
    struct ag_xoshiro x;
    ag_xoshiro_seed(&x, 1);
    struct ag_uuid prev = {{0}}, u;
    for (int i = 0; i < 10000; i++) {
        ag_uuid_v7(&u, &fc.clock, &x.rng);
        cr_assert_eq(u.b[6] >> 4, 7, "version nibble");
        cr_assert_eq(u.b[8] >> 6, 2, "variant bits");
        cr_assert_gt(memcmp(u.b, prev.b, 16), 0, "monotonic at %d", i);
        prev = u;
    }
    uint64_t ms = 0;
    ag_uuid_v7(&u, &fc.clock, &x.rng);
    for (int i = 0; i < 6; i++) ms = ms << 8 | u.b[i];
    cr_assert_geq(ms, 1700000000123ull);
    char s[37];
    ag_uuid_format(&u, s);
    cr_assert_eq(strlen(s), 36);
    struct ag_uuid back;
    cr_assert_eq(ag_uuid_parse(s, 36, &back), 0);
    cr_assert_eq(memcmp(back.b, u.b, 16), 0);
    cr_assert_eq(ag_uuid_parse("not-a-uuid", 10, &back), AG_EINVAL);
    cr_assert_eq(ag_uuid_parse("0190f000-0000-7000-8000-00000000000g", 36, &back), AG_EINVAL);
}

Test(log, writes_one_json_line)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    ag_log_set_fd(fds[1]);
    AG_WARN("store.truncated", AG_LS("file", "a\"b"), AG_LI("offset", 42), AG_LB("ok", 1));
    ag_log_set_level(AG_LOG_ERROR);
    AG_WARN("dropped", AG_LI("x", 1));
    ag_log_set_level(AG_LOG_INFO);
    ag_log_set_fd(2);
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    cr_assert_gt(n, 0);
    cr_assert(strstr(buf, "\"level\":\"warn\",\"msg\":\"store.truncated\",\"file\":\"a\\\"b\","
                          "\"offset\":42,\"ok\":true}\n"),
              "got %s", buf);
    cr_assert_null(strstr(buf, "dropped"));
}

Test(hash, xxh3_stable)
{
    cr_assert_eq(ag_xxh3("", 0), 0x2D06800538D394C2ull);
    cr_assert_neq(ag_xxh3("a", 1), ag_xxh3("b", 1));
    cr_assert_neq(ag_xxh3_seed("a", 1, 1), ag_xxh3("a", 1));
}
