#!/usr/bin/env python3
"""A catalog with stock that no benchmark run exhausts, appended straight to a store
(there is no HTTP call that adds stock; the platform then runs with --no-seed):
20 products, so reservations spread over 20 stock streams as in a real catalog, each
with 10^9 units. Used by bench/e2e/run.sh, bench/e2e/profile.sh and bench/soak/soak.sh.

Usage: seed_catalog.py AGORA_BIN (--data DIR | --store URI) [SKU_PREFIX]"""
import json
import subprocess
import sys
import uuid

agora, where = sys.argv[1], sys.argv[2:4]
prefix = sys.argv[4] if len(sys.argv) > 4 else "BE"
for i in range(20):
    pid = str(uuid.uuid4())
    product = {"productId": pid, "sku": f"{prefix}-{i:02d}", "name": f"Bench item {i}",
               "price": {"amount": 499 + 250 * i, "currency": "USD"}}
    for stream, typ, payload in ((f"product-{pid}", "ProductAdded", product),
                                 (f"stock-{pid}", "StockAdded", {"productId": pid, "quantity": 1000000000})):
        subprocess.run([agora, "store", "append", stream, *where, "--type", typ,
                        "--expected-version", "no-stream", "--payload", json.dumps(payload)],
                       check=True, stdout=subprocess.DEVNULL)
