#!/usr/bin/env bash
# Roomcast benchmarks, side by side with Node socket.io and socketioxide, in one run.
#
#   bash bench/run.sh            # full run (19,000 idle connections per server), rewrites docs/benchmarks.md
#   bash bench/run.sh --quick    # smoke run (2,000 connections, short windows), writes bench/results/ only
#   make bench                   # same as the full run
#
# Scenario "idle": for each server (Roomcast, Node socket.io 4.8, socketioxide 0.18):
#   - the server runs pinned to CPU 0 (`taskset -c 0`), the load generators to CPU 1;
#   - RSS is read from /proc/PID/status before any connection;
#   - N WebSocket connections (Engine.IO v4 + Socket.IO v5 CONNECT to "/") are opened by several
#     `roomcast-bench idle` processes (a process may hold at most 20,000 files here), spread
#     over several 127.0.0.x source addresses (a distinct set per server, so TIME_WAIT ports
#     left by one server's run never limit the next);
#   - after a settle period RSS is read again: (after - before) / N = memory per idle connection;
#   - server CPU time (utime + stime, /proc/PID/stat) is read over an idle window at the default
#     ping interval (25 s everywhere): CPU per connection per second;
#   - the generators are stopped and report how many connections were still alive.
#
# Environment (all optional):
#   BENCH_CONNECTIONS    connections per server          (19000; --quick: 2000)
#   BENCH_PER_PROC       connections per generator process (5000)
#   BENCH_SETTLE_SECS    wait after the connect phase     (15; --quick: 3)
#   BENCH_IDLE_SECS      idle CPU window                   (60; --quick: 10)
#   BENCH_SERVERS        which servers, in order           ("roomcast node socketioxide")
#   BENCH_SCENARIOS      which scenarios                   ("idle connect sparse dense peer cluster recovery ring headline";
#                        "recovery", "ring" and "headline", alone or together, rewrite only their sections of an
#                        existing report)
#   BENCH_OUT            markdown output                   (docs/benchmarks.md; --quick: results dir)
#   BENCH_SKIP_BUILD=1   use the binaries already in target/release
#   BENCH_ROOMCAST_CONFIG   a config file for the single-node Roomcast server (`--config`; it replaces the
#                           embedded default, so give it the relay namespace: bench/README.md)
#   BENCH_FANOUT_RUNS    fresh servers per server kind in the sparse and dense scenarios (3; --quick: 1);
#                        the report shows the run with the median p99 and every run
#   BENCH_PEER_PLAINTEXT=1  peer links (peer, cluster) without TLS only (default: mutual TLS)
#   BENCH_PEER_COMPARE=0    skip the plaintext re-runs of the peer and Roomcast cluster
#                           scenarios that report the cost of peer TLS (default: run them)
#   BENCH_CLUSTER_PROFILE=1 profile the Roomcast cluster nodes while the publisher runs (perf,
#                           kernel call chains) and print, per node, its CPU per delivery split into
#                           user space, kernel and the subscribers' receive path (bench/perf-split.sh)
#   BENCH_RECOVERY_N     clients of the recovery scenario (10000; --quick: 1000), in
#   BENCH_RECOVERY_ROOMS rooms (100), BENCH_RECOVERY_RATE messages/s to each room (1) in the drain
#   BENCH_HEADLINE_CONNECTIONS  connections of the headline scenario (100000; --quick: 10000), over
#   BENCH_HEADLINE_NODES nodes (6), BENCH_HEADLINE_EVENTS broadcasts to all of them (5), one every
#   BENCH_HEADLINE_GAP_SECS (5: each broadcast is delivered before the next one starts),
#   BENCH_HEADLINE_SERVERS  which servers ("roomcast node": Node socket.io with its Redis adapter)
#   BENCH_RING_NODES     nodes of the room ownership simulation (64; --quick: 16), BENCH_RING_ROOMS rooms
#                        (2000000; --quick: 200000), BENCH_RING_SECONDS simulated seconds of churn (15; --quick: 6)
#
# Everything listens and connects on 127.0.0.0/8 only; every process started here is stopped
# here (by PID), and the generators also stop by themselves after their hold time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=bench/perf-split.sh
source bench/perf-split.sh

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [[ $QUICK == 1 ]]; then
  N=${BENCH_CONNECTIONS:-2000}; SETTLE=${BENCH_SETTLE_SECS:-3}; IDLE=${BENCH_IDLE_SECS:-10}
else
  N=${BENCH_CONNECTIONS:-19000}; SETTLE=${BENCH_SETTLE_SECS:-15}; IDLE=${BENCH_IDLE_SECS:-60}
fi
PER_PROC=${BENCH_PER_PROC:-5000}
SERVERS=${BENCH_SERVERS:-"roomcast node socketioxide"}
SCENARIOS=${BENCH_SCENARIOS:-"idle connect sparse dense peer cluster app recovery ring headline"}
if [[ $QUICK == 1 ]]; then
  CONNECT_N=${BENCH_CONNECT_N:-2000}; SPARSE_SUBS=${BENCH_SPARSE_SUBS:-2000}; DENSE_SUBS=${BENCH_DENSE_SUBS:-500}; FANOUT_SECS=${BENCH_FANOUT_SECS:-5}
else
  CONNECT_N=${BENCH_CONNECT_N:-10000}; SPARSE_SUBS=${BENCH_SPARSE_SUBS:-10000}; DENSE_SUBS=${BENCH_DENSE_SUBS:-1000}; FANOUT_SECS=${BENCH_FANOUT_SECS:-20}
fi
SPARSE_RATE=${BENCH_SPARSE_RATE:-10}; DENSE_RATE=${BENCH_DENSE_RATE:-200}
HEADLINE_NODES=${BENCH_HEADLINE_NODES:-6} # here: the peer certificates below cover its nodes
PEER_SECS=${BENCH_PEER_SECS:-$(( QUICK == 1 ? 3 : 10 ))}
RECOVERY_N=${BENCH_RECOVERY_N:-$(( QUICK == 1 ? 1000 : 10000 ))}; RECOVERY_ROOMS=${BENCH_RECOVERY_ROOMS:-100}
RING_NODES=${BENCH_RING_NODES:-$(( QUICK == 1 ? 16 : 64 ))}; RING_ROOMS=${BENCH_RING_ROOMS:-$(( QUICK == 1 ? 200000 : 2000000 ))}
RING_SECONDS=${BENCH_RING_SECONDS:-$(( QUICK == 1 ? 6 : 15 ))}
RECOVERY_RATE=${BENCH_RECOVERY_RATE:-1}; RECOVERY_WARM=${BENCH_RECOVERY_WARM_SECS:-5}; RECOVERY_AFTER=${BENCH_RECOVERY_AFTER_SECS:-5}
# Long enough that no parked session expires while it is measured.
RECOVERY_WINDOW_MS=${BENCH_RECOVERY_WINDOW_MS:-600000}
CLUSTER_SUBS=${BENCH_CLUSTER_SUBS:-$(( QUICK == 1 ? 100 : 250 ))}; CLUSTER_RATE=${BENCH_CLUSTER_RATE:-100}
CLUSTER_RUNS=${BENCH_CLUSTER_RUNS:-$(( QUICK == 1 ? 1 : 3 ))}
FANOUT_RUNS=${BENCH_FANOUT_RUNS:-$(( QUICK == 1 ? 1 : 3 ))}
CONNECT_RUNS=${BENCH_CONNECT_RUNS:-$(( QUICK == 1 ? 1 : 3 ))}
# 100 events/s to 500 subscribers is 50,000 deliveries/s: about half of what Roomcast's three
# nodes sustain on the one shared core (about 130,000 per CPU-second), the "half load" of the
# cross-pod latency target; 200 events/s ran them at about 75 % of the core.
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$ROOT/bench/results/$STAMP"
if [[ $QUICK == 1 ]]; then OUT=${BENCH_OUT:-$RESULTS/benchmarks.md}; else OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}; fi
mkdir -p "$RESULTS"
CLK_TCK=$(getconf CLK_TCK)
CMDLINE="bash bench/run.sh${*:+ $*}"

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

# ---- processes we started, stopped on exit -------------------------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && wait "$p" 2>/dev/null || true
  done
  if [[ ${NETNS_ACTIVE:-0} == 1 ]]; then netns_down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- preflight --------------------------------------------------------------------------------
NCPU=$(nproc)
if (( NCPU >= 2 )); then SERVER_CPU=0; GEN_CPU=1; else SERVER_CPU=0; GEN_CPU=0; fi
if ! command -v taskset >/dev/null; then echo "taskset (util-linux) is required" >&2; exit 1; fi
HARD_NOFILE=$(ulimit -Hn)
if [[ $HARD_NOFILE != unlimited ]]; then ulimit -n "$HARD_NOFILE"; else ulimit -n 1048576; fi
NOFILE=$(ulimit -n)
if (( N + 100 > NOFILE )); then
  echo "BENCH_CONNECTIONS=$N needs more open files than this shell may have ($NOFILE)" >&2
  exit 1
fi
(( PER_PROC + 100 <= NOFILE )) || PER_PROC=$(( NOFILE - 100 ))
# Where single-node servers listen and their clients run: loopback here; the netns scenario
# moves them into two network namespaces (bench/netns.sh).
SERVER_HOST=127.0.0.1; SRC_NET=127.0.0; SERVER_NS=(); GEN_NS=(); SERVER_EXTRA_PIDS=(); GEN_EXTRA_PIDS=()

# ---- build ------------------------------------------------------------------------------------
# The ring scenario is a simulation: it needs none of the servers.
SIM_ONLY=1
for scenario in $SCENARIOS; do [[ $scenario == ring ]] || SIM_ONLY=0; done
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building release binaries"
  if (( SIM_ONLY )); then
    nice -n 10 cargo build --release --locked -p roomcast-bench >&2
  else
    nice -n 10 cargo build --release --locked -p roomcast-dataplane -p roomcast-bench -p roomcast-bench-socketioxide >&2
  fi
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release"
NEEDED="roomcast-ringsim"
(( SIM_ONLY )) || NEEDED="roomcast-dataplane roomcast-bench bench-socketioxide-server roomcast-ringsim"
for b in $NEEDED; do
  [[ -x "$BIN/$b" ]] || { echo "missing $BIN/$b" >&2; exit 1; }
done
if (( ! SIM_ONLY )) && [[ " $SERVERS " == *" node "* || " $SCENARIOS " == *" app "* ]]; then
  if [[ " $SCENARIOS " == *" app "* ]]; then
    # The app scenario runs bench/node/server.mjs through the Node SDK, installed from sdk/node.
    log "building the Node SDK (sdk/node)"
    npm_ci_locked sdk/node >&2
    (cd sdk/node && npm run --silent build >&2)
  fi
  log "installing Node peer (npm ci)"
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error >&2)
  # socket.io's optional native WebSocket engine. It builds from source at install time and is
  # measured as the extra server `node-eiows` when that works; the report says why when not.
  EIOWS_VERSION=${BENCH_EIOWS_VERSION:-11.1.1}
  EIOWS_NOTE=""
  if [[ ${BENCH_EIOWS:-1} == 1 ]]; then
    log "trying to install eiows $EIOWS_VERSION (native build)"
    if (cd bench/node && timeout 600 npm install --no-save --no-audit --no-fund --loglevel=error "eiows@$EIOWS_VERSION" \
          >"$RESULTS/eiows-install.log" 2>&1); then
      [[ " $SERVERS " == *" node-eiows "* ]] || SERVERS=${SERVERS/ node / node node-eiows }
      [[ " $SERVERS " == *" node-eiows "* ]] || SERVERS="$SERVERS node-eiows"
    else
      EIOWS_NOTE=$(grep -m1 -iE "fatal|error:" "$RESULTS/eiows-install.log" | sed 's/^npm error //' | cut -c1-200 || true)
      log "eiows did not install: ${EIOWS_NOTE:-see $RESULTS/eiows-install.log}"
      SERVERS=$(echo " $SERVERS " | sed 's/ node-eiows / /g; s/^ *//; s/ *$//')
    fi
  fi
fi
if [[ ( " $SCENARIOS " == *" cluster "* && ( " $SERVERS " == *" node "* || " $SERVERS " == *" socketioxide "* ) ) || " $SCENARIOS " == *" headline "* || ( " $SCENARIOS " == *" app "* && " $SERVERS " == *" node "* ) ]]; then
  # socket.io's and socketioxide's multi-node setups need Redis: Debian's package, installed once.
  ensure_command redis-server redis-server || exit 1
fi

# ---- helpers ----------------------------------------------------------------------------------
rss_kib() { awk -v k="${2:-VmRSS:}" '$1 == k { print $2 }' "/proc/$1/status"; }
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# CPU ticks of all the given processes together (one that has exited counts 0).
sum_ticks() { local p t=0; for p in "$@"; do t=$(( t + $(cpu_ticks "$p" 2>/dev/null || echo 0) )); done; echo "$t"; }
# A single-node server's CPU ticks; in the netns scenario with its namespace's receive thread
# (the kernel work a NIC's interrupts would cost the server's machine).
server_ticks() { sum_ticks "$1" "${SERVER_EXTRA_PIDS[@]}"; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME PORT -> sets SERVER_PID
start_server() {
  local name=$1 port=$2 out="$RESULTS/$1.server.out" err="$RESULTS/$1.server.err"
  port_free "$port" || { echo "port $port is busy" >&2; exit 1; }
  case "$name" in
    roomcast)
      "${SERVER_NS[@]}" taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" --listen "$SERVER_HOST:$port" \
        ${BENCH_ROOMCAST_CONFIG:+--config "$BENCH_ROOMCAST_CONFIG"} >"$out" 2>"$err" &
      ;;
    node)
      "${SERVER_NS[@]}" taskset -c "$SERVER_CPU" node bench/node/server.mjs "$port" "$SERVER_HOST" >"$out" 2>"$err" &
      ;;
    node-eiows)
      BENCH_WS_ENGINE=eiows "${SERVER_NS[@]}" taskset -c "$SERVER_CPU" node bench/node/server.mjs "$port" "$SERVER_HOST" >"$out" 2>"$err" &
      ;;
    socketioxide)
      "${SERVER_NS[@]}" taskset -c "$SERVER_CPU" "$BIN/bench-socketioxide-server" "$port" "$SERVER_HOST" >"$out" 2>"$err" &
      ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  local i
  for i in $(seq 1 300); do
    if grep -q "listening on" "$out" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$name exited at start:" >&2; cat "$err" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not print its ready line in 30 s" >&2
  exit 1
}

# wait_quiet PID MAX_SECS: waits (at least 2 s) until the process used < 30 ms CPU in 1 s.
wait_quiet() {
  local pid=$1 max=$2 i a b
  sleep 1
  for i in $(seq 1 "$max"); do
    a=$(cpu_ticks "$pid"); sleep 1; b=$(cpu_ticks "$pid")
    (( (b - a) * 1000 / CLK_TCK < 30 )) && return 0
  done
  log "pid $pid still busy after ${max}s"
}

stop_pid() {
  local p=$1 i
  kill "$p" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# sum_field FILES... : sums "KEY":NUMBER over the lines starting with PREFIX
sum_field() {
  local prefix=$1 key=$2; shift 2
  awk -v p="$prefix " -v k="\"$key\":" '
    index($0, p) == 1 && (i = index($0, k)) > 0 { s += substr($0, i + length(k)) + 0 }
    END { printf "%d\n", s }' "$@"
}
# first_field PREFIX KEY FILES... : the first value of "KEY":NUMBER on a PREFIX line
first_field() {
  local prefix=$1 key=$2; shift 2
  awk -v p="$prefix " -v k="\"$key\":" '
    index($0, p) == 1 && (i = index($0, k)) > 0 { print substr($0, i + length(k)) + 0; exit }' "$@"
}

server_version() {
  case "$1" in
    roomcast)
      local rev dirty=""
      rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
      git -C "$ROOT" diff --quiet HEAD -- dataplane 2>/dev/null || dirty=" + uncommitted changes"
      echo "roomcast-dataplane $rev$dirty" ;;
    node) echo "socket.io $(node -p 'require("./bench/node/node_modules/socket.io/package.json").version') (ws $(node -p 'require("./bench/node/node_modules/engine.io/node_modules/ws/package.json").version' 2>/dev/null || node -p 'require("./bench/node/node_modules/ws/package.json").version'), bufferutil), node $(node --version)" ;;
    node-eiows) echo "socket.io $(node -p 'require("./bench/node/node_modules/socket.io/package.json").version') with eiows $(node -p 'require("./bench/node/node_modules/eiows/package.json").version'), node $(node --version)" ;;
    socketioxide) echo "socketioxide $(awk '/^name = "socketioxide"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock) (axum, tokio)" ;;
  esac
}

# source_ips SCENARIO_BASE SERVER_INDEX -> 4 addresses 127.0.0.(BASE + 10*k + 1 .. 4); every
# (scenario, server) pair gets its own, so TIME_WAIT ports of one run never limit the next.
source_ips() {
  local base=$1 k=$2 i ips=""
  for i in 1 2 3 4; do ips+="$SRC_NET.$(( base + 10 * k + i )),"; done
  echo "${ips%,}"
}

