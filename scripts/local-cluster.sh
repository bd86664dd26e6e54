#!/usr/bin/env bash
# A local 3-node Roomcast cluster on loopback behind a round-robin TCP proxy (no sticky
# sessions): nodes on 127.0.0.11/.12/.13 (clients :3001, peers :7000), the proxy on
# 127.0.0.10:3000. Runs in the foreground; Ctrl-C stops everything. See docs/local-cluster.md.
#
#   scripts/local-cluster.sh
#
# The members link with mutual TLS: certificates of a CA made for the cluster by
# `roomcast-dataplane certs cluster` into ROOMCAST_CERTS_DIR (default: a new temporary folder,
# removed at exit; an existing one is reused).
#
# Env: ROOMCAST_BIN_DIR=DIR uses DIR/roomcast-dataplane and DIR/examples/rr-proxy instead of
# building (release) into the target directory; extra arguments go to every node.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [ -n "${ROOMCAST_BIN_DIR:-}" ]; then
  BIN="$ROOMCAST_BIN_DIR/roomcast-dataplane"
  PROXY="$ROOMCAST_BIN_DIR/examples/rr-proxy"
else
  cargo build --release -p roomcast-dataplane --bin roomcast-dataplane --example rr-proxy
  TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
  BIN="$TARGET/release/roomcast-dataplane"
  PROXY="$TARGET/release/examples/rr-proxy"
fi

IPS=(127.0.0.11 127.0.0.12 127.0.0.13)
CLIENT_PORT=3001
PEER_PORT=7000
MEMBERS="hub-0=${IPS[0]}:$PEER_PORT,hub-1=${IPS[1]}:$PEER_PORT,hub-2=${IPS[2]}:$PEER_PORT"

# Only the processes started here are stopped, by their ids.
PIDS=()
CLEANUP=""
stop() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  if [ -n "$CLEANUP" ]; then rm -rf "$CLEANUP"; fi
}
trap stop INT TERM EXIT

# A CA and one certificate per member (DNS SAN = member id).
CERTS="${ROOMCAST_CERTS_DIR:-}"
if [ -z "$CERTS" ]; then
  CERTS="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-certs-XXXXXX")"
  CLEANUP="$CERTS"
fi
if [ ! -f "$CERTS/hub-2/tls.key" ]; then
  "$BIN" certs cluster --out "$CERTS" --members hub-0,hub-1,hub-2 --force >/dev/null
fi

for i in 0 1 2; do
  "$BIN" --node-id "hub-$i" --listen "${IPS[$i]}:$CLIENT_PORT" \
    --peer-listen "${IPS[$i]}:$PEER_PORT" --members "$MEMBERS" --peer-tls-dir "$CERTS/hub-$i" "$@" \
    > >(sed -u "s/^/[hub-$i] /") 2> >(sed -u "s/^/[hub-$i] /" >&2) &
  PIDS+=($!)
done
BACKENDS=()
for ip in "${IPS[@]}"; do BACKENDS+=(--backend "$ip:$CLIENT_PORT"); done
"$PROXY" --listen 127.0.0.10:3000 "${BACKENDS[@]}" \
  > >(sed -u "s/^/[proxy] /") 2> >(sed -u "s/^/[proxy] /" >&2) &
PIDS+=($!)

echo "clients: http://127.0.0.10:3000 (round robin over ${IPS[*]} :$CLIENT_PORT); Ctrl-C stops" >&2
# The first of them to exit (or Ctrl-C) stops the rest.
wait -n "${PIDS[@]}" || true
