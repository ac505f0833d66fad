/* The mesh key's x-user-sig (usersig.c): a known HMAC-SHA256 vector, the round
 * trip, and every way a signature must fail: another key, identity, method or
 * target, a time beyond the skew either side, a malformed value. */
#include <criterion/criterion.h>
#include <string.h>

#include "agora/http.h"

static const char key[] = "0123456789abcdef0123456789abcdef";

Test(usersig, known_vector)
{
    char sig[AG_USER_SIG_MAX];
    cr_assert_eq(ag_http_user_sig(key, 1700000000, "ops", "admin", "GET", "/admin/bus?x=1", sig),
                 0);
    /* python3: hmac.new(key, b"1700000000\nops\nadmin\nGET\n/admin/bus?x=1", sha256) */
    cr_assert_str_eq(sig,
                     "1700000000.8a095adc4d9b1c86a57b684d5536e486cafe8ef67b4c82b737e05850b0bc7423");
}

Test(usersig, round_trip_and_refusals)
{
    char sig[AG_USER_SIG_MAX];
    int64_t t = 1700000000;
    cr_assert_eq(ag_http_user_sig(key, t, "ada", "customer", "POST", "/api/v1/orders", sig), 0);
    cr_assert(ag_http_user_sig_ok(key, sig, t, "ada", "customer", "POST", "/api/v1/orders"));
    cr_assert(ag_http_user_sig_ok(key, sig, t + AG_USER_SIG_SKEW_S, "ada", "customer", "POST",
                                  "/api/v1/orders"));
    cr_assert(ag_http_user_sig_ok(key, sig, t - AG_USER_SIG_SKEW_S, "ada", "customer", "POST",
                                  "/api/v1/orders"));
    cr_assert_not(ag_http_user_sig_ok(key, sig, t + AG_USER_SIG_SKEW_S + 1, "ada", "customer",
                                      "POST", "/api/v1/orders"),
                  "stale");
    cr_assert_not(ag_http_user_sig_ok(key, sig, t - AG_USER_SIG_SKEW_S - 1, "ada", "customer",
                                      "POST", "/api/v1/orders"),
                  "from the future");
    cr_assert_not(ag_http_user_sig_ok("another key, 32 characters long!", sig, t, "ada", "customer",
                                      "POST", "/api/v1/orders"));
    cr_assert_not(ag_http_user_sig_ok(key, sig, t, "bob", "customer", "POST", "/api/v1/orders"));
    cr_assert_not(
        ag_http_user_sig_ok(key, sig, t, "ada", "customer,admin", "POST", "/api/v1/orders"));
    cr_assert_not(ag_http_user_sig_ok(key, sig, t, "ada", "customer", "GET", "/api/v1/orders"));
    cr_assert_not(
        ag_http_user_sig_ok(key, sig, t, "ada", "customer", "POST", "/api/v1/orders?a=1"));
    cr_assert_not(ag_http_user_sig_ok(NULL, sig, t, "ada", "customer", "POST", "/api/v1/orders"));
    /* the fields are separated: "a\nb" + "c" is not "a" + "b\nc" */
    cr_assert_eq(ag_http_user_sig(key, t, "a", "b,c", "GET", "/", sig), 0);
    cr_assert_not(ag_http_user_sig_ok(key, sig, t, "a\nb", "c", "GET", "/"));
}

Test(usersig, malformed)
{
    char sig[AG_USER_SIG_MAX];
    int64_t t = 1700000000;
    cr_assert_eq(ag_http_user_sig(key, t, "ops", "admin", "GET", "/", sig), 0);
    cr_assert_not(ag_http_user_sig_ok(key, NULL, t, "ops", "admin", "GET", "/"));
    cr_assert_not(ag_http_user_sig_ok(key, "", t, "ops", "admin", "GET", "/"));
    cr_assert_not(ag_http_user_sig_ok(key, sig + 10, t, "ops", "admin", "GET", "/"), "no time");
    char cut[AG_USER_SIG_MAX];
    snprintf(cut, sizeof cut, "%.*s", (int)strlen(sig) - 1, sig);
    cr_assert_not(ag_http_user_sig_ok(key, cut, t, "ops", "admin", "GET", "/"), "short");
    char upper[AG_USER_SIG_MAX + 8];
    snprintf(upper, sizeof upper, "%sa", sig);
    cr_assert_not(ag_http_user_sig_ok(key, upper, t, "ops", "admin", "GET", "/"), "long");
    char flip[AG_USER_SIG_MAX];
    memcpy(flip, sig, sizeof flip);
    flip[strlen(flip) - 1] ^= 1;
    cr_assert_not(ag_http_user_sig_ok(key, flip, t, "ops", "admin", "GET", "/"), "one bit");
    /* NULL identity signs as "" */
    cr_assert_eq(ag_http_user_sig(key, t, NULL, NULL, "GET", "/", sig), 0);
    cr_assert(ag_http_user_sig_ok(key, sig, t, "", "", "GET", "/"));
    cr_assert_eq(ag_http_user_sig("", t, "ops", "admin", "GET", "/", sig), AG_EINVAL);
}
