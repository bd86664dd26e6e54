#!/usr/bin/env bash
# The sio-chat example's page in headless Chromium, standalone and on a 3-node hub:
#   bash examples/sio-chat/test/run.sh
# Builds the SDK (sdk/node), installs this example and the JS test harness's packages from their
# lockfiles, installs Debian's chromium when missing, builds the hub (debug) unless
# ROOMCAST_SKIP_BUILD=1 (ROOMCAST_BIN_DIR: binaries elsewhere). Exits non-zero on any failure.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXAMPLE="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$EXAMPLE/../.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
ensure_command chromium chromium || { echo "run.sh: chromium is required" >&2; exit 1; }
npm_ci_locked "$REPO/sdk/node" "$REPO/dataplane/tests/js"
(cd "$REPO/sdk/node" && npm run --silent build)
# The SDK is installed as a copy (.npmrc install-links): always afresh, its dist/ may be new.
(cd "$EXAMPLE" && npm ci --no-audit --no-fund --loglevel=error)
cd "$REPO"
if [ -z "${ROOMCAST_SKIP_BUILD:-}" ]; then
  nice -n 10 cargo build -p roomcast-dataplane --bins --locked
fi
export ROOMCAST_BIN_DIR="${ROOMCAST_BIN_DIR:-$REPO/target/debug}"
ROOMCAST_TEST_PKI="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-pki-XXXXXX")"
export ROOMCAST_TEST_PKI
trap 'rm -rf "$ROOMCAST_TEST_PKI"' EXIT
"$ROOMCAST_BIN_DIR/roomcast-dataplane" certs ca --out "$ROOMCAST_TEST_PKI/ca" >/dev/null
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
cd "$HERE"
node --test --test-concurrency=1 --test-timeout=300000 page.test.mjs
