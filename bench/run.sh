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
#   BENCH_OUT            markdown output                   (docs/benchmarks.md; --quick: results dir)
#   BENCH_SKIP_BUILD=1   use the binaries already in target/release
#
# Everything listens and connects on 127.0.0.0/8 only; every process started here is stopped
# here (by PID), and the generators also stop by themselves after their hold time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
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

# ---- build ------------------------------------------------------------------------------------
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building release binaries"
  nice -n 10 cargo build --release --locked -p roomcast-dataplane -p roomcast-bench -p roomcast-bench-socketioxide >&2
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release"
for b in roomcast-dataplane roomcast-bench bench-socketioxide-server; do
  [[ -x "$BIN/$b" ]] || { echo "missing $BIN/$b" >&2; exit 1; }
done
if [[ " $SERVERS " == *" node "* ]]; then
  log "installing Node peer (npm ci)"
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# ---- helpers ----------------------------------------------------------------------------------
rss_kib() { awk -v k="${2:-VmRSS:}" '$1 == k { print $2 }' "/proc/$1/status"; }
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status"; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME PORT -> sets SERVER_PID
start_server() {
  local name=$1 port=$2 out="$RESULTS/$1.server.out" err="$RESULTS/$1.server.err"
  port_free "$port" || { echo "port $port is busy" >&2; exit 1; }
  case "$name" in
    roomcast)
      taskset -c "$SERVER_CPU" "$BIN/roomcast-dataplane" --listen "127.0.0.1:$port" >"$out" 2>"$err" &
      ;;
    node)
      taskset -c "$SERVER_CPU" node bench/node/server.mjs "$port" >"$out" 2>"$err" &
      ;;
    socketioxide)
      taskset -c "$SERVER_CPU" "$BIN/bench-socketioxide-server" "$port" >"$out" 2>"$err" &
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
    socketioxide) echo "socketioxide $(awk '/^name = "socketioxide"$/ { getline; gsub(/version = |"/, ""); print }' Cargo.lock) (axum, tokio)" ;;
  esac
}

# ---- idle scenario ----------------------------------------------------------------------------
SUMMARY="$RESULTS/idle.tsv"
printf 'server\tversion\tconnections\tfailed\talive_end\trss_before_kib\trss_after_kib\trss_end_kib\tanon_before_kib\tanon_after_kib\tkib_per_conn\tanon_kib_per_conn\tconnect_cpu_s\tconnect_wall_s\tidle_cpu_s\tidle_secs\tidle_us_per_conn_s\tping_interval_ms\tthreads\n' >"$SUMMARY"

