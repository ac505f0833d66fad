/* Configuration errors name the file and line (src/gateway/yamlpos.c, schema.c,
 * config.c): the line index maps "a.b[2].c" paths to lines (falling back to the
 * nearest ancestor), syntax errors and unknown keys come from libcyaml with the
 * file name, and errors found while compiling name file:line: path. */
#include <criterion/criterion.h>
#include <string.h>

#include "gateway/internal.h"

static const char doc[] = "gateway:\n"                          /* 1 */
                          "  listen: 127.0.0.1:8080\n"          /* 2 */
                          "destinationRules:\n"                 /* 3 */
                          "  - host: a\n"                       /* 4 */
                          "    endpoints:\n"                    /* 5 */
                          "      - address: 127.0.0.1:1\n"      /* 6 */
                          "      - {address: 127.0.0.1:2}\n"    /* 7 */
                          "  - host: b\n"                       /* 8 */
                          "    endpoints: [{address: x}, {}]\n" /* 9 */
                          "list: [1,\n"                         /* 10 */
                          "  2]\n";                             /* 11 */

Test(gateway_yamlpos, paths_map_to_lines)
{
    struct ag__yamlpos *p = ag__yamlpos_new(doc, strlen(doc));
    cr_assert_not_null(p);
    cr_expect_eq(ag__yamlpos_line(p, "gateway"), 1);
    cr_expect_eq(ag__yamlpos_line(p, "gateway.listen"), 2);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[0]"), 4);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[0].host"), 4);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[0].endpoints"), 5);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[0].endpoints[1].address"), 7);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[1].host"), 8);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[1].endpoints[1]"), 9, "flow style");
    cr_expect_eq(ag__yamlpos_line(p, "list[1]"), 11);
    ag__yamlpos_free(p);
}

Test(gateway_yamlpos, unknown_paths_fall_back_to_an_ancestor)
{
    struct ag__yamlpos *p = ag__yamlpos_new(doc, strlen(doc));
    cr_assert_not_null(p);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[1].endpoints[1].address"), 9,
                 "a missing key: where its mapping is");
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[0].trafficPolicy.tcp"), 4);
    cr_expect_eq(ag__yamlpos_line(p, "destinationRules[7]"), 3);
    cr_expect_eq(ag__yamlpos_line(p, "nowhere.at.all"), 0);
    cr_expect_eq(ag__yamlpos_line(NULL, "gateway"), 0);
    ag__yamlpos_free(p);
    ag__yamlpos_free(NULL);
}

Test(gateway_yamlpos, broken_yaml_has_no_index)
{
    static const char bad[] = "a: [1, 2\nb: }\n";
    cr_expect_null(ag__yamlpos_new(bad, strlen(bad)));
}

static int compile(const char *text, struct ag_err *err)
{
    struct ag_fake_clock fc;
    ag_fake_clock_init(&fc, 0);
    struct gw_compile_env env = {&fc.clock, NULL, NULL, "gw.yaml"};
    struct gw_conf *c = NULL;
    int rc = ag__gw_conf_compile(text, strlen(text), &env, &c, err);
    if (!rc) ag__gw_conf_unref(c);
    return rc;
}

Test(gateway_schema, syntax_errors_name_the_file_and_line)
{
    struct ag_err err;
    cr_assert_eq(compile("destinationRules:\n  - host: a\n    endpoints: [\n", &err), AG_ECONFIG);
    cr_expect(strncmp(err.msg, "gw.yaml: ", 9) == 0, "%s", err.msg);
    cr_expect(strstr(err.msg, "line"), "libcyaml's message has the line: %s", err.msg);
    cr_expect_null(strchr(err.msg, '\n'), "one line");
}

Test(gateway_schema, unknown_keys_and_wrong_types_are_refused)
{
    struct ag_err err;
    cr_assert_eq(compile("gateway:\n  listen: 127.0.0.1:1\n  workerz: 2\n", &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "workerz"), "the typo is named: %s", err.msg);
    cr_assert_eq(compile("gateway:\n  workers: many\n", &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gw.yaml"), "%s", err.msg);
    cr_assert_eq(compile("virtualServices: {name: x}\n", &err), AG_ECONFIG,
                 "a mapping where a sequence belongs");
    cr_assert_eq(compile("", &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "empty") || strstr(err.msg, "gw.yaml"), "%s", err.msg);
}

Test(gateway_schema, compile_errors_name_file_line_and_path)
{
    struct ag_err err;
    static const char dup[] = "destinationRules:\n"
                              "  - host: a\n"
                              "    endpoints: [{address: 127.0.0.1:1}]\n"
                              "  - host: a\n"
                              "    endpoints: [{address: 127.0.0.1:2}]\n";
    cr_assert_eq(compile(dup, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gw.yaml:4: destinationRules[1]"), "%s", err.msg);
    cr_expect(strstr(err.msg, "defined twice"), "%s", err.msg);
    static const char addr[] = "destinationRules:\n"
                               "  - host: a\n"
                               "    endpoints:\n"
                               "      - address: 127.0.0.1:1\n"
                               "      - address: localhost:80\n";
    cr_assert_eq(compile(addr, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gw.yaml:5:"), "%s", err.msg);
    cr_expect(strstr(err.msg, "localhost:80"), "%s", err.msg);
    static const char lb[] = "destinationRules:\n"
                             "  - host: a\n"
                             "    endpoints: [{address: 127.0.0.1:1}]\n"
                             "    trafficPolicy:\n"
                             "      loadBalancer: {simple: FASTEST}\n";
    cr_assert_eq(compile(lb, &err), AG_ECONFIG);
    cr_expect(strstr(err.msg, "gw.yaml:5:"), "%s", err.msg);
    cr_expect(strstr(err.msg, "FASTEST"), "%s", err.msg);
}
