#!/usr/bin/env python3
"""Check what otlp_receiver.py got: usage otlp_check.py OUTFILE TRACE_ID.

Exit 0 when the spans of TRACE_ID form one tree covering the gateway (server),
the service call (client), the ordering service (server), saga steps and store
appends, with consistent parent ids; else print why and exit 1 (the caller polls).
"""
import json
import re
import sys

out, trace = sys.argv[1], sys.argv[2]
spans, services = [], set()
try:
    lines = open(out).read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    req = json.loads(line)
    for rs in req["resourceSpans"]:
        for a in rs["resource"]["attributes"]:
            if a["key"] == "service.name":
                services.add(a["value"]["stringValue"])
        for ss in rs["scopeSpans"]:
            spans += [s for s in ss["spans"] if s["traceId"] == trace]


def need(cond, why):
    if not cond:
        print(why)
        sys.exit(1)


need(services == {"agora"} or not spans, f"service.name: {services}")
need(spans, f"no span of trace {trace} yet")
by = {s["spanId"]: s for s in spans}
for s in spans:
    need(re.fullmatch("[0-9a-f]{32}", s["traceId"]) and re.fullmatch("[0-9a-f]{16}", s["spanId"]),
         f"bad ids {s}")
    need(isinstance(s["startTimeUnixNano"], str) and int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0,
         f"bad times {s}")
    need("parentSpanId" not in s or s["parentSpanId"] in by, f"{s['name']}: parent not in the trace (yet)")


def named(prefix, kind):
    return [s for s in spans if s["name"].startswith(prefix) and s["kind"] == kind]


roots = [s for s in spans if "parentSpanId" not in s]
gw = named("gateway POST", 2)
need(len(roots) == 1 and gw and roots[0] is gw[0], f"the root is not the gateway span: {roots}")
call = [s for s in named("call ", 3) if s["parentSpanId"] == gw[0]["spanId"]]
need(call, "no client span under the gateway span")
svc = [s for s in named("ordering POST /api/v1/orders", 2) if s["parentSpanId"] == call[0]["spanId"]]
need(svc, "no ordering server span under the service call")
steps = [s for s in spans if s["name"].startswith("saga ") and s["parentSpanId"] == svc[0]["spanId"]]
names = {s["name"] for s in steps}
need({"saga ReserveInventory", "saga ProcessPayment", "saga ConfirmOrder"} <= names, f"saga steps: {names}")
attrs = {a["key"]: a["value"] for a in steps[0]["attributes"]}
need({"saga.id", "saga.step", "saga.outcome", "saga.attempt"} <= set(attrs), f"step attributes {attrs}")
appends = [s for s in spans if s["name"] == "store.append"]
need(any(a["parentSpanId"] == svc[0]["spanId"] for a in appends), "no append under the ordering span")
step_ids = {s["spanId"] for s in steps}
need(any(a["parentSpanId"] in step_ids for a in appends), "no append under a saga step")
a = {x["key"]: x["value"] for x in appends[0]["attributes"]}
need({"store.streams", "store.events", "store.bytes"} <= set(a) and "intValue" in a["store.events"],
     f"append attributes {a}")
print(f"ok: {len(spans)} spans")
