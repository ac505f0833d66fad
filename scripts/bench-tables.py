#!/usr/bin/env python3
"""Print the README's benchmark tables from bench/results/*.jsonl (the latest line
for each bench/impl/params wins), with ratios against the peers measured in the same
run. Usage: scripts/bench-tables.py [results-dir] > tables.md"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "bench", "results")


def load(name):
    path = os.path.join(root, name + ".jsonl")
    latest = {}
    if not os.path.exists(path):
        return latest
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except ValueError:
            continue
        key = (r.get("bench"), r.get("impl"), json.dumps(r.get("params", {}), sort_keys=True))
        latest[key] = r
    return latest


def rows(latest, bench):
    return [r for (b, _, _), r in latest.items() if b == bench]


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def store():
    lt = load("store")
    out = ["### Event store (`make bench-store`)", "",
           "Single-event appends with an exact expected version, each writer to its own stream, fsync on.",
           "`raw` is the ceiling (one write + fdatasync per batch, nothing else); `postgres` is PostgreSQL 15",
           "through libpq (message-db-style table, `synchronous_commit=on`).", "",
           "| writers | agora events/s | p50 / p99 µs | raw events/s | postgres events/s | agora / raw | agora / postgres |",
           "|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows(lt, "store.append"):
        by.setdefault(r["params"]["writers"], {})[r["impl"]] = r
    for w in sorted(by):
        a, raw, pg = by[w].get("agora"), by[w].get("raw"), by[w].get("postgres")
        ratio = lambda x, y: f"{x['ops_per_s'] / y['ops_per_s']:.2f}" if x and y else "–"
        out.append(f"| {w} | {fmt(a and a['ops_per_s'])} | {fmt(a and a['p50_us'])} / {fmt(a and a['p99_us'])} | "
                   f"{fmt(raw and raw['ops_per_s'])} | {fmt(pg and pg['ops_per_s'])} | {ratio(a, raw)} | {ratio(a, pg)}× |")
    out.append("")
    for r in rows(lt, "store.read_all"):
        out.append(f"- read `$all`: {fmt(r['ops_per_s'])} events/s, {fmt(r.get('mb_per_s'))} MB/s "
                   f"({fmt(r['params'].get('events'))} events, warm cache)")
    for r in sorted(rows(lt, "store.open"), key=lambda r: not r["params"].get("checkpoint")):
        how = "with the index checkpoint" if r["params"].get("checkpoint") else "full scan (checkpoint deleted)"
        out.append(f"- open {fmt(r['params'].get('events'))} events, {how}: {r['seconds']:.3f} s")
    for r in rows(lt, "store.index_memory"):
        out.append(f"- index memory for {fmt(r['params']['streams'])} streams: {r['index_bytes'] / 1e6:.1f} MB "
                   f"(RSS growth {r['rss_bytes'] / 1e6:.1f} MB)")
    return out


def http():
    lt = load("http")
    out = ["### HTTP server (`make bench-http`)", "",
           "wrk against a JSON hello endpoint; nginx answers `return 200` with the same body and the same worker count.", "",
           "| workers | connections | agora req/s | agora p50 / p99 µs | nginx req/s | nginx p50 / p99 µs | agora / nginx |",
           "|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows(lt, "http.hello"):
        by.setdefault((r["params"]["workers"], r["params"]["connections"]), {})[r["impl"]] = r
    for k in sorted(by):
        a, n = by[k].get("agora"), by[k].get("nginx")
        ratio = f"{a['ops_per_s'] / n['ops_per_s']:.2f}×" if a and n else "–"
        out.append(f"| {k[0]} | {k[1]} | {fmt(a and a['ops_per_s'])} | {fmt(a and a['p50_us'])} / {fmt(a and a['p99_us'])} | "
                   f"{fmt(n and n['ops_per_s'])} | {fmt(n and n['p50_us'])} / {fmt(n and n['p99_us'])} | {ratio} |")
    return out


def gateway():
    lt = load("gateway")
    out = ["### Gateway (`make bench-gateway`)", "",
           "The same upstream reached directly, through agora's gateway (JWT verification, a rate limit and routing on),",
           "through nginx `proxy_pass` with upstream keep-alive, and through HAProxy.", "",
           "| connections | impl | req/s | p50 / p99 µs |", "|---|---|---|---|"]
    for r in sorted(rows(lt, "gateway.proxy"), key=lambda r: (r["params"]["connections"], r["impl"])):
        out.append(f"| {r['params']['connections']} | {r['impl']} | {fmt(r['ops_per_s'])} | {fmt(r['p50_us'])} / {fmt(r['p99_us'])} |")
    return out


def resil():
    lt = load("resil")
    out = ["### Resilience policies (`make bench-resil`)", "", "| bench | params | ns/op | instructions/op (callgrind) |",
           "|---|---|---|---|"]
    for r in sorted(rows(lt, "resil.breaker") + rows(lt, "resil.gcra") + rows(lt, "resil.pipeline"),
                    key=lambda r: (r["bench"], json.dumps(r["params"]))):
        out.append(f"| `{r['bench']}` | {json.dumps(r['params'])} | {r['ns_per_op']:.1f} | {fmt(r.get('instructions_per_op'))} |")
    return out


def e2e():
    lt = load("e2e")
    out = ["### End to end (`make bench-e2e`)", "",
           "Orders over HTTP keep-alive by N concurrent clients against `agora run` (fsync on).", "",
           "| clients | orders confirmed/s | POST→202 p50 / p99 µs | POST→confirmed p99 ms | projection lag p99 ms |",
           "|---|---|---|---|---|"]
    for r in sorted(rows(lt, "e2e.orders"), key=lambda r: r["params"]["clients"]):
        out.append(f"| {r['params']['clients']} | {fmt(r['ops_per_s'])} | {fmt(r['p50_us'])} / {fmt(r['p99_us'])} | "
                   f"{fmt(r.get('confirm_p99_us', 0) / 1000)} | {fmt(r.get('projection_lag_p99_ms'))} |")
    return out


print("\n".join(store() + [""] + e2e() + [""] + http() + [""] + gateway() + [""] + resil()))
