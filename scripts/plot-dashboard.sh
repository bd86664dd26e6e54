#!/usr/bin/env bash
# Regenerates docs/images/dashboard-*.png: runs dataplane/tests/js/monitoring.test.mjs (a real
# Prometheus scraping a 3-node hub on loopback under traffic) with ROOMCAST_MONITORING_OUT set,
# then draws every dashboard panel's query over that data with matplotlib (from PyPI, in a
# virtualenv cached outside the checkout). Not run by any tier: the images are committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=3.11.2
venv="${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}/tools/plot-venv-$version"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "plot-dashboard: installing matplotlib $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$version"
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
ROOMCAST_MONITORING_OUT="$out" bash dataplane/tests/js/run.sh monitoring.test.mjs
"$venv/bin/python" scripts/plot-dashboard.py "$out" charts/roomcast-operator/files/dashboard-roomcast-hubs.json docs/images
