#!/usr/bin/env bash
# Operator tier of `make test`: the operator against a real Kubernetes control plane.
#
#  1. builds (once, cached outside the checkout) kube-apiserver, kube-controller-manager,
#     kube-scheduler and kubectl from k8s.io/kubernetes, helm from helm.sh/helm/v3, and takes
#     etcd from crates.io (e2e/build-control-plane.sh);
#  2. starts etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1 with
#     generated certificates and tokens (e2e/control-plane.sh), torn down on exit;
#  3. helm lint / template / install of charts/roomcast-operator (installs the CRD and RBAC);
#  4. starts the pod runner (e2e/pod-runner, the kubelet stand-in) with a tainted Node: only
#     the hubs of the failure cases tolerate it, so kube-scheduler places them there and the
#     runner reports their failed pulls and crash loops; every other pod stays unscheduled
#     (and the tests mark it ready by hand);
#  5. runs operator/tests/cluster.rs, whose operator processes use the chart ServiceAccount's
#     token, so the chart's RBAC is what they get.
# Fails on the first failure. KEEP_STATE=1 keeps the state dir (logs, kubeconfigs);
# OPERATOR_TEST_FILTER=name runs only the matching cluster tests.
set -euo pipefail
tier=operator-tests
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

control_plane_binaries
helm="$bin/helm"
kubectl="$bin/kubectl"

run_cargo build --locked -p roomcast-operator --bin roomcast-operator -p roomcast-pod-runner --bin roomcast-pod-runner
run_cargo test --locked -p roomcast-operator --test cluster --no-run
operator_bin="${CARGO_TARGET_DIR:-$root/target}/debug/roomcast-operator"
runner_bin="${CARGO_TARGET_DIR:-$root/target}/debug/roomcast-pod-runner"

control_plane_start
runner_pid=
tier_cleanup() {
  local rc=$?
  if [[ -n "$runner_pid" ]] && kill -0 "$runner_pid" 2>/dev/null; then
    kill -TERM "$runner_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$runner_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$runner_pid" 2>/dev/null || true
  fi
  (exit "$rc")
  _control_plane_cleanup
}
trap tier_cleanup EXIT

release_ns=roomcast-system
chart=charts/roomcast-operator
"$helm" lint "$chart" --strict
# The monitoring objects (PodMonitor, PrometheusRule, dashboards) render only when enabled and
# when their CRDs exist; `make lint` cannot check that before helm is built.
ROOMCAST_HELM="$helm" bash scripts/check-monitoring.sh
"$helm" template roomcast-operator "$chart" -n "$release_ns" >"$state/rendered.yaml"
"$helm" template roomcast-operator "$chart" -n "$release_ns" \
  --set metrics.serviceMonitor.enabled=true --set watchNamespace=apps --set replicaCount=2 >/dev/null
# A single namespace as a string (the pre-list form) still renders one Role, no Secret rule
# in the ClusterRole.
"$helm" template roomcast-operator "$chart" -n "$release_ns" --set watchNamespace=apps >"$state/scoped-one.yaml"
[[ "$(grep -A3 '^kind: Role$' "$state/scoped-one.yaml" | grep -c '^  namespace: apps$')" == 1 ]] ||
  { log "watchNamespace=apps: not one Role in apps"; exit 1; }
grep -q -- '--namespace=apps$' "$state/scoped-one.yaml" || { log "watchNamespace=apps: no --namespace flag"; exit 1; }
# The operator's Deployment and the hubs' pods must pass the `restricted` Pod Security
# Standard: every namespace here enforces it, so the API server's admission refuses others.
restricted=(pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest)
restricted_ns() {
  "$kubectl" create namespace "$1" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" label --overwrite namespace "$1" "${restricted[@]}" >/dev/null
}
restricted_ns "$release_ns"
if "$helm" template roomcast-operator "$chart" --set concurrency=0 >/dev/null 2>&1; then
  log "values.schema.json accepted concurrency=0"; exit 1
fi
"$helm" install roomcast-operator "$chart" -n "$release_ns"
"$kubectl" wait --for condition=Established crd/socketiohubs.roomcast.dev --timeout=60s
# The chart's example hubs are valid for the installed CRD.
"$kubectl" apply --dry-run=server -n default -f "$chart/examples/hub.yaml"
"$kubectl" apply --dry-run=server -n default -f "$chart/examples/hub-app-link.yaml"
# An upgrade of the release with changed values goes through too.
"$helm" upgrade roomcast-operator "$chart" -n "$release_ns" --set concurrency=2
[[ "$("$kubectl" -n "$release_ns" get deploy roomcast-operator -o jsonpath='{.spec.template.spec.containers[0].args}')" == *--concurrency=2* ]] ||
  { log "helm upgrade did not change the Deployment"; exit 1; }

# The Deployment controller could create the operator's pod under restricted admission.
for _ in $(seq 1 60); do
  [[ -n "$("$kubectl" -n "$release_ns" get pods -l app.kubernetes.io/name=roomcast-operator -o name)" ]] && break
  sleep 0.5
done
[[ -n "$("$kubectl" -n "$release_ns" get pods -l app.kubernetes.io/name=roomcast-operator -o name)" ]] ||
  { log "no operator pod (restricted Pod Security admission?)"; "$kubectl" -n "$release_ns" get events; exit 1; }
[[ -z "$("$kubectl" -n "$release_ns" get deploy roomcast-operator -o jsonpath='{.spec.template.spec.securityContext.runAsUser}')" ]] ||
  { log "the operator's pod pins runAsUser"; exit 1; }

