#!/usr/bin/env bash
# The stock-clients tier (`make test-clients`): stock Socket.IO clients beyond Node, unchanged,
# against the real hub (3 members of roomcast-dataplane behind the round-robin proxy rr-proxy,
# on 127.0.0.80-83), each suite on a hub of its own (e2e/clients/stack.mjs):
#
#   browser       socket.io-client in Debian's headless Chromium (puppeteer-core)
#   python-sync   python-socketio Client          python-async  python-socketio AsyncClient
#   java          socket.io-client-java           rust          rust_socketio
#
#   bash e2e/clients/run.sh                    # every suite, then checks docs/clients.md
#   bash e2e/clients/run.sh java rust          # some suites (docs/clients.md not compared)
#   bash e2e/clients/run.sh --write-docs       # every suite, then rewrites the table of docs/clients.md
#                                              # (also: ROOMCAST_CLIENTS_WRITE_DOCS=1)
#
# Installs each client itself, pinned by the committed lockfiles (browser/package-lock.json,
# python/requirements.txt with hashes, java/pom.xml, rust/Cargo.lock), into a cache outside the
# checkout keyed by the lockfile's hash: ROOMCAST_CLIENTS_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/roomcast/clients. Installs chromium and maven with apt-get
# when missing (as root). A client that cannot be installed or run FAILS the tier; nothing is
# skipped. Results: one JSON-lines file per suite and their merge, results.json, in
# ROOMCAST_CLIENTS_RESULTS_DIR (default: CACHE/results); render.mjs turns them into the table of
# docs/clients.md and fails when the committed table differs from this run's.
#
# Env as dataplane/tests/js/run.sh: ROOMCAST_SKIP_BUILD=1 skips the cargo build of the hub;
# ROOMCAST_BIN_DIR=DIR runs the binaries in DIR (DIR/roomcast-dataplane, DIR/examples/rr-proxy).
# KEEP_STATE=1 keeps the logs directory. Hub logs of a failed suite are printed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

ALL_SUITES=(browser python-sync python-async java rust)
WRITE_DOCS="${ROOMCAST_CLIENTS_WRITE_DOCS:-}"
SUITES=()
for arg in "$@"; do
  case "$arg" in
    --write-docs) WRITE_DOCS=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    browser | python-sync | python-async | java | rust) SUITES+=("$arg") ;;
    *)
      echo "run.sh: unknown suite or option: $arg (suites: ${ALL_SUITES[*]})" >&2
      exit 2
      ;;
  esac
done
FULL=""
if [ "${#SUITES[@]}" -eq 0 ]; then
  SUITES=("${ALL_SUITES[@]}")
  FULL=1
fi

