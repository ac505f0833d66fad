#!/usr/bin/env python3
"""Orders through a gateway whose acknowledgements are kept, for the crash test
against `agora cluster up` (cluster_crash.sh).

usage: cluster_orders.py place URL CUSTOMERS PRODUCT SECONDS OUT
       cluster_orders.py verify URL CUSTOMERS OUT TIMEOUT_S

CUSTOMERS: lines "TOKEN CUSTOMER_ID". place: one thread per customer places orders
(1 x PRODUCT) for SECONDS whatever happens to the cluster (a refused connection or a
timeout is counted and retried after 0.1 s) and appends "INDEX ORDER_ID" to OUT,
flushed, the moment a 202 arrives: OUT lists every order the cluster acknowledged.
verify: every order in OUT reaches confirmed or cancelled within TIMEOUT_S (read as
the customer who placed it); prints a summary, exits 1 naming those that did not.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

ADDR = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701",
        "country": "US"}


def call(url, method, path, token, body=None, timeout=5):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def customers(path):
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def place(url, custs, product, seconds, out):
    lock = threading.Lock()
    stats = {"acked": 0, "other": 0, "down": 0}
    end = time.monotonic() + seconds
    f = open(out, "a", encoding="utf-8")

    def worker(i, token, cid):
        body = {"customerId": cid, "items": [{"productId": product, "quantity": 1}],
                "shippingAddress": ADDR}
        while time.monotonic() < end:
            try:
                st, data = call(url, "POST", "/api/v1/orders", token, body)
            except (OSError, http.client.HTTPException):
                with lock:
                    stats["down"] += 1
                time.sleep(0.1)
                continue
            with lock:
                if st == 202:
                    f.write(f"{i} {json.loads(data)['orderId']}\n")
                    f.flush()
                    stats["acked"] += 1
                else:
                    stats["other"] += 1
            if st != 202:
                time.sleep(0.1)

    ts = [threading.Thread(target=worker, args=(i, t, c)) for i, (t, c) in enumerate(custs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    f.close()
    print(f"placed: {stats['acked']} acknowledged (202), {stats['other']} other answers, "
          f"{stats['down']} without an answer")


def verify(url, custs, out, timeout):
    with open(out, encoding="utf-8") as f:
        orders = [line.split() for line in f if line.strip()]
    end = time.monotonic() + timeout
    final, pending = {}, {oid: int(i) for i, oid in orders}
    while pending and time.monotonic() < end:
        for oid, i in list(pending.items()):
            try:
                st, data = call(url, "GET", f"/api/v1/orders/{oid}", custs[i][0])
            except (OSError, http.client.HTTPException):
                continue
            s = json.loads(data).get("status") if st == 200 else f"HTTP {st}"
            if s in ("confirmed", "cancelled"):
                final[s] = final.get(s, 0) + 1
                del pending[oid]
        if pending:
            time.sleep(0.5)
    if pending:
        print(f"{len(pending)} acknowledged orders not final: {sorted(pending)[:20]}")
        return 1
    print(f"every acknowledged order final: {len(orders)} ({final})")
    return 0


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "place":
        place(sys.argv[2], customers(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6])
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "verify":
        return verify(sys.argv[2], customers(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