# start_generators MODE NAME TAG PORT N IPS HOLD [EXTRA ARGS...]
# Starts ceil(N / PER_PROC) `roomcast-bench MODE` processes on the generator CPU and waits for
# all their READY lines. Sets GEN_PIDS and GEN_OUTS.
start_generators() {
  local mode=$1 name=$2 tag=$3 port=$4 n=$5 ips=$6 hold=$7; shift 7
  local procs=$(( (n + PER_PROC - 1) / PER_PROC )) p share o
  GEN_PIDS=(); GEN_OUTS=()
  for p in $(seq 0 $(( procs - 1 ))); do
    share=$(( n / procs + (p < n % procs ? 1 : 0) ))
    o="$RESULTS/$tag.$name.gen$p.out"
    "${GEN_NS[@]}" taskset -c "$GEN_CPU" "$BIN/roomcast-bench" "$mode" --url "ws://${GEN_HOST:-$SERVER_HOST}:$port" \
      --connections "$share" --source-ips "$ips" --ip-offset "$p" --hold-secs "$hold" \
      --report-secs 30 "$@" >"$o" 2>"${o%.out}.err" &
    GEN_PIDS+=("$!"); PIDS+=("$!"); GEN_OUTS+=("$o")
  done
  local deadline=$(( $(date +%s) + 600 )) ready gp
  while :; do
    ready=$(cat "${GEN_OUTS[@]}" 2>/dev/null | grep -c "^READY " || true)
    (( ${ready:-0} == procs )) && break
    for gp in "${GEN_PIDS[@]}"; do
      kill -0 "$gp" 2>/dev/null || { echo "a generator exited early:" >&2; tail -5 "$RESULTS/$tag.$name".gen*.err >&2; exit 1; }
    done
    (( $(date +%s) < deadline )) || { echo "$name: connect phase did not finish in 600 s" >&2; exit 1; }
    sleep 0.2
  done
}

# CPU ticks used so far by the running subscriber processes.
gen_ticks() { sum_ticks "${GEN_PIDS[@]}" "${GEN_EXTRA_PIDS[@]}"; }

stop_generators() {
  local gp
  for gp in "${GEN_PIDS[@]}"; do kill -TERM "$gp" 2>/dev/null || true; done
  for gp in "${GEN_PIDS[@]}"; do wait "$gp" 2>/dev/null || true; done
}

# ---- scenario: idle connections -------------------------------------------------------------
IDLE_TSV="$RESULTS/idle.tsv"
scenario_idle() {
  printf 'server\tversion\tconnections\tfailed\talive_end\trss_before_kib\trss_after_kib\trss_end_kib\tanon_before_kib\tanon_after_kib\tkib_per_conn\tanon_kib_per_conn\tconnect_cpu_s\tconnect_wall_s\tidle_cpu_s\tidle_secs\tidle_us_per_conn_s\tping_interval_ms\tthreads\tkib_per_conn_end\n' >"$IDLE_TSV"
  local k=0 name port ips pid rss_before anon_before cpu0 t0 t1 cpu1 connected failed ping_ms
  local rss_after anon_after nthreads cpu2 cpu3 rss_end alive
  for name in $SERVERS; do
    k=$(( k + 1 )); port=$(( 3100 + k )); ips=$(source_ips 0 "$k")
    log "idle/$name: starting on 127.0.0.1:$port (CPU $SERVER_CPU)"
    start_server "$name" "$port"
    pid=$SERVER_PID
    sleep 2
    rss_before=$(rss_kib "$pid"); anon_before=$(rss_kib "$pid" RssAnon:)
    cpu0=$(cpu_ticks "$pid")
    log "idle/$name: opening $N connections (CPU $GEN_CPU, sources $ips)"
    t0=$(date +%s.%N)
    start_generators idle "$name" idle "$port" "$N" "$ips" $(( SETTLE + IDLE + 300 )) --join user- --room-per-connection
    t1=$(date +%s.%N)
    cpu1=$(cpu_ticks "$pid")
    connected=$(sum_field READY connected "${GEN_OUTS[@]}")
    failed=$(sum_field READY failed "${GEN_OUTS[@]}")
    ping_ms=$(first_field READY ping_interval_ms "${GEN_OUTS[@]}")
    log "idle/$name: connected=$connected failed=$failed; settling ${SETTLE}s"
    sleep "$SETTLE"
    rss_after=$(rss_kib "$pid"); anon_after=$(rss_kib "$pid" RssAnon:)
    nthreads=$(threads "$pid")
    log "idle/$name: RSS ${rss_before} -> ${rss_after} KiB; idle window ${IDLE}s"
    cpu2=$(cpu_ticks "$pid")
    sleep "$IDLE"
    cpu3=$(cpu_ticks "$pid")
    rss_end=$(rss_kib "$pid")
    stop_generators
    alive=$(sum_field DONE alive "${GEN_OUTS[@]}")
    stop_pid "$pid"
    awk -v name="$name" -v ver="$(server_version "$name")" -v n="$connected" -v failed="$failed" \
        -v alive="$alive" -v rb="$rss_before" -v ra="$rss_after" -v re="$rss_end" -v ab="$anon_before" \
        -v aa="$anon_after" -v c0="$cpu0" -v c1="$cpu1" -v c2="$cpu2" -v c3="$cpu3" -v tck="$CLK_TCK" \
        -v t0="$t0" -v t1="$t1" -v idle="$IDLE" -v ping="${ping_ms:-?}" -v thr="$nthreads" 'BEGIN {
          kpc = n > 0 ? (ra - rb) / n : 0; apc = n > 0 ? (aa - ab) / n : 0; kpe = n > 0 ? (re - rb) / n : 0
          ccpu = (c1 - c0) / tck; icpu = (c3 - c2) / tck
          ius = n > 0 ? icpu * 1e6 / n / idle : 0
          printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.3f\t%s\t%s\t%.2f\n",
            name, ver, n, failed, alive, rb, ra, re, ab, aa, kpc, apc, ccpu, t1 - t0, icpu, idle, ius, ping, thr, kpe
        }' >>"$IDLE_TSV"
    log "idle/$name: $(tail -1 "$IDLE_TSV" | cut -f11,12,15,17 | tr '\t' ' ') (KiB/conn, anon KiB/conn, idle CPU s, us/conn/s)"
  done
}

# ---- scenarios: room fan-out ----------------------------------------------------------------
# One room of SUBS subscribers (`roomcast-bench subscribe`), one publisher (`roomcast-bench
# publish`, also a member of the room) emitting RATE events per second of PAYLOAD bytes for DUR
# seconds; each server relays every event to the other members. Deliveries per server
# CPU-second and publish-to-receive latency (one monotonic clock, HDR histograms). Each server
# runs FANOUT_RUNS times, a fresh server each time: the p99 of one binary moves by half or more
# between runs here. The row reported is the run with the median p99; its last column lists
# every run's rate and p99.
FANOUT_TSV="$RESULTS/fanout.tsv"
scenario_fanout() {
  local tag=$1 subs=$2 rate=$3 dur=$4 payload=$5 ipbase=$6
  [[ -f "$FANOUT_TSV" ]] || printf 'scenario\tserver\tsubscribers\tconnected\trate\tduration_s\tpayload_bytes\tsent\texpected\treceived\tserver_cpu_s\tdeliveries_per_cpu_s\tp50_us\tp99_us\tp999_us\tmax_us\tsubscriber_cpu_pct\truns\n' >"$FANOUT_TSV"
  local k=0 name port ips r runs row all
  for name in $SERVERS; do
    k=$(( k + 1 )); port=$(( 3100 + 10 * k + ipbase / 30 )); ips=$(source_ips "$ipbase" "$k")
    runs="$RESULTS/$tag.$name.runs.tsv"
    : >"$runs"
    for r in $(seq "$FANOUT_RUNS"); do
      (( FANOUT_RUNS > 1 )) && log "$tag/$name: run $r of $FANOUT_RUNS"
      fanout_run "$tag" "$name" "$subs" "$rate" "$dur" "$payload" "$port" "$ips" "$runs"
    done
    # The run with the median p99 (median_row's own list of p99s cut), then every run's rate and p99.
    row=$(median_row "$runs" 14 | cut -f1-17)
    all=$(awk -F'\t' '{ printf "%s%.0f / %.2f ms", (NR > 1 ? ", " : ""), $12, $14 / 1000 }' "$runs")
    printf '%s\t%s\n' "$row" "$all" >>"$FANOUT_TSV"
  done
}

# fanout_run TAG SERVER SUBSCRIBERS RATE SECONDS PAYLOAD PORT IPS RUNS_TSV: one measurement on a
# fresh server, appended to RUNS_TSV as a row of FANOUT_TSV (without its last column).
fanout_run() {
  local tag=$1 name=$2 subs=$3 rate=$4 dur=$5 payload=$6 port=$7 ips=$8 runs=$9
  local pid cpu0 cpu1 connected pub_out sent received merged g0 g1 w0 w1
  log "$tag/$name: starting on $SERVER_HOST:$port; $subs subscribers"
  start_server "$name" "$port"
  pid=$SERVER_PID
  start_generators subscribe "$name" "$tag" "$port" "$subs" "$ips" $(( dur + 300 )) --join bench-room
  connected=$(sum_field READY connected "${GEN_OUTS[@]}")
  sleep 2
  pub_out="$RESULTS/$tag.$name.publisher.out"
  cpu0=$(server_ticks "$pid"); g0=$(gen_ticks); w0=$(date +%s.%N)
  log "$tag/$name: publishing $rate/s x ${dur}s, $payload-byte payloads"
  "${GEN_NS[@]}" taskset -c "$GEN_CPU" "$BIN/roomcast-bench" publish --url "ws://$SERVER_HOST:$port" --room bench-room \
    --source-ips "${ips%%,*}" --rate "$rate" --duration-secs "$dur" --payload-bytes "$payload" \
    >"$pub_out" 2>"${pub_out%.out}.err" || { echo "publisher failed:" >&2; tail -5 "${pub_out%.out}.err" >&2; exit 1; }
  wait_quiet "$pid" 90 # let the server drain what it still has queued
  cpu1=$(server_ticks "$pid"); g1=$(gen_ticks); w1=$(date +%s.%N)
  stop_generators
  stop_pid "$pid"
  sent=$(sum_field DONE sent "$pub_out")
  received=$(sum_field DONE events "${GEN_OUTS[@]}")
  merged=$("$BIN/roomcast-bench" merge "${GEN_OUTS[@]}")
  echo "$merged" >>"$RESULTS/$tag.$name.latency.jsonl" # one line per run
  awk -v tag="$tag" -v name="$name" -v subs="$subs" -v conn="$connected" -v rate="$rate" -v dur="$dur" \
      -v payload="$payload" -v sent="$sent" -v recv="$received" -v c0="$cpu0" -v c1="$cpu1" -v tck="$CLK_TCK" \
      -v g0="$g0" -v g1="$g1" -v w0="$w0" -v w1="$w1" -v j="$merged" 'function f(k,   i) { i = index(j, "\"" k "\":"); return i ? substr(j, i + length(k) + 3) + 0 : 0 }
      BEGIN {
        cpu = (c1 - c0) / tck
        dpc = (cpu > 0) ? recv / cpu : 0
        gpct = (w1 > w0) ? 100 * (g1 - g0) / tck / (w1 - w0) : 0
        printf "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%d\t%d\t%d\t%d\t%.0f\n",
          tag, name, subs, conn, rate, dur, payload, sent, sent * conn, recv, cpu, dpc,
          f("p50_us"), f("p99_us"), f("p999_us"), f("max_us"), gpct
      }' >>"$runs"
  log "$tag/$name: $(tail -1 "$runs" | cut -f9-16 | tr '\t' ' ') (expected received cpu_s deliveries/cpu_s p50 p99 p99.9 max us)"
}

# ---- scenario: connect rate -------------------------------------------------------------------
# N clients connect as fast as the generators can (64 handshakes in flight per process), each doing
# the engine handshake, the namespace CONNECT and one room join with an ack. Server CPU from the
# first connection until every generator reported READY: handshakes per server CPU-second. Each
# server is measured CONNECT_RUNS times (a fresh server each time): its CPU is counted in 10 ms
# ticks over a fraction of a second, and runs of one binary differ by up to a fifth here. The
# row reported is the run with the median rate; its last column lists every run's rate.
CONNECT_TSV="$RESULTS/connect.tsv"
scenario_connect() {
  printf 'server\tconnections\tconnected\tfailed\tjoin_retries\tserver_cpu_s\twall_s\thandshakes_per_cpu_s\thandshakes_per_s\truns_per_cpu_s\n' >"$CONNECT_TSV"
  local k=0 name port ips pid cpu0 cpu1 t0 t1 connected failed retries r runs
  for name in $SERVERS; do
    k=$(( k + 1 )); port=$(( 3100 + 10 * k + 7 )); ips=$(source_ips 190 "$k")
    runs="$RESULTS/connect.$name.runs.tsv"
    : >"$runs"
    for r in $(seq "$CONNECT_RUNS"); do
      log "connect/$name: starting on $SERVER_HOST:$port; $CONNECT_N connections with a room join (run $r of $CONNECT_RUNS)"
      start_server "$name" "$port"
      pid=$SERVER_PID
      sleep 1
      cpu0=$(server_ticks "$pid"); t0=$(date +%s.%N)
      start_generators idle "$name" connect "$port" "$CONNECT_N" "$ips" 60 --join bench-room
      cpu1=$(server_ticks "$pid"); t1=$(date +%s.%N)
      connected=$(sum_field READY connected "${GEN_OUTS[@]}")
      failed=$(sum_field READY failed "${GEN_OUTS[@]}")
      retries=$(sum_field READY join_retries "${GEN_OUTS[@]}")
      stop_generators
      stop_pid "$pid"
      awk -v name="$name" -v n="$CONNECT_N" -v c="$connected" -v f="$failed" -v r="$retries" -v c0="$cpu0" -v c1="$cpu1" \
          -v tck="$CLK_TCK" -v t0="$t0" -v t1="$t1" 'BEGIN {
            cpu = (c1 - c0) / tck; wall = t1 - t0
            hpc = (cpu > 0) ? c / cpu : 0; hps = (wall > 0) ? c / wall : 0
            printf "%s\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.0f\t%.0f\n", name, n, c, f, r, cpu, wall, hpc, hps
          }' >>"$runs"
      log "connect/$name: $(tail -1 "$runs" | cut -f3,6-9 | tr '\t' ' ') (connected cpu_s wall_s per_cpu_s per_s)"
      sleep 1
    done
    median_row "$runs" 8 >>"$CONNECT_TSV"
  done
}

# ---- scenario: one peer stream ----------------------------------------------------------------
# Two processes joined by one Roomcast peer link (`roomcast-bench peer-send` / `peer-recv`, the
# real mesh of the data plane): first as fast as the link takes 100-byte broadcasts (messages per
# CPU-second of both processes), then paced at half that rate (send-to-receive latency).
PEER_TSV="$RESULTS/peer.tsv"
# Peer TLS (the default): one CA and certificates for the members of both scenarios.
PEER_CERTS="$RESULTS/peer-certs"
PEER_TLS=()
if [[ -z ${BENCH_PEER_PLAINTEXT:-} ]] && (( ! SIM_ONLY )); then
  hubs=$(for (( i = 0; i < (HEADLINE_NODES > 3 ? HEADLINE_NODES : 3); i++ )); do printf ',hub-%d' "$i"; done)
  "$BIN/roomcast-dataplane" certs cluster --out "$PEER_CERTS" --members "a,b$hubs" --force >/dev/null
  PEER_TLS=(--tls-dir "$PEER_CERTS")
fi
# The plaintext re-runs that measure what peer TLS costs (tags and server names end in -plaintext).
PEER_COMPARE=0
[[ -z ${BENCH_PEER_PLAINTEXT:-} && ${BENCH_PEER_COMPARE:-1} != 0 ]] && PEER_COMPARE=1
# PEER_SEC: the flags of cluster node $1 for TLS, or plaintext when $2 is "plaintext".
peer_security() {
  if [[ -z ${BENCH_PEER_PLAINTEXT:-} && ${2:-} != plaintext ]]; then PEER_SEC=(--peer-tls-dir "$PEER_CERTS/$1"); else PEER_SEC=(--peer-plaintext); fi
}
peer_run() {
  local tag=$1 rate=$2 port=$3 out
  local tls=("${PEER_TLS[@]}")
  [[ $tag == *-plaintext ]] && tls=()
  out="$RESULTS/peer.$tag"
  taskset -c "$SERVER_CPU" "$BIN/roomcast-bench" peer-recv "${tls[@]}" --listen "127.0.0.21:$port" --peer "127.0.0.20:$(( port + 1 ))" \
    >"$out.recv.out" 2>"$out.recv.err" &
  local rpid=$!; PIDS+=("$rpid")
  for _ in $(seq 100); do grep -q READY "$out.recv.out" 2>/dev/null && break; sleep 0.1; done
  RUST_LOG=error taskset -c "$GEN_CPU" "$BIN/roomcast-bench" peer-send "${tls[@]}" --listen "127.0.0.20:$(( port + 1 ))" \
    --peer "127.0.0.21:$port" --rate "$rate" --duration-secs "$PEER_SECS" --payload-bytes 100 \
    >"$out.send.out" 2>"$out.send.err" || { echo "peer-send failed:" >&2; tail -5 "$out.send.err" >&2; exit 1; }
  wait "$rpid" || { echo "peer-recv failed:" >&2; tail -5 "$out.recv.err" >&2; exit 1; }
  local sent received scpu rcpu secs dropped
  sent=$(sum_field DONE sent "$out.send.out"); scpu=$(first_field DONE cpu_seconds "$out.send.out")
  dropped=$(sum_field DONE dropped "$out.send.out")
  received=$(sum_field DONE received "$out.recv.out"); rcpu=$(first_field DONE cpu_seconds "$out.recv.out")
  secs=$(first_field DONE seconds "$out.recv.out")
  awk -v tag="$tag" -v rate="$rate" -v sent="$sent" -v recv="$received" -v s="$scpu" -v r="$rcpu" -v secs="$secs" -v dropped="$dropped" \
      -v j="$(grep DONE "$out.recv.out")" 'function f(k,   i) { i = index(j, "\"" k "\":"); return i ? substr(j, i + length(k) + 3) + 0 : 0 }
      BEGIN {
        cpu = s + r; mpc = cpu > 0 ? recv / cpu : 0; mps = secs > 0 ? recv / secs : 0
        printf "%s\t%s\t%d\t%d\t%.2f\t%.2f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\n", tag, rate, sent, recv, s, r, mpc, mps, f("p50_us"), f("p99_us"), f("p999_us"), dropped
      }' >>"$PEER_TSV"
  log "peer/$tag: $(tail -1 "$PEER_TSV" | tr '\t' ' ') (tag rate sent received send_cpu recv_cpu msgs/cpu_s msgs/s p50 p99 p99.9 us)"
}
scenario_peer() {
  printf 'run\trate\tsent\treceived\tsend_cpu_s\trecv_cpu_s\tmsgs_per_cpu_s\tmsgs_per_s\tp50_us\tp99_us\tp999_us\tdropped\n' >"$PEER_TSV"
  peer_run max 0 17100
  local half; half=$(awk -F'\t' '$1 == "max" { printf "%d", $8 / 2 }' "$PEER_TSV")
  peer_run half "$half" 17110
  if (( PEER_COMPARE )); then
    peer_run max-plaintext 0 17120
    peer_run half-plaintext "$half" 17130
  fi
}

