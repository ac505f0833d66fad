#!/usr/bin/env python3
"""Invariants of the PlaceOrder saga after crashes, from the event log and the read models.

usage: saga_check.py EVENTS.jsonl READMODELS_DIR

READMODELS_DIR may be a postgresql:// URI (the read models' schemas rm_<name> in
that database, read with psql: serve.sh).

EVENTS.jsonl is `agora store all` (one event per line, in commit order). The log is
the truth; the read models must agree with it. Prints one summary line and exits 0,
or prints every violation found (up to a limit) and exits 1.

With AGORA_SAGA_MODE=choreography (saga_crash_chor.sh) an order's flow has no
saga-<id> stream: its saga is the sagas read model's row for the OrderPlaced's
sagaId, which must exist and agree with the order (confirmed: completed,
cancelled: compensated); every other check is the same.
"""
import collections
import json
import os
import sqlite3
import sys
import uuid

TERMINAL = {"SagaCompleted": "completed", "SagaCompensated": "compensated", "SagaFailed": "failed"}
MAX_REPORT = 30
CHOREO = os.environ.get("AGORA_SAGA_MODE") == "choreography"
ORDER_TO_SAGA = {"confirmed": "completed", "shipped": "completed", "cancelled": "compensated"}


class Check:
    def __init__(self):
        self.problems = []

    def fail(self, msg):
        self.problems.append(msg)