# The operator under test runs as the chart's ServiceAccount.
token="$("$kubectl" create token roomcast-operator -n "$release_ns" --duration 2h)"
bash e2e/control-plane.sh kubeconfig "$state" "$state/operator.kubeconfig" "$token" roomcast-operator "$release_ns"
# Least privilege, checked: the operator may not list Secrets, touch Pods, edit CSRs beyond
# approval and status, bind other ClusterRoles, nor sign for other signers, nor update NetworkPolicies.
for denied in "list secrets" "watch secrets" "patch pods" "delete statefulsets" \
  "update certificatesigningrequests" "bind clusterroles/cluster-admin" \
  "sign signers/kubernetes.io/kube-apiserver-client" "update networkpolicies" "update secrets" \
  "update statefulsets" "update socketiohubs.roomcast.dev/status"; do
  # shellcheck disable=SC2086
  if [[ "$("$kubectl" --kubeconfig "$state/operator.kubeconfig" auth can-i $denied -A 2>/dev/null || true)" == yes ]]; then
    log "chart RBAC grants '$denied'"; exit 1
  fi
done

# Namespaced mode: a second release watching two namespaces gets Roles there and nothing
# namespaced elsewhere; its cluster-scoped rights are the CSR/signer/binding ones only.
scoped_release=scoped-roomcast-operator scoped_ns=roomcast-scoped
scoped_watch=(e2e-watched-a e2e-watched-b)
for ns in "$scoped_ns" "${scoped_watch[@]}" e2e-unwatched; do restricted_ns "$ns"; done
"$helm" install "$scoped_release" "$chart" -n "$scoped_ns" --skip-crds --set replicaCount=0 \
  --set "watchNamespace={${scoped_watch[0]},${scoped_watch[1]}}"
scoped_token="$("$kubectl" create token "$scoped_release" -n "$scoped_ns" --duration 2h)"
bash e2e/control-plane.sh kubeconfig "$state" "$state/scoped.kubeconfig" "$scoped_token" "$scoped_release" "$scoped_ns"
can() { "$kubectl" --kubeconfig "$state/scoped.kubeconfig" auth can-i "$@" 2>/dev/null || true; }
for ns in "${scoped_watch[@]}"; do
  for allowed in "get secrets" "create secrets" "list socketiohubs.roomcast.dev" "patch statefulsets" "create roles"; do
    # shellcheck disable=SC2086
    [[ "$(can $allowed -n "$ns")" == yes ]] || { log "scoped release lacks '$allowed' in $ns"; exit 1; }
  done
done
for denied in "get secrets -n e2e-unwatched" "create secrets -n e2e-unwatched" "get secrets -n default" \
  "list socketiohubs.roomcast.dev -A" "list statefulsets -A" "get secrets -n kube-system" \
  "list pods -A" "patch statefulsets -n e2e-unwatched"; do
  # shellcheck disable=SC2086
  if [[ "$(can $denied)" == yes ]]; then log "scoped release grants '$denied'"; exit 1; fi
done
for allowed in "list certificatesigningrequests" "create clusterrolebindings"; do
  # shellcheck disable=SC2086
  [[ "$(can $allowed)" == yes ]] || { log "scoped release lacks cluster-scoped '$allowed'"; exit 1; }
done

# The kubelet stand-in, on loopback (pod IPs shown as unroutable stand-ins, see e2e/README.md),
# for the failure cases only: its Node is tainted. roomcast/crasher runs /bin/false (exits 1 at
# once: a crash loop); any other image is a failed pull (ImagePullBackOff).
"$runner_bin" --state-dir "$state/runner" --ip-range 127.0.60.0/24 --advertise-range 239.0.60.0/24 \
  --node-taint roomcast.dev/pod-runner=failures:NoSchedule --image "roomcast/crasher=$(type -P false)" \
  >"$state/logs/pod-runner.log" 2>&1 &
runner_pid=$!
for _ in $(seq 1 60); do
  [[ "$("$kubectl" get node roomcast-e2e-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] && break
  sleep 0.5
done
[[ "$("$kubectl" get node roomcast-e2e-node -o jsonpath='{.spec.taints[0].key}')" == roomcast.dev/pod-runner ]] ||
  { log "the pod runner's tainted Node is not there"; exit 1; }

export ROOMCAST_E2E_KUBECONFIG="$state/admin.kubeconfig"
export ROOMCAST_E2E_SCOPED_KUBECONFIG="$state/scoped.kubeconfig"
export ROOMCAST_E2E_SCOPED_RELEASE="$scoped_release/$scoped_ns"
export ROOMCAST_E2E_SCOPED_NAMESPACES="${scoped_watch[0]},${scoped_watch[1]}"
export ROOMCAST_E2E_OPERATOR_KUBECONFIG="$state/operator.kubeconfig"
export ROOMCAST_E2E_OPERATOR_BIN="$operator_bin"
export ROOMCAST_E2E_KUBECTL="$kubectl"
export ROOMCAST_E2E_RELEASE_NAMESPACE="$release_ns"
export ROOMCAST_E2E_LOG_DIR="$state/logs"
t2=$SECONDS
run_cargo test --locked -p roomcast-operator --test cluster -- --ignored --test-threads=1 ${OPERATOR_TEST_FILTER:-}
log "cluster tests took $((SECONDS - t2))s; whole tier $((SECONDS - t0))s"