# ---- scenario: a room broadcast across 3 nodes -------------------------------------------------
# Three nodes of one server (all on the server CPU): a Roomcast cluster (127.0.0.51-.53, static
# members, peer links), Node socket.io with the official Redis adapter (127.0.0.61-.63 and a
# redis-server on 127.0.0.60, Debian's package), and socketioxide with socketioxide-redis
# (127.0.0.71-.73, redis-server on 127.0.0.70). CLUSTER_SUBS subscribers of one room on node 1
# and as many on node 2; the publisher on node 0 emits CLUSTER_RATE events per second, relayed to
# the room on the other nodes. Publish-to-receive latency, and deliveries per CPU-second of all
# the server processes together (Redis included).
CLUSTER_TSV="$RESULTS/cluster.tsv"
# cluster_start NAME -> CL_PIDS (server processes, for CPU), CL_HOSTS (node 0, 1, 2), CL_PORT
cluster_start() {
  local name=$1 i ip members="" peer=17200
  CL_PIDS=(); CL_HOSTS=(); CL_PORT=3300
  case "$name" in
    roomcast | roomcast-plaintext | roomcast-app)
      local security=${name#roomcast-} config=()
      [[ $name == roomcast-app ]] && security=tls
      for i in 0 1 2; do members+="hub-$i=127.0.0.$(( 51 + i )):$peer,"; done
      for i in 0 1 2; do
        ip="127.0.0.$(( 51 + i ))"; CL_HOSTS+=("$ip"); peer_security "hub-$i" "$security"
        if [[ $name == roomcast-app ]]; then
          # App links on: the app (bench/node/server.mjs through the SDK) serves the clients.
          # Over TLS with the node's peer certificate, unless the peers are plaintext too.
          printf '{"appLink":{"listen":"%s:%d","token":"%s","plaintext":%s}}\n' "$ip" "$APP_PORT" "$APP_TOKEN" \
            "$([[ -n ${BENCH_PEER_PLAINTEXT:-} ]] && echo true || echo false)" >"$RESULTS/cluster.$name-$i.json"
          config=(--config "$RESULTS/cluster.$name-$i.json")
        fi
        taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" "${config[@]}" --node-id "hub-$i" --listen "$ip:$CL_PORT" \
          --peer-listen "$ip:$peer" --members "${members%,}" "${PEER_SEC[@]}" >"$RESULTS/cluster.$name-$i.out" 2>"$RESULTS/cluster.$name-$i.err" &
        CL_PIDS+=("$!"); PIDS+=("$!")
      done
      ;;
    node | socketioxide)
      # One Redis per server under test, on its own address: 127.0.0.60 for Node, .70 for
      # socketioxide; the nodes on .61-.63 and .71-.73.
      local base=60
      [[ $name == socketioxide ]] && base=70
      command -v redis-server >/dev/null || { echo "redis-server is needed for the $name cluster (apt-get install redis-server)" >&2; exit 1; }
      taskset -c "$SERVER_CPU" redis-server --bind "127.0.0.$base" --port 6390 --save "" --appendonly no \
        >"$RESULTS/cluster.$name-redis.out" 2>&1 &
      CL_PIDS+=("$!"); PIDS+=("$!")
      for _ in $(seq 50); do grep -q "Ready to accept" "$RESULTS/cluster.$name-redis.out" 2>/dev/null && break; sleep 0.1; done
      for i in 0 1 2; do
        ip="127.0.0.$(( base + 1 + i ))"; CL_HOSTS+=("$ip")
        if [[ $name == node ]]; then
          BENCH_REDIS_URL="redis://127.0.0.$base:6390" taskset -c "$SERVER_CPU" node bench/node/server.mjs "$CL_PORT" "$ip" \
            >"$RESULTS/cluster.$name-$i.out" 2>"$RESULTS/cluster.$name-$i.err" &
        else
          BENCH_REDIS_URL="redis://127.0.0.$base:6390" taskset -c "$SERVER_CPU" "$BIN/bench-socketioxide-server" "$CL_PORT" "$ip" \
            >"$RESULTS/cluster.$name-$i.out" 2>"$RESULTS/cluster.$name-$i.err" &
        fi
        CL_PIDS+=("$!"); PIDS+=("$!")
      done
      ;;
    *) return 1 ;;
  esac
  for i in 0 1 2; do
    local out="$RESULTS/cluster.$name-$i.out"
    for _ in $(seq 100); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$out" || { echo "cluster/$name node $i did not start:" >&2; tail -5 "${out%.out}.err" >&2; exit 1; }
  done
  APP_PIDS=()
  if [[ $name == roomcast-app ]]; then
    # Three instances of the same app code as the node row, each given another node's address
    # (each links to all three).
    local app_ca="" # empty: plaintext app links (BENCH_PEER_PLAINTEXT)
    [[ -z ${BENCH_PEER_PLAINTEXT:-} ]] && app_ca="$PEER_CERTS/hub-0/ca.crt"
    for i in 0 1 2; do
      local out="$RESULTS/cluster.$name-app$i.out"
      # App links are TLS with the nodes' peer certificates: the app trusts their CA.
      BENCH_ROOMCAST_APP_ENDPOINT="127.0.0.$(( 51 + i )):$APP_PORT" BENCH_ROOMCAST_APP_TOKEN="$APP_TOKEN" \
        ROOMCAST_APP_CA_FILE="$app_ca" taskset -c "$SERVER_CPU" node bench/node/server.mjs >"$out" 2>"${out%.out}.err" &
      APP_PIDS+=("$!"); CL_PIDS+=("$!"); PIDS+=("$!")
    done
    for i in 0 1 2; do
      local out="$RESULTS/cluster.$name-app$i.out"
      for _ in $(seq 150); do grep -q "linked to the hub" "$out" 2>/dev/null && break; sleep 0.1; done
      grep -q "linked to the hub" "$out" || { echo "cluster/$name app $i did not link:" >&2; tail -5 "${out%.out}.err" >&2; exit 1; }
    done
  fi
  sleep 2 # peer links / adapter subscriptions up
}

# Runs the cluster measurement on the started cluster NAME (the K-th of the run): subscribers on
# nodes 1 and 2, a publisher on node 0; appends a row to TSV (and, with a fourth argument, the
# CPU seconds of the app instances as one more column).
cluster_measure() {
  local name=$1 k=$2 tsv=$3 with_app=${4:-} i ips
  log "cluster/$name: 3 nodes; $CLUSTER_SUBS subscribers on each of nodes 1 and 2"
  local outs=() gens=()
  for i in 1 2; do
    case $name in
      roomcast) ips=$(source_ips 200 $(( 3 + i ))) ;;
      roomcast-plaintext) ips=$(source_ips 130 $(( i - 1 ))) ;;
      roomcast-app) ips=$(source_ips 140 $(( i - 1 ))) ;;
      node) ips=$(source_ips $(( 90 + 100 * (i - 1) )) 0) ;;
      *) ips=$(source_ips 100 $(( i - 1 ))) ;;
    esac
    GEN_HOST="${CL_HOSTS[$i]}" start_generators subscribe "$name" "cluster$i" "$CL_PORT" "$CLUSTER_SUBS" \
      "$ips" $(( FANOUT_SECS + 300 )) --join bench-room
    outs+=("${GEN_OUTS[@]}"); gens+=("${GEN_PIDS[@]}")
  done
  GEN_OUTS=("${outs[@]}"); GEN_PIDS=("${gens[@]}")
  local connected pub_out cpu0=0 cpu1=0 app0=0 app1=0 p sent received merged
  connected=$(sum_field READY connected "${GEN_OUTS[@]}")
  sleep 2
  cpu0=$(sum_ticks "${CL_PIDS[@]}"); app0=$(sum_ticks "${APP_PIDS[@]}")
  pub_out="$RESULTS/cluster.$name.publisher.out"
  local perf_pid="" node_ticks0=() node_ticks1=()
  if [[ ${BENCH_CLUSTER_PROFILE:-0} == 1 && $name == roomcast* ]]; then
    ensure_command perf linux-perf || exit 1
    for p in "${CL_PIDS[@]}"; do node_ticks0+=("$(sum_ticks "$p")"); done
    perf record -e cpu-clock -F 999 -g -p "$(IFS=,; echo "${CL_PIDS[*]}")" -o "$RESULTS/cluster.$name.perf.data" \
      >"$RESULTS/cluster.$name.perf.log" 2>&1 &
    perf_pid=$!
  fi
  taskset -c "$GEN_CPU" "$BIN/roomcast-bench" publish --url "ws://${CL_HOSTS[0]}:$CL_PORT" --room bench-room \
    --source-ips "127.0.0.$(( 200 + k ))" --rate "$CLUSTER_RATE" --duration-secs "$FANOUT_SECS" --payload-bytes 100 \
    >"$pub_out" 2>"${pub_out%.out}.err" || { echo "publisher failed:" >&2; tail -5 "${pub_out%.out}.err" >&2; exit 1; }
  for p in "${CL_PIDS[@]}"; do wait_quiet "$p" 60; done
  cpu1=$(sum_ticks "${CL_PIDS[@]}"); app1=$(sum_ticks "${APP_PIDS[@]}")
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    for p in "${CL_PIDS[@]}"; do node_ticks1+=("$(sum_ticks "$p")"); done
    cluster_profile_report "$name" "$RESULTS/cluster.$name.perf.data" "$(sum_field DONE sent "$pub_out")"
  fi
  stop_generators
  for p in "${CL_PIDS[@]}"; do stop_pid "$p"; done
  sent=$(sum_field DONE sent "$pub_out")
  received=$(sum_field DONE events "${GEN_OUTS[@]}")
  merged=$("$BIN/roomcast-bench" merge "${GEN_OUTS[@]}")
  echo "$merged" >"$RESULTS/cluster.$name.latency.json"
  awk -v name="$name" -v subs="$(( 2 * CLUSTER_SUBS ))" -v conn="$connected" -v rate="$CLUSTER_RATE" -v dur="$FANOUT_SECS" -v sent="$sent" \
      -v recv="$received" -v c0="$cpu0" -v c1="$cpu1" -v a0="$app0" -v a1="$app1" -v app="$with_app" -v tck="$CLK_TCK" -v j="$merged" \
      'function f(k,   i) { i = index(j, "\"" k "\":"); return i ? substr(j, i + length(k) + 3) + 0 : 0 }
      BEGIN {
        cpu = (c1 - c0) / tck; dpc = cpu > 0 ? recv / cpu : 0
        printf "%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%d\t%d\t%d\t%d", name, subs, conn, rate, dur, sent, sent * conn, recv, cpu, dpc, f("p50_us"), f("p99_us"), f("p999_us"), f("max_us")
        if (app != "") printf "\t%.2f", (a1 - a0) / tck
        printf "\n"
      }' >>"$tsv"
  log "cluster/$name: $(tail -1 "$tsv" | cut -f2- | tr '\t' ' ') (subs connected rate s sent expected received cpu_s deliveries/cpu_s p50 p99 p99.9 max us [app cpu_s])"
}

# cluster_profile_report NAME DATA SENT: for each node of the profiled cluster (node_ticks0/1,
# CL_PIDS), its CPU per delivery it made (nodes 1 and 2: SENT x CLUSTER_SUBS each) or per event
# (node 0, which only relays), split as bench/profile-cpu.sh does. Written to the log and to
# cluster.NAME.profile.txt.
cluster_profile_report() {
  local name=$1 data=$2 sent=$3 i kernel rx units unit
  for i in 0 1 2; do
    read -r kernel rx < <(perf_split "$data" "${CL_PIDS[$i]}")
    if (( i == 0 )); then units=$sent; unit=event; else units=$(( sent * CLUSTER_SUBS )); unit=delivery; fi
    awk -v i="$i" -v t="$(( node_ticks1[i] - node_ticks0[i] ))" -v tck="$CLK_TCK" -v n="$units" -v unit="$unit" \
        -v k="$kernel" -v rx="$rx" 'BEGIN {
      if (n <= 0) exit
      us = 1e6 * t / tck / n
      printf "node %d: %.2f CPU-s, %.2f us per %s: user space %.2f, kernel %.2f, of which the subscribers'"'"' receive path %.2f\n", \
        i, t / tck, us, unit, us * (100 - k) / 100, us * k / 100, us * rx / 100
    }'
  done | tee "$RESULTS/cluster.$name.profile.txt" | while read -r line; do log "cluster/$name profile: $line"; done
}

# Each server's cluster is measured CLUSTER_RUNS times (a fresh cluster each time): this VM
# moves a p99 of about 5 ms by up to a millisecond between runs of the same binary. The row
# reported is the run with the median p99; its last column lists every run's p99 in order.
scenario_cluster() {
  printf 'server\tsubscribers\tconnected\trate\tduration_s\tsent\texpected\treceived\tservers_cpu_s\tdeliveries_per_cpu_s\tp50_us\tp99_us\tp999_us\tmax_us\tp99_runs_us\n' >"$CLUSTER_TSV"
  local name k=0 r runs servers=$SERVERS
  (( PEER_COMPARE )) && [[ " $SERVERS " == *" roomcast "* ]] && servers+=" roomcast-plaintext"
  for name in $servers; do
    [[ $name == node-eiows ]] && continue # the Redis setup is measured with socket.io's default engine
    k=$(( k + 1 ))
    runs="$RESULTS/cluster.$name.runs.tsv"
    : >"$runs"
    for r in $(seq "$CLUSTER_RUNS"); do
      (( CLUSTER_RUNS > 1 )) && log "cluster/$name: run $r of $CLUSTER_RUNS"
      cluster_start "$name"
      cluster_measure "$name" "$k" "$runs"
    done
    median_row "$runs" 12 >>"$CLUSTER_TSV"
  done
}

# median_row TSV COL: the row of TSV whose column COL (numeric) is the median (the lower one
# of an even count), with one more column: every row's COL in file order, comma-separated.
median_row() {
  local file=$1 col=$2 all
  all=$(cut -f"$col" "$file" | paste -sd, -)
  sort -t$'\t' -k"$col,$col"n "$file" | awk -v all="$all" '{ row[NR] = $0 } END { if (NR) print row[int((NR + 1) / 2)] "\t" all }'
}

# ---- scenario: the app in the loop ---------------------------------------------------------------
# The cluster scenario's load (a room broadcast across 3 nodes) with the application in the
# loop: every event goes from the publisher to the app and back out. Three setups run the same
# app code, bench/node/server.mjs (join on `join`, relay any other event to the sender's rooms):
#   roomcast-app  a 3-node Roomcast hub with app links; three instances of server.mjs serve it
#                 through the Node SDK (sdk/node, `useRoomcast`);
#   node          three socket.io servers running server.mjs with the Redis adapter;
#   roomcast      the hub alone (its built-in relay does what server.mjs does): the baseline
#                 for the latency the app link adds.
# Reported: deliveries per CPU-second of every process (hub and app; socket.io and Redis), the
# SDK's CPU per delivery and per event (the app instances' CPU), and the latency the app link adds.
APP_TSV="$RESULTS/app.tsv"
APP_PORT=5100
APP_TOKEN="bench-app-link-token-0123456789"
scenario_app() {
  printf 'server\tsubscribers\tconnected\trate\tduration_s\tsent\texpected\treceived\tservers_cpu_s\tdeliveries_per_cpu_s\tp50_us\tp99_us\tp999_us\tmax_us\tapp_cpu_s\n' >"$APP_TSV"
  local name k=10
  for name in roomcast roomcast-app node; do
    [[ $name == roomcast-app || " $SERVERS " == *" ${name} "* ]] || continue
    k=$(( k + 1 ))
    cluster_start "$name"
    cluster_measure "$name" "$k" "$APP_TSV" app
  done
}