PROCS=$(( (N + PER_PROC - 1) / PER_PROC ))
IPS_PER_SERVER=4
server_index=0
for name in $SERVERS; do
  server_index=$(( server_index + 1 ))
  port=$(( 3100 + server_index ))
  # Source addresses 127.0.0.(10*k+1 .. 10*k+4) for the k-th server.
  ips=""
  for i in $(seq 1 $IPS_PER_SERVER); do ips+="127.0.0.$(( 10 * server_index + i )),"; done
  ips=${ips%,}

  log "$name: starting on 127.0.0.1:$port (CPU $SERVER_CPU)"
  start_server "$name" "$port"
  pid=$SERVER_PID
  sleep 2
  rss_before=$(rss_kib "$pid"); anon_before=$(rss_kib "$pid" RssAnon:)
  cpu0=$(cpu_ticks "$pid")

  log "$name: opening $N connections from $PROCS processes (CPU $GEN_CPU, sources $ips)"
  hold=$(( SETTLE + IDLE + 300 ))
  gen_pids=(); gen_outs=()
  t0=$(date +%s.%N)
  for p in $(seq 0 $(( PROCS - 1 ))); do
    share=$(( N / PROCS + (p < N % PROCS ? 1 : 0) ))
    o="$RESULTS/$name.gen$p.out"
    taskset -c "$GEN_CPU" "$BIN/roomcast-bench" idle --url "ws://127.0.0.1:$port" \
      --connections "$share" --source-ips "$ips" --ip-offset "$p" --hold-secs "$hold" \
      --report-secs 30 >"$o" 2>"$RESULTS/$name.gen$p.err" &
    gen_pids+=("$!"); PIDS+=("$!"); gen_outs+=("$o")
  done
  # Wait for every generator's READY line (connect phase over).
  deadline=$(( $(date +%s) + 600 ))
  while :; do
    ready=$(cat "${gen_outs[@]}" | grep -c '^READY ' || true)
    ready=${ready:-0}
    (( ready == PROCS )) && break
    for gp in "${gen_pids[@]}"; do
      kill -0 "$gp" 2>/dev/null || { echo "a generator exited early:" >&2; tail -5 "$RESULTS/$name".gen*.err >&2; exit 1; }
    done
    (( $(date +%s) < deadline )) || { echo "$name: connect phase did not finish in 600 s" >&2; exit 1; }
    sleep 0.2
  done
  t1=$(date +%s.%N)
  cpu1=$(cpu_ticks "$pid")
  connected=$(sum_field READY connected "${gen_outs[@]}")
  failed=$(sum_field READY failed "${gen_outs[@]}")
  ping_ms=$(first_field READY ping_interval_ms "${gen_outs[@]}")
  log "$name: connected=$connected failed=$failed; settling ${SETTLE}s"
  sleep "$SETTLE"
  rss_after=$(rss_kib "$pid"); anon_after=$(rss_kib "$pid" RssAnon:)
  nthreads=$(threads "$pid")
  log "$name: RSS ${rss_before} -> ${rss_after} KiB; idle window ${IDLE}s"
  cpu2=$(cpu_ticks "$pid")
  sleep "$IDLE"
  cpu3=$(cpu_ticks "$pid")
  rss_end=$(rss_kib "$pid")

  for gp in "${gen_pids[@]}"; do kill -TERM "$gp" 2>/dev/null || true; done
  for gp in "${gen_pids[@]}"; do wait "$gp" 2>/dev/null || true; done
  alive=$(sum_field DONE alive "${gen_outs[@]}")
  stop_pid "$pid"

  awk -v OFS='\t' -v name="$name" -v ver="$(server_version "$name")" -v n="$connected" -v failed="$failed" \
      -v alive="$alive" -v rb="$rss_before" -v ra="$rss_after" -v re="$rss_end" -v ab="$anon_before" \
      -v aa="$anon_after" -v c0="$cpu0" -v c1="$cpu1" -v c2="$cpu2" -v c3="$cpu3" -v tck="$CLK_TCK" \
      -v t0="$t0" -v t1="$t1" -v idle="$IDLE" -v ping="${ping_ms:-?}" -v thr="$nthreads" 'BEGIN {
        kpc = n > 0 ? (ra - rb) / n : 0; apc = n > 0 ? (aa - ab) / n : 0
        ccpu = (c1 - c0) / tck; icpu = (c3 - c2) / tck
        ius = n > 0 ? icpu * 1e6 / n / idle : 0
        printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%.3f\t%s\t%s\n",
          name, ver, n, failed, alive, rb, ra, re, ab, aa, kpc, apc, ccpu, t1 - t0, icpu, idle, ius, ping, thr
      }' >>"$SUMMARY"
  log "$name: $(tail -1 "$SUMMARY" | cut -f11,12,15,17 | tr '\t' ' ') (KiB/conn, anon KiB/conn, idle CPU s, us/conn/s)"
done

