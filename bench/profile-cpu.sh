#!/usr/bin/env bash
# CPU profile of roomcast-dataplane during the dense fan-out scenario, with `perf record`
# (software clock: this machine's VM has no hardware counters).
#
#   bash bench/profile-cpu.sh [SUBSCRIBERS] [RATE] [SECONDS]   # default 1000 200 15
#
# Starts the hub pinned to CPU 0 (the built-in relay app, as in bench/run.sh), SUBSCRIBERS
# `roomcast-bench subscribe --join bench-room` connections in two processes on CPU 1, and one
# publisher emitting RATE 100-byte events per second into the room for SECONDS; samples the hub
# at 499 Hz with DWARF call graphs over the publishing window. Prints the functions with the
# most self time and the share of the big buckets (syscalls, WebSocket framing, the relay,
# allocation), and keeps perf.data under bench/results/cpu-*. Needs `perf` (Debian's
# linux-perf; installed with apt-get when missing and running as root). Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SUBS=${1:-1000}
RATE=${2:-200}
SECS=${3:-15}
PORT=${BENCH_PROFILE_PORT:-3398}
OUTDIR="$ROOT/bench/results/cpu-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUTDIR"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_command perf linux-perf || exit 1
ulimit -n "$(ulimit -Hn)"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  nice -n 10 cargo build --release -p roomcast-dataplane -p roomcast-bench >&2
fi
BIN="$ROOT/target/release"
cp "$BIN/roomcast-dataplane" "$OUTDIR/roomcast-dataplane"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c 0 "$OUTDIR/roomcast-dataplane" --listen "127.0.0.1:$PORT" >"$OUTDIR/server.out" 2>"$OUTDIR/server.err" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do grep -q "listening on" "$OUTDIR/server.out" 2>/dev/null && break; sleep 0.1; done

half=$(( SUBS / 2 ))
for p in 0 1; do
  taskset -c 1 "$BIN/roomcast-bench" subscribe --url "ws://127.0.0.1:$PORT" --connections $(( p == 0 ? half : SUBS - half )) \
    --source-ips "127.0.0.$(( 81 + p ))" --join bench-room --hold-secs $(( SECS + 60 )) \
    >"$OUTDIR/sub$p.out" 2>"$OUTDIR/sub$p.err" &
  PIDS+=("$!")
done
for _ in $(seq 600); do
  (( $(cat "$OUTDIR"/sub*.out 2>/dev/null | grep -c "^READY ") == 2 )) && break
  sleep 0.1
done
sleep 1

taskset -c 1 "$BIN/roomcast-bench" publish --url "ws://127.0.0.1:$PORT" --room bench-room --source-ips 127.0.0.80 \
  --rate "$RATE" --duration-secs "$SECS" --payload-bytes 100 >"$OUTDIR/pub.out" 2>"$OUTDIR/pub.err" &
PUB=$!
PIDS+=("$PUB")
sleep 1
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$SERVER" -o "$OUTDIR/perf.data" \
  -- sleep $(( SECS - 2 )) >"$OUTDIR/perf-record.log" 2>&1
wait "$PUB" || true

perf report -i "$OUTDIR/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 -g none 2>/dev/null \
  | grep -E '^ +[0-9]' >"$OUTDIR/self.txt" || true
perf report -i "$OUTDIR/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none 2>/dev/null \
  | grep -E '^ +[0-9]' >"$OUTDIR/children.txt" || true
echo "== self time, top functions ($OUTDIR/self.txt)"
head -30 "$OUTDIR/self.txt"
echo "== inclusive time, top entries ($OUTDIR/children.txt)"
head -40 "$OUTDIR/children.txt"
grep -h "DONE" "$OUTDIR"/pub.out || true
