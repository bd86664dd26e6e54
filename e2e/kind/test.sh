#!/usr/bin/env bash
# Runs the end-to-end scenarios (e2e/scenarios/run.mjs, the same code as the local tier
# e2e/pod-runner-tests.sh) against the kind cluster made by e2e/kind/up.sh, through the real
# Service (its NodePort, published on 127.0.0.1:3000): chat in rooms across pods, scale
# 3 -> 5 -> 2 under traffic, a config change rolling the pods, a pod deletion, then the hub's
# deletion and garbage collection. Run e2e/kind/up.sh again afterwards for a fresh hub.
# Env: KIND_CLUSTER (default roomcast), E2E_TIME_SCALE (multiplies the scenarios' timeouts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cluster="${KIND_CLUSTER:-roomcast}"
log() { echo "[kind-test] $*" >&2; }
for tool in kubectl node npm; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done
kubectl config use-context "kind-$cluster" >/dev/null

# socket.io-client from the data plane's JS tests' committed lockfile.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
npm_ci_locked dataplane/tests/js

status=0
HUB_URL=http://127.0.0.1:3000 HUB_NAME=chat HUB_NAMESPACE=default KUBECTL=kubectl \
  node e2e/scenarios/run.mjs chat scale roll delete-pod delete-hub || status=$?
if [[ $status -ne 0 ]]; then
  log "FAILED; state of the cluster:"
  kubectl get socketiohubs,statefulsets,pods,endpointslices -A -o wide >&2 || true
  kubectl logs -n roomcast-system deployment/roomcast-operator --tail=50 >&2 || true
  kubectl logs deployment/chat-app --tail=50 >&2 || true
  exit "$status"
fi
log "PASS"