# ---- scenario: connection state recovery ------------------------------------------------------
# (1) Memory per parked session: one node with recovery on; RECOVERY_N clients
#     (`roomcast-bench recovery`, each joined to one of RECOVERY_ROOMS rooms) connect; their
#     generators are killed (SIGKILL: the kernel closes the sockets, no Socket.IO disconnect,
#     so the server parks every session); once all are parked (roomcast_recovery_parked_sessions
#     on the metrics port; `sessions N` from bench/node/server.mjs), RECOVERY_N fresh clients
#     connect beside them. RSS before, connected, parked, parked + connected again.
#     The same with Node socket.io (in-memory adapter) when "node" is among the servers.
# (2) Drain: a 3-node Roomcast hub (127.0.1.1-3, peer TLS unless BENCH_PEER_PLAINTEXT), recovery
#     on; RECOVERY_N clients on node 0, publishers on node 1 sending RECOVERY_RATE numbered
#     messages per second to each room; SIGTERM to node 0; the clients reconnect with their
#     {pid, offset}, round robin over nodes 1 and 2. Time from SIGTERM until every client is
#     recovered, per-client recovery time, messages lost or delivered twice per client.
RECOVERY_MEM_TSV="$RESULTS/recovery-memory.tsv"
RECOVERY_DRAIN_TSV="$RESULTS/recovery-drain.tsv"
recovery_config() { # FILE METRICS_ADDR
  cat >"$1" <<JSON
{"socketio": {"namespaces": [{"name": "*", "relay": true, "policies": {"join": ["*"], "emitToJoined": true}}],
  "connectionStateRecovery": {"enabled": true, "maxDisconnectionDuration": $RECOVERY_WINDOW_MS}},
 "metrics": {"listen": "$2"}}
JSON
}
# metric_sum NAME ADDR... : the sum of every sample of NAME (all labels) on the metrics ports
metric_sum() {
  local name=$1 addr t=0 v; shift
  for addr in "$@"; do
    v=$(curl -s --max-time 5 "http://$addr/metrics" | awk -v n="$name" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d", s }')
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}
# metric_labels NAME ADDR... : "label=value ..." summed over the nodes (e.g. failed reasons)
metric_labels() {
  local name=$1; shift
  local addr
  for addr in "$@"; do curl -s --max-time 5 "http://$addr/metrics"; done |
    awk -v n="$name" 'index($1, n "{") == 1 { l = $1; sub(/^[^{]*\{[a-z]*="/, "", l); sub(/"\}$/, "", l); s[l] += $2 }
      END { o = ""; for (k in s) o = o (o == "" ? "" : " ") k "=" s[k]; print (o == "" ? "none" : o) }'
}
scenario_recovery_memory() {
  local name=$1 ip=$2 port=$3 ips1=$4 ips2=$5 pid rss0 rss1 rss2 rss3 parked=0 parked3 i connected hold=$(( 600 ))
  local out="$RESULTS/recmem.$name.server.out" err="$RESULTS/recmem.$name.server.err"
  port_free "$port" || { echo "port $port is busy" >&2; exit 1; }
  if [[ $name == roomcast ]]; then
    recovery_config "$RESULTS/recmem.roomcast.json" "$ip:9401"
    taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" --config "$RESULTS/recmem.roomcast.json" --listen "$ip:$port" >"$out" 2>"$err" &
  else
    BENCH_RECOVERY_MS=$RECOVERY_WINDOW_MS taskset -c "$SERVER_CPU" node bench/node/server.mjs "$port" "$ip" >"$out" 2>"$err" &
  fi
  pid=$!; PIDS+=("$pid")
  for i in $(seq 1 300); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$out" || { echo "recovery/$name did not start:" >&2; tail -5 "$err" >&2; exit 1; }
  parked_now() {
    if [[ $name == roomcast ]]; then metric_sum roomcast_recovery_parked_sessions "$ip:9401"; return; fi
    local before; before=$(grep -c '^sessions ' "$out" || true)
    kill -USR2 "$pid"
    for _ in $(seq 50); do (( $(grep -c '^sessions ' "$out" || true) > before )) && break; sleep 0.1; done
    grep '^sessions ' "$out" | tail -1 | awk '{ print $2 }'
  }
  sleep 2
  rss0=$(rss_kib "$pid")
  log "recovery-memory/$name: $RECOVERY_N clients in $RECOVERY_ROOMS rooms (sources $ips1)"
  GEN_HOST=$ip start_generators recovery "$name" recmem "$port" "$RECOVERY_N" "$ips1" "$hold" --rooms "$RECOVERY_ROOMS" --reconnect-attempts 1
  connected=$(sum_field READY connected "${GEN_OUTS[@]}")
  sleep "$SETTLE"; wait_quiet "$pid" 30
  rss1=$(rss_kib "$pid")
  log "recovery-memory/$name: $connected connected, RSS $rss0 -> $rss1 KiB; killing the clients (SIGKILL)"
  local gp; for gp in "${GEN_PIDS[@]}"; do kill -KILL "$gp" 2>/dev/null || true; done
  for gp in "${GEN_PIDS[@]}"; do wait "$gp" 2>/dev/null || true; done
  for i in $(seq 1 120); do
    parked=$(parked_now); (( ${parked:-0} >= connected )) && break; sleep 0.5
  done
  sleep "$SETTLE"; wait_quiet "$pid" 30
  rss2=$(rss_kib "$pid"); parked=$(parked_now)
  log "recovery-memory/$name: $parked parked, RSS $rss2 KiB; $RECOVERY_N fresh clients beside them (sources $ips2)"
  GEN_HOST=$ip start_generators recovery "$name" recmem2 "$port" "$RECOVERY_N" "$ips2" "$hold" --rooms "$RECOVERY_ROOMS" --reconnect-attempts 1
  sleep "$SETTLE"; wait_quiet "$pid" 30
  rss3=$(rss_kib "$pid"); parked3=$(parked_now)
  stop_generators
  stop_pid "$pid"
  awk -v name="$name" -v ver="$(server_version "$name")" -v n="$connected" -v p="$parked" -v p3="$parked3" -v r0="$rss0" -v r1="$rss1" -v r2="$rss2" -v r3="$rss3" 'BEGIN {
      printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\n", name, ver, n, p, p3, r0, r1, r2, r3,
        (n > 0 ? (r1 - r0) / n : 0), (n > 0 ? (r2 - r0) / n : 0), (n > 0 ? (r3 - r1) / n : 0)
    }' >>"$RECOVERY_MEM_TSV"
  log "recovery-memory/$name: $(tail -1 "$RECOVERY_MEM_TSV" | cut -f3- | tr '\t' ' ') (n parked parked_end rss0 rss1 rss2 rss3 KiB/conn KiB/parked KiB/parked-marginal)"
}
scenario_recovery_drain() {
  local i ip members="" peer=17300 port=3400 metrics=() nodes=() hosts=()
  for i in 0 1 2; do members+="hub-$i=127.0.1.$(( i + 1 )):$peer,"; done
  for i in 0 1 2; do
    ip="127.0.1.$(( i + 1 ))"; hosts+=("$ip"); metrics+=("$ip:9400")
    recovery_config "$RESULTS/recdrain.hub-$i.json" "$ip:9400"
    peer_security "hub-$i"
    taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" --config "$RESULTS/recdrain.hub-$i.json" --node-id "hub-$i" \
      --listen "$ip:$port" --peer-listen "$ip:$peer" --members "${members%,}" "${PEER_SEC[@]}" \
      >"$RESULTS/recdrain.hub-$i.out" 2>"$RESULTS/recdrain.hub-$i.err" &
    nodes+=("$!"); PIDS+=("$!")
  done
  for i in 0 1 2; do
    for _ in $(seq 100); do grep -q "listening on" "$RESULTS/recdrain.hub-$i.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$RESULTS/recdrain.hub-$i.out" || { echo "recovery/hub-$i did not start:" >&2; tail -5 "$RESULTS/recdrain.hub-$i.err" >&2; exit 1; }
  done
  sleep 2
  log "recovery-drain: $RECOVERY_N clients on hub-0 in $RECOVERY_ROOMS rooms; reconnect round robin to hub-1, hub-2"
  GEN_HOST=${hosts[0]} start_generators recovery roomcast recdrain "$port" "$RECOVERY_N" "127.0.1.31,127.0.1.32,127.0.1.33,127.0.1.34" 900 \
    --rooms "$RECOVERY_ROOMS" --reconnect-urls "ws://${hosts[1]}:$port,ws://${hosts[2]}:$port"
  local connected; connected=$(sum_field READY connected "${GEN_OUTS[@]}")
  local pub_out="$RESULTS/recdrain.publisher.out" sent_file="$RESULTS/recdrain.sent"
  taskset -c "$GEN_CPU" "$BIN/roomcast-bench" recovery-publish --url "ws://${hosts[1]}:$port" --source-ips 127.0.1.40 \
    --rooms "$RECOVERY_ROOMS" --rate "$RECOVERY_RATE" --duration-secs 900 --sent-out "$sent_file" \
    >"$pub_out" 2>"${pub_out%.out}.err" &
  local pub=$!; PIDS+=("$pub")
  for _ in $(seq 100); do grep -q READY "$pub_out" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$pub_out" || { echo "recovery publisher did not start:" >&2; tail -5 "${pub_out%.out}.err" >&2; exit 1; }
  log "recovery-drain: $connected connected; publishing $RECOVERY_RATE/s to each room for ${RECOVERY_WARM}s, then SIGTERM to hub-0"
  sleep "$RECOVERY_WARM"
  local c0 g0 w0 c1 g1 w1
  c0=$(( $(cpu_ticks "${nodes[1]}") + $(cpu_ticks "${nodes[2]}") )); g0=$(gen_ticks); w0=$(date +%s.%N)
  local t_term; t_term=$("$BIN/roomcast-bench" clock)
  kill -TERM "${nodes[0]}"
  local deadline=$(( $(date +%s) + 180 )) n
  while :; do
    n=$(cat "${GEN_OUTS[@]}" | grep -c '^RECOVERED ' || true)
    (( n == ${#GEN_OUTS[@]} )) && break
    (( $(date +%s) < deadline )) || { log "recovery-drain: not every client came back within 180 s"; break; }
    sleep 0.2
  done
  c1=$(( $(cpu_ticks "${nodes[1]}") + $(cpu_ticks "${nodes[2]}") )); g1=$(gen_ticks); w1=$(date +%s.%N)
  wait "${nodes[0]}" 2>/dev/null || true
  log "recovery-drain: clients back; ${RECOVERY_AFTER}s more traffic"
  sleep "$RECOVERY_AFTER"
  kill -TERM "$pub" 2>/dev/null || true; wait "$pub" 2>/dev/null || true
  sleep 2
  local m_local m_remote m_adopted m_failed m_replayed m_parked
  m_local=$(curl -s "http://${metrics[1]}/metrics" "http://${metrics[2]}/metrics" | awk '$1 == "roomcast_recovery_recovered_total{where=\"local\"}" { s += $2 } END { printf "%d", s }')
  m_remote=$(curl -s "http://${metrics[1]}/metrics" "http://${metrics[2]}/metrics" | awk '$1 == "roomcast_recovery_recovered_total{where=\"remote\"}" { s += $2 } END { printf "%d", s }')
  m_adopted=$(metric_sum roomcast_recovery_adopted_total "${metrics[1]}" "${metrics[2]}")
  m_replayed=$(metric_sum roomcast_recovery_replayed_packets_total "${metrics[1]}" "${metrics[2]}")
  m_failed=$(metric_labels roomcast_recovery_failed_total "${metrics[1]}" "${metrics[2]}")
  stop_generators
  m_parked=$(metric_sum roomcast_recovery_parked_sessions "${metrics[1]}" "${metrics[2]}")
  local handed; handed=$(sed 's/\x1b\[[0-9;]*m//g' "$RESULTS/recdrain.hub-0.err" | awk '/parked sessions handed over/ { for (i = 1; i <= NF; i++) if ($i ~ /^(sessions|handed_over)=/) { split($i, kv, "="); v[kv[1]] = kv[2] } } END { printf "%d of %d", v["handed_over"], v["sessions"] }')
  for i in 1 2; do stop_pid "${nodes[$i]}"; done
  local merged; merged=$("$BIN/roomcast-bench" merge "${GEN_OUTS[@]}")
  echo "$merged" >"$RESULTS/recdrain.recovery-time.json"
  # Per client: lost = skipped + what it never got at the end; exactly once = all of its room's
  # messages, none twice.
  local per_client; per_client=$(grep -h '^CLIENT ' "${GEN_OUTS[@]}" | awk -v sf="$sent_file" 'BEGIN { while ((getline l < sf) > 0) { split(l, a, " "); sent[a[1]] = a[2] } }
    { room = $3; recv = $4; twice = $5; skipped = $6; next_seq = $7; fresh = $10; failed = $11
      want = sent[room]; lost = skipped + (want > next_seq ? want - next_seq : 0)
      n++; expected += want; got += recv
      if (fresh > 0 || failed > 0) { nf++; lost_f += lost; next }
      if (lost == 0 && twice == 0 && recv == want) exact++
      if (lost > 0) { cl++; tl += lost }
      if (twice > 0) { cd++; td += twice }
    }
    END { printf "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d", n, exact, cl, tl, cd, td, nf, lost_f, expected, got }')
  local done_lines=("${GEN_OUTS[@]}")
  awk -F'\t' -v n="$RECOVERY_N" -v conn="$connected" -v rooms="$RECOVERY_ROOMS" -v rate="$RECOVERY_RATE" -v t0="$t_term" \
      -v rec="$(sum_field DONE recovered "${done_lines[@]}")" -v fresh="$(sum_field DONE fresh "${done_lines[@]}")" \
      -v failed="$(sum_field DONE reconnect_failed "${done_lines[@]}")" -v down="$(sum_field DONE disconnected "${done_lines[@]}")" \
      -v first="$(cat "${done_lines[@]}" | awk '/^DONE / { match($0, /"first_disconnect_ns":[0-9]+/); v = substr($0, RSTART + 22, RLENGTH - 22) + 0; if (v > 0 && (m == 0 || v < m)) m = v } END { printf "%.0f", m }')" \
      -v lastd="$(cat "${done_lines[@]}" | awk '/^DONE / { match($0, /"last_disconnect_ns":[0-9]+/); v = substr($0, RSTART + 21, RLENGTH - 21) + 0; if (v > m) m = v } END { printf "%.0f", m }')" \
      -v lastr="$(cat "${done_lines[@]}" | awk '/^DONE / { match($0, /"last_recovered_ns":[0-9]+/); v = substr($0, RSTART + 20, RLENGTH - 20) + 0; if (v > m) m = v } END { printf "%.0f", m }')" \
      -v j="$merged" -v pc="$per_client" -v ml="$m_local" -v mr="$m_remote" -v ma="$m_adopted" -v mf="$m_failed" -v mp="$m_replayed" \
      -v handed="$handed" -v left="$m_parked" -v c0="$c0" -v c1="$c1" -v g0="$g0" -v g1="$g1" -v w0="$w0" -v w1="$w1" -v tck="$CLK_TCK" -v tls="$([[ -z ${BENCH_PEER_PLAINTEXT:-} ]] && echo "mutual TLS" || echo plaintext)" \
      'function f(k,   i) { i = index(j, "\"" k "\":"); return i ? substr(j, i + length(k) + 3) + 0 : 0 }
      BEGIN {
        split(pc, c, "\t")
        printf "%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%.2f\t%.2f\t%.0f\n",
          n, conn, rooms, rate, down, rec, fresh, failed,
          (first - t0) / 1e6, (lastd - t0) / 1e6, (lastr - t0) / 1e6,
          f("p50_us") / 1000, f("p90_us") / 1000, f("p99_us") / 1000, f("max_us") / 1000,
          c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], ml, mr, ma, mf, mp, handed, tls,
          (c1 - c0) / tck, w1 - w0, (w1 > w0 ? 100 * (g1 - g0) / tck / (w1 - w0) : 0)
      }' >>"$RECOVERY_DRAIN_TSV"
  log "recovery-drain: $(tail -1 "$RECOVERY_DRAIN_TSV" | tr '\t' ' ')"
}
scenario_recovery() {
  printf 'server\tversion\tclients\tparked\tparked_end\trss0_kib\trss_connected_kib\trss_parked_kib\trss_parked_and_connected_kib\tkib_per_conn\tkib_per_parked\tkib_per_parked_marginal\n' >"$RECOVERY_MEM_TSV"
  scenario_recovery_memory roomcast 127.0.1.1 3401 "127.0.1.11,127.0.1.12,127.0.1.13,127.0.1.14" "127.0.1.15,127.0.1.16,127.0.1.17,127.0.1.18"
  if [[ " $SERVERS " == *" node "* ]]; then
    scenario_recovery_memory node 127.0.1.4 3402 "127.0.1.21,127.0.1.22,127.0.1.23,127.0.1.24" "127.0.1.25,127.0.1.26,127.0.1.27,127.0.1.28"
  fi
  printf 'clients\tconnected\trooms\trate\tdisconnected\trecovered\tfresh\treconnect_failed\tms_to_first_disconnect\tms_to_last_disconnect\tms_to_all_recovered\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tclients_counted\tclients_exactly_once\tclients_lost\tmessages_lost\tclients_twice\tmessages_twice\tclients_fresh\tmessages_lost_fresh\tdeliveries_expected\tdeliveries_received\trecovered_local\trecovered_remote\tadopted\tfailed_reasons\treplayed\thanded_over_of_parked\tpeer_links\tsurvivors_cpu_s\twindow_s\tgenerator_cpu_pct\n' >"$RECOVERY_DRAIN_TSV"
  scenario_recovery_drain
}

# ---- scenario: room ownership at scale (simulated) ---------------------------------------------
# The data plane's ownership state machines for RING_NODES nodes in one process
# (bench/loadgen/src/bin/ringsim.rs): RING_ROOMS rooms with members on 1-3 nodes each, churn of
# 1,000 joins+leaves per second, 20,000 broadcasts per second from uniformly chosen nodes to
# Zipf-distributed rooms, a node added at 1/3 and one removed at 2/3 of RING_SECONDS. Twice:
# cold rooms sent everywhere while looked up, and cold rooms looked up first (held).
RING_TSV="$RESULTS/ring.tsv"
RING_LOOKUP_TSV="$RESULTS/ring-lookup.tsv"
scenario_ring() {
  local cold tsv
  for cold in everywhere lookup; do
    tsv=$RING_TSV; [[ $cold == lookup ]] && tsv=$RING_LOOKUP_TSV
    log "ring: $RING_NODES nodes, $RING_ROOMS rooms, $RING_SECONDS simulated seconds, cold rooms: $cold"
    "$BIN/roomcast-ringsim" --nodes "$RING_NODES" --rooms "$RING_ROOMS" --seconds "$RING_SECONDS" \
      --cold "$cold" --tsv "$tsv" >"$RESULTS/ring-$cold.out"
    log "ring: $(tr '\n' ' ' <"$tsv")"
  done
}

# ---- scenario: 100,000 connections on one hub -------------------------------------------------
# The seed's headline on this machine: HEADLINE_NODES nodes of each server hold HEADLINE_CONNS
# WebSocket connections together (spread evenly), every one joined to one room, then a publisher
# on node 0 sends HEADLINE_EVENTS broadcasts to that room, one per second: each reaches every
# connection. Roomcast runs as one hub (static members, peer TLS by default), Node socket.io as
# processes sharing the official Redis adapter. Every node and generator is its own process on
# its own 127.x addresses, under 20,000 open files each; all nodes share CPU $SERVER_CPU.
HEADLINE_CONNS=${BENCH_HEADLINE_CONNECTIONS:-$(( QUICK == 1 ? 10000 : 100000 ))}
HEADLINE_EVENTS=${BENCH_HEADLINE_EVENTS:-5}
HEADLINE_GAP=${BENCH_HEADLINE_GAP_SECS:-5}
HEADLINE_SERVERS=${BENCH_HEADLINE_SERVERS:-"roomcast node"}
HEADLINE_TSV="$RESULTS/headline.tsv"
# headline_start NAME (roomcast, node) -> HL_PIDS (server processes), HL_HOSTS, HL_PORT
headline_start() {
  local name=$1 i ip members="" peer=17400
  HL_PIDS=(); HL_HOSTS=(); HL_PORT=3600
  case "$name" in
    roomcast)
      for (( i = 0; i < HEADLINE_NODES; i++ )); do members+="hub-$i=127.0.3.$(( i + 1 )):$peer,"; done
      for (( i = 0; i < HEADLINE_NODES; i++ )); do
        ip="127.0.3.$(( i + 1 ))"; HL_HOSTS+=("$ip"); peer_security "hub-$i"
        taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" --node-id "hub-$i" --listen "$ip:$HL_PORT" \
          --peer-listen "$ip:$peer" --members "${members%,}" "${PEER_SEC[@]}" \
          >"$RESULTS/headline.$name-$i.out" 2>"$RESULTS/headline.$name-$i.err" &
        HL_PIDS+=("$!"); PIDS+=("$!")
      done
      ;;
    node)
      taskset -c "$SERVER_CPU" redis-server --bind 127.0.4.100 --port 6391 --save "" --appendonly no \
        >"$RESULTS/headline.node-redis.out" 2>&1 &
      HL_PIDS+=("$!"); PIDS+=("$!")
      for _ in $(seq 50); do grep -q "Ready to accept" "$RESULTS/headline.node-redis.out" 2>/dev/null && break; sleep 0.1; done
      for (( i = 0; i < HEADLINE_NODES; i++ )); do
        ip="127.0.4.$(( i + 1 ))"; HL_HOSTS+=("$ip")
        BENCH_REDIS_URL="redis://127.0.4.100:6391" taskset -c "$SERVER_CPU" node bench/node/server.mjs "$HL_PORT" "$ip" \
          >"$RESULTS/headline.$name-$i.out" 2>"$RESULTS/headline.$name-$i.err" &
        HL_PIDS+=("$!"); PIDS+=("$!")
      done
      ;;
    *) return 1 ;;
  esac
  for (( i = 0; i < HEADLINE_NODES; i++ )); do
    local out="$RESULTS/headline.$name-$i.out"
    for _ in $(seq 100); do grep -q "listening on" "$out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$out" || { echo "headline/$name node $i did not start:" >&2; tail -5 "${out%.out}.err" >&2; exit 1; }
  done
  sleep 3 # peer links / adapter subscriptions up
}
# Sums of VmRSS (MiB) and CPU ticks over HL_PIDS, and the most open files of one of them.
hl_rss_mib() { local p s=0; for p in "${HL_PIDS[@]}"; do s=$(( s + $(rss_kib "$p") )); done; echo $(( s / 1024 )); }
hl_cpu() { sum_ticks "${HL_PIDS[@]}"; }
hl_max_fds() { local p m=0 n; for p in "${HL_PIDS[@]}"; do n=$(ls "/proc/$p/fd" | wc -l); (( n > m )) && m=$n; done; echo "$m"; }
scenario_headline() {
  printf 'server\tnodes\tconnections\tconnected\trss_before_mib\trss_after_mib\tkib_per_conn\tconnect_cpu_s\tconnect_wall_s\tmax_fds\tsent\texpected\treceived\tbroadcast_cpu_s\tp50_us\tp99_us\tmax_us\tidle_cpu_s\n' >"$HEADLINE_TSV"
  local name k=0 i share outs gens ips third
  for name in $HEADLINE_SERVERS; do
    k=$(( k + 1 ))
    headline_start "$name"
    local rss0 cpu0 t0 cpu1 t1 rss1 fds connected
    rss0=$(hl_rss_mib); cpu0=$(hl_cpu); t0=$(date +%s.%N)
    log "headline/$name: $HEADLINE_NODES nodes, $HEADLINE_CONNS connections joined to one room"
    outs=(); gens=(); third=$(( 4 + k ))
    for (( i = 0; i < HEADLINE_NODES; i++ )); do
      share=$(( HEADLINE_CONNS / HEADLINE_NODES + (i < HEADLINE_CONNS % HEADLINE_NODES ? 1 : 0) ))
      ips="127.0.$third.$(( 8 * i + 1 )),127.0.$third.$(( 8 * i + 2 )),127.0.$third.$(( 8 * i + 3 )),127.0.$third.$(( 8 * i + 4 ))"
      GEN_HOST="${HL_HOSTS[$i]}" start_generators subscribe "$name" "headline$i" "$HL_PORT" "$share" "$ips" 900 --join headline-room
      outs+=("${GEN_OUTS[@]}"); gens+=("${GEN_PIDS[@]}")
    done
    GEN_OUTS=("${outs[@]}"); GEN_PIDS=("${gens[@]}")
    t1=$(date +%s.%N)
    for p in "${HL_PIDS[@]}"; do wait_quiet "$p" 60; done
    cpu1=$(hl_cpu); rss1=$(hl_rss_mib); fds=$(hl_max_fds)
    connected=$(sum_field READY connected "${GEN_OUTS[@]}")
    log "headline/$name: $connected connected; RSS $rss0 -> $rss1 MiB; at most $fds open files in one node"
    local pub_out="$RESULTS/headline.$name.publisher.out" c2 c3 i0 i1
    # The same window without broadcasts: what the heartbeats of the connections cost.
    i0=$(hl_cpu); sleep $(( HEADLINE_EVENTS * HEADLINE_GAP )); i1=$(hl_cpu)
    c2=$(hl_cpu)
    taskset -c "$GEN_CPU" "$BIN/roomcast-bench" publish --url "ws://${HL_HOSTS[0]}:$HL_PORT" --room headline-room \
      --source-ips "127.0.7.$k" --rate "$(awk -v g="$HEADLINE_GAP" 'BEGIN { print 1 / g }')" \
      --duration-secs $(( HEADLINE_EVENTS * HEADLINE_GAP )) --payload-bytes 100 \
      >"$pub_out" 2>"${pub_out%.out}.err" || { echo "publisher failed:" >&2; tail -5 "${pub_out%.out}.err" >&2; exit 1; }
    for p in "${HL_PIDS[@]}"; do wait_quiet "$p" 120; done
    c3=$(hl_cpu)
    stop_generators
    for p in "${HL_PIDS[@]}"; do stop_pid "$p"; done
    local sent received merged
    sent=$(sum_field DONE sent "$pub_out")
    received=$(sum_field DONE events "${GEN_OUTS[@]}")
    merged=$("$BIN/roomcast-bench" merge "${GEN_OUTS[@]}")
    echo "$merged" >"$RESULTS/headline.$name.latency.json"
    awk -v name="$name" -v nodes="$HEADLINE_NODES" -v n="$HEADLINE_CONNS" -v conn="$connected" -v r0="$rss0" -v r1="$rss1" \
        -v c0="$cpu0" -v c1="$cpu1" -v c2="$c2" -v c3="$c3" -v t0="$t0" -v t1="$t1" -v fds="$fds" -v sent="$sent" -v recv="$received" \
        -v tck="$CLK_TCK" -v j="$merged" -v i0="$i0" -v i1="$i1" \
      'function f(k,   i) { i = index(j, "\"" k "\":"); return i ? substr(j, i + length(k) + 3) + 0 : 0 }
      BEGIN {
        printf "%s\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%.2f\t%d\t%d\t%d\t%.2f\n", name, nodes, n, conn, r0, r1,
          (conn > 0 ? (r1 - r0) * 1024 / conn : 0), (c1 - c0) / tck, t1 - t0, fds, sent, sent * conn, recv, (c3 - c2) / tck, f("p50_us"), f("p99_us"), f("max_us"), (i1 - i0) / tck
      }' >>"$HEADLINE_TSV"
    log "headline/$name: $(tail -1 "$HEADLINE_TSV" | cut -f2- | tr '\t' ' ')"
  done
}

