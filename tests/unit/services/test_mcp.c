/* The mcp context (src/services/mcp): POST /mcp's transport rules (bearer,
 * Origin, Mcp-Session-Id), the JSON-RPC core's error codes through
 * ag_platform_mcp (what `agora mcp` uses over stdio), and a tool that runs the
 * ordering handlers as the caller: another customer's order is not found. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "agora/platform.h"
#include "svc_test.h"

TestSuite(mcp, .init = t_start, .fini = t_stop, .timeout = 60);

#define INIT                                                                                       \
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":"     \
    "\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}"
#define LIST "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}"

Test(mcp, http_sessions_origin_and_bearer)
{
    struct t_resp r;
    cr_expect_eq(t_call(&r, "POST", "/mcp", ANON, INIT, NULL), 401);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/mcp", ALICE, INIT, "Origin: https://evil.example\r\n"), 403);
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/mcp", ALICE, INIT, "Origin: http://127.0.0.1:3000\r\n"), 200,
                 "%s", r.text);
    char sid[64], hdr[128];
    snprintf(sid, sizeof sid, "%s", t_header(&r, "Mcp-Session-Id"));
    cr_expect_eq(strlen(sid), 32);
    json_t *res = json_object_get(r.body, "result");
    cr_expect_str_eq(json_string_value(json_object_get(res, "protocolVersion")), "2025-11-25");
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/mcp", ALICE, LIST, NULL), 400, "no session header");
    t_free(&r);
    snprintf(hdr, sizeof hdr, "Mcp-Session-Id: %s\r\n", sid);
    cr_expect_eq(t_call(&r, "POST", "/mcp", BOB, LIST, hdr), 404, "another principal's session");
    t_free(&r);
    cr_assert_eq(t_call(&r, "POST", "/mcp", ALICE, LIST, hdr), 200, "%s", r.text);
    cr_expect_eq(json_array_size(json_object_get(json_object_get(r.body, "result"), "tools")), 6);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/mcp", ALICE,
                        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", hdr),
                 202);
    t_free(&r);
    cr_expect_eq(t_call(&r, "DELETE", "/mcp", ALICE, NULL, hdr), 204);
    t_free(&r);
    cr_expect_eq(t_call(&r, "POST", "/mcp", ALICE, LIST, hdr), 404, "an ended session");
    t_free(&r);
}

/* One message through ag_platform_mcp; the reply parsed (NULL when none). */
static json_t *rpc(const char *sub, bool admin, const char *msg)
{
    char *reply = NULL;
    cr_assert_eq(ag_platform_mcp(t_plat, sub, admin, msg, strlen(msg), &reply), 0);
    json_t *j = reply ? json_loads(reply, 0, NULL) : NULL;
    cr_assert(!reply || j, "the reply is JSON: %s", reply);
    cr_assert(!reply || !strchr(reply, '\n'), "one line");
    ag_free(reply);
    return j;
}

static int error_code(json_t *r)
{
    return (int)json_integer_value(json_object_get(json_object_get(r, "error"), "code"));
}

Test(mcp, json_rpc_errors)
{
    static const struct {
        const char *msg;
        int code;
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",\"id\":1,", -32700},
        {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", -32600},
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", -32600},
        {"{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", -32600},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}", -32600},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"prompts/list\"}", -32601},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":[]}", -32602},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}", -32602},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}",
         -32602},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}", -32602},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *r = rpc("alice", false, cases[i].msg);
        cr_expect_eq(error_code(r), cases[i].code, "%s", cases[i].msg);
        json_decref(r);
    }
    cr_expect_null(rpc("alice", false, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}"));
    cr_expect_null(rpc("alice", false, "{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}"));
    json_t *r = rpc("alice", false,
                    "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"initialize\",\"params\":{"
                    "\"protocolVersion\":\"2025-06-18\"}}");
    cr_expect_str_eq(
        json_string_value(json_object_get(json_object_get(r, "result"), "protocolVersion")),
        "2025-06-18", "a version it speaks is kept");
    json_decref(r);
}

Test(mcp, tools_run_the_handlers_as_the_caller)
{
    char acid[40], aacc[40], bcid[40], bacc[40], prod[40], order[40], msg[512];
    t_register(ALICE, "alice@test.example", acid, aacc);
    t_register(BOB, "bob@test.example", bcid, bacc);
    t_deposit(ALICE, aacc, 100000);
    t_product(1, prod);
    t_order(ALICE, prod, 1, order, NULL);
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
             "\"get_order_status\",\"arguments\":{\"orderId\":\"%s\"}}}",
             order);
    json_t *r = rpc("alice", false, msg);
    json_t *res = json_object_get(r, "result");
    cr_expect(json_is_false(json_object_get(res, "isError")), "alice reads her own order");
    cr_expect_str_eq(
        json_string_value(json_object_get(json_object_get(res, "structuredContent"), "customerId")),
        acid);
    json_decref(r);
    r = rpc("bob", false, msg);
    res = json_object_get(r, "result");
    cr_expect(json_is_true(json_object_get(res, "isError")), "bob's agent: not found");
    const char *text = json_string_value(
        json_object_get(json_array_get(json_object_get(res, "content"), 0), "text"));
    cr_expect(text && strncmp(text, "404", 3) == 0, "%s", text);
    json_decref(r);
    snprintf(msg, sizeof msg,
             "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
             "\"cancel_order\",\"arguments\":{\"orderId\":\"%s\"}}}",
             order);
    r = rpc("bob", false, msg);
    cr_expect(json_is_true(json_object_get(json_object_get(r, "result"), "isError")));
    json_decref(r);
    r = rpc(NULL, false, msg);
    cr_expect(json_is_true(json_object_get(json_object_get(r, "result"), "isError")),
              "anonymous: 401 as a tool error");
    json_decref(r);
}
