#!/usr/bin/env bash
# Discovery tier of `make test`: the hubs' EndpointSlice discovery (KubeDiscovery) and their
# peer certificates from the CSR API (PeerCerts, dataplane/tests/peer_certs.rs) against a real
# kube-apiserver. Starts the same throwaway control plane as the operator tier
# (e2e/lib.sh: cached binaries, torn down on exit) and runs dataplane/tests/kube_discovery.rs
# with --ignored, as an admin (KUBECONFIG); the tests themselves run discovery as a
# ServiceAccount holding only the documented Role.
# Fails on the first failure. KEEP_STATE=1 keeps the state dir (logs, kubeconfig);
# DISCOVERY_TEST_FILTER=name runs only the matching tests.
set -euo pipefail
tier=discovery-tests
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

control_plane_binaries
# Compile before the control plane starts, so that it does not idle through the build.
run_cargo test --locked -p roomcast-dataplane --test kube_discovery --test peer_certs --no-run
control_plane_start

t1=$SECONDS
# A hang fails the tier instead of stalling CI.
cargo_timeout=600 run_cargo test --locked -p roomcast-dataplane --test kube_discovery --test peer_certs -- --ignored --nocapture ${DISCOVERY_TEST_FILTER:-}
log "discovery tests took $((SECONDS - t1))s; whole tier $((SECONDS - t0))s"