# ---- scenario: the clients in their own network namespace ----------------------------------
# Connect rate and both fan-outs again, with each server in namespace rcb-hub and its clients in
# rcb-cli, joined by a veth pair whose receive processing runs on each side's own CPU
# (bench/netns.sh): the clients' TCP receive path, which loopback bills to the sender, leaves
# the server's CPU figures. Same loads and servers as the loopback scenarios.
NETNS_CONNECT_TSV="$RESULTS/netns-connect.tsv"
NETNS_FANOUT_TSV="$RESULTS/netns-fanout.tsv"
scenario_netns() {
  (( $(id -u) == 0 )) || { echo "the netns scenario needs root (ip netns, veth)" >&2; exit 1; }
  # shellcheck source=bench/netns.sh
  source "$ROOT/bench/netns.sh"
  NETNS_ACTIVE=1
  netns_up "$SERVER_CPU" "$GEN_CPU"
  local connect_tsv=$CONNECT_TSV fanout_tsv=$FANOUT_TSV
  SERVER_HOST=$NETNS_HUB_IP; SRC_NET=$NETNS_CLI_NET
  SERVER_NS=(ip netns exec "$NETNS_HUB"); GEN_NS=(ip netns exec "$NETNS_CLI")
  mapfile -t SERVER_EXTRA_PIDS < <(netns_napi_pids rcb-h)
  mapfile -t GEN_EXTRA_PIDS < <(netns_napi_pids rcb-c)
  # The Node and socketioxide peers listen on loopback only, unless told this address is ours.
  export BENCH_NETNS_HOST=$NETNS_HUB_IP
  CONNECT_TSV=$NETNS_CONNECT_TSV; FANOUT_TSV=$NETNS_FANOUT_TSV
  rm -f "$FANOUT_TSV"
  local FANOUT_RUNS=1 # a fan-out run takes several times as long here
  scenario_connect
  scenario_fanout sparse "$SPARSE_SUBS" "$SPARSE_RATE" "$FANOUT_SECS" 100 90
  scenario_fanout dense "$DENSE_SUBS" "$DENSE_RATE" "$FANOUT_SECS" 100 150
  CONNECT_TSV=$connect_tsv; FANOUT_TSV=$fanout_tsv
  SERVER_HOST=127.0.0.1; SRC_NET=127.0.0; SERVER_NS=(); GEN_NS=(); SERVER_EXTRA_PIDS=(); GEN_EXTRA_PIDS=()
  unset BENCH_NETNS_HOST
  netns_down
  NETNS_ACTIVE=0
}

for scenario in $SCENARIOS; do
  case "$scenario" in
    idle) scenario_idle ;;
    connect) scenario_connect ;;
    sparse) scenario_fanout sparse "$SPARSE_SUBS" "$SPARSE_RATE" "$FANOUT_SECS" 100 90 ;;
    dense) scenario_fanout dense "$DENSE_SUBS" "$DENSE_RATE" "$FANOUT_SECS" 100 150 ;;
    peer) scenario_peer ;;
    cluster) scenario_cluster ;;
    app) scenario_app ;;
    recovery) scenario_recovery ;;
    ring) scenario_ring ;;
    headline) scenario_headline ;;
    netns) scenario_netns ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done

