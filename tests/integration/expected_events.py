#!/usr/bin/env python3
"""The integration events the outbox relay must publish, from the event log.

usage: expected_events.py EVENTS.jsonl

EVENTS.jsonl is `agora store all` (one event per line). Prints "ID TYPE" for each
event of the published language (docs/events.md), in log order, TYPE being the
type it is published as: an outside consumer (bus_consumer.js) must receive
exactly these. Shared by bus_nats.sh and bus_cluster.sh.
"""
import json, sys
language = {"OrderPlaced": "order", "OrderConfirmed": "order", "OrderCancelled": "order",
            "OrderShipped": "order", "StockReserved": "stock", "StockReleased": "stock",
            "PaymentCaptured": "account", "PaymentRefunded": "account",
            "ShipmentArranged": "shipment", "ShipmentCancelled": "shipment",
            "ShipmentDispatched": "shipment", "ProductAdded": "product",
            "ProductPriceChanged": "product", "ProductDiscontinued": "product"}
# the per-order model's events (issue 19) publish the documented types
renamed = {"StockHeld": ("stock", "StockReserved"), "StockFreed": ("stock", "StockReleased"),
           "AccountCharged": ("account", "PaymentCaptured"),
           "AccountRefunded": ("account", "PaymentRefunded")}
for t, (prefix, published) in renamed.items():
    language[t] = prefix
for line in open(sys.argv[1]):
    e = json.loads(line)
    if language.get(e["type"]) == e["stream"].split("-", 1)[0]:
        print(e["id"], renamed.get(e["type"], (None, e["type"]))[1])
