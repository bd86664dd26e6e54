#!/usr/bin/env bash
# Operator tier of `make test`: the operator against a real Kubernetes control plane.
#
#  1. builds (once, cached outside the checkout) kube-apiserver, kube-controller-manager and
#     kubectl from k8s.io/kubernetes, helm from helm.sh/helm/v3, and takes etcd from crates.io
#     (e2e/build-control-plane.sh);
#  2. starts etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 with generated
#     certificates and tokens (e2e/control-plane.sh), torn down on exit;
#  3. helm lint / template / install of charts/roomcast-operator (installs the CRD and RBAC);
#  4. runs operator/tests/cluster.rs, whose operator processes use the chart ServiceAccount's
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

run_cargo build --locked -p roomcast-operator --bin roomcast-operator
run_cargo test --locked -p roomcast-operator --test cluster --no-run
operator_bin="${CARGO_TARGET_DIR:-$root/target}/debug/roomcast-operator"

control_plane_start

release_ns=roomcast-system
chart=charts/roomcast-operator
"$helm" lint "$chart" --strict
# The monitoring objects (PodMonitor, PrometheusRule, dashboards) render only when enabled and
# when their CRDs exist; `make lint` cannot check that before helm is built.
ROOMCAST_HELM="$helm" bash scripts/check-monitoring.sh
"$helm" template roomcast-operator "$chart" -n "$release_ns" >"$state/rendered.yaml"
"$helm" template roomcast-operator "$chart" -n "$release_ns" \
  --set metrics.serviceMonitor.enabled=true --set watchNamespace=apps --set replicaCount=2 >/dev/null
if "$helm" template roomcast-operator "$chart" --set concurrency=0 >/dev/null 2>&1; then
  log "values.schema.json accepted concurrency=0"; exit 1
fi
"$helm" install roomcast-operator "$chart" -n "$release_ns" --create-namespace
"$kubectl" wait --for condition=Established crd/socketiohubs.roomcast.dev --timeout=60s
# The chart's example hub is valid for the installed CRD.
"$kubectl" apply --dry-run=server -n default -f "$chart/examples/hub.yaml"
# An upgrade of the release with changed values goes through too.
"$helm" upgrade roomcast-operator "$chart" -n "$release_ns" --set concurrency=2
[[ "$("$kubectl" -n "$release_ns" get deploy roomcast-operator -o jsonpath='{.spec.template.spec.containers[0].args}')" == *--concurrency=2* ]] ||
  { log "helm upgrade did not change the Deployment"; exit 1; }

# The operator under test runs as the chart's ServiceAccount.
token="$("$kubectl" create token roomcast-operator -n "$release_ns" --duration 2h)"
bash e2e/control-plane.sh kubeconfig "$state" "$state/operator.kubeconfig" "$token" roomcast-operator "$release_ns"
# Least privilege, checked: the operator may not list Secrets, touch Pods, edit CSRs beyond
# approval and status, bind other ClusterRoles, nor sign for other signers, nor update NetworkPolicies.
for denied in "list secrets" "watch secrets" "patch pods" "delete statefulsets" \
  "update certificatesigningrequests" "bind clusterroles/cluster-admin" \
  "sign signers/kubernetes.io/kube-apiserver-client" "update networkpolicies"; do
  # shellcheck disable=SC2086
  if [[ "$("$kubectl" --kubeconfig "$state/operator.kubeconfig" auth can-i $denied -A 2>/dev/null || true)" == yes ]]; then
    log "chart RBAC grants '$denied'"; exit 1
  fi
done

export ROOMCAST_E2E_KUBECONFIG="$state/admin.kubeconfig"
export ROOMCAST_E2E_OPERATOR_KUBECONFIG="$state/operator.kubeconfig"
export ROOMCAST_E2E_OPERATOR_BIN="$operator_bin"
export ROOMCAST_E2E_KUBECTL="$kubectl"
export ROOMCAST_E2E_RELEASE_NAMESPACE="$release_ns"
export ROOMCAST_E2E_LOG_DIR="$state/logs"
t2=$SECONDS
run_cargo test --locked -p roomcast-operator --test cluster -- --ignored --test-threads=1 ${OPERATOR_TEST_FILTER:-}
log "cluster tests took $((SECONDS - t2))s; whole tier $((SECONDS - t0))s"
