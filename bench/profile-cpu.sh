#!/usr/bin/env bash
# CPU profile of a server under the dense fan-out or the connect load, with `perf record`
# (software clock: this machine's VM has no hardware counters).
#
#   bash bench/profile-cpu.sh [SUBSCRIBERS] [RATE] [SECONDS]   # default 1000 200 15
#   BENCH_PROFILE_SERVER=socketioxide bash bench/profile-cpu.sh # the same load on socketioxide
#   BENCH_PROFILE_MODE=connect bash bench/profile-cpu.sh 10000  # 10,000 handshakes with a join
#   BENCH_PROFILE_FREQ=4999 ...                                  # samples per second (default 499)
#   BENCH_ROOMCAST_CONFIG=FILE ...                               # Roomcast's --config (as in run.sh)
#
# Fan-out (the default): starts the server pinned to CPU 0 (roomcast-dataplane's built-in relay
# app, or bench-socketioxide-server, as in bench/run.sh), SUBSCRIBERS `roomcast-bench subscribe
# --join bench-room` connections in two processes on CPU 1, and one publisher emitting RATE
# 100-byte events per second into the room for SECONDS; samples the server at 499 Hz with DWARF
# call graphs over the publishing window. Connect: samples the server while SUBSCRIBERS clients
# (two processes on CPU 1) connect, join a room and wait for the ack, as the connect scenario.
# Prints the functions with the most self time, the top inclusive entries, the server's CPU
# per delivery (or handshake) split into user space, the kernel, and the part of the kernel that
# is the *clients'* TCP receive path run in the server's context (on loopback a send runs the
# receiver's softirq: `net_rx_action` under the server's own system calls) and, for connect,
# the system calls per handshake (`perf stat` on the syscall tracepoints, over a second batch
# of clients: tracing slows every system call); keeps perf.data
# under bench/results/cpu-*. Needs `perf` (Debian's linux-perf; installed with apt-get when
# missing and running as root). Loopback only, unless BENCH_PROFILE_NETNS=1: then the server
# runs in namespace rcb-hub and its clients in rcb-cli, joined by a veth pair with each side's
# receive path on its own CPU (bench/netns.sh; root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SUBS=${1:-1000}
RATE=${2:-200}
SECS=${3:-15}
PORT=${BENCH_PROFILE_PORT:-3398}
SERVER_NAME=${BENCH_PROFILE_SERVER:-roomcast}
MODE=${BENCH_PROFILE_MODE:-fanout}
# Samples per second: 499 keeps perf light beside the load; raise it for a finer user-space view.
FREQ=${BENCH_PROFILE_FREQ:-499}
[[ $MODE == fanout || $MODE == connect ]] || { echo "BENCH_PROFILE_MODE is fanout or connect" >&2; exit 2; }
OUTDIR="$ROOT/bench/results/cpu-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUTDIR"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=bench/perf-split.sh
source bench/perf-split.sh
ensure_command perf linux-perf || exit 1
ulimit -n "$(ulimit -Hn)"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  nice -n 10 cargo build --release --locked -p roomcast-dataplane -p roomcast-bench -p roomcast-bench-socketioxide >&2
fi
BIN="$ROOT/target/release"
case "$SERVER_NAME" in
  roomcast) SERVER_BIN=roomcast-dataplane ;;
  socketioxide) SERVER_BIN=bench-socketioxide-server ;;
  *) echo "BENCH_PROFILE_SERVER is roomcast or socketioxide" >&2; exit 2 ;;
esac
# perf resolves symbols from the binary it sampled: keep a copy beside perf.data.
cp "$BIN/$SERVER_BIN" "$OUTDIR/$SERVER_BIN"
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

PIDS=()
HOST=127.0.0.1; SRC=127.0.0; HUB_NS=(); CLI_NS=()
if [[ ${BENCH_PROFILE_NETNS:-0} == 1 ]]; then
  # shellcheck source=bench/netns.sh
  source bench/netns.sh
  netns_up 0 1
  HOST=$NETNS_HUB_IP; SRC=$NETNS_CLI_NET; HUB_NS=(ip netns exec "$NETNS_HUB"); CLI_NS=(ip netns exec "$NETNS_CLI")
  export BENCH_NETNS_HOST=$NETNS_HUB_IP
