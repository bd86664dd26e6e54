#!/usr/bin/env bash
# Tests of the Node SDK (@roomcast/socket.io).
#
#   bash sdk/node/test/run.sh                    # everything
#   bash sdk/node/test/run.sh unit.test.mjs      # some files (relative to sdk/node/test)
#
# 1. `npm ci` from the committed lockfiles (sdk/node, and dataplane/tests/js whose harness
#    and socket.io-client the tests use); 2. `npm run build`; 3. the tests: the API suite
#    against a standalone socket.io Server and through useRoomcast against a 3-node hub, each
#    with socket.io 4.8 and 4.7 (ROOMCAST_SIO), the hub-only tests, the endpoint test (a load
#    balancer in front of the nodes, the whole hub restarting), the chaos test (two app
#    instances, 3 nodes behind a round-robin proxy, an instance and a node killed under
#    traffic), unit and package tests.
#
# Env: ROOMCAST_BIN_DIR=DIR runs the hub binary DIR/roomcast-dataplane (default: the cargo
# target directory's debug build, built first unless ROOMCAST_SKIP_BUILD=1);
# ROOMCAST_SIO=socket.io|socket.io-47 runs one socket.io version only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SDK="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$SDK/../.." && pwd)"

command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 1; }
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "run.sh: node >= 20 is required (found $(node --version))" >&2
  exit 1
fi

# 1. Packages.
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
npm_ci_locked "$SDK" "$REPO/dataplane/tests/js"

# 2. The SDK.
(cd "$SDK" && npm run build --silent)

# 3. The hub binary.
if [ -z "${ROOMCAST_BIN_DIR:-}" ]; then
  if [ -z "${ROOMCAST_SKIP_BUILD:-}" ]; then
    (cd "$REPO" && nice -n 10 cargo build -p roomcast-dataplane --bin roomcast-dataplane --example rr-proxy --locked)
  fi
  TARGET_DIR="$(cd "$REPO" && cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).target_directory)}catch{}})' \
    || true)"
  export ROOMCAST_BIN_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}/debug"
fi
[ -x "$ROOMCAST_BIN_DIR/roomcast-dataplane" ] || {
  echo "run.sh: no hub binary at $ROOMCAST_BIN_DIR/roomcast-dataplane" >&2
  exit 1
}

# One peer CA for the run (the harness issues member certificates from it).
ROOMCAST_TEST_PKI="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-pki-XXXXXX")"
export ROOMCAST_TEST_PKI
trap 'rm -rf "$ROOMCAST_TEST_PKI"' EXIT
"$ROOMCAST_BIN_DIR/roomcast-dataplane" certs ca --out "$ROOMCAST_TEST_PKI/ca" >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cd "$HERE"
run() {
  node --test --test-concurrency=1 --test-timeout=300000 "$@"
}
rc=0
if [ "$#" -gt 0 ]; then
  run "$@" || rc=$?
  exit "$rc"
fi
run unit.test.mjs proto.test.mjs package.test.mjs || rc=$?
VERSIONS=(socket.io socket.io-47)
[ -n "${ROOMCAST_SIO:-}" ] && VERSIONS=("$ROOMCAST_SIO")
for sio in "${VERSIONS[@]}"; do
  echo "run.sh: the API suite and the hub tests with $sio" >&2
  ROOMCAST_SIO="$sio" run api-standalone.test.mjs api-hub.test.mjs hub.test.mjs || rc=$?
done
run endpoint.test.mjs || rc=$?
run chaos.test.mjs || rc=$?
exit "$rc"