# ---- report -----------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_TOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
RATIO_AWK='function ratio(peer, ours) {
  if (ours <= 0 || peer <= 0) return "n/a"
  if (peer >= ours * 1.05) return sprintf("Roomcast uses %.1f× less", peer / ours)
  if (ours >= peer * 1.05) return sprintf("Roomcast uses %.1f× more", ours / peer)
  return "about the same"
}
function more(ours, peer) {
  if (ours <= 0 || peer <= 0) return "n/a"
  if (ours >= peer * 1.05) return sprintf("Roomcast %.1f× more", ours / peer)
  if (peer >= ours * 1.05) return sprintf("Roomcast %.1f× less", peer / ours)
  return "about the same"
}'
report_idle() {
  echo "## Idle connections: memory and CPU"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { kpc[$1] = $11; kpe[$1] = $20; ius[$1] = $17; seen[$1] = 1 }
    END {
      if (!("roomcast" in seen)) { print "Roomcast was not part of this run."; exit }
      r = kpc["roomcast"]
      printf "- **Memory per idle connection, each in a room of its own: Roomcast %.2f KiB**", r
      if ("node" in seen) printf "; Node socket.io %.2f KiB (%s)", kpc["node"], ratio(kpc["node"], r)
      if ("socketioxide" in seen) printf "; socketioxide %.2f KiB (%s)", kpc["socketioxide"], ratio(kpc["socketioxide"], r)
      print "."
      printf "- After the idle window (heartbeats exchanged, garbage collectors run): Roomcast %.2f KiB", kpe["roomcast"]
      if ("node" in seen) printf "; Node %.2f KiB (%s)", kpe["node"], ratio(kpe["node"], kpe["roomcast"])
      if ("socketioxide" in seen) printf "; socketioxide %.2f KiB (%s)", kpe["socketioxide"], ratio(kpe["socketioxide"], kpe["roomcast"])
      print "."
      printf "- Targets: ≤ 3 KiB per idle connection with its room: **%s** (%.2f KiB)", (r <= 3 ? "met" : "missed"), r
      if ("node" in seen) printf "; ≥ 5× less than Node: **%s** (%s)", (r > 0 && kpc["node"] / r >= 5 ? "met" : "missed"), ratio(kpc["node"], r)
      if ("socketioxide" in seen) printf "; ≥ 3× less than socketioxide: **%s** (%s)", (r > 0 && kpc["socketioxide"] / r >= 3 ? "met" : "missed"), ratio(kpc["socketioxide"], r)
      print "."
      c = ius["roomcast"]
      printf "- **Idle CPU per connection: Roomcast %.3f µs per second**", c
      if ("node" in seen) printf "; Node %.3f µs/s (%s)", ius["node"], ratio(ius["node"], c)
      if ("socketioxide" in seen) printf "; socketioxide %.3f µs/s (%s)", ius["socketioxide"], ratio(ius["socketioxide"], c)
      print "."
    }' "$IDLE_TSV"
  echo
  echo "| server | version | connections (failed) | alive at end | RSS before → after | RSS per conn | anon RSS per conn | RSS after idle window (per conn) | connect phase: server CPU / wall | handshakes per server CPU-s | idle CPU per conn per s | server threads |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {
      hps = $13 > 0 ? sprintf("%.0f", $3 / $13) : "n/a"
      printf "| %s | %s | %d (%d) | %d | %.1f → %.1f MiB | **%.2f KiB** | %.2f KiB | %.1f MiB (%.2f KiB) | %.2f s / %.2f s | %s | %.3f µs (%.2f s in %d s) | %s |\n",
        $1, $2, $3, $4, $5, $6 / 1024, $7 / 1024, $11, $12, $8 / 1024, $20, $13, $14, hps, $17, $15, $16, $19
    }' "$IDLE_TSV"
  echo
  echo "How it is measured: each server is pinned to CPU $SERVER_CPU (\`taskset -c $SERVER_CPU\`), the load generators"
  echo "(\`roomcast-bench idle\`, $(( (N + PER_PROC - 1) / PER_PROC )) process(es), raw Engine.IO v4 / Socket.IO v5 over WebSocket, CONNECT to \`/\`,"
  echo "then each connection joins a room of its own, as a per-user room, with an ack) to CPU $GEN_CPU. RSS is \`VmRSS\` (anon: \`RssAnon\`) from \`/proc/PID/status\`, read 2 s after the"
  echo "server is ready and again ${SETTLE} s after the last connection; per-connection figures are the delta"
  echo "divided by the connections opened. Idle CPU is \`utime + stime\` from \`/proc/PID/stat\` over a ${IDLE} s window"
  echo "with the servers' default heartbeat (ping every 25 s, answered by the generators);"
  echo "\"connect phase\" is the server CPU spent while the connections were being opened (engine handshake +"
  echo "namespace CONNECT + the room join). \"Alive at end\" counts connections still open when the generators"
  echo "stopped: anything below the connection count means the server dropped clients."
  echo
  echo "Where Roomcast's per-connection memory goes, and what would bring it under the target:"
  echo "[\`bench/PROFILE.md\`](../bench/PROFILE.md) (heap profile: \`bash bench/profile-heap.sh\`)."
  echo
}
report_connect() {
  echo "## Connect rate: handshakes per server CPU-second"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { h[$1] = $8; seen[$1] = 1 }
    END {
      if (!("roomcast" in seen)) { print "Roomcast was not part of this run."; exit }
      r = h["roomcast"]
      printf "- **Roomcast %.0f handshakes per CPU-second**", r
      if ("node" in seen) printf "; Node %.0f (%s)", h["node"], more(r, h["node"])
      if ("socketioxide" in seen) printf "; socketioxide %.0f (%s)", h["socketioxide"], more(r, h["socketioxide"])
      printf ". Target ≥ 25,000 (with the room join): **%s**", (r >= 25000 ? "met" : "missed")
      if (r < 25000) printf "; where the CPU goes: [bench/PROFILE.md](../bench/PROFILE.md#2026-12-06-seventh-connections-handed-over-with-their-request) (`BENCH_PROFILE_MODE=connect bash bench/profile-cpu.sh`)"
      printf ".\n"
    }' "$CONNECT_TSV"
  echo
  echo "| server | connections (failed) | join re-sent | server CPU | wall | handshakes per CPU-s | handshakes per s (wall) | every run, per CPU-s |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { runs = $10; gsub(/,/, ", ", runs); printf "| %s | %d (%d) | %d | %.2f s | %.2f s | **%d** | %d | %s |\n", $1, $3, $4, $5, $6, $7, $8, $9, runs }' "$CONNECT_TSV"
  echo
  echo "How it is measured: ${CONNECT_N} clients, $(( (CONNECT_N + PER_PROC - 1) / PER_PROC )) generator process(es) with 64 handshakes in flight each; a handshake"
  echo "is WebSocket upgrade + Engine.IO open + Socket.IO CONNECT + \`join\` with its ack. Server CPU from the first"
  echo "connection until the last ack, counted in 10 ms ticks; each server runs ${CONNECT_RUNS} time(s) (\`BENCH_CONNECT_RUNS\`), a fresh process each time, and the"
  echo "row is the run with the median rate. \"Join re-sent\": joins emitted again because no ack came within 2 s (see"
  echo "\`bench/README.md\`: socketioxide can drop an event sent right after CONNECT)."
  echo
}
report_fanout() {
  echo "## Room fan-out: deliveries per server CPU-second and latency"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { key = $1 SUBSEP $2; dpc[key] = $12; p99[key] = $14; seen[$1] = 1; srv[$2] = 1 }
    END {
      n = split("sparse dense", order, " ")
      for (i = 1; i <= n; i++) {
        t = order[i]; if (!(t in seen)) continue
        r = dpc[t, "roomcast"]
        printf "- **%s fan-out: Roomcast %.0f deliveries per CPU-second**, p99 %.2f ms", t, r, p99[t, "roomcast"] / 1000
        if ("node" in srv) printf "; Node %.0f (%s), p99 %.2f ms", dpc[t, "node"], more(r, dpc[t, "node"]), p99[t, "node"] / 1000
        if ("socketioxide" in srv) printf "; socketioxide %.0f (%s), p99 %.2f ms", dpc[t, "socketioxide"], more(r, dpc[t, "socketioxide"]), p99[t, "socketioxide"] / 1000
        x = dpc[t, "socketioxide"]
        if (t == "sparse") ok = r >= 200000 && (!("socketioxide" in srv) || r >= 1.5 * x)
        else ok = ("socketioxide" in srv) && r >= 1.5 * x && p99[t, "roomcast"] <= p99[t, "socketioxide"]
        if (t == "sparse") printf ". Target ≥ 200,000 and ≥ 1.5× socketioxide: **%s**", (ok ? "met" : "missed")
        else printf ". Target ≥ 1.5× socketioxide with a p99 no worse than its: **%s**", (ok ? "met" : "missed")
        if (!ok && t == "sparse") printf "; where the CPU goes and the plan: [bench/PROFILE.md](../bench/PROFILE.md#2026-12-06-later-the-fan-out-and-connect-targets-profiled-against-socketioxide) (`bash bench/profile-cpu.sh`)"
        if (t != "sparse") printf " (Roomcast with write coalescing, `engine.writeCoalescingDelay` 6 ms; writes taking turns: [bench/PROFILE.md](../bench/PROFILE.md#2026-12-07-eighth-write-coalescing-in-turns))"
        printf ".\n"
      }
    }' "$FANOUT_TSV"
  echo
  echo "| scenario | server | room size (connected) | publishes/s × s | payload | sent | deliveries expected / received | server CPU | deliveries per CPU-s | p50 | p99 | p99.9 | max | subscriber CPU | every run: deliveries per CPU-s / p99 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {
      printf "| %s | %s | %d (%d) | %s × %d | %d B | %d | %d / %d | %.2f s | **%d** | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %s%% | %s |\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 / 1000, $14 / 1000, $15 / 1000, $16 / 1000, $17, $18
    }' "$FANOUT_TSV"
  echo
  echo "How it is measured: one room of subscribers (\`roomcast-bench subscribe --join\`) and one publisher"
  echo "(\`roomcast-bench publish\`, itself a member of the room) that emits timestamped \`message\` events at a fixed rate;"
  echo "each server relays every event to the other members of the sender's rooms (the relay app built into"
  echo "\`roomcast-dataplane\`; \`bench/node/server.mjs\` and \`bench/socketioxide-server\` do the same). Server CPU is"
  echo "\`utime + stime\` from the first publish until the server is idle again (under 30 ms of CPU in a second,"
  echo "at most 90 s after the last publish); deliveries are the events the subscribers received by then. Latency is publish-to-receive on \`CLOCK_MONOTONIC\` (shared by all processes), HDR histograms"
  echo "merged across generator processes. Sparse: ${SPARSE_SUBS} subscribers, ${SPARSE_RATE} publishes/s; dense: ${DENSE_SUBS}"
  echo "subscribers, ${DENSE_RATE} publishes/s; ${FANOUT_SECS} s each, 100-byte payloads. Each server ran $FANOUT_RUNS time(s)"
  echo "(\`BENCH_FANOUT_RUNS\`), a fresh server each time; a row is the run with the median p99, and its last column lists"
  echo "every run."
  echo
  echo "Read the latency columns with the last one: \"subscriber CPU\" is the share of one core the subscriber"
  echo "processes used over the window. All generators share CPU $GEN_CPU; near 100 % the clients, not the server, set"
  echo "the pace, and latency then measures queueing in front of slow readers (for every server alike). Deliveries"
  echo "received below the expected count mean the server dropped packets to slow readers (socketioxide discards"
  echo "a packet when a socket's buffer of \`max_buffer_size\` packets, 128 by default, is full; Roomcast drops only"
  echo "volatile packets and disconnects a client whose queue stays full). On the shared 2-core machine these"
  echo "figures moved by up to 2× between runs (write coalescing depends on how fast the clients read): compare"
  echo "servers within one run."
  echo
}
report_peer() {
  echo "## Forwarding between nodes: one peer stream"
  echo
  awk -F'\t' 'NR > 1 { v[$1] = $7; p50[$1] = $9; p99[$1] = $10; r[$1] = $2 }
    END {
      printf "- **%.0f messages per CPU-second** over one peer stream (sender and receiver CPU together). Target ≥ 500,000: **%s**.\n", v["max"], (v["max"] >= 500000 ? "met" : "missed")
      printf "- At half the sustainable rate (%d messages/s): p50 %.2f ms, **p99 %.2f ms**. Target p99 < 5 ms: **%s**%s.\n", r["half"], p50["half"] / 1000, p99["half"] / 1000, (p99["half"] < 5000 ? "met" : "missed"), (p99["half"] < 5000 ? "" : "; why: [bench/PROFILE.md](../bench/PROFILE.md#peer-stream-latency)")
      if ("max-plaintext" in v && v["max-plaintext"] > 0)
        printf "- **Cost of peer TLS** (mutual TLS 1.3, the default, against `cluster.plaintext` in the same run): %.0f vs %.0f messages per CPU-second as fast as it goes (%+.0f %%); at half rate p99 %.2f vs %.2f ms.\n", v["max"], v["max-plaintext"], 100 * (v["max"] - v["max-plaintext"]) / v["max-plaintext"], p99["half"] / 1000, p99["half-plaintext"] / 1000
    }' "$PEER_TSV"
  echo
  echo "| run | rate (msgs/s) | sent | received (dropped) | sender CPU | receiver CPU | msgs per CPU-s | msgs per s | p50 | p99 | p99.9 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s | %d | %d (%d) | %.2f s | %.2f s | **%d** | %d | %.2f ms | %.2f ms | %.2f ms |\n", $1, ($2 == 0 ? "as fast as it goes" : $2), $3, $4, $12, $5, $6, $7, $8, $9 / 1000, $10 / 1000, $11 / 1000 }' "$PEER_TSV"
  echo
  echo "How it is measured: two \`roomcast-bench\` processes, each a one-peer Roomcast mesh (the data plane's own"
  echo "\`cluster::Mesh\`: gRPC bidirectional stream, batching, heartbeats), the receiver pinned to CPU $SERVER_CPU and the sender"
  echo "to CPU $GEN_CPU. The sender queues 100-byte Socket.IO broadcast packets for ${PEER_SECS} s, first as fast as the link's"
  echo "queue takes them (a full queue makes it back off and resend, so nothing is lost), then at half the rate the first"
  echo "run sustained. CPU is \`getrusage\` of each process over its sending / receiving window. Latency is"
  echo "send-to-receive on \`CLOCK_MONOTONIC\` (shared by both processes). This is the forwarding cost a broadcast"
  echo "pays once per destination node, however many of its sockets are there; Node's socket.io and socketioxide have no"
  echo "built-in equivalent (their multi-node setups go through Redis; compared in a later scenario)."
  echo
}
report_cluster() {
  echo "## A room broadcast across 3 nodes (Roomcast cluster vs socket.io and socketioxide with their Redis adapters)"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { p50[$1] = $11; p99[$1] = $12; dpc[$1] = $10; cpu[$1] = $9; dur = $5; subs = $2; rate = $4; seen[$1] = 1
             n = split($15, r, ","); runs[$1] = ""; for (i = 1; i <= n; i++) runs[$1] = runs[$1] (i > 1 ? ", " : "") sprintf("%.2f", r[i] / 1000) }
    END {
      if (!("roomcast" in seen)) { print "Roomcast was not part of this run."; exit }
      printf "- **Roomcast: p50 %.2f ms, p99 %.2f ms** (the run with the median p99; every run: %s ms), %.0f deliveries per CPU-second of the 3 nodes", p50["roomcast"] / 1000, p99["roomcast"] / 1000, runs["roomcast"], dpc["roomcast"]
      if ("node" in seen) printf "; Node socket.io + Redis adapter: p50 %.2f ms, p99 %.2f ms, %.0f deliveries per CPU-second with Redis (%s)", p50["node"] / 1000, p99["node"] / 1000, dpc["node"], more(dpc["roomcast"], dpc["node"])
      if ("socketioxide" in seen) printf "; socketioxide + socketioxide-redis: p50 %.2f ms, p99 %.2f ms, %.0f deliveries per CPU-second with Redis (%s)", p50["socketioxide"] / 1000, p99["socketioxide"] / 1000, dpc["socketioxide"], more(dpc["roomcast"], dpc["socketioxide"])
      printf ". %d subscribers on nodes 1 and 2, %s events/s from node 0; Roomcast'"'"'s nodes used %.0f %% of their core. Target p99 ≤ 5 ms at half load: **%s**", subs, rate, 100 * cpu["roomcast"] / dur, (p99["roomcast"] <= 5000 ? "met" : "missed")
      if ("socketioxide" in seen) printf "; p99 at most half of socketioxide + Redis: **%s** (%.2f vs %.2f ms)", (p99["roomcast"] * 2 <= p99["socketioxide"] ? "met" : "missed"), p99["roomcast"] / 1000, p99["socketioxide"] / 1000
      if (p99["roomcast"] > 5000 || ("socketioxide" in seen && p99["roomcast"] * 2 > p99["socketioxide"])) printf ". Why, and the plan: [bench/PROFILE.md](../bench/PROFILE.md#cross-pod-latency)"
      printf ".\n"
      if ("roomcast-plaintext" in seen && dpc["roomcast-plaintext"] > 0)
        printf "- **Cost of peer TLS** (the default) against `cluster.plaintext`, same run: %.0f vs %.0f deliveries per CPU-second (%+.0f %%), p99 %.2f vs %.2f ms.\n", dpc["roomcast"], dpc["roomcast-plaintext"], 100 * (dpc["roomcast"] - dpc["roomcast-plaintext"]) / dpc["roomcast-plaintext"], p99["roomcast"] / 1000, p99["roomcast-plaintext"] / 1000
    }' "$CLUSTER_TSV"
  echo
  echo "| server | subscribers (connected) | events/s × s | sent | deliveries expected / received | CPU of the servers | deliveries per CPU-s | p50 | p99 | p99.9 | max | p99 of each run |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {
      n = split($15, r, ","); runs = ""
      for (i = 1; i <= n; i++) runs = runs (i > 1 ? ", " : "") sprintf("%.2f", r[i] / 1000)
      printf "| %s | %d (%d) | %s × %d | %d | %d / %d | %.2f s | **%d** | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %s ms |\n", ($1 ~ /^roomcast/ ? $1 : $1 " + redis"), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 / 1000, $12 / 1000, $13 / 1000, $14 / 1000, runs
    }' "$CLUSTER_TSV"
  echo
  echo "How it is measured: three nodes of each server, all pinned to CPU $SERVER_CPU: \`roomcast-dataplane\` on 127.0.0.51-.53"
  echo "(static members, the built-in relay app; each event crosses each of the two peer links once),"
  echo "\`bench/node/server.mjs\` on 127.0.0.61-.63 with \`@socket.io/redis-adapter\` 8 and a \`redis-server\` (Debian) on"
  echo "127.0.0.60 (each event is published to Redis and received by every node), and \`bench-socketioxide-server\` on"
  echo "127.0.0.71-.73 with \`socketioxide-redis\` 0.4 (redis crate driver, RESP3) and its own \`redis-server\` on 127.0.0.70."
  echo "${CLUSTER_SUBS} \`roomcast-bench subscribe\` clients"
  echo "of one room on node 1 and as many on node 2, a \`roomcast-bench publish\` client on node 0, generators on CPU $GEN_CPU."
  echo "Server CPU sums every server process (Redis included). Latency is publish-to-receive on \`CLOCK_MONOTONIC\`."
  echo "Each server's cluster ran $CLUSTER_RUNS times (\`BENCH_CLUSTER_RUNS\`), a fresh cluster each time; a row is the run with the"
  echo "median p99, and its last column lists every run's p99 in order (this VM moves a p99 of 5 ms by up to 1 ms between runs)."
  echo "Several servers share one core here, so this measures the whole path under contention, not one node alone."
  echo
}
report_app() {
  [[ -f "$APP_TSV" ]] || return 0
  echo "<!-- app:begin (bench/run.sh splices this section alone with BENCH_SCENARIOS=app) -->"
  echo "## The application in the loop: a socket.io app on a Roomcast hub (Node SDK) vs socket.io + Redis adapter"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { p50[$1] = $11; p99[$1] = $12; dpc[$1] = $10; cpu[$1] = $9; app[$1] = $15; recv[$1] = $8; sent[$1] = $6; seen[$1] = 1; subs = $2; rate = $4 }
    END {
      if (!("roomcast-app" in seen)) { print "The app setup was not part of this run."; exit }
      printf "- **The same socket.io app code on a 3-node Roomcast hub through the SDK: %.0f deliveries per CPU-second** of the hub and the app instances together, p50 %.2f ms, p99 %.2f ms", dpc["roomcast-app"], p50["roomcast-app"] / 1000, p99["roomcast-app"] / 1000
      if ("node" in seen) printf "; on 3 socket.io servers with the Redis adapter: %.0f deliveries per CPU-second with Redis (%s), p50 %.2f ms, p99 %.2f ms", dpc["node"], more(dpc["roomcast-app"], dpc["node"]), p50["node"] / 1000, p99["node"] / 1000
      printf ". %d subscribers, %s events/s.\n", subs, rate
      if (recv["roomcast-app"] > 0) printf "- **The SDK'"'"'s CPU: %.2f µs per delivery** (%.0f µs per event the app relays to %d subscribers): the three app instances used %.2f CPU-seconds for %d events.\n", 1e6 * app["roomcast-app"] / recv["roomcast-app"], (sent["roomcast-app"] > 0 ? 1e6 * app["roomcast-app"] / sent["roomcast-app"] : 0), subs, app["roomcast-app"], sent["roomcast-app"]
      if ("roomcast" in seen) printf "- **Latency the app link adds: %+.2f ms at p50, %+.2f ms at p99** against the hub alone relaying the same events (its built-in relay: p50 %.2f ms, p99 %.2f ms): the event'"'"'s trip from the hub to an app instance and back.\n", (p50["roomcast-app"] - p50["roomcast"]) / 1000, (p99["roomcast-app"] - p99["roomcast"]) / 1000, p50["roomcast"] / 1000, p99["roomcast"] / 1000
    }' "$APP_TSV"
  echo
  echo "| setup | subscribers (connected) | events/s × s | sent | deliveries expected / received | CPU of every process | of which the app instances | deliveries per CPU-s | p50 | p99 | p99.9 | max |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { label = ($1 == "roomcast-app" ? "Roomcast hub + 3 app instances (SDK)" : ($1 == "roomcast" ? "Roomcast hub alone (built-in relay)" : "socket.io + redis")); printf "| %s | %d (%d) | %s × %d | %d | %d / %d | %.2f s | %s | **%d** | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", label, $2, $3, $4, $5, $6, $7, $8, $9, ($1 == "roomcast-app" ? sprintf("%.2f s", $15) : "-"), $10, $11 / 1000, $12 / 1000, $13 / 1000, $14 / 1000 }' "$APP_TSV"
  echo
  echo "How it is measured: the load of the 3-node scenario above (${CLUSTER_SUBS} \`roomcast-bench subscribe\` clients of one room on"
  echo "node 1 and as many on node 2, a publisher on node 0, ${CLUSTER_RATE} events/s for ${FANOUT_SECS} s), with the app in the loop."
  echo "The app is \`bench/node/server.mjs\` in both app setups: on the hub, three instances (\`node server.mjs\` with"
  echo "\`BENCH_ROOMCAST_APP_ENDPOINT\`, one per node address; each links to all three nodes over TLS, peer TLS on between the nodes)"
  echo "through \`useRoomcast\`; with socket.io, the three servers of the Redis row of the section above. Each event goes"
  echo "publisher → hub node 0 → the app instance serving the publisher's session → one broadcast back to the hub → nodes 1"
  echo "and 2 → subscribers. Every process is pinned to CPU $SERVER_CPU, generators to CPU $GEN_CPU; CPU sums every process of"
  echo "the setup (hub nodes and app instances; socket.io servers and Redis)."
  echo
  echo '```'
  echo "BENCH_SCENARIOS=app BENCH_SERVERS=\"roomcast node\" bash bench/run.sh"
  echo '```'
  echo "<!-- app:end -->"
  echo
}

