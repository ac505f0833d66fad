/* Small accessors the gateway needs (declared at the end of agora/http.h). */
#include "http/internal.h"

const char *ag_http_req_peer(const struct ag_http_req *req)
{
    return req->conn->peer[0] ? req->conn->peer : NULL;
}
