/* libFuzzer harness, differential: the fast path in front of http-parser
 * (src/http/fastparse.c) against http-parser alone. The input is fed whole to
 * one connection with the fast path on and to one with it off (conn.no_fast);
 * a middleware echoes every request back whole (method, target, each header,
 * body), and the two outputs must be byte-identical (Date lines aside). The
 * same bytes as an upstream response: whatever ag__fp_response takes,
 * http-parser must parse to the same status, headers, body length and
 * keep-alive. Any difference aborts (a finding), as does any sanitizer report.
 * The checks are src/http/fpdiff.c's, the ones tests/unit/http/test_fastparse.c
 * runs. */
#include <stdint.h>
#include <stdlib.h>

#include "http/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ag_http_router *router;
    if (!router) {
        struct ag_http_middleware mw = {.name = "dump", .on_request = ag__http_echo_whole};
        if (ag_http_router_new(&router) || ag_http_router_use(router, &mw)) abort();
    }
    const char *in = (const char *)data;
    struct ag_http_server_config cfg = {.max_header_bytes = 1024, .max_body_bytes = 256};
    struct ag_buf a, b;
    ag_buf_init(&a);
    ag_buf_init(&b);
    if (ag__fp_request_differs(router, &cfg, in, size, &a, &b)) abort();
    ag_buf_free(&a);
    ag_buf_free(&b);
    if (ag__fp_response_differs(in, size)) abort();
    return 0;
}
