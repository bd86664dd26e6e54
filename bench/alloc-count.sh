#!/usr/bin/env bash
# Allocator calls of the hub per handshake or per delivery, counted exactly: uprobes on glibc's
# malloc, realloc, calloc and free (`perf probe`), counted with `perf stat` on the server only.
# Unlike CPU time, the counts do not move with the VM's noise, so a change that saves an
# allocation shows as a change of the count.
#
#   bash bench/alloc-count.sh              # connect: 2,000 handshakes with a room join
#   bash bench/alloc-count.sh fanout       # 1,000 subscribers of one room, 100 events/s for 3 s
#   BENCH_ALLOC_SITES=1 bash bench/alloc-count.sh   # also where the mallocs come from
#   BENCH_ALLOC_BIN=/path/to/roomcast-dataplane ... # another build (to compare two)
#
# Prints the calls per handshake (connect: counted from the first connection until every client
# has its join acknowledged) or per delivery (fanout: over the publishing window). With
# BENCH_ALLOC_SITES=1, a second, slower run records each malloc's call stack (DWARF) and prints
# the mallocs per unit by the first function of the data plane on the stack. The server runs on
# CPU 0, the clients (`roomcast-bench`) on CPU 1, on 127.0.0.0/8 only. Needs root and `perf`
# (installed with apt-get when missing); keeps its files under bench/results/alloc-*.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=${1:-connect}
[[ $MODE == connect || $MODE == fanout ]] || { echo "usage: $0 [connect|fanout]" >&2; exit 2; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_command perf linux-perf || exit 1
ulimit -n "$(ulimit -Hn)"
if [[ -z ${BENCH_ALLOC_BIN:-} && ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  nice -n 10 cargo build --release --locked -p roomcast-dataplane -p roomcast-bench >&2
fi
BIN="$ROOT/target/release"
SERVER_BIN=${BENCH_ALLOC_BIN:-$BIN/roomcast-dataplane}
OUTDIR="$ROOT/bench/results/alloc-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUTDIR"
LIBC=$(ldd "$SERVER_BIN" | awk '/libc\.so/ { print $3 }')
[[ -n $LIBC ]] || { echo "no glibc in $SERVER_BIN's libraries (musl or another allocator?)" >&2; exit 1; }
EVENTS=()
for fn in malloc realloc calloc free; do
  perf probe -q -x "$LIBC" -a "$fn" 2>/dev/null || true
  perf probe -l 2>/dev/null | grep -q "probe_libc:$fn " || { echo "cannot place a uprobe on $fn in $LIBC" >&2; exit 1; }
  EVENTS+=("probe_libc:$fn")
done

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# run PORT CLIENT-IP PUBLISHER-IP IN-FLIGHT PERF-ARGS...: one measured round (server, clients,
# perf on the server); sets UNITS.
run() {
  local port=$1 src=$2 pubsrc=$3 inflight=$4; shift 4
  taskset -c 0 "$SERVER_BIN" --listen "127.0.0.1:$port" >"$OUTDIR/server.out" 2>"$OUTDIR/server.err" &
  local server=$!
  PIDS+=("$server")
  for _ in $(seq 100); do grep -q "listening on" "$OUTDIR/server.out" 2>/dev/null && break; sleep 0.1; done
  local clients=() perf
  if [[ $MODE == connect ]]; then
    perf "$@" -p "$server" >"$OUTDIR/perf.log" 2>&1 &
    perf=$!
    sleep 0.5
    taskset -c 1 "$BIN/roomcast-bench" idle --url "ws://127.0.0.1:$port" --connections 2000 --source-ips "$src" \
      --concurrency "$inflight" --hold-secs 60 --report-secs 60 --join bench-room >"$OUTDIR/clients.out" 2>"$OUTDIR/clients.err" &
    clients+=("$!")
    wait_ready "${clients[0]}"
    UNITS=$(awk -F'"connected":' '/^READY / { split($2, a, ","); print a[1] + 0 }' "$OUTDIR/clients.out")
  else
    taskset -c 1 "$BIN/roomcast-bench" subscribe --url "ws://127.0.0.1:$port" --connections 1000 --source-ips "$src" \
      --hold-secs 60 --report-secs 60 --join bench-room >"$OUTDIR/clients.out" 2>"$OUTDIR/clients.err" &
    clients+=("$!")
    wait_ready "${clients[0]}"
    sleep 0.5
    perf "$@" -p "$server" >"$OUTDIR/perf.log" 2>&1 &
    perf=$!
    sleep 0.5
    taskset -c 1 "$BIN/roomcast-bench" publish --url "ws://127.0.0.1:$port" --room bench-room --source-ips "$pubsrc" \
      --rate 100 --duration-secs 3 --payload-bytes 100 >"$OUTDIR/publisher.out" 2>"$OUTDIR/publisher.err"
    sleep 0.5
    UNITS=$(( 1000 * $(grep -o '"sent":[0-9]*' "$OUTDIR/publisher.out" | cut -d: -f2) ))
  fi
  kill -INT "$perf"; wait "$perf" || true
  kill "${clients[@]}" "$server" 2>/dev/null || true
  wait "${clients[@]}" "$server" 2>/dev/null || true
  (( UNITS > 0 )) || { echo "no $MODE completed (see $OUTDIR)" >&2; exit 1; }
}

# wait_ready PID: until the clients report READY; fails if they exit first or take over 60 s.
wait_ready() {
  for _ in $(seq 1200); do
    grep -q "^READY " "$OUTDIR/clients.out" 2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || { echo "the clients exited (see $OUTDIR/clients.err)" >&2; exit 1; }
    sleep 0.05
  done
  echo "the clients were not ready within 60 s (see $OUTDIR)" >&2; exit 1
}

UNIT=handshake UNITS_NAME=handshakes
[[ $MODE == fanout ]] && UNIT=delivery UNITS_NAME=deliveries
run 3411 127.0.0.211 127.0.0.213 64 stat -e "$(IFS=,; echo "${EVENTS[*]}")" -x, -o "$OUTDIR/counts.csv"
echo "== allocator calls per $UNIT ($UNITS $UNITS_NAME, $(basename "$SERVER_BIN"))"
awk -F, -v n="$UNITS" '/probe_libc/ { split($3, e, ":"); v = $1 / n; t += v; printf "   %-8s %7.2f\n", e[2], v } END { printf "   %-8s %7.2f\n", "total", t }' "$OUTDIR/counts.csv"

if [[ ${BENCH_ALLOC_SITES:-0} == 1 ]]; then
  # Slower (a stack copy per malloc): fewer handshakes in flight keep perf from losing events.
  run 3412 127.0.0.212 127.0.0.214 2 record -e probe_libc:malloc --call-graph dwarf,8192 -m 2048 -o "$OUTDIR/malloc.data"
  perf script -i "$OUTDIR/malloc.data" -F ip,sym 2>/dev/null >"$OUTDIR/malloc.txt"
  echo "== mallocs per $UNIT by the first data-plane function on the stack"
  # perf drops samples when its buffer fills; the figures below are then low by that share.
  grep -o 'lost [0-9.]*%' "$OUTDIR/perf.log" | sed 's/^/   (perf /; s/$/ of the samples)/' || true
  awk -v n="$UNITS" '
    function done_() { if (seen) c[site] += 1; seen = 0; site = "(outside the data plane)" }
    BEGIN { site = "(outside the data plane)" }
    /^[[:space:]]*$/ { done_(); next }
    { seen = 1 }
    site == "(outside the data plane)" && /roomcast_dataplane::/ && !/\(inlined\)/ {
      sub(/^[[:space:]]*[0-9a-f]+[[:space:]]+/, ""); site = $0
    }
    END { done_(); for (s in c) printf "%7.2f  %s\n", c[s] / n, s }' "$OUTDIR/malloc.txt" | sort -rn | head -40
fi
