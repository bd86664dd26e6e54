#!/usr/bin/env bash
# Creates a kind cluster with Roomcast and the example chat in it (needs Docker, kind, kubectl,
# helm; see e2e/kind/README.md):
#   1. the cluster `roomcast` (e2e/kind/cluster.yaml: the hub's NodePort on 127.0.0.1:3000);
#   2. the images ghcr.io/roomcast/roomcast-operator, ghcr.io/roomcast/roomcast-dataplane (tag: the chart's
#      appVersion, what the chart and the operator default to) and roomcast/chat-app:dev, built
#      from docker/ and loaded into the cluster's node;
#   3. the operator with its Helm chart, in roomcast-system;
#   4. the example app and hub (examples/chat-app/k8s/), waiting until the hub is Ready.
# Env: KIND_CLUSTER (default roomcast), SKIP_BUILD=1 (images already loaded).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cluster="${KIND_CLUSTER:-roomcast}"
log() { echo "[kind-up] $*" >&2; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { log "$tool is required (see e2e/kind/README.md)"; exit 1; }
done
docker info >/dev/null 2>&1 || { log "no Docker engine answers (docker info failed)"; exit 1; }

version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/roomcast-operator/Chart.yaml)"
[[ -n "$version" ]] || { log "no appVersion in charts/roomcast-operator/Chart.yaml"; exit 1; }

if ! kind get clusters | grep -qx "$cluster"; then
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --config e2e/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

images=("ghcr.io/roomcast/roomcast-dataplane:$version" "ghcr.io/roomcast/roomcast-operator:$version" "roomcast/chat-app:dev")
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building images (${images[*]})"
  DOCKER_BUILDKIT=1 docker build -f docker/dataplane.Dockerfile -t "${images[0]}" .
  DOCKER_BUILDKIT=1 docker build -f docker/operator.Dockerfile -t "${images[1]}" .
  DOCKER_BUILDKIT=1 docker build -f docker/chat-app.Dockerfile -t "${images[2]}" .
  kind load docker-image --name "$cluster" "${images[@]}"
fi

log "installing the operator (chart charts/roomcast-operator)"
helm upgrade --install roomcast-operator charts/roomcast-operator \
  --namespace roomcast-system --create-namespace --wait --timeout 180s
kubectl wait --for condition=Established crd/socketiohubs.roomcast.dev --timeout=60s >/dev/null

log "applying the example app and hub (examples/chat-app/k8s/)"
kubectl apply -f examples/chat-app/k8s/app.yaml -f examples/chat-app/k8s/hub.yaml >/dev/null
kubectl wait --for condition=Ready socketiohub/chat --timeout=300s
kubectl rollout status deployment/chat-app --timeout=180s
kubectl get socketiohub chat
log "ready: socket.io clients connect to http://127.0.0.1:3000 (try: node examples/chat-app/client.mjs alice)"