fi
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # The next run binds the same port: wait until the server has let go of it.
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ ${BENCH_PROFILE_NETNS:-0} == 1 ]]; then sleep 1; netns_down; fi
}
trap cleanup EXIT

if [[ $SERVER_NAME == roomcast ]]; then
  "${HUB_NS[@]}" taskset -c 0 "$OUTDIR/$SERVER_BIN" --listen "$HOST:$PORT" \
    ${BENCH_ROOMCAST_CONFIG:+--config "$BENCH_ROOMCAST_CONFIG"} >"$OUTDIR/server.out" 2>"$OUTDIR/server.err" &
else
  "${HUB_NS[@]}" taskset -c 0 "$OUTDIR/$SERVER_BIN" "$PORT" "$HOST" >"$OUTDIR/server.out" 2>"$OUTDIR/server.err" &
fi
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do grep -q "listening on" "$OUTDIR/server.out" 2>/dev/null && break; sleep 0.1; done

# In namespaces the server's side of the veth receives in a kernel thread: sampled with it.
TARGETS=$SERVER
if [[ ${BENCH_PROFILE_NETNS:-0} == 1 ]]; then
  for napi in $(netns_napi_pids rcb-h); do TARGETS+=",$napi"; done
fi
target_ticks() { local t=0 p; for p in ${TARGETS//,/ }; do t=$(( t + $(cpu_ticks "$p") )); done; echo "$t"; }

# subscribers MODE HOLD [ARGS...]: SUBS clients in two processes on CPU 1 (batch BATCH, from
# source addresses of their own).
BATCH=0
subscribers() {
  local mode=$1 hold=$2 p half=$(( SUBS / 2 )); shift 2
  for p in 0 1; do
    "${CLI_NS[@]}" taskset -c 1 "$BIN/roomcast-bench" "$mode" --url "ws://$HOST:$PORT" --connections $(( p == 0 ? half : SUBS - half )) \
      --source-ips "$SRC.$(( 81 + 2 * BATCH + p ))" --join bench-room --hold-secs "$hold" "$@" \
      >"$OUTDIR/sub$BATCH-$p.out" 2>"$OUTDIR/sub$BATCH-$p.err" &
    PIDS+=("$!")
  done
}
wait_ready() {
  for _ in $(seq 1200); do
    (( $(cat "$OUTDIR"/sub"$BATCH"-*.out 2>/dev/null | grep -c "^READY ") == 2 )) && return 0
    sleep 0.05
  done
  echo "the clients did not connect in 60 s" >&2
  exit 1
}
connected() { cat "$OUTDIR"/sub"$BATCH"-*.out | awk -F'"connected":' '/^READY / { split($2, a, ","); n += a[1] } END { print n + 0 }'; }

if [[ $MODE == connect ]]; then
  perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$TARGETS" -o "$OUTDIR/perf.data" >"$OUTDIR/perf-record.log" 2>&1 &
  PERF=$!
  sleep 0.5
  ticks0=$(target_ticks)
  subscribers idle 40
  wait_ready
  ticks1=$(target_ticks)
  kill -INT "$PERF"; wait "$PERF" || true
  UNITS=$(connected)
  UNIT=handshake
  # The first batch leaves (at most 20,000 open files per process here), then a second one
  # connects while the system calls are counted.
  first_batch=("${PIDS[@]: -2}")
  kill "${first_batch[@]}" 2>/dev/null || true
  wait "${first_batch[@]}" 2>/dev/null || true
  sleep 2
  # A second batch for the system calls per handshake, counted apart: tracing every system
  # call (tracepoints, root) slows each one, so it must not be in the CPU figure above.
  perf stat -e 'syscalls:sys_enter_*' -p "$TARGETS" -o "$OUTDIR/syscalls.txt" >"$OUTDIR/perf-stat.log" 2>&1 &
  STAT=$!
  sleep 0.5
  BATCH=1
  subscribers idle 20
  wait_ready
  kill -INT "$STAT"; wait "$STAT" || true
  SYSCALL_UNITS=$(connected)
else
  subscribers subscribe $(( SECS + 60 ))
  wait_ready
  sleep 1
  "${CLI_NS[@]}" taskset -c 1 "$BIN/roomcast-bench" publish --url "ws://$HOST:$PORT" --room bench-room --source-ips "$SRC.80" \
    --rate "$RATE" --duration-secs "$SECS" --payload-bytes 100 >"$OUTDIR/pub.out" 2>"$OUTDIR/pub.err" &
  PUB=$!
  PIDS+=("$PUB")
  sleep 1
  ticks0=$(target_ticks)
  perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$TARGETS" -o "$OUTDIR/perf.data" \
    -- sleep $(( SECS - 2 )) >"$OUTDIR/perf-record.log" 2>&1
  ticks1=$(target_ticks)
  wait "$PUB" || true
  # Deliveries in the sampled window: every event reaches the room but its publisher.
  UNITS=$(( RATE * (SECS - 2) * SUBS ))
  UNIT=delivery
fi

# Reports below read pipes that `head` may close early: no pipefail from here on.
set +o pipefail
perf report -i "$OUTDIR/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 -g none 2>/dev/null \
  | grep -E '^ +[0-9]' >"$OUTDIR/self.txt" || true
perf report -i "$OUTDIR/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none 2>/dev/null \
  | grep -E '^ +[0-9]' >"$OUTDIR/children.txt" || true
echo "== self time, top functions ($OUTDIR/self.txt)"
head -30 "$OUTDIR/self.txt" | cut -c1-160
echo "== inclusive time, top entries ($OUTDIR/children.txt)"
grep -v -E 'inlined|closure_env|catch_unwind|call_once|do_call|poll_future|Harness|Core<T,S>|std::sys|start_thread|clone3|tokio::runtime::(context|scheduler|blocking)' \
  "$OUTDIR/children.txt" | head -40 | cut -c1-160
grep -h "DONE" "$OUTDIR"/pub.out 2>/dev/null || true

# The split: kernel share from the samples' DSOs; the clients' receive path is the softirq
# work (net_rx_action) the server's context ran, inclusive.
read -r kernel softirq < <(perf_split "$OUTDIR/perf.data")
awk -v t0="$ticks0" -v t1="$ticks1" -v tck="$CLK_TCK" -v units="$UNITS" -v k="${kernel:-0}" -v rx="${softirq:-0}" \
    -v unit="$UNIT" -v name="$SERVER_NAME" 'BEGIN {
  cpu = (t1 - t0) / tck; if (units <= 0 || cpu <= 0) { print "no CPU or no " unit "s measured"; exit }
  us = 1e6 * cpu / units
  printf "== %s: %.2f CPU-s for %d %ss: %.2f us per %s (%.0f per CPU-second)\n", name, cpu, units, unit, us, unit, units / cpu
  printf "   user space %.2f us (%.0f %%); kernel %.2f us (%.0f %%), of which the clients'"'"' receive path in the server'"'"'s context %.2f us (%.0f %%)\n", \
    us * (100 - k) / 100, 100 - k, us * k / 100, k, us * rx / 100, rx
  printf "   without the clients'"'"' receive path: %.2f us per %s (%.0f per CPU-second)\n", us * (100 - rx) / 100, unit, ((100 - rx) > 0 ? 1e6 / (us * (100 - rx) / 100) : 0)
}' | tee "$OUTDIR/split.txt"

if [[ $MODE == connect ]]; then
  echo "== system calls per handshake, a second batch of $SYSCALL_UNITS ($OUTDIR/syscalls.txt)"
  awk -v units="$SYSCALL_UNITS" '$1 ~ /^[0-9,]+$/ && $1 != "0" && units > 0 {
    n = $1; gsub(",", "", n); sub("syscalls:sys_enter_", "", $2)
    printf "   %-16s %6.2f\n", $2, n / units; total += n
  } END { if (units > 0) printf "   %-16s %6.2f\n", "total", total / units }' "$OUTDIR/syscalls.txt" 2>/dev/null \
    | sort -k2 -nr | grep -v -E ' 0\.0[0-4]$' || echo "   not counted (see $OUTDIR/perf-stat.log)"
fi
