#!/usr/bin/env python3
"""A small OTLP/HTTP JSON receiver for the tracing tests (loopback only).

usage: otlp_receiver.py PORTFILE OUTFILE [--fail-first N]

Listens on 127.0.0.1 on a free port (written to PORTFILE once listening), takes
POST /v1/traces with Content-Type application/json, appends each request body as
one line to OUTFILE and answers 200 {}. With --fail-first N the first N requests
are answered 503 (to test the exporter's retries). Anything else is 404.
"""
import http.server
import json
import sys

PORTFILE, OUTFILE = sys.argv[1], sys.argv[2]
FAIL = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
seen = {"requests": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        if self.path != "/v1/traces":
            return self.answer(404, {"error": "not found"})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self.answer(415, {"error": "json only"})
        seen["requests"] += 1
        if seen["requests"] <= FAIL:
            return self.answer(503, {"error": "injected"})
        json.loads(body)  # a malformed body fails the request (500) and the test
        with open(OUTFILE, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        return self.answer(200, {})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402

os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
