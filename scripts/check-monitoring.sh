#!/usr/bin/env bash
# Checks the chart's monitoring files (charts/roomcast-operator/files/), part of `make lint`:
#  1. the alert rules with `promtool check rules`, and their unit tests (every alert firing and
#     not firing) with `promtool test rules` (promtool from Debian's `prometheus` package);
#  2. every query of the Grafana dashboard parses as PromQL (promtool checks them as recording
#     rules, with the dashboard's variables substituted as Grafana would);
#  3. every metric name the dashboard and the rules use is one the data plane exports
#     (dataplane/src/metrics/exported.txt, which monitoring.test.mjs checks against a real
#     scrape of a 3-node hub);
#  4. when helm is at hand (ROOMCAST_HELM, PATH, or the e2e cache; `make test-operator`, which
#     builds helm, always runs this script with ROOMCAST_HELM set), the chart renders the
#     PodMonitor, PrometheusRule and ServiceMonitor only with the values on and the Prometheus
#     Operator's CRDs present, and the dashboard ConfigMap with its value on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_command promtool prometheus
ensure_command python3 python3

chart=charts/roomcast-operator
files=$chart/files
rules=$files/prometheus-rules.yaml
dashboard=$files/dashboard-roomcast-hubs.json
exported=dataplane/src/metrics/exported.txt
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

promtool check rules "$rules"
promtool test rules "$files/prometheus-rules.test.yaml"

# The dashboard's queries as a rule file, and every metric name used (names are roomcast_*;
# alert names are CamelCase, so a word match does not confuse them).
python3 - "$dashboard" "$rules" "$exported" "$tmp/dashboard-rules.yaml" <<'PY'
import json, re, sys
dashboard, rules, exported, out = sys.argv[1:]
variables = {"$namespace": ".*", "$hub": ".*", "$__rate_interval": "5m"}
panels = [p for p in json.load(open(dashboard))["panels"] if p.get("type") != "row"]
exprs = []
for panel in panels:
    if not panel.get("targets"):
        sys.exit(f"check-monitoring: panel {panel['title']!r} has no query")
    for target in panel["targets"]:
        expr = target["expr"]
        for k, v in variables.items():
            expr = expr.replace(k, v)
        exprs.append((panel["title"], expr))
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (_, expr) in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
known = {l.split()[2] for l in open(exported) if l.startswith("# TYPE ")}
name = re.compile(r"\broomcast_[a-z0-9_]+\b")
used = {}
for title, expr in exprs:
    for n in name.findall(expr):
        used.setdefault(n, set()).add(f"dashboard panel {title!r}")
for n in name.findall(open(rules).read()):
    used.setdefault(n, set()).add(rules)
unknown = {n: sorted(w) for n, w in used.items() if n not in known}
for n, where in sorted(unknown.items()):
    print(f"check-monitoring: {n} is not exported by the data plane ({exported}); used in {', '.join(where)}", file=sys.stderr)
if unknown:
    sys.exit(1)
unused = sorted(known - used.keys())
print(f"check-monitoring: {len(exprs)} dashboard queries in {len(panels)} panels, {len(used)} metric names, all exported"
      + (f"; exported but unused: {', '.join(unused)}" if unused else ""), file=sys.stderr)
PY
promtool check rules "$tmp/dashboard-rules.yaml" >/dev/null

# 4. The chart's rendering, when helm is at hand (it is built by e2e/build-control-plane.sh).
helm="${ROOMCAST_HELM:-$(command -v helm || true)}"
if [[ -z "$helm" ]]; then
  for h in "${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}"/bin-*/helm; do
    [[ -x "$h" ]] && helm=$h
  done
fi
if [[ -z "$helm" ]]; then
  echo "check-monitoring: no helm yet; the chart's rendering is checked by make test-operator, which builds it" >&2
  exit 0
fi
on=(--set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true
  --set monitoring.dashboards.enabled=true --set metrics.serviceMonitor.enabled=true)
crds=(--api-versions monitoring.coreos.com/v1/PodMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule
  --api-versions monitoring.coreos.com/v1/ServiceMonitor)
# kinds ARGS...: the monitoring kinds the chart renders with ARGS, sorted, one line.
kinds() {
  "$helm" template roomcast "$chart" "$@" \
    | { grep -E '^kind: (PodMonitor|PrometheusRule|ServiceMonitor|ConfigMap)$' || true; } \
    | sed 's/^kind: //' | sort | tr '\n' ' '
}
expect() {
  local want=$1 got
  shift
  got="$(kinds "$@")"
  [[ "$got" == "$want" ]] || { echo "check-monitoring: helm template $* renders '$got', want '$want'" >&2; exit 1; }
}
expect ""
expect "" "${crds[@]}"
expect "ConfigMap " "${on[@]}"
expect "ConfigMap PodMonitor PrometheusRule ServiceMonitor " "${on[@]}" "${crds[@]}"
# The PrometheusRule carries the rule file (its spec is a rule file with every rule), and the
# ConfigMap the dashboard unchanged, with the sidecar's label.
"$helm" template roomcast "$chart" "${on[@]}" "${crds[@]}" -s templates/prometheusrule.yaml \
  | sed -n '/^spec:$/,$p' | sed '1d; s/^  //' >"$tmp/rendered-rules.yaml"
want="$(grep -c -- '- alert:' "$rules")"
# Through a file: `grep -q` stops reading at the match, and promtool's SIGPIPE fails the pipe.
promtool check rules "$tmp/rendered-rules.yaml" >"$tmp/rules-check.txt"
grep -q "SUCCESS: $want rules found" "$tmp/rules-check.txt" \
  || { echo "check-monitoring: the rendered PrometheusRule lacks some of the $want rules" >&2; exit 1; }
"$helm" template roomcast "$chart" "${on[@]}" -s templates/dashboards.yaml >"$tmp/cm.yaml"
grep -q '^    grafana_dashboard: "1"$' "$tmp/cm.yaml" \
  || { echo "check-monitoring: the dashboard ConfigMap lacks the grafana_dashboard label" >&2; exit 1; }
python3 - "$tmp/cm.yaml" "$dashboard" <<'PY'
import json, sys
rendered, dashboard = sys.argv[1:]
lines = open(rendered).read().split("\n")
start = lines.index("  roomcast-hubs.json: |-") + 1
body = "\n".join(l[4:] for l in lines[start:] if l.startswith("    ") or not l)
if json.loads(body) != json.load(open(dashboard)):
    sys.exit("check-monitoring: the dashboard ConfigMap differs from the dashboard file")
PY
# A watched namespace narrows the PodMonitor to it.
"$helm" template roomcast "$chart" "${on[@]}" "${crds[@]}" --set watchNamespace=chat -s templates/podmonitor.yaml \
  | grep -q -- '- chat' || { echo "check-monitoring: the PodMonitor does not select the watched namespace" >&2; exit 1; }
"$helm" lint --quiet "$chart" "${on[@]}" >/dev/null
echo "check-monitoring: chart renders the monitoring objects only when enabled and the CRDs exist" >&2