def load_events(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_stream(stream):
    """'stock-<uuid>' -> ('stock', '<uuid>'); customer-email-* keeps its own prefix."""
    if stream.startswith("customer-email-"):
        return "customer-email", stream[len("customer-email-"):]
    prefix, _, rest = stream.partition("-")
    return prefix, rest


def amount(d, key="amount"):
    """Money {"amount", "currency"}, or minor units alone (AccountCharged/Refunded)."""
    return d[key]["amount"] if isinstance(d[key], dict) else d[key]


# Since issue 19 a charge is AccountCharged/AccountRefunded on the account (without
# the balance after it) and a reservation StockHeld/StockFreed/StockDispatched on the
# stock item; they count exactly as the older types.
ACCOUNT_ALIASES = {"AccountCharged": "PaymentCaptured", "AccountRefunded": "PaymentRefunded"}
STOCK_ALIASES = {"StockHeld": "StockReserved", "StockFreed": "StockReleased",
                 "StockDispatched": "StockShipped"}


class Log:
    """What the events say, folded once in commit order."""

    def __init__(self, events, chk):
        self.sagas = {}                       # saga id -> last type
        self.saga_of_order = {}               # order id -> saga id (from OrderPlaced)
        self.orders = {}                      # order id -> status
        self.order_total = {}
        self.order_lines = collections.defaultdict(dict)  # order -> product -> qty
        self.confirmed_events = collections.Counter()
        self.cancelled_events = collections.Counter()
        self.deposits = self.withdrawn = self.captured = self.refunded = 0
        self.balance = {}                     # account -> last balance in an event
        self.account_sum = collections.Counter()  # account -> balance recomputed from amounts
        self.captures = collections.defaultdict(list)  # order -> amounts
        self.refunds = collections.defaultdict(list)
        self.on_hand = collections.Counter()
        self.reserved = collections.Counter()
        self.net_res = collections.Counter()  # (product, order) -> reservations - releases
        self.res_qty = {}                     # (product, order) -> quantity reserved
        self.shipments = {}                   # order -> arranged/cancelled
        for e in events:
            self.apply(e, chk)

    def apply(self, e, chk):
        kind, sid = split_stream(e["stream"])
        t, d = e["type"], e["data"]
        if kind == "saga":
            self.sagas[sid] = t
        elif kind == "order":
            self.apply_order(sid, t, d)
        elif kind == "account":
            self.apply_account(sid, t, d, chk)
        elif kind == "stock":
            self.apply_stock(sid, t, d, e["position"], chk)
        elif kind == "shipment":
            self.shipments[sid] = "arranged" if t == "ShipmentArranged" else (
                "cancelled" if t == "ShipmentCancelled" else self.shipments.get(sid))

    def apply_order(self, oid, t, d):
        if t == "ItemAdded":
            lines = self.order_lines[oid]
            lines[d["productId"]] = lines.get(d["productId"], 0) + d["quantity"]
        elif t == "ItemRemoved":
            self.order_lines[oid].pop(d.get("productId"), None)
        elif t == "OrderPlaced":
            self.orders[oid] = "pending"
            self.order_total[oid] = amount(d, "total")
            self.saga_of_order[oid] = d.get("sagaId")
        elif t == "OrderConfirmed":
            self.orders[oid] = "confirmed"
            self.confirmed_events[oid] += 1
        elif t == "OrderCancelled":
            self.orders[oid] = "cancelled"
            self.cancelled_events[oid] += 1
        elif t == "OrderShipped":
            self.orders[oid] = "shipped"

    def apply_account(self, aid, t, d, chk):
        compact = t in ACCOUNT_ALIASES
        t = ACCOUNT_ALIASES.get(t, t)
        if t == "MoneyDeposited":
            self.deposits += amount(d)
            self.account_sum[aid] += amount(d)
        elif t == "MoneyWithdrawn":
            self.withdrawn += amount(d)
            self.account_sum[aid] -= amount(d)
        elif t == "PaymentCaptured":
            self.captured += amount(d)
            self.account_sum[aid] -= amount(d)
            self.captures[d["orderId"]].append(amount(d))
        elif t == "PaymentRefunded":
            self.refunded += amount(d)
            self.account_sum[aid] += amount(d)
            self.refunds[d["orderId"]].append(amount(d))
        if compact:  # no balance recorded: the previous one moved by the amount
            self.balance[aid] = self.balance.get(aid, 0) + (
                amount(d) if t == "PaymentRefunded" else -amount(d))
        if "balance" in d or compact:
            if not compact:
                self.balance[aid] = amount(d, "balance")
            if self.balance[aid] < 0:
                chk.fail(f"account {aid}: negative balance {self.balance[aid]} after {t}")
        elif t == "AccountOpened":
            self.balance[aid] = 0

    def apply_stock(self, pid, t, d, pos, chk):
        t = STOCK_ALIASES.get(t, t)
        q = d.get("quantity", 0)
        if t == "StockAdded":
            self.on_hand[pid] += q
            return
        key = (pid, d.get("orderId"))
        if t == "StockReserved":
            self.reserved[pid] += q
            self.net_res[key] += 1
            self.res_qty[key] = q
        elif t == "StockReleased":
            self.reserved[pid] -= q
            self.net_res[key] -= 1
        else:
            return
        if not 0 <= self.reserved[pid] <= self.on_hand[pid]:
            chk.fail(f"stock {pid}: reserved {self.reserved[pid]} outside 0..{self.on_hand[pid]} at position {pos}")
        if self.net_res[key] not in (0, 1):
            chk.fail(f"stock {pid}: order {key[1]} has {self.net_res[key]} net reservations after {t} at {pos}")


def check_sagas(log, chk):
    for sid, last in log.sagas.items():
        if last not in TERMINAL:
            chk.fail(f"saga {sid} is not terminal (last event {last})")
        elif last == "SagaFailed":
            chk.fail(f"saga {sid} failed (a compensation kept failing)")
    for oid, sid in log.saga_of_order.items():
        if sid not in log.sagas and not CHOREO:
            chk.fail(f"order {oid} was placed but its saga {sid} never started")


def check_orders(log, chk):
    for oid, st in log.orders.items():
        if st not in ("confirmed", "cancelled", "shipped"):
            chk.fail(f"order {oid} is still {st}")
        if log.confirmed_events[oid] > 1 or log.cancelled_events[oid] > 1:
            chk.fail(f"order {oid}: confirmed {log.confirmed_events[oid]}x, cancelled {log.cancelled_events[oid]}x")
        if log.confirmed_events[oid] and log.cancelled_events[oid]:
            chk.fail(f"order {oid} is both confirmed and cancelled")


def check_payments(log, chk):
    for oid, caps in log.captures.items():
        if len(caps) > 1:
            chk.fail(f"order {oid} charged {len(caps)} times: {caps}")
        if oid in log.order_total and caps[0] != log.order_total[oid]:
            chk.fail(f"order {oid} charged {caps[0]}, total is {log.order_total[oid]}")
    for oid, refs in log.refunds.items():
        if len(refs) > 1 or not log.captures.get(oid) or refs[0] != log.captures[oid][0]:
            chk.fail(f"order {oid}: refunds {refs} for captures {log.captures.get(oid)}")
    for oid, st in log.orders.items():
        charged = len(log.captures.get(oid, [])) - len(log.refunds.get(oid, []))
        if st == "confirmed" and log.refunds.get(oid):
            chk.fail(f"order {oid} is confirmed and refunded")
        if st == "confirmed" and log.order_total[oid] > 0 and charged != 1:
            chk.fail(f"order {oid} is confirmed but net charged {charged} times")
        if st == "cancelled" and charged != 0:
            chk.fail(f"order {oid} is cancelled but keeps its payment")


def check_money(log, chk):
    total_bal = sum(log.balance.values())
    lhs, rhs = log.deposits, total_bal + log.captured - log.refunded + log.withdrawn
    if lhs != rhs:
        chk.fail(f"money not conserved: deposits {lhs} != balances {total_bal} + captured {log.captured}"
                 f" - refunded {log.refunded} + withdrawn {log.withdrawn} = {rhs}")
    for aid, bal in log.balance.items():
        if bal != log.account_sum[aid]:
            chk.fail(f"account {aid}: balance {bal} but its movements sum to {log.account_sum[aid]}")


def check_stock(log, chk):
    for (pid, oid), n in log.net_res.items():
        st = log.orders.get(oid)
        want = 1 if st in ("confirmed", "shipped") else 0
        if n != want:
            chk.fail(f"stock {pid}: order {oid} ({st}) holds {n} reservations, expected {want}")
    for oid, st in log.orders.items():
        if st != "confirmed":
            continue
        for pid, q in log.order_lines[oid].items():
            if log.net_res[(pid, oid)] != 1 or log.res_qty.get((pid, oid)) != q:
                chk.fail(f"confirmed order {oid} does not hold its reservation of {q} x {pid}")
        if log.shipments.get(oid) != "arranged":
            chk.fail(f"confirmed order {oid} has shipment {log.shipments.get(oid)}")
    for oid, st in log.orders.items():
        if st == "cancelled" and log.shipments.get(oid) == "arranged":
            chk.fail(f"cancelled order {oid} still has an arranged shipment")


def query_pg(uri, name, sql):
    """The read model's schema rm_<name> through psql; numbers as ints, bytea as bytes."""
    import subprocess
    out = subprocess.run(["psql", uri, "-AtqX", "-F", "\t", "-c",
                          f"SET search_path TO rm_{name}", "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    def cell(v):
        if v.startswith("\\x"):
            return bytes.fromhex(v[2:])
        return int(v) if v.lstrip("-").isdigit() else v
    return [tuple(cell(v) for v in line.split("\t")) for line in out.splitlines() if line]


def query(rm_dir, name, sql):
    if rm_dir.startswith("postgresql://"):
        return query_pg(rm_dir, name, sql)
    db = sqlite3.connect(f"file:{os.path.join(rm_dir, name + '.db')}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def id_text(v):
    """An id column: the read models store UUIDs as 16-byte BLOBs (issue 19)."""
    return str(uuid.UUID(bytes=v)) if isinstance(v, bytes) and len(v) == 16 else v


def check_read_models(log, rm_dir, chk):
    """The projections must agree with the log (they were caught up before the check)."""
    for oid, st in query(rm_dir, "orders", "SELECT id, status FROM orders"):
        oid = id_text(oid)
        if oid in log.orders and log.orders[oid] != st:
            chk.fail(f"orders read model: {oid} is {st}, the log says {log.orders[oid]}")
    for aid, bal in query(rm_dir, "accounts", "SELECT id, balance FROM accounts"):
        if log.balance.get(aid, 0) != bal:
            chk.fail(f"accounts read model: {aid} balance {bal}, the log says {log.balance.get(aid)}")
    for pid, on, res in query(rm_dir, "stock", "SELECT product_id, on_hand, reserved FROM stock"):
        if on != log.on_hand[pid] or res != log.reserved[pid]:
            chk.fail(f"stock read model: {pid} on_hand {on} reserved {res},"
                     f" the log says {log.on_hand[pid]} / {log.reserved[pid]}")
    order_of_saga = {sid: oid for oid, sid in log.saga_of_order.items()}
    rows = 0
    for sid, st in query(rm_dir, "sagas", "SELECT id, status FROM sagas"):
        sid = id_text(sid)
        if CHOREO and sid not in log.sagas and sid in order_of_saga:
            rows += 1
            want = ORDER_TO_SAGA.get(log.orders.get(order_of_saga[sid]), "running")
        else:
            want = TERMINAL.get(log.sagas.get(sid), "running")
        if st != want:
            chk.fail(f"sagas read model: {sid} is {st}, the log says {want}")
    if CHOREO and rows != len([s for s in order_of_saga if s not in log.sagas]):
        chk.fail(f"sagas read model: {rows} choreographed flows, {len(order_of_saga)} orders placed")


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    chk = Check()
    log = Log(load_events(sys.argv[1]), chk)
    for fn in (check_sagas, check_orders, check_payments, check_money, check_stock):
        fn(log, chk)
    check_read_models(log, sys.argv[2], chk)
    statuses = collections.Counter(log.orders.values())
    sagas = collections.Counter(TERMINAL.get(t, "running") for t in log.sagas.values())
    if CHOREO:
        sagas = collections.Counter(ORDER_TO_SAGA.get(log.orders.get(o), "running")
                                    for o, s in log.saga_of_order.items() if s not in log.sagas)
    summary = (f"{len(log.orders)} orders ({dict(statuses)}), {sum(sagas.values())} sagas ({dict(sagas)}),"
               f" deposits {log.deposits}, captured {log.captured}, refunded {log.refunded},"
               f" {len(log.captures)} charges, {sum(1 for n in log.net_res.values() if n)} live reservations")
    if chk.problems:
        for p in chk.problems[:MAX_REPORT]:
            print("VIOLATION:", p)
        if len(chk.problems) > MAX_REPORT:
            print(f"... and {len(chk.problems) - MAX_REPORT} more")
        print("saga_check: FAIL:", summary)
        return 1
    print("saga_check: ok:", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