# ---- report -----------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_TOTAL=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
{
  echo "# Benchmarks"
  echo
  echo "Roomcast side by side with Node \`socket.io\` and socketioxide, every server measured in the"
  echo "same run on the same machine by \`bench/run.sh\`. Generated $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand."
  echo
  echo "## Idle connections: memory and CPU"
  echo
  awk -F'\t' '
    NR > 1 { kpc[$1] = $11; ius[$1] = $17; seen[$1] = 1 }
    END {
      if (!("roomcast" in seen)) { print "Roomcast was not part of this run."; exit }
      r = kpc["roomcast"]
      printf "- **Memory per idle connection: Roomcast %.2f KiB**", r
      if ("node" in seen) printf "; Node socket.io %.2f KiB (%s); socketioxide", kpc["node"], ratio(kpc["node"], r)
      if ("socketioxide" in seen) printf " %.2f KiB (%s)", kpc["socketioxide"], ratio(kpc["socketioxide"], r)
      print "."
      printf "- Targets: ≤ 6 KiB per idle connection: **%s** (%.2f KiB)", (r <= 6 ? "met" : "missed"), r
      if ("node" in seen) printf "; ≥ 6× less than Node: **%s** (%s)", (r > 0 && kpc["node"] / r >= 6 ? "met" : "missed"), ratio(kpc["node"], r)
      if ("socketioxide" in seen) printf "; ≥ 3× less than socketioxide: **%s** (%s)", (r > 0 && kpc["socketioxide"] / r >= 3 ? "met" : "missed"), ratio(kpc["socketioxide"], r)
      print "."
      c = ius["roomcast"]
      printf "- **Idle CPU per connection: Roomcast %.3f µs per second**", c
      if ("node" in seen) printf "; Node %.3f µs/s (%s)", ius["node"], ratio(ius["node"], c)
      if ("socketioxide" in seen) printf "; socketioxide %.3f µs/s (%s)", ius["socketioxide"], ratio(ius["socketioxide"], c)
      print "."
    }
    function ratio(peer, ours) {
      if (ours <= 0) return "Roomcast ≈ 0"
      if (peer >= ours) return sprintf("Roomcast uses %.1f× less", peer / ours)
      return sprintf("Roomcast uses %.1f× more", ours / peer)
    }' "$SUMMARY"
  echo
  echo "| server | version | connections (failed) | alive at end | RSS before → after | RSS per conn | anon RSS per conn | RSS after idle window | connect phase: server CPU / wall | handshakes per server CPU-s | idle CPU per conn per s | server threads |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {
      hps = $13 > 0 ? sprintf("%.0f", $3 / $13) : "n/a"
      printf "| %s | %s | %d (%d) | %d | %.1f → %.1f MiB | **%.2f KiB** | %.2f KiB | %.1f MiB | %.2f s / %.2f s | %s | %.3f µs (%.2f s in %d s) | %s |\n",
        $1, $2, $3, $4, $5, $6 / 1024, $7 / 1024, $11, $12, $8 / 1024, $13, $14, hps, $17, $15, $16, $19
    }' "$SUMMARY"
  echo
  echo "How it is measured: each server is pinned to CPU $SERVER_CPU (\`taskset -c $SERVER_CPU\`), the load generators"
  echo "(\`roomcast-bench idle\`, $PROCS process(es), raw Engine.IO v4 / Socket.IO v5 over WebSocket, CONNECT to \`/\`,"
  echo "no room joined) to CPU $GEN_CPU. RSS is \`VmRSS\` (anon: \`RssAnon\`) from \`/proc/PID/status\`, read 2 s after the"
  echo "server is ready and again ${SETTLE} s after the last connection; per-connection figures are the delta"
  echo "divided by the connections opened. Idle CPU is \`utime + stime\` from \`/proc/PID/stat\` over a ${IDLE} s window"
  echo "with the servers' default heartbeat (ping every ${ping_ms:-25000} ms, answered by the generators);"
  echo "\"connect phase\" is the server CPU spent while the connections were being opened (engine handshake +"
  echo "namespace CONNECT, no room join). \"Alive at end\" counts connections still open when the generators"
  echo "stopped: anything below the connection count means the server dropped clients."
  echo
  echo "Reproduce this run (from the repository root; builds everything, installs the Node peer with \`npm ci\`):"
  echo
  echo '```'
  echo "BENCH_CONNECTIONS=$N BENCH_PER_PROC=$PER_PROC BENCH_SETTLE_SECS=$SETTLE BENCH_IDLE_SECS=$IDLE $CMDLINE"
  echo '```'
  echo
  echo "\`make bench\` runs the defaults (19,000 connections, rewrites this file); \`bash bench/run.sh --quick\` is a"
  echo "smoke run (2,000 connections, short windows) that writes under \`bench/results/\` only."
  echo
  echo "## Machine"
  echo
  echo "- $NCPU CPUs ($CPU_MODEL), $MEM_TOTAL RAM, Linux $(uname -r)"
  echo "- $(rustc --version 2>/dev/null || echo 'rustc ?'), node $(node --version 2>/dev/null || echo '?')"
  echo "- open files per process: $NOFILE; date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- the machine is shared: other work may run on the same CPUs, which affects CPU figures more than memory"
  echo
  echo "Raw data of this run: \`bench/results/$STAMP/\` (not committed)."
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT"
cat "$SUMMARY" >&2
