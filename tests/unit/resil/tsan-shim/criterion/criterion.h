/*
 * A minimal stand-in for Criterion, used only by scripts/tsan.sh (make tsan) and
 * tests/unit/resil/run_tsan.sh.
 * Criterion itself cannot start under ThreadSanitizer on this platform (its
 * BoxFort arena mapping collides with TSan's shadow memory: Snaipe/Criterion#274),
 * so the resil tests are compiled against this shim instead and run in one
 * process, one test after another, with the same assertions.
 */
#ifndef AG_TSAN_SHIM_CRITERION_H
#define AG_TSAN_SHIM_CRITERION_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shim_suite {
    void (*init)(void);
    void (*fini)(void);
    double timeout;
};
struct shim_test {
    const char *name;
    void (*fn)(void);
    const struct shim_suite *suite;
};
void shim_register(const char *name, void (*fn)(void), const struct shim_suite *suite);
extern int shim_expect_failures; /* failed cr_expect_*: the run fails at its end */

#define TestSuite(s, ...) static const struct shim_suite s##_shim_suite = {__VA_ARGS__}
#define Test(s, n, ...)                                                                            \
    static void s##_##n(void);                                                                     \
    __attribute__((constructor)) static void s##_##n##_reg(void)                                   \
    {                                                                                              \
        shim_register(#s "::" #n, s##_##n, &s##_shim_suite);                                       \
    }                                                                                              \
    static void s##_##n(void)

#define SHIM_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: assertion failed: ", __FILE__, __LINE__);                          \
        fprintf(stderr, "" __VA_ARGS__);                                                           \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)
/* The condition's text is an argument, not part of the format: it may hold a '%'. */
#define SHIM_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, "" __VA_ARGS__);                                                       \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A failed expectation is reported and the test goes on, as in Criterion. */
#define SHIM_EXPECT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: expectation failed: %s ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, "" __VA_ARGS__);                                                       \
            fprintf(stderr, "\n");                                                                 \
            shim_expect_failures++;                                                                \
        }                                                                                          \
    } while (0)

#define cr_assert(c, ...)        SHIM_CHECK((c), __VA_ARGS__)
#define cr_assert_fail(...)      SHIM_FAIL(__VA_ARGS__)
#define cr_assert_not(c, ...)    SHIM_CHECK(!(c), __VA_ARGS__)
#define cr_assert_eq(a, b, ...)  SHIM_CHECK((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) SHIM_CHECK((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...)  SHIM_CHECK((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) SHIM_CHECK((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...)  SHIM_CHECK((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) SHIM_CHECK((a) >= (b), __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...)                                                         \
    SHIM_CHECK(((a) - (b) <= (eps)) && ((b) - (a) <= (eps)), __VA_ARGS__)
#define cr_assert_null(a, ...)      SHIM_CHECK((a) == NULL, __VA_ARGS__)
#define cr_assert_not_null(a, ...)  SHIM_CHECK((a) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) SHIM_CHECK(strcmp((a), (b)) == 0, __VA_ARGS__)

#define cr_expect_str_eq(a, b, ...) SHIM_EXPECT(strcmp((a), (b)) == 0, __VA_ARGS__)

#endif
