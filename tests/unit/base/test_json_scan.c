/* ag_json_members (base/json_scan.c): top-level members found in the text, each
 * value the very bytes jansson parses for that member, on well-formed objects;
 * what it does not handle is refused rather than guessed. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "agora/base.h"

static const char *const keys[] = {"a", "b", "traceparent", "zz"};

/* Each key's span against jansson's member: same value, same kind. */
static void same_as_jansson(const char *text)
{
    struct ag_json_span v[4];
    cr_assert_eq(ag_json_members(text, strlen(text), keys, 4, v), 0, "%s", text);
    json_t *o = json_loads(text, 0, NULL);
    cr_assert(json_is_object(o), "%s", text);
    for (int i = 0; i < 4; i++) {
        json_t *want = json_object_get(o, keys[i]);
        if (!want) {
            cr_expect_null(v[i].p, "%s: %s absent", text, keys[i]);
            cr_expect_eq(v[i].kind, AG_JSON_ABSENT);
            continue;
        }
        cr_assert_not_null(v[i].p, "%s: %s present", text, keys[i]);
        json_t *got = json_loadb(v[i].p, v[i].n, JSON_DECODE_ANY, NULL);
        cr_expect(json_equal(got, want), "%s: %s is %.*s", text, keys[i], (int)v[i].n, v[i].p);
        enum ag_json_kind k = json_is_string(want)                          ? AG_JSON_STRING
                              : json_is_number(want)                        ? AG_JSON_NUMBER
                              : json_is_object(want) || json_is_array(want) ? AG_JSON_NESTED
                                                                            : AG_JSON_LITERAL;
        cr_expect_eq(v[i].kind, k, "%s: %s's kind", text, keys[i]);
        if (k == AG_JSON_STRING)
            cr_expect_eq(v[i].escapes, memchr(v[i].p, '\\', v[i].n) != NULL, "%s: %s escapes", text,
                         keys[i]);
        json_decref(got);
    }
    json_decref(o);
}

Test(json_scan, members_as_jansson_reads_them)
{
    const char *ok[] = {
        "{}",
        " { } ",
        "{\"a\":1}",
        "{\"a\":-1.5e3,\"b\":\"x\",\"traceparent\":\"00-ab-01\"}",
        " {\n\t\"b\" : [1, {\"a\": 2}, \"]}\"] ,\r\n \"a\" : {\"a\":{\"b\":[]}} } ",
        "{\"x\":{\"a\":1,\"traceparent\":\"no\"},\"a\":true,\"b\":null,\"zz\":false}",
        "{\"a\":\"\\\"}{,:\\\\\",\"b\":\"\\u00e9 caf\xc3\xa9 \\ud83d\\ude00\"}",
        "{\"a\":0,\"b\":-0,\"zz\":1234567890123456789}",
        "{\"ab\":1,\"\":2,\"a \":3,\"traceparentx\":4}",
        "{\"a\":[],\"b\":{},\"zz\":[[[]]]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) same_as_jansson(ok[i]);
}

Test(json_scan, refuses_what_it_does_not_handle)
{
    const char *no[] = {
        "",        "[]",         "\"a\"",       "1",          "{\"a\\u0062\":1}", /* key escape */
        "{\"a\":", "{\"a\":\"x", "{\"a\":[1,2", "{\"a\":1,}", "{\"a\":1} x",
        "{,}",     "{\"a\" 1}",
    };
    struct ag_json_span v[4];
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        cr_expect_eq(ag_json_members(no[i], strlen(no[i]), keys, 4, v), AG_EJSON, "%s", no[i]);
    /* never past n: the object cut short is refused */
    const char *t = "{\"a\":\"abc\"}";
    for (size_t n = 0; n < strlen(t); n++)
        cr_expect_eq(ag_json_members(t, n, keys, 4, v), AG_EJSON, "%zu bytes", n);
}
