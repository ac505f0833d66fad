#!/usr/bin/env bash
# Integration: the deploy/ files (issue 18, dashboards and alerts).
# - deploy/prometheus/agora-alerts.yml passes `promtool check rules`, and
#   `promtool test rules deploy/prometheus/agora-alerts.test.yml` passes (each alert
#   fires on synthetic series and stays silent on healthy ones);
# - deploy/grafana/agora-dashboard.json parses as a Grafana dashboard (panels with
#   Prometheus targets, unique ids);
# - every metric name the dashboard and the alert rules use is one a running
#   `agora run` really exports (its /metrics families), and every label they match
#   on exists on that family's series.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest). Skips (77) without promtool (Debian's
# `prometheus` package, scripts/bootstrap.sh).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
command -v promtool >/dev/null || { echo "SKIP: promtool is not installed (apt-get install prometheus)"; exit 77; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame

(cd "$SRC/deploy/prometheus" && promtool check rules agora-alerts.yml) || fail "promtool check rules"
(cd "$SRC/deploy/prometheus" && promtool test rules agora-alerts.test.yml) || fail "promtool test rules"

agora_start "$TMP/d" live
ADMIN="Authorization: Bearer $("$BIN" token --data "$TMP/d" --sub ops --role admin)"
curl -sf "$A/api/v1/products?limit=1" >/dev/null || fail "GET products"
curl -sf "$A/metrics" -H "$ADMIN" >"$TMP/metrics" || fail "GET /metrics"

python3 - "$SRC/deploy/grafana/agora-dashboard.json" "$SRC/deploy/prometheus/agora-alerts.yml" "$TMP/metrics" <<'PY' || fail "metric names"
import json, re, sys
dash_path, rules_path, metrics_path = sys.argv[1:4]

# what agora exports: families (from # TYPE) and the label names seen on each
families, labels = {}, {}
for line in open(metrics_path):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families[m[1]] = m[2]
        labels.setdefault(m[1], set())
        continue
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
    if m and not line.startswith("#"):
        name = m[1]
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and families.get(name[: -len(suffix)]) == "histogram":
                name = name[: -len(suffix)]
        labels.setdefault(name, set()).update(re.findall(r'([a-zA-Z_]\w*)="', m[3] or ""))

def family_of(name):
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and families.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return None

errors = []
def check_expr(where, expr):
    for m in re.finditer(r"\b(agora_[a-z0-9_]+)(\{([^}]*)\})?", expr):
        fam = family_of(m[1])
        if not fam:
            errors.append(f"{where}: {m[1]} is not exported by agora")
            continue
        for lbl in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m[3] or ""):
            if lbl in ("instance", "job"):
                continue  # added by Prometheus at scrape
            if labels.get(fam) and lbl not in labels[fam] and not (lbl == "le" and families[fam] == "histogram"):
                errors.append(f"{where}: {fam} has no label {lbl} (has {sorted(labels[fam])})")

dash = json.load(open(dash_path))
assert dash.get("title") and isinstance(dash.get("panels"), list) and dash["panels"], "no panels"
ids, exprs = set(), 0
for i, p in enumerate(dash["panels"]):
    pid = p.get("id", i + 1)
    assert pid not in ids, f"panel id {pid} twice"
    ids.add(pid)
    assert p.get("title") and p.get("type") and p.get("gridPos"), f"panel {i}: title, type, gridPos"
    for t in p.get("targets", []):
        check_expr(f"dashboard panel '{p['title']}'", t["expr"])
        exprs += 1
assert exprs >= 10, f"only {exprs} queries"

rules = open(rules_path).read()
n = 0
for m in re.finditer(r"expr:\s*(\|\n((?:\s{10,}.*\n)+)|(.*))", rules):
    check_expr("alert rule", m[2] or m[3])
    n += 1
assert n >= 5, f"only {n} alert rules"
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {exprs} dashboard queries and {n} alert rules use only exported metrics")
PY
kill -TERM "$SPID"
wait "$SPID" || fail "agora run did not stop cleanly"
SPID=""
echo "PASS"
