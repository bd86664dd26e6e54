#!/usr/bin/env bash
# Integration tests of the data plane with real socket.io / engine.io clients from npm.
#
#   bash dataplane/tests/js/run.sh                  # all test files
#   bash dataplane/tests/js/run.sh rooms.test.mjs   # some files (relative to this folder)
#
# Env: ROOMCAST_TEST_ROOMS=owned|replicated sets cluster.rooms of the test clusters (unset: the
# default, then the cluster files once more with `replicated`); ROOMCAST_SKIP_BUILD=1 skips the cargo build; ROOMCAST_BIN_DIR=DIR runs the binaries in DIR
# (DIR/roomcast-dataplane, DIR/examples/*) instead of the target directory's. Exits non-zero on any failure.
# To see server logs, run one file directly:
#   ROOMCAST_BIN_DIR=target/debug ROOMCAST_TEST_VERBOSE=1 RUST_LOG=debug \
#     node dataplane/tests/js/limits.test.mjs
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"

command -v node >/dev/null || { echo "run.sh: node (>= 20) is required" >&2; exit 1; }
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "run.sh: node >= 20 is required (found $(node --version))" >&2
  exit 1
fi

# 1. npm packages from the committed lockfiles (skipped when node_modules matches them): the
# tests' and the example app's (chat-app.test.mjs runs it).
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
npm_ci_locked "$HERE" "$REPO/examples/chat-app"
ensure_command prometheus prometheus || true # monitoring.test.mjs runs a real Prometheus; fails saying so without it

# 2. The server binaries (debug profile).
cd "$REPO"
if [ -z "${ROOMCAST_SKIP_BUILD:-}" ]; then
  nice -n 10 cargo build -p roomcast-dataplane --bins --examples --locked
fi
# cargo knows where the target directory is (CARGO_TARGET_DIR, .cargo/config.toml ...)
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).target_directory)}catch{}})' \
  || true)"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}}"
# A preset ROOMCAST_BIN_DIR (binaries staged elsewhere) wins.
export ROOMCAST_BIN_DIR="${ROOMCAST_BIN_DIR:-$TARGET_DIR/debug}"

# 3. One peer CA for the whole run (harness.mjs testPki: member certificates are issued from it
# on first use).
ROOMCAST_TEST_PKI="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-pki-XXXXXX")"
export ROOMCAST_TEST_PKI
"$ROOMCAST_BIN_DIR/roomcast-dataplane" certs ca --out "$ROOMCAST_TEST_PKI/ca" >/dev/null

# 4. The tests, one file at a time (each file starts its own servers on 127.0.0.1:0).
# 1,000 clients need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cd "$HERE"
if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  FILES=(*.test.mjs)
fi
rc=0
node --test --test-concurrency=1 --test-timeout=300000 "${FILES[@]}" || rc=$?
# 5. The whole run also runs the files of clusters under the other `cluster.rooms` mode
# (the default is `owned`; harness.mjs roomsMode): both keep the same guarantees.
if [ "$#" -eq 0 ] && [ -z "${ROOMCAST_TEST_ROOMS:-}" ]; then
  ROOMS_FILES=()
  for f in cluster*.test.mjs recovery.test.mjs; do
    [ "$f" = cluster-ownership.test.mjs ] || ROOMS_FILES+=("$f")
  done
  echo "run.sh: the cluster files again with cluster.rooms: replicated" >&2
  ROOMCAST_TEST_ROOMS=replicated node --test --test-concurrency=1 --test-timeout=300000 "${ROOMS_FILES[@]}" || rc=$?
fi
rm -rf "$ROOMCAST_TEST_PKI"
exit "$rc"