T0=$SECONDS
CACHE="${ROOMCAST_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast/clients}"
RESULTS="${ROOMCAST_CLIENTS_RESULTS_DIR:-$CACHE/results}"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-clients.XXXXXX")"
mkdir -p "$CACHE" "$RESULTS"
rm -f "$RESULTS"/*.jsonl "$RESULTS/results.json"

STACK_PID=""
cleanup() {
  if [ -n "$STACK_PID" ]; then
    kill -TERM "$STACK_PID" 2>/dev/null || true
    wait "$STACK_PID" 2>/dev/null || true
  fi
  if [ -n "${KEEP_STATE:-}" ]; then
    echo "clients: logs kept in $STATE" >&2
  else
    rm -rf "$STATE"
  fi
}
trap cleanup EXIT

say() { echo "clients: $*" >&2; }
sha() { cat "$@" | sha256sum | cut -c1-16; }

# --- tools ---------------------------------------------------------------------------------

command -v node >/dev/null || { say "node (>= 20) is required"; exit 1; }
ensure_command python3 python3 || exit 1
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing python3-venv (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; } \
      || true
  fi
  python3 -c 'import venv, ensurepip' || { say "python3 needs venv and ensurepip (apt-get install python3-venv)"; exit 1; }
fi
ensure_command java openjdk-17-jdk-headless || exit 1
ensure_command javac openjdk-17-jdk-headless || exit 1
ensure_command mvn maven || exit 1
ensure_command chromium chromium || exit 1
command -v cargo >/dev/null || { say "cargo is required"; exit 1; }
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"

# --- the hub's binaries (the harness of dataplane/tests/js starts them) ----------------------

npm_ci_locked "$REPO/dataplane/tests/js"
cd "$REPO"
if [ -z "${ROOMCAST_SKIP_BUILD:-}" ]; then
  nice -n 10 cargo build -p roomcast-dataplane --bins --examples --locked
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).target_directory)}catch{}})' \
  || true)"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}"
export ROOMCAST_BIN_DIR="${ROOMCAST_BIN_DIR:-$TARGET_DIR/debug}"
for bin in roomcast-dataplane examples/rr-proxy; do
  [ -x "$ROOMCAST_BIN_DIR/$bin" ] || { say "missing $ROOMCAST_BIN_DIR/$bin (build it, or unset ROOMCAST_SKIP_BUILD)"; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- installing the clients (cached outside the checkout, keyed by the lockfile) -------------

# npm packages of browser/package-lock.json, in CACHE/npm-HASH/node_modules.
install_browser() {
  local dir
  dir="$CACHE/npm-$(sha "$HERE/browser/package-lock.json")"
  if [ ! -f "$dir/.installed" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$HERE/browser/package.json" "$HERE/browser/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) || return 1
    touch "$dir/.installed"
  fi
  export ROOMCAST_CLIENTS_NPM="$dir"
}

# A virtualenv of python/requirements.txt (exact versions, hashes) for this Python.
install_python() {
  local dir pyver
  pyver="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  dir="$CACHE/python$pyver-$(sha "$HERE/python/requirements.txt")"
  if [ ! -f "$dir/.installed" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir" || return 1
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes \
      -r "$HERE/python/requirements.txt" || return 1
    touch "$dir/.installed"
  fi
  PYTHON="$dir/bin/python"
}

# Maven: a local repository in the cache, filled online once per pom.xml (dependencies, plugins
# and the JUnit provider of Surefire), then every run offline (-o). The build directory is in
# the cache too.
install_java() {
  local stamp
  MVN=(mvn -B -ntp -f "$HERE/java/pom.xml" "-Dmaven.repo.local=$CACHE/m2"
    "-Droomcast.build.dir=$CACHE/java-target")
  stamp="$CACHE/m2/.resolved-$(sha "$HERE/java/pom.xml")"
  if [ ! -f "$stamp" ]; then
    "${MVN[@]}" -q test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false || return 1
    touch "$stamp"
  fi
  MVN+=(-o)
}

# rust_socketio from rust/Cargo.lock; the crate is not part of the root workspace, and its
# target directory is in the cache.
install_rust() {
  export CARGO_TARGET_DIR_CLIENTS="$CACHE/rust-target"
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR_CLIENTS" nice -n 10 \
    cargo test --locked --manifest-path "$HERE/rust/Cargo.toml" --no-run --quiet || return 1
}

# --- running a suite against a hub of its own ----------------------------------------------

# start_stack NAME: starts stack.mjs, waits for its control API; sets CONTROL.
start_stack() {
  local name=$1 ready="$STATE/$1.stack.json" i
  node "$HERE/stack.mjs" --ready "$ready" >"$STATE/$name.stack.log" 2>&1 &
  STACK_PID=$!
  for i in $(seq 1 600); do
    [ -s "$ready" ] && break
    if ! kill -0 "$STACK_PID" 2>/dev/null; then
      wait "$STACK_PID" || true
      STACK_PID=""
      say "$name: the hub did not start:"
      cat "$STATE/$name.stack.log" >&2
      return 1
    fi
    [ "$i" -eq 600 ] && { say "$name: the hub did not start within 60 s"; return 1; }
    sleep 0.1
  done
  CONTROL="$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).control' "$ready")"
}

# stop_stack: SIGTERM, and the stack's verdict (a member panicked or died unexpectedly: 1).
stop_stack() {
  local rc=0
  kill -TERM "$STACK_PID" 2>/dev/null || true
  wait "$STACK_PID" || rc=$?
  STACK_PID=""
  return "$rc"
}

suite_command() {
  case "$1" in
    browser)
      SUITE_CMD=(node --test --test-concurrency=1 --test-timeout=120000 "$HERE/browser/browser.test.mjs") ;;
    python-sync)
      SUITE_CMD=("$PYTHON" -m pytest -p no:cacheprovider -q "$HERE/python/test_sync_client.py") ;;
    python-async)
      SUITE_CMD=("$PYTHON" -m pytest -p no:cacheprovider -q "$HERE/python/test_async_client.py") ;;
    java)
      SUITE_CMD=("${MVN[@]}" test) ;;
    rust)
      SUITE_CMD=(env "CARGO_TARGET_DIR=$CARGO_TARGET_DIR_CLIENTS" cargo test --locked --quiet
        --manifest-path "$HERE/rust/Cargo.toml" -- --test-threads=1) ;;
  esac
}

install_for() {
  case "$1" in
    browser) install_browser ;;
    python-sync | python-async) install_python ;;
    java) install_java ;;
    rust) install_rust ;;
  esac
}

FAILED=()
TIMES=()
for suite in "${SUITES[@]}"; do
  t=$SECONDS
  say "=== $suite: installing"
  if ! install_for "$suite"; then
    say "FAIL $suite: the client could not be installed (see above)"
    FAILED+=("$suite (install)")
    TIMES+=("$suite: install failed after $((SECONDS - t)) s")
    continue
  fi
  ti=$((SECONDS - t))
  say "=== $suite: running (install/cache check took ${ti} s)"
  if ! start_stack "$suite"; then
    FAILED+=("$suite (hub)")
    continue
  fi
  suite_command "$suite"
  rc=0
  (cd "$HERE" && ROOMCAST_CLIENTS_CONTROL="$CONTROL" ROOMCAST_CLIENTS_RESULTS="$RESULTS/$suite.jsonl" \
    "${SUITE_CMD[@]}") || rc=$?
  src=0
  stop_stack || src=$?
  if [ "$rc" -ne 0 ] || [ "$src" -ne 0 ]; then
    [ "$rc" -ne 0 ] && say "FAIL $suite: its tests failed (exit $rc)"
    [ "$src" -ne 0 ] && say "FAIL $suite: a hub member panicked or died unexpectedly"
    say "--- hub log of $suite (last 150 lines; members' logs in $STATE/$suite.stack.json.members.log):"
    tail -n 150 "$STATE/$suite.stack.log" >&2 || true
    tail -n 100 "$STATE/$suite.stack.json.members.log" >&2 || true
    FAILED+=("$suite")
  fi
  TIMES+=("$suite: $((SECONDS - t)) s (install/cache check ${ti} s)")
done

# --- results JSON, the table of docs/clients.md ---------------------------------------------

say "=== results"
RENDER=(node "$HERE/render.mjs" "$RESULTS")
if [ -n "$FULL" ]; then
  if [ -n "$WRITE_DOCS" ]; then
    RENDER+=(--write "$REPO/docs/clients.md")
  else
    RENDER+=(--check "$REPO/docs/clients.md")
  fi
else
  RENDER+=(--suites "$(IFS=,; echo "${SUITES[*]}")")
fi
"${RENDER[@]}" || FAILED+=("results/docs")
say "results: $RESULTS/results.json"
for line in "${TIMES[@]}"; do say "  $line"; done
say "wall time: $((SECONDS - T0)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then
  say "FAILED: ${FAILED[*]}"
  exit 1
fi
say "all ${#SUITES[@]} suites passed"
