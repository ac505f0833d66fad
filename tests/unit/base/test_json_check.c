/* ag_json_check against a table of cases and, differentially, against jansson. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "agora/base.h"

static int check(const char *s)
{
    return ag_json_check(s, strlen(s), false, NULL, 0);
}

Test(json_check, accepts_valid_json)
{
    const char *ok[] = {"{}",
                        "[]",
                        "0",
                        "-0.5e+10",
                        "\"x\"",
                        "true",
                        "null",
                        " {\"a\":[1,2,{\"b\":null}]} ",
                        "{\"a\":1,\"b\":2}",
                        "\"\\u00e9\\ud83d\\ude00\\n\"",
                        "\"héllo €\"",
                        "[[[[]]]]",
                        "{\"a\":{\"a\":1}}",
                        "1E5",
                        "[1,\"a\",true,false,null,{}]"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert_eq(check(ok[i]), 0, "%s", ok[i]);
}

Test(json_check, rejects_invalid_json_with_position)
{
    const char *bad[] = {"",
                         " ",
                         "{",
                         "[1,]",
                         "{\"a\":1,}",
                         "{\"a\"}",
                         "{a:1}",
                         "01",
                         "1.",
                         "1e",
                         "-",
                         ".5",
                         "tru",
                         "nul",
                         "\"abc",
                         "\"\\x\"",
                         "\"\\ud800\"",
                         "\"\\udc00\"",
                         "\"a\x01\"",
                         "\"\xff\"",
                         "{} {}",
                         "[1 2]",
                         "{\"a\":1 \"b\":2}",
                         "\"\\u0000\"",
                         "{\"a\":1,\"a\":2}",
                         "{\"a\":1,\"\\u0061\":2}",
                         "NaN",
                         "[1]]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(check(bad[i]), AG_EJSON, "should fail: %s", bad[i]);
    char msg[128];
    cr_assert_eq(ag_json_check("{\n  \"a\": 1,\n  \"a\": 2\n}", 23, false, msg, sizeof msg),
                 AG_EJSON);
    cr_assert(strstr(msg, "duplicate key") && strstr(msg, "line 3"), "%s", msg);
    cr_assert_eq(ag_json_check("[1]", 3, true, msg, sizeof msg), AG_EJSON);
    cr_assert(strstr(msg, "object"), "%s", msg);
}

Test(json_check, depth_limit_and_many_keys)
{
    char deep[1200];
    memset(deep, '[', 600);
    memset(deep + 600, ']', 600);
    cr_assert_eq(ag_json_check(deep, 1200, false, NULL, 0), AG_EJSON, "600 levels refused");
    cr_assert_eq(ag_json_check(deep + 100, 1000, false, NULL, 0), 0, "500 levels accepted");
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_putc(&b, '{');
    for (int i = 0; i < 5000; i++) ag_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    ag_buf_putc(&b, '}');
    cr_assert_eq(ag_json_check(b.data, b.len, true, NULL, 0), 0);
    b.data[b.len - 1] = ',';
    ag_buf_puts(&b, "\"k4321\":0}");
    cr_assert_eq(ag_json_check(b.data, b.len, true, NULL, 0), AG_EJSON,
                 "duplicate among 5001 keys");
    ag_buf_free(&b);
}

/* Random mutations of valid documents: agora and jansson must agree. */
Test(json_check, agrees_with_jansson)
{
    const char *seeds[] = {"{\"a\":[1,2.5e3,{\"b\":\"x\\u0041\"}],\"c\":null}",
                           "[true,false,\"é\",-0]", "{\"k\":{\"k\":{\"k\":[]}},\"j\":\"\\n\"}"};
    struct ag_xoshiro x;
    ag_xoshiro_seed(&x, 42);
    const char alphabet[] = "{}[]\",:0123456789.eE+-tfnul\\ a\xc3\xa9";
    for (int iter = 0; iter < 20000; iter++) {
        char buf[128];
        const char *s = seeds[iter % 3];
        size_t n = strlen(s);
        memcpy(buf, s, n);
        int muts = 1 + (int)ag_rng_below(&x.rng, 3);
        for (int m = 0; m < muts; m++) {
            size_t at = ag_rng_below(&x.rng, n);
            uint64_t op = ag_rng_below(&x.rng, 3);
            if (op == 0)
                buf[at] = alphabet[ag_rng_below(&x.rng, sizeof alphabet - 1)];
            else if (op == 1 && n > 1)
                memmove(buf + at, buf + at + 1, n - at - 1), n--;
            else if (n < sizeof buf - 1)
                memmove(buf + at + 1, buf + at, n - at),
                    buf[at] = alphabet[ag_rng_below(&x.rng, sizeof alphabet - 1)], n++;
        }
        json_t *j = json_loadb(buf, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        int mine = ag_json_check(buf, n, false, NULL, 0);
        cr_assert_eq(mine == 0, j != NULL, "disagree on %.*s: agora %d, jansson %s", (int)n, buf,
                     mine, j ? "ok" : "error");
        json_decref(j);
    }
}
