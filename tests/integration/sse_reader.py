#!/usr/bin/env python3
"""A small EventSource-like reader for the SSE integration test (issue 18).

usage: sse_reader.py URL [--header 'Name: value']... [--max N] [--timeout S] [--last-event-id ID]

Reads a text/event-stream over plain HTTP/1.1 (http.client, which decodes the
chunked body as it arrives) and prints one JSON line per event:
{"id": ..., "event": ..., "data": ..., "t": seconds since the request}, then
{"end": true|false, "status": N} where end says whether the server ended the
stream itself (false: --max events read or --timeout passed). "open" goes to
stderr once the headers are in. Comments
(": ping") are counted in the last line as "comments". A non-2xx answer prints
{"status": N, "contentType": ..., "body": ...} and exits 0.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--max", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--last-event-id")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=a.timeout)
    headers = {"Accept": "text/event-stream"}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    if a.last_event_id is not None:
        headers["Last-Event-ID"] = a.last_event_id
    t0 = time.monotonic()
    path = u.path + ("?" + u.query if u.query else "")
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    if r.status // 100 != 2:
        print(json.dumps({"status": r.status, "contentType": r.getheader("Content-Type"),
                          "body": r.read().decode()}))
        return
    print("open", file=sys.stderr, flush=True)  # the headers are in: the stream is open
    ev = {"id": None, "event": None, "data": []}
    n = comments = 0
    ended = False
    try:
        while time.monotonic() - t0 < a.timeout:  # the whole read, heartbeats or not
            line = r.readline()
            if not line:
                ended = True
                break
            line = line.decode().rstrip("\r\n")
            if line == "":
                if ev["data"]:
                    print(json.dumps({"id": ev["id"], "event": ev["event"],
                                      "data": "\n".join(ev["data"]),
                                      "t": round(time.monotonic() - t0, 3)}), flush=True)
                    n += 1
                    if a.max and n >= a.max:
                        break
                ev = {"id": None, "event": None, "data": []}
            elif line.startswith(":"):
                comments += 1
            else:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    ev["data"].append(v)
                elif k in ("id", "event"):
                    ev[k] = v
    except TimeoutError:
        pass
    except OSError:
        pass
    print(json.dumps({"end": ended, "status": r.status, "comments": comments,
                      "contentType": r.getheader("Content-Type")}))


if __name__ == "__main__":
    sys.exit(main())