report_recovery() {
  echo "<!-- recovery:begin (bench/run.sh splices this section alone with BENCH_SCENARIOS=recovery) -->"
  echo "## Connection state recovery: memory per parked session, and a drained node's $RECOVERY_N clients"
  echo
  if [[ -f "$RECOVERY_MEM_TSV" ]]; then
    awk -F'\t' "$RATIO_AWK"'
      NR > 1 { c[$1] = $10; p[$1] = $11; m[$1] = $12; n[$1] = $3; pk[$1] = $4; seen[$1] = 1 }
      END {
        if (!("roomcast" in seen)) exit
        printf "- **Memory per parked (disconnected, recoverable) session: Roomcast %.2f KiB** (RSS added by %d parked sessions beside as many connected ones), against %.2f KiB per connected session (joined to a room, recovery on)", m["roomcast"], n["roomcast"], c["roomcast"]
        if ("node" in seen) printf "; Node socket.io (in-memory adapter) %.2f KiB per parked session (%s), %.2f KiB per connected one", m["node"], ratio(m["node"], m["roomcast"]), c["node"]
        printf ".\n"
        printf "- RSS once the clients were cut, before any new connection: Roomcast %.2f KiB per parked session over the empty server (an upper bound: what the closed connections freed stays with the allocator, for the next connections)", p["roomcast"]
        if ("node" in seen) printf "; Node %.2f KiB (its garbage collector gave most of the connections'"'"' memory back)", p["node"]
        printf ". Where a parked Roomcast session'"'"'s memory goes: [bench/PROFILE.md](../bench/PROFILE.md#parked-sessions-connection-state-recovery).\n"
      }' "$RECOVERY_MEM_TSV"
  fi
  if [[ -f "$RECOVERY_DRAIN_TSV" ]]; then
    awk -F'\t' 'NR == 2 {
        printf "- **Drain: %d clients of node 0 (of 3), SIGTERM, all %d back and recovered %.0f ms after the signal** (the last one disconnected at %.0f ms); per client, disconnect to recovered CONNECT answer: p50 %.0f ms, p99 %.0f ms, max %.0f ms (%.0f recoveries per second from the first disconnect to the last recovery; nodes 1 and 2 used %.2f CPU-seconds from the SIGTERM until every client was back, %.0f µs per recovered session, on the one core all three nodes share; the generators %.0f %% of theirs). Recovered %d, fresh sessions %d, gave up %d.\n", $2, $6, $11, $10, $12, $14, $15, ($11 > $9 ? $6 * 1000 / ($11 - $9) : 0), $33, ($6 > 0 ? $33 * 1e6 / $6 : 0), $35, $6, $7, $8
        printf "- **Messages: %d of %d recovered clients got every message of their room exactly once**", $17, $16 - $22
        if ($18 > 0) printf "; %d lost %d messages", $18, $19; else printf "; none lost"
        if ($20 > 0) printf "; %d got %d twice (or out of order)", $20, $21; else printf ", none twice"
        printf " (%d deliveries expected, %d received; %s/s to each of %d rooms, from node 1, before, during and after the drain).\n", $24, $25, $4, $3
      }' "$RECOVERY_DRAIN_TSV"
  fi
  echo "- No Node or socketioxide counterpart for the drain: socket.io's connection state recovery works with its in-memory adapter (one process) and a few other adapters, not with the Redis adapter of the cluster scenario above; socketioxide has no connection state recovery."
  echo
  if [[ -f "$RECOVERY_MEM_TSV" ]]; then
    echo "| server | version | clients | parked (after the second batch) | RSS before → connected → parked → parked + N connected | per connected session | per parked session (RSS parked − before) | **per parked session (marginal)** |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F'\t' 'NR > 1 { printf "| %s | %s | %d | %d (%d) | %.1f → %.1f → %.1f → %.1f MiB | %.2f KiB | %.2f KiB | **%.2f KiB** |\n", $1, $2, $3, $4, $5, $6 / 1024, $7 / 1024, $8 / 1024, $9 / 1024, $10, $11, $12 }' "$RECOVERY_MEM_TSV"
    echo
  fi
  if [[ -f "$RECOVERY_DRAIN_TSV" ]]; then
    echo "| clients on node 0 | disconnected | recovered / fresh / gave up | SIGTERM → first / last disconnect | SIGTERM → all recovered | per-client p50 / p90 / p99 / max | exactly once | lost (clients) | twice (clients) | recovered on the node holding the session / fetched from another node | handed over by node 0 (of those still parked there) / adopted | failures (reason=count) | packets replayed | peer links |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' 'NR > 1 { printf "| %d | %d | %d / %d / %d | %.0f / %.0f ms | **%.0f ms** | %.0f / %.0f / %.0f / %.0f ms | %d of %d | %d (%d) | %d (%d) | %d / %d | %s / %d | %s | %d | %s |\n", $2, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17, $16 - $22, $19, $18, $21, $20, $26, $27, $31, $28, $29, $30, $32 }' "$RECOVERY_DRAIN_TSV"
    echo
  fi
  echo "How it is measured. Memory: one \`roomcast-dataplane\` with \`socketio.connectionStateRecovery\` on"
  echo "(\`maxDisconnectionDuration\` ${RECOVERY_WINDOW_MS} ms, so nothing expires meanwhile), pinned to CPU $SERVER_CPU; ${RECOVERY_N} \`roomcast-bench recovery\`"
  echo "clients (raw Engine.IO v4 / Socket.IO v5, $(( (RECOVERY_N + PER_PROC - 1) / PER_PROC )) process(es) on CPU $GEN_CPU, 4 source addresses) each join one of ${RECOVERY_ROOMS} rooms; then the"
  echo "generators are killed (SIGKILL: the kernel closes their sockets without a Socket.IO disconnect, so the server parks"
  echo "every session), and once \`roomcast_recovery_parked_sessions\` (metrics port) shows them all, ${RECOVERY_N} fresh clients connect"
  echo "beside them. RSS (\`VmRSS\`) is read before, ${SETTLE} s after each step and once the server is idle. The marginal"
  echo "figure, (RSS with N parked + N connected − RSS with N connected) / N, is what the parked sessions add once the"
  echo "allocator has reused what their closed connections freed; \"RSS parked − before\" still counts that freed memory."
  echo "Node: \`bench/node/server.mjs\` with \`connectionStateRecovery\` (\`BENCH_RECOVERY_MS\`), the in-memory adapter, counted the same way."
  echo
  echo "Drain: three \`roomcast-dataplane\` nodes on 127.0.1.1-3 (static members, peer links with $(tail -1 "$RECOVERY_DRAIN_TSV" 2>/dev/null | cut -f32), all on CPU $SERVER_CPU),"
  echo "recovery on. ${RECOVERY_N} \`roomcast-bench recovery\` clients connect to node 0 and join one of ${RECOVERY_ROOMS} rooms; \`roomcast-bench"
  echo "recovery-publish\` (on node 1) sends ${RECOVERY_RATE} numbered message(s) per second to each room, from ${RECOVERY_WARM} s before the SIGTERM until"
  echo "${RECOVERY_AFTER} s after every client is back. The clients speak what the stock \`socket.io-client\` does for recovery: they keep the"
  echo "last string argument of every event as their offset, and when the server closes the connection they reconnect"
  echo "at once (at most 64 handshakes in flight per generator process; the stock client waits 0.5-1.5 s first), to node 1 or 2 in turn,"
  echo "with the CONNECT auth \`{pid, offset}\`; a CONNECT answer with the same \`pid\` is \`socket.recovered\`. Node 0 closes"
  echo "every session on SIGTERM (\`shutdown.drainDelay\` 0) and hands what is still parked to the live nodes; a client that"
  echo "reaches a node first takes its session from wherever it is (\"fetched from another node\"). Times are \`CLOCK_MONOTONIC\`,"
  echo "read by the generators and by \`roomcast-bench clock\` just before the SIGTERM. Each client counts the sequence numbers of"
  echo "its room: lost = numbers skipped or never received by the end, twice = numbers at or below one already received."
  echo "Recovery counters are summed from the metrics ports of nodes 1 and 2."
  echo
  echo "Reproduce this section alone (rewrites only it in \`docs/benchmarks.md\`):"
  echo
  echo '```'
  echo "BENCH_SCENARIOS=recovery BENCH_SERVERS=\"roomcast node\" BENCH_SETTLE_SECS=$SETTLE BENCH_RECOVERY_N=$RECOVERY_N BENCH_RECOVERY_ROOMS=$RECOVERY_ROOMS BENCH_RECOVERY_RATE=$RECOVERY_RATE bash bench/run.sh"
  echo '```'
  echo "<!-- recovery:end -->"
  echo
}
report_ring() {
  [[ -f "$RING_TSV" ]] || return 0
  echo "<!-- ring:begin (bench/run.sh splices this section alone with BENCH_SCENARIOS=ring) -->"
  echo "## Room ownership at $RING_NODES nodes (simulated): directory memory, messages per transition, lookups"
  echo
  awk -F'\t' '{ v[$1] = $2 }
    END {
      rep = v["replicated_view_bytes_per_node"]; own = v["directory_bytes_per_node_max"] + v["cache_bytes_per_node_max"]
      printf "- **Room state per node: %.1f MiB with ownership** (largest directory %.1f MiB + largest sender cache %.1f MiB) **against %.1f MiB for the replicated view** one node holds today (%.3f of it; target at most 1/8): %d rooms, %d (room, node) memberships over %d nodes.\n", own / 1048576, v["directory_bytes_per_node_max"] / 1048576, v["cache_bytes_per_node_max"] / 1048576, rep / 1048576, v["ownership_over_replicated"], v["rooms"], v["memberships"], v["nodes"]
      printf "- **Room messages per transition: %.2f in the steady state, %.2f over the whole run** including the two member changes (transition to the owner, pushes to the senders caching the room, the join barrier: flush and pings; right after a ring change a join flushes every node), against %d for the replicated view (an announcement, a barrier ping and its answer per peer); %d transitions from %d joins and %d leaves; mean join acknowledgement %.0f µs of simulated time.\n", v["steady_room_messages_per_transition"], v["room_messages_per_transition"], v["replicated_messages_per_transition"], v["transitions"], v["churn_joins"], v["churn_leaves"], v["join_ack_latency_us_mean"]
      printf "- **Broadcasts: %d lost of %d** (a lost one misses a node whose join was acknowledged); **%d extra hops** (always sender to member node); sender cache hit rate %.1f %% (%d cached rooms per node on average, %d lookups). Cold rooms sent everywhere while looked up: %.2f copies per broadcast, %.2f of them to nodes with members.\n", v["lost_broadcasts"], v["broadcasts"], v["extra_hops"], 100 * v["cache_hit_rate"], v["cache_entries_per_node_mean"], v["lookups"], v["copies_per_broadcast"], v["useful_copies_per_broadcast"]
      printf "- **Member changes** (one node added, one removed): %d messages (ring changes, lists, owners'"'"' synced sets to their subscribers) carrying %d rooms in lists, since every node resends its full lists when it and a peer agree on a new ring (moving only the rooms whose owner changed is the planned refinement).\n", v["member_change_sync_messages"], v["member_change_listed_rooms"]
    }' "$RING_TSV"
  if [[ -f "$RING_LOOKUP_TSV" ]]; then
    awk -F'\t' '{ v[$1] = $2 } END {
      printf "- **Cold rooms looked up first** (the broadcast, and its sender'"'"'s later ones, wait for the owner'"'"'s answer; the simulation keeps order per node, the strictest reading of per-sender order, so warm broadcasts queue behind cold ones too): %.2f copies per broadcast (%.2f useful), %d of %d broadcasts held for %.0f µs on average (about one round trip), %d lost.\n", v["copies_per_broadcast"], v["useful_copies_per_broadcast"], v["held_broadcasts"], v["broadcasts"], v["hold_us_mean"], v["lost_broadcasts"]
    }' "$RING_LOOKUP_TSV"
  fi
  echo
  echo "| cold rooms | nodes | rooms | memberships | replicated view per node | directory per node (mean / max) | sender cache per node (mean / max) | messages per transition, steady (ownership / replicated) | lost broadcasts | cache hit rate | copies per broadcast (useful) | held (mean wait) | simulation RSS |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for f in "$RING_TSV" "$RING_LOOKUP_TSV"; do [[ -f $f ]] || continue
  awk -F'\t' '{ v[$1] = $2 } END { printf "| %s | %d | %d | %d | %.1f MiB | %.2f / %.2f MiB | %.2f / %.2f MiB | %.2f / %d | %d of %d | %.1f %% | %.2f (%.2f) | %d (%.0f µs) | %.1f GiB |\n", v["cold_path"], v["nodes"], v["rooms"], v["memberships"], v["replicated_view_bytes_per_node"] / 1048576, v["directory_bytes_per_node_mean"] / 1048576, v["directory_bytes_per_node_max"] / 1048576, v["cache_bytes_per_node_mean"] / 1048576, v["cache_bytes_per_node_max"] / 1048576, v["steady_room_messages_per_transition"], v["replicated_messages_per_transition"], v["lost_broadcasts"], v["broadcasts"], 100 * v["cache_hit_rate"], v["copies_per_broadcast"], v["useful_copies_per_broadcast"], v["held_broadcasts"], v["hold_us_mean"], v["process_max_rss_kib"] / 1048576 }' "$f"
  done
  echo
  echo "How it is measured: \`roomcast-ringsim\` (bench/loadgen/src/bin/ringsim.rs) runs the data plane's own ownership state"
  echo "machines (\`cluster::ownership\`: the owner's directory, the sender's cache, ring agreement) for every node in one"
  echo "process, joined by in-memory links that keep order and take 100-200 µs (\`ownership::sim\`); it checks every broadcast"
  echo "against the nodes whose joins were acknowledged. The replicated view cannot be run at $RING_NODES nodes in one process"
  echo "here; one node's \`cluster::interest::Interest\` holding every other node's rooms is built and measured instead"
  echo "(live heap bytes, counted by the simulation's allocator), and that is what each of the $RING_NODES nodes would hold."
  echo "Directory and cache sizes are the structures' own counts of their heap (table slots and entries); one directory"
  echo "built alone and measured by the allocator came to $(awk -F'\t' '$1 == "directory_bytes_hub0_measured" { m = $2 } $1 == "directory_bytes_hub0_estimated" { e = $2 } END { printf "%.2f MiB (estimate %.2f MiB)", m / 1048576, e / 1048576 }' "$RING_TSV")."
  echo "Messages per transition for the replicated view are what \`cluster/rooms.rs\` sends: one announcement, a barrier"
  echo "ping and its answer per peer. The data path runs ownership by default (\`cluster.rooms: owned\`); see docs/architecture.md, Room ownership."
  echo
  echo '```'
  echo "BENCH_SCENARIOS=ring BENCH_RING_NODES=$RING_NODES BENCH_RING_ROOMS=$RING_ROOMS BENCH_RING_SECONDS=$RING_SECONDS bash bench/run.sh"
  echo '```'
  echo "<!-- ring:end -->"
  echo
}

