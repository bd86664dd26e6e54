#!/usr/bin/env bash
# Heap profile of roomcast-dataplane holding N idle WebSocket connections, with heaptrack.
#
#   bash bench/profile-heap.sh [N]        # default N = 4000, each joined to a room of its own
#   BENCH_PROFILE_NO_ROOM=1 bash bench/profile-heap.sh [N]   # no room joined
#   BENCH_PROFILE_PARKED=1 bash bench/profile-heap.sh [N]
#       # N parked sessions instead: connection state recovery on, N clients (each joined to one
#       # of 100 rooms) killed with SIGKILL, the hub killed once it has parked them all
#
# Starts the hub under heaptrack (pinned to CPU 0), opens N idle connections with
# `roomcast-bench idle` (CPU 1), then kills the hub with SIGKILL while the connections are still
# open, so every live allocation shows up in heaptrack's "leaked" report: that is exactly what the
# idle connections hold. Prints the allocation sites in bytes per connection, largest first, and
# keeps the raw heaptrack file under bench/results/. Needs `heaptrack` (Debian package; installed
# with apt-get when missing and running as root). Loopback only; stops by itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${1:-4000}
PORT=${BENCH_PROFILE_PORT:-3399}
OUTDIR="$ROOT/bench/results/heap-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUTDIR"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_command heaptrack heaptrack || exit 1
ulimit -n "$(ulimit -Hn)"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  nice -n 10 cargo build --release -p roomcast-dataplane -p roomcast-bench >&2
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
# A private copy, so a concurrent rebuild cannot swap the binary under heaptrack.
cp "$BIN/roomcast-dataplane" "$OUTDIR/roomcast-dataplane"

PARKED=${BENCH_PROFILE_PARKED:-0}
HUB_ARGS=(--listen "127.0.0.1:$PORT")
if [[ $PARKED == 1 ]]; then
  cat >"$OUTDIR/config.json" <<JSON
{"socketio": {"namespaces": [{"name": "*", "relay": true, "policies": {"join": ["*"], "emitToJoined": true}}],
  "connectionStateRecovery": {"enabled": true, "maxDisconnectionDuration": 600000}},
 "metrics": {"listen": "127.0.0.1:$(( PORT + 1 ))"}}
JSON
  HUB_ARGS+=(--config "$OUTDIR/config.json")
fi
taskset -c 0 heaptrack -o "$OUTDIR/heaptrack" "$OUTDIR/roomcast-dataplane" "${HUB_ARGS[@]}" \
  >"$OUTDIR/server.out" 2>"$OUTDIR/server.err" &
HT=$!
GEN=""
cleanup() { [[ -n "$GEN" ]] && kill "$GEN" 2>/dev/null || true; kill "$HT" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do grep -q "listening on" "$OUTDIR/server.out" && break; sleep 0.1; done
grep -q "listening on" "$OUTDIR/server.out" || { echo "hub did not start" >&2; cat "$OUTDIR/server.err" >&2; exit 1; }
HUB=$(pgrep -f "^$OUTDIR/roomcast-dataplane --listen 127.0.0.1:$PORT" | head -1)

MODE=(idle --join user- --room-per-connection)
[[ ${BENCH_PROFILE_NO_ROOM:-0} == 1 ]] && MODE=(idle)
[[ $PARKED == 1 ]] && MODE=(recovery --rooms 100 --reconnect-attempts 1)
taskset -c 1 "$BIN/roomcast-bench" "${MODE[@]}" --url "ws://127.0.0.1:$PORT" --connections "$N" \
  --source-ips 127.0.0.241,127.0.0.242 --hold-secs 120 --report-secs 0 >"$OUTDIR/gen.out" 2>"$OUTDIR/gen.err" &
GEN=$!
for _ in $(seq 1 1200); do grep -q '^READY ' "$OUTDIR/gen.out" && break; sleep 0.1; done
grep '^READY ' "$OUTDIR/gen.out" >&2 || { echo "generator did not finish connecting" >&2; exit 1; }
sleep 3
if [[ $PARKED == 1 ]]; then
  kill -9 "$GEN"; wait "$GEN" 2>/dev/null || true; GEN=""
  parked=0
  for _ in $(seq 1 120); do
    parked=$(curl -s "http://127.0.0.1:$(( PORT + 1 ))/metrics" | awk '$1 == "roomcast_recovery_parked_sessions" { print $2 }')
    (( ${parked:-0} >= N )) && break
    sleep 0.5
  done
  echo "parked sessions: $parked" >&2
  sleep 2
fi
echo "hub RSS with $N connections: $(awk '$1 == "VmRSS:" { print $2, $3 }' "/proc/$HUB/status") (under heaptrack)" >&2
kill -9 "$HUB"
wait "$HT" 2>/dev/null || true
kill "$GEN" 2>/dev/null || true; wait "$GEN" 2>/dev/null || true; GEN=""

FILE=$(ls "$OUTDIR"/heaptrack*.zst "$OUTDIR"/heaptrack*.gz 2>/dev/null | head -1 || true)
[[ -n "$FILE" ]] || { echo "heaptrack wrote no data file" >&2; exit 1; }
heaptrack_print -f "$FILE" --print-peaks 0 --print-allocators 0 --print-temporary 0 --print-leaks 1 \
  --peak-limit 40 --sub-peak-limit 40 >"$OUTDIR/leaks.txt" 2>/dev/null

# Sub-entries ("... leaked over K calls from:") are individual allocation sites; show the first
# frame of ours (dataplane) and of the library that allocated.
awk -v n="$N" '
  function bytes(s,   v) { v = s + 0; if (s ~ /G$/) v *= 1e9; else if (s ~ /M$/) v *= 1e6; else if (s ~ /K$/) v *= 1e3; return v }
  function flush() { if (site != "") printf "%8.0f B/conn  %6d allocs  %s%s\n", per, calls, lib, (ours != "" ? "  <- " ours : "") }
  /leaked over .* calls from:$/ { flush(); per = bytes($1) / n; calls = $4; site = $0; ours = ""; lib = ""; next }
  /leaked over .* calls from$/ { flush(); site = ""; next }
  /^total memory leaked/ { flush(); site = ""; total = bytes($4) }
  site != "" && /at .*\.rs:[0-9]+/ {
    f = $2; sub(/^.*index.crates.io-[^\/]*\//, "", f); sub(/^\/rustc\/[^\/]*\//, "std:", f)
    if (f ~ /^tokio-1\.[0-9.]*\/src\/runtime\/task\/core\.rs/ && lib == "" && ours == "") lib = "tokio::spawn (task cell + future)"
    if (f ~ /^dataplane\// && ours == "") ours = f
    else if (lib == "" && ours == "" && f !~ /^dataplane\/|^std:|^library\/|^src\/|^tokio-1\.|^hashbrown|^alloc/) lib = f
  }
  END { flush(); printf "total live heap: %.0f B per connection (%d connections)\n", total / n, n }
' "$OUTDIR/leaks.txt" | sort -rn | awk '$1 >= 8 || /^total/' | tee "$OUTDIR/per-connection.txt"
echo "raw: $OUTDIR" >&2