report_headline() {
  echo "<!-- headline:begin (written by BENCH_SCENARIOS=headline bash bench/run.sh; the rest of the file by a full run) -->"
  echo "## 100,000 connections on one hub"
  echo
  awk -F'\t' "$RATIO_AWK"'
    NR > 1 { conn[$1] = $4; n[$1] = $3; rss[$1] = $6; kpc[$1] = $7; exp_[$1] = $12; recv[$1] = $13; cpu[$1] = $14 - $18; p99[$1] = $16; mx[$1] = $17; nodes = $2; seen[$1] = 1 }
    END {
      if (!("roomcast" in seen)) { print "Roomcast was not part of this run."; exit }
      printf "- **Roomcast: %d of %d connections held by a hub of %d nodes on this 2-core machine, %d MiB of RSS in all (%.2f KiB per connection); each broadcast to all of them delivered %s; the last delivery %.0f ms after the publish (p99 %.0f ms)**; the broadcasts cost the nodes %.2f s of CPU beyond the heartbeats (%.0f deliveries per CPU-second).\n", conn["roomcast"], n["roomcast"], nodes, rss["roomcast"], kpc["roomcast"], (recv["roomcast"] == exp_["roomcast"] ? "to every one" : sprintf("%d of %d times", recv["roomcast"], exp_["roomcast"])), mx["roomcast"] / 1000, p99["roomcast"] / 1000, cpu["roomcast"], (cpu["roomcast"] > 0 ? recv["roomcast"] / cpu["roomcast"] : 0)
      if ("node" in seen) printf "- Node socket.io + Redis adapter, same load: %d of %d connections, %d MiB (%s), %d of %d deliveries, last after %.0f ms (p99 %.0f ms), %.2f s of CPU beyond the heartbeats (%s).\n", conn["node"], n["node"], rss["node"], ratio(rss["node"], rss["roomcast"]), recv["node"], exp_["node"], mx["node"] / 1000, p99["node"] / 1000, cpu["node"], ratio(cpu["node"], cpu["roomcast"])
    }' "$HEADLINE_TSV"
  echo
  echo "| server | nodes | connections (held) | RSS before → after (per connection) | connect phase: CPU / wall | most open files in one node | broadcasts | deliveries expected / received | CPU of the nodes in the broadcasts' window (in the same window idle) | p50 | p99 | last delivery |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { printf "| %s | %d | %d (%d) | %d → %d MiB (%.2f KiB) | %.1f s / %.1f s | %d | %d | %d / %d | %.2f s (%.2f s) | %.0f ms | %.0f ms | **%.0f ms** |\n", ($1 == "node" ? "node + redis" : $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $18, $15 / 1000, $16 / 1000, $17 / 1000 }' "$HEADLINE_TSV"
  echo
  echo "How it is measured: $HEADLINE_NODES nodes of each server, all pinned to CPU $SERVER_CPU: \`roomcast-dataplane\` on"
  echo "127.0.3.1-$HEADLINE_NODES (one hub: static members, peer links with mutual TLS unless \`BENCH_PEER_PLAINTEXT\`, default room ownership),"
  echo "\`bench/node/server.mjs\` on 127.0.4.1-$HEADLINE_NODES with \`@socket.io/redis-adapter\` and a \`redis-server\` on 127.0.4.100."
  echo "\`roomcast-bench subscribe\` processes of at most $PER_PROC connections each (on CPU $GEN_CPU) open the connections,"
  echo "an even share per node from 4 source addresses per node, and join one room; then a \`roomcast-bench publish\` client on"
  echo "node 0 sends $HEADLINE_EVENTS broadcasts of 100 bytes to the room, one every $HEADLINE_GAP s (a \`message\` event that each server's relay sends to the sender's rooms), and every"
  echo "connection but the publisher's must get each. Latency is publish-to-receive on \`CLOCK_MONOTONIC\`; \"last delivery\" is the"
  echo "largest of them. RSS sums \`VmRSS\` of every node (Redis included for Node) before the connections and after the connect phase."
  echo "CPU is \`utime + stime\` of every node from the first publish until all are quiet again; the same window is measured"
  echo "before the publisher starts, with the connections idle (their heartbeats), and \"beyond the heartbeats\" is the difference."
  echo
  echo '```'
  echo "BENCH_SCENARIOS=headline BENCH_HEADLINE_CONNECTIONS=$HEADLINE_CONNS BENCH_HEADLINE_NODES=$HEADLINE_NODES BENCH_HEADLINE_GAP_SECS=$HEADLINE_GAP bash bench/run.sh"
  echo '```'
  echo "<!-- headline:end -->"
  echo
}

report_netns() {
  [[ -f "$NETNS_FANOUT_TSV" || -f "$NETNS_CONNECT_TSV" ]] || return 0
  echo "<!-- netns:begin (bench/run.sh splices this section alone with BENCH_SCENARIOS=netns) -->"
  echo "## With the clients in their own network namespace"
  echo
  echo "On loopback a server's \`send\` runs the receiving client's TCP input and wake-up in the server's"
  echo "own context, so every figure above bills part of the clients' work to the server (a third of a"
  echo "delivery's kernel time: [bench/PROFILE.md](../bench/PROFILE.md)). Here each server runs in a network"
  echo "namespace of its own and its clients in another, joined by a veth pair whose receive processing runs"
  echo "in a kernel thread per side (threaded NAPI) pinned to that side's CPU: the clients' receive path on the"
  echo "clients' CPU ($GEN_CPU), the server's on the server's ($SERVER_CPU), as on two machines (\`bench/netns.sh\`)."
  echo "The server's CPU is its process plus its side's receive thread (what its NIC's interrupts would cost it);"
  echo "the client CPU column likewise. Same loads, same servers, same measurement as the loopback runs."
  echo
  awk -F'\t' "$RATIO_AWK"'
    FNR == 1 { file++; next }
    file == 1 { h[$1] = $8; hseen[$1] = 1; next }
    { key = $1 SUBSEP $2; dpc[key] = $12; p99[key] = $14; seen[$1] = 1; srv[$2] = 1 }
    END {
      if ("roomcast" in hseen) {
        r = h["roomcast"]
        printf "- **Connect: Roomcast %.0f handshakes per CPU-second**", r
        if ("node" in hseen) printf "; Node %.0f (%s)", h["node"], more(r, h["node"])
        if ("socketioxide" in hseen) printf "; socketioxide %.0f (%s)", h["socketioxide"], more(r, h["socketioxide"])
        printf ". Target ≥ 25,000: **%s**.\n", (r >= 25000 ? "met" : "missed")
      }
      n = split("sparse dense", order, " ")
      for (i = 1; i <= n; i++) {
        t = order[i]; if (!(t in seen)) continue
        r = dpc[t, "roomcast"]; x = dpc[t, "socketioxide"]
        printf "- **%s fan-out: Roomcast %.0f deliveries per CPU-second**, p99 %.2f ms", t, r, p99[t, "roomcast"] / 1000
        if ("node" in srv) printf "; Node %.0f (%s)", dpc[t, "node"], more(r, dpc[t, "node"])
        if ("socketioxide" in srv) printf "; socketioxide %.0f (%s), p99 %.2f ms", x, more(r, x), p99[t, "socketioxide"] / 1000
        if (t == "sparse") { ok = r >= 200000 && x > 0 && r >= 1.5 * x; printf ". Target ≥ 200,000 and ≥ 1.5× socketioxide: **%s**.\n", (ok ? "met" : "missed") }
        else { ok = x > 0 && r >= 1.5 * x && p99[t, "roomcast"] <= p99[t, "socketioxide"]; printf ". Target ≥ 1.5× socketioxide, p99 no worse: **%s**.\n", (ok ? "met" : "missed") }
      }
    }' "$NETNS_CONNECT_TSV" "$NETNS_FANOUT_TSV"
  echo
  echo "| scenario | server | clients (connected) | server CPU | per CPU-second | p50 | p99 | p99.9 | client CPU |"
  echo "|---|---|---|---|---|---|---|---|---|"
  [[ -f "$NETNS_CONNECT_TSV" ]] && awk -F'\t' 'NR > 1 { printf "| connect | %s | %d (%d) | %.2f s | **%d** handshakes | | | | |\n", $1, $2, $3, $6, $8 }' "$NETNS_CONNECT_TSV"
  [[ -f "$NETNS_FANOUT_TSV" ]] && awk -F'\t' 'NR > 1 { printf "| %s (%s/s) | %s | %d (%d) | %.2f s | **%d** deliveries | %.2f ms | %.2f ms | %.2f ms | %s%% |\n", $1, $5, $2, $3, $4, $11, $12, $13 / 1000, $14 / 1000, $15 / 1000, $17 }' "$NETNS_FANOUT_TSV"
  echo
  echo '```'
  echo "BENCH_SCENARIOS=netns bash bench/run.sh"
  echo '```'
  echo "<!-- netns:end -->"
  echo
}

# A section (recovery, ring, headline) of the last run that measured it, when this run did not.
carried_section() {
  if [[ -f "$OUT" ]]; then sed -n "/^<!-- $1:begin/,/^<!-- $1:end -->/p" "$OUT"; echo; fi
}

# Replaces section NAME of the report with FILE (or adds it before the plots).
splice_section() {
  local name=$1 file=$2
  if grep -q "^<!-- $name:begin" "$OUT"; then
    awk -v f="$file" -v b="^<!-- $name:begin" -v e="^<!-- $name:end -->" '$0 ~ b { while ((getline l < f) > 0) print l; skip = 1; next }
      skip && $0 ~ e { skip = 0; getline; if ($0 != "") print; next } !skip' "$OUT" >"$OUT.tmp"
  else
    awk -v f="$file" '!done && (/^## Plots/ || /^## Reproduce/) { while ((getline l < f) > 0) print l; done = 1 } { print }' "$OUT" >"$OUT.tmp"
  fi
  mv "$OUT.tmp" "$OUT"
  log "wrote the $name section of $OUT"
}

# A run of the app, recovery, ring, headline and/or netns scenarios alone rewrites only their sections of an existing report.
ONLY_SECTIONS=1
for scenario in $SCENARIOS; do [[ $scenario == app || $scenario == recovery || $scenario == ring || $scenario == headline || $scenario == netns ]] || ONLY_SECTIONS=0; done
if (( ONLY_SECTIONS )) && [[ -f "$OUT" ]]; then
  for scenario in $SCENARIOS; do
    "report_$scenario" >"$RESULTS/$scenario.md"
    splice_section "$scenario" "$RESULTS/$scenario.md"
  done
  exit 0
fi

# ---- plots (gnuplot, when available) ---------------------------------------------------------
PLOT_DIR="$(dirname "$OUT")/benchmarks"
PLOT_REL="benchmarks"
PLOTS=()
make_plots() {
  ensure_command gnuplot gnuplot-nox 2>/dev/null || { log "gnuplot not available: no plots"; return 0; }
  mkdir -p "$PLOT_DIR"
  local common='set terminal pngcairo size 720,420 font "sans,10"; set style fill solid 0.8 border -1; set boxwidth 0.6; set grid ytics; set key off; set datafile separator "\t"; set yrange [0:*]'
  if [[ -f "$IDLE_TSV" ]]; then
    gnuplot -e "$common; set output '$PLOT_DIR/idle-memory.png'; set title 'Memory per idle connection in a room of its own (KiB, RSS delta / N; lower is better)'; set arrow from graph 0, first 3 to graph 1, first 3 nohead dt 2 lw 2 lc rgb '#cc0000'; set label 'target 3 KiB' at graph 0.82, first 3 offset 0,0.7 tc rgb '#cc0000'; plot '$IDLE_TSV' every ::1 using 0:11:xtic(1) with boxes lc rgb '#3a6ea5', '' every ::1 using 0:11:(sprintf('%.2f', \$11)) with labels offset 0,0.8" \
      && PLOTS+=("idle-memory.png|Memory per idle connection")
    gnuplot -e "$common; set output '$PLOT_DIR/idle-cpu.png'; set title 'Idle CPU per connection (µs per second, default heartbeat; lower is better)'; plot '$IDLE_TSV' every ::1 using 0:17:xtic(1) with boxes lc rgb '#5a9e4b', '' every ::1 using 0:17:(sprintf('%.2f', \$17)) with labels offset 0,0.8" \
      && PLOTS+=("idle-cpu.png|Idle CPU per connection")
  fi
  if [[ -f "$FANOUT_TSV" ]]; then
    local thr="$RESULTS/fanout-throughput.dat" lat="$RESULTS/fanout-latency.dat"
    awk -F'\t' -v servers="$SERVERS" 'BEGIN { n = split(servers, sv, " "); printf "scenario"; for (i = 1; i <= n; i++) printf "\t%s", sv[i]; print "" }
      NR > 1 { v[$1, $2] = $12; if (!($1 in seen)) { seen[$1] = 1; order[++m] = $1 } }
      END { for (j = 1; j <= m; j++) { printf "%s", order[j]; for (i = 1; i <= n; i++) printf "\t%s", v[order[j], sv[i]] + 0; print "" } }' "$FANOUT_TSV" >"$thr"
    awk -F'\t' 'BEGIN { print "run\tp50\tp99\tp99.9" } NR > 1 { printf "%s/%s\t%.3f\t%.3f\t%.3f\n", $1, $2, $13 / 1000, $14 / 1000, $15 / 1000 }' "$FANOUT_TSV" >"$lat"
    local ncol; ncol=$(head -1 "$thr" | awk -F'\t' '{ print NF }')
    gnuplot -e "$common; set output '$PLOT_DIR/fanout-throughput.png'; set title 'Room fan-out: deliveries per server CPU-second (higher is better)'; set key top right; set style data histogram; set style histogram clustered gap 1; set boxwidth 0.9; set format y '%.0s%c'; plot for [c=2:$ncol] '$thr' using c:xtic(1) title columnheader(c)" \
      && PLOTS+=("fanout-throughput.png|Fan-out deliveries per CPU-second")
    gnuplot -e "$common; set output '$PLOT_DIR/fanout-latency.png'; set title 'Room fan-out: publish-to-receive latency (ms, log scale)'; set key top left; set logscale y; set yrange [0.1:*]; set style data histogram; set style histogram clustered gap 1; set boxwidth 0.9; set xtics rotate by -30; plot for [c=2:4] '$lat' using c:xtic(1) title columnheader(c)" \
      && PLOTS+=("fanout-latency.png|Fan-out latency percentiles")
  fi
  return 0
}
make_plots

{
  echo "# Benchmarks"
  echo
  echo "Roomcast side by side with Node \`socket.io\` and socketioxide, every server measured in the"
  echo "same run on the same machine by \`bench/run.sh\`. Generated $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand."
  echo
  [[ -f "$IDLE_TSV" ]] && report_idle
  [[ -f "$CONNECT_TSV" ]] && report_connect
  [[ -f "$FANOUT_TSV" ]] && report_fanout
  [[ -f "$PEER_TSV" ]] && report_peer
  [[ -f "$CLUSTER_TSV" ]] && report_cluster
  if [[ -f "$APP_TSV" ]]; then report_app; else carried_section app; fi
  if [[ -f "$RECOVERY_DRAIN_TSV" || -f "$RECOVERY_MEM_TSV" ]]; then report_recovery; else carried_section recovery; fi
  if [[ -f "$RING_TSV" ]]; then report_ring; else carried_section ring; fi
  if [[ -f "$HEADLINE_TSV" ]]; then report_headline; else carried_section headline; fi
  if [[ -f "$NETNS_FANOUT_TSV" || -f "$NETNS_CONNECT_TSV" ]]; then report_netns; else carried_section netns; fi
  if (( ${#PLOTS[@]} > 0 )); then
    echo "## Plots"
    echo
    for p in "${PLOTS[@]}"; do echo "![${p#*|}]($PLOT_REL/${p%%|*})"; echo; done
  fi
  echo "## Reproduce"
  echo
  echo "From the repository root (builds everything in release mode, installs the Node peer with \`npm ci\`):"
  echo
  echo '```'
  echo "BENCH_CONNECTIONS=$N BENCH_PER_PROC=$PER_PROC BENCH_SETTLE_SECS=$SETTLE BENCH_IDLE_SECS=$IDLE BENCH_SCENARIOS=\"$SCENARIOS\" $CMDLINE"
  echo '```'
  echo
  echo "\`make bench\` runs the defaults (19,000 idle connections, connect rate, sparse and dense fan-out; rewrites this file);"
  echo "\`bash bench/run.sh --quick\` is a smoke run (2,000 connections, short windows) that writes under \`bench/results/\` only."
  echo
  echo "## Machine"
  echo
  echo "- $NCPU CPUs ($CPU_MODEL), $MEM_TOTAL RAM, Linux $(uname -r)"
  echo "- $(rustc --version 2>/dev/null || echo 'rustc ?'), node $(node --version 2>/dev/null || echo '?')"
  echo "- open files per process: $NOFILE; date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  if [[ -n "${EIOWS_NOTE:-}" ]]; then
    echo "- Node with \`eiows\` $EIOWS_VERSION (socket.io's optional native WebSocket engine) was not measured: it did not install here (\`$EIOWS_NOTE\`; details in the raw data, \`eiows-install.log\`). Where it installs, this script adds the server \`node-eiows\` to every single-node scenario."
  fi
  echo "- the machine is shared: other work may run on the same CPUs, which affects CPU figures more than memory"
  echo
  echo "Raw data of this run: \`bench/results/$STAMP/\` (not committed)."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT"
for f in "$IDLE_TSV" "$CONNECT_TSV" "$FANOUT_TSV" "$PEER_TSV" "$CLUSTER_TSV" "$RECOVERY_MEM_TSV" "$RECOVERY_DRAIN_TSV"; do [[ -f "$f" ]] && cat "$f" >&2; done
exit 0
