#!/usr/bin/env bash
# Full-path tier (`make test-e2e`): operator, real controllers, data-plane pods and the example
# app together.
#
# Builds what it needs, then runs in a network namespace of its own (unshare --net), where the
# pod block 10.244.0.0/24 is routed locally: the pod runner (e2e/pod-runner) runs each hub pod
# as a roomcast-dataplane process on its own pod IP, the API shows those IPs, and the hub pods
# find and reach each other through the real EndpointSlices. Nothing leaves the namespace.
# In it: the local control plane (e2e/lib.sh), the chart, the runner, the example chat app
# (examples/chat-app) as the hub's upstream, and e2e/scenarios/service-proxy.mjs standing in
# for the hub's client and management Services (round robin over their ready endpoints).
# The operator is the chart's own Deployment (2 replicas, leader election on): the runner maps
# its image (ghcr.io/roomcast/roomcast-operator, any tag) to the operator binary and runs its
# pods like the hub pods, as the chart's ServiceAccount from the automounted token, with the
# chart's RBAC and nothing more:
#   - 2 operator pods Running and Ready (their /readyz probe on :8080), one holds the Lease;
#     /healthz, /readyz and /metrics answer on every pod's :8080, the leader gauge is 1 on the
#     holder only; the pods authenticate as system:serviceaccount:roomcast-system:roomcast-operator;
#   - (after the hub phases below) delete the leader's pod: its process is gone, the standby
#     takes the Lease, the ReplicaSet brings back a second pod, a hub spec change is applied;
#   - (after the scenarios) helm upgrade to another image tag: the pod template changes, the
#     rollout replaces both pods, a new pod leads and applies a hub spec change.
# Then, with examples/chat-app/k8s/hub.yaml (3 replicas):
#   - 3 pods Running and Ready on distinct pod IPs; the client Service's EndpointSlices list
#     exactly those; a real socket.io-client connects to every pod;
#   - kill -9 of a pod's process: restarted, restartCount 1;
#   - a pod with an image the runner has no binary for: bound by kube-scheduler, then Pending
#     in ErrImagePull/ImagePullBackOff; a pod whose nodeSelector fits no node: Unschedulable;
#   - delete pod chat-1: its process is gone, the StatefulSet recreates it, it is Ready again;
#   - force-delete pod chat-2: its process is killed at once, the pod comes back;
#   - the scenarios of e2e/scenarios/run.mjs, shared with kind: chat in rooms across pods,
#     the chart's monitoring (a real Prometheus, Debian's `prometheus` package, discovers the
#     hub pods through the API server as the chart's PodMonitor would and scrapes them under
#     traffic: every dashboard query returns data, every rule of the chart's rule file is
#     healthy), the mesh on mutual TLS with CSR-issued per-pod certificates, a CA rotation under traffic,
#     scale 3 -> 5 -> 2 under traffic, a config change rolling the pods, a pod deletion, then
#     connection state recovery turned on (back at 3 pods) and a rolling restart under 20
#     messages/s where every client keeps its session and gets every message exactly once; the
#     processes of removed pods are gone;
#   - delete the hub (run.mjs delete-hub): everything is garbage-collected and no pod process is
#     left;
#   - app links (e2e/scenarios/app-link.mjs): examples/sio-chat/k8s/ (a 3-pod hub with
#     spec.appLink and the example's socket.io server as a Deployment of 2 pods, linked over TLS
#     with the operator's token Secret and trust ConfigMap): the hub's status counts 2 instances
#     (APPS), stock clients on every transport chat across pods and instances (exact counts), a
#     private message by socket id, the user list from fetchSockets; an app pod deleted under
#     traffic: its clients move to the other instance, the replacement links, exact again.
# Fails loudly (runner, operator, app, pod and control-plane logs) on the first failure.
# KEEP_STATE=1 keeps the state dir; E2E_TIME_SCALE=N multiplies the scenarios' timeouts;
# E2E_SCENARIOS="PHASE..." runs only those phases of run.mjs (the hub is at 3 pods before them).
set -euo pipefail
tier=pod-runner-tests
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pod_range=10.244.0.0/24
scenarios="${E2E_SCENARIOS:-chat monitoring tls rotate-ca scale roll delete-pod recover}"
if [[ -z "${ROOMCAST_E2E_NETNS:-}" ]]; then
  control_plane_binaries
  # socket.io-client from the data plane's JS tests' lockfile, and the example app's packages.
  command -v node >/dev/null || { log "node (>= 20) is required"; exit 1; }
  # shellcheck source=scripts/lib.sh
  source scripts/lib.sh
  npm_ci_locked dataplane/tests/js examples/chat-app sdk/node
  # The sio-chat example (the app-link phase) with the SDK built and installed as a copy.
  (cd sdk/node && npm run --silent build)
  (cd examples/sio-chat && npm ci --no-audit --no-fund --loglevel=error)
  if [[ " $scenarios " == *" monitoring "* ]]; then
    # ROOMCAST_PROMETHEUS names another server binary (run.mjs runs it).
    ensure_command "${ROOMCAST_PROMETHEUS:-prometheus}" prometheus ||
      { log "the monitoring phase needs a real Prometheus: this tier cannot run"; exit 1; }
  fi
  t1=$SECONDS
  run_cargo build --locked -p roomcast-operator -p roomcast-dataplane -p roomcast-pod-runner --bins
  log "binaries built in $((SECONDS - t1))s"
  # The rest needs no network but its own: pods get real IPs there without touching the host's.
  unshare --net true 2>/dev/null || {
    log "cannot create a network namespace (unshare --net needs root or CAP_SYS_ADMIN): this tier cannot run"
    exit 1
  }
  log "entering a network namespace of its own"
  exec unshare --net -- env ROOMCAST_E2E_NETNS=1 bash "${BASH_SOURCE[0]}" "$@"
fi
ip link set lo up
ip route add local "$pod_range" dev lo
bin="$(bash e2e/build-control-plane.sh)" # cached by the run above
kubectl="$bin/kubectl"
helm="$bin/helm"
target="${CARGO_TARGET_DIR:-$root/target}/debug"

control_plane_start
t_kcm=$SECONDS # kube-controller-manager started just before
runner_state="$(cd "$state" && pwd -P)/runner" # as the runner resolves it
pids=()

# --- failure reporting and teardown (before the control plane's own cleanup) ------------------
stop_pid() { # pid name: SIGTERM, then SIGKILL after 20 s
  local pid="$1" name="$2"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name ($pid) ignored SIGTERM for 20s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# Pids of processes started by the runner for this run: it starts each in its pod's directory
# (NAMESPACE_POD_UID). With NAMESPACE, only those of that namespace's pods.
pod_processes() {
  local d cwd
  for d in /proc/[0-9]*; do
    cwd="$(readlink "$d/cwd" 2>/dev/null)" || continue
    [[ "$cwd" == "$runner_state/pods/${1:+${1}_}"* ]] && echo "${d#/proc/}"
  done
  return 0
}

tier_cleanup() {
  local rc=$? p
  set +e
  if [[ $rc -ne 0 ]]; then
    log "FAILED (exit $rc)"
    "$kubectl" get nodes,pods,statefulsets,endpointslices -A -o wide >&2 2>&1
    for f in "$state"/logs/{chat-app,proxy-*}.log; do
      [[ -f "$f" ]] || continue
      echo "----- $(basename "$f") (last 30 lines)" >&2
      tail -n 30 "$f" | cut -c1-400 >&2
    done
    for f in "$runner_state"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "----- pod log $(basename "$f") (last 40 lines)" >&2
      tail -n 40 "$f" | cut -c1-400 >&2
    done
  fi
  # Reverse order: the runner stops its pod processes when it gets SIGTERM.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}" "process ${pids[i]}"; done
  for p in $(pod_processes); do log "pod process $p outlived the runner: SIGKILL"; kill -KILL "$p"; done
  (exit "$rc")
  _control_plane_cleanup
}
trap tier_cleanup EXIT

# wait_until SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.5 s.
wait_until() {
  local timeout="$1" what="$2" start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start > timeout)) && fail "timed out after ${timeout}s waiting for: $what"
    sleep 0.5
  done
  log "ok ($((SECONDS - start))s): $what"
}

# --- chart, runner, the operator's own Deployment -----------------------------------------------
release_ns=roomcast-system
op_image_repo=roomcast/roomcast-operator # the chart's ghcr.io/roomcast/roomcast-operator, any tag
op_sel="app.kubernetes.io/name=roomcast-operator,app.kubernetes.io/instance=roomcast-operator"
# The chart's Deployment as it ships (2 replicas, leader election on): the runner runs its pods
# with the chart ServiceAccount's automounted token and nothing else.
"$helm" install roomcast-operator charts/roomcast-operator -n "$release_ns" --create-namespace \
  --set replicaCount=2 >/dev/null
"$kubectl" wait --for condition=Established crd/socketiohubs.roomcast.dev --timeout=60s >/dev/null

"$target/roomcast-pod-runner" --state-dir "$runner_state" --ip-range "$pod_range" \
  --image "roomcast/roomcast-dataplane=$target/roomcast-dataplane" \
  --image "$op_image_repo=$target/roomcast-operator" \
  --image "roomcast/sio-chat=$root/e2e/pod-runner/images/sio-chat" \
  >"$state/logs/pod-runner.log" 2>&1 &
pids+=($!)
runner_pid=$!
node_ready() {
  [[ "$("$kubectl" get node roomcast-e2e-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_until 30 "runner Node registered and Ready" node_ready

# --- helpers over pods ---------------------------------------------------------------------------
# Lines "NAME PHASE READY POD-IP" of the pods of NAMESPACE matching SELECTOR that are not
# terminating (a terminating pod's line has a 5th field, its deletionTimestamp).
pod_table_in() {
  "$kubectl" get pods -n "$1" -l "$2" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}' |
    awk 'NF == 4'
}
# NAMESPACE SELECTOR N: exactly N such pods exist (terminating ones included), all Running and Ready.
pods_ready_in() {
  local table
  table="$("$kubectl" get pods -n "$1" -l "$2" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}')"
  [[ "$(grep -c . <<<"$table")" -eq "$3" ]] || return 1
  ! grep -qv ' Running True $' <<<"$table"
}
pod_pid() { # POD [NAMESPACE]: the process id the runner reports (containerID roomcast-pod-runner://PID)
  local id
  id="$("$kubectl" get pod "$1" -n "${2:-default}" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  [[ "$id" == roomcast-pod-runner://* ]] || fail "pod $1 has no runner container id ($id)"
  echo "${id#roomcast-pod-runner://}"
}

# The operator's pods and its Lease.
op_table() { pod_table_in "$release_ns" "$op_sel"; }
op_ready() { pods_ready_in "$release_ns" "$op_sel" "$1"; }
lease_holder() { "$kubectl" get lease roomcast-operator -n "$release_ns" -o jsonpath='{.spec.holderIdentity}'; }
leader_is_op_pod() { # the Lease is held by one of the operator's live pods (POD_NAME is its identity)
  local h
  h="$(lease_holder)"
  [[ -n "$h" ]] && op_table | awk '{print $1}' | grep -qxF "$h"
}
# The operator's probes and metrics on its port 8080, on every pod: /healthz, /readyz, and
# roomcast_operator_leader 1 on the Lease holder, 0 on the standby.
check_op_endpoints() {
  local holder name ip want metrics
  holder="$(lease_holder)"
  while read -r name _ _ ip; do
    for path in healthz readyz; do
      curl -fsS --max-time 5 -o /dev/null "http://$ip:8080/$path" || fail "operator pod $name: /$path on $ip:8080 failed"
    done
    want=0
    [[ "$name" == "$holder" ]] && want=1
    # Read whole, then matched: `curl | grep -q` fails (curl exit 23) when grep stops reading first.
    metrics="$(curl -fsS --max-time 5 "http://$ip:8080/metrics")" || fail "operator pod $name: /metrics on $ip:8080 failed"
    grep -qx "roomcast_operator_leader $want" <<<"$metrics" ||
      fail "operator pod $name ($ip:8080): /metrics has no roomcast_operator_leader $want (holder: $holder)"
  done < <(op_table)
  log "ok: the operator pods' /healthz, /readyz and /metrics on :8080 (leader gauge 1 on $holder only)"
}

t_op=$SECONDS
wait_until 60 "the chart's operator Deployment: 2 pods Running and Ready" op_ready 2
wait_until 30 "an operator pod holds the leader Lease" leader_is_op_pod
op_table >&2
# Each runs the operator binary, as the chart ServiceAccount, from its automounted token: the
# API server's ServiceAccount admission added the projected kube-api-access volume; the runner
# wrote its token (bound to this pod) and CA, and gave the process the in-cluster variables and
# a kubeconfig of that token and CA.
op_pod="$(op_table | awk 'NR == 1 {print $1}')"
op_pid="$(pod_pid "$op_pod" "$release_ns")"
"$kubectl" get pod "$op_pod" -n "$release_ns" -o jsonpath='{.spec.containers[0].volumeMounts[*].mountPath}' |
  grep -qw /var/run/secrets/kubernetes.io/serviceaccount ||
  fail "operator pod $op_pod has no automounted service-account token"
op_env() { tr '\0' '\n' <"/proc/$op_pid/environ" | sed -n "s/^$1=//p"; }
[[ "$(op_env KUBERNETES_SERVICE_HOST):$(op_env KUBERNETES_SERVICE_PORT)" == "127.0.0.1:$(cat "$state/api-port")" ]] ||
  fail "operator pod $op_pod: KUBERNETES_SERVICE_HOST/PORT do not name the API server"
op_kubeconfig="$(op_env KUBECONFIG)"
[[ "$op_kubeconfig" == "$runner_state/pods/${release_ns}_${op_pod}_"*/kubeconfig ]] ||
  fail "operator pod $op_pod: KUBECONFIG is $op_kubeconfig, not the pod's own"
sa_dir="$(ls -d "$runner_state/pods/${release_ns}_${op_pod}"_*/volumes/kube-api-access-*)"
cmp -s "$sa_dir/ca.crt" "$state/pki/ca.crt" || fail "operator pod $op_pod: ca.crt is not the cluster CA"
[[ "$(cat "$sa_dir/namespace")" == "$release_ns" ]] || fail "operator pod $op_pod: wrong namespace file"
bound_pod="$(python3 -c 'import base64, json, sys
p = open(sys.argv[1]).read().split(".")[1]
print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["kubernetes.io"]["pod"]["name"])' "$sa_dir/token")"
[[ "$bound_pod" == "$op_pod" ]] || fail "operator pod $op_pod: its token is bound to pod $bound_pod"
whoami="$("$kubectl" --kubeconfig "$op_kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}')"
[[ "$whoami" == "system:serviceaccount:$release_ns:roomcast-operator" ]] ||
  fail "operator pod $op_pod authenticates as $whoami, not the chart's ServiceAccount"
[[ "$(readlink "/proc/$(pod_pid "$op_pod" "$release_ns")/exe")" == "$(readlink -f "$target/roomcast-operator")" ]] ||
  fail "operator pod $op_pod does not run $target/roomcast-operator"
check_op_endpoints
log "operator Deployment up in $((SECONDS - t_op))s"

# --- helpers over the hub's pods ---------------------------------------------------------------
hub=chat # examples/chat-app/k8s/hub.yaml
sel="roomcast.dev/hub=$hub"
pod_table() { pod_table_in default "$sel"; }
pods_ready() { pods_ready_in default "$sel" "$1"; } # N: exactly N hub pods, all Running and Ready
ready_slice_ips() { # sorted addresses of the ready endpoints of the hub's client Service
  "$kubectl" get endpointslices -l "kubernetes.io/service-name=$hub" \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | sort
}
pod_ips() { pod_table | awk '{print $4}' | sort; }
slices_match_pods() { [[ -n "$(pod_ips)" && "$(ready_slice_ips)" == "$(pod_ips)" ]]; }
connect_all() {
  local urls=() ip
  for ip in $(pod_ips); do urls+=("http://$ip:3000"); done
  node e2e/pod-runner/connect.mjs "${urls[@]}" >&2 || fail "socket.io-client could not connect to every pod"
}
process_count() { # N: exactly N hub pod processes run (the operator's run in $release_ns)
  [[ "$(pod_processes default | grep -c .)" -eq "$1" ]]
}

# --- the example app and the Service stand-ins ---------------------------------------------------
webhook_secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$kubectl" create secret generic chat-app --from-literal=webhook-secret="$webhook_secret" >/dev/null
start_proxy() { # SERVICE PORT-NAME LISTEN
  node e2e/scenarios/service-proxy.mjs --service "$1" --port-name "$2" --listen "$3" --kubectl "$kubectl" \
    >"$state/logs/proxy-$1.log" 2>&1 &
  pids+=($!)
}
start_proxy "$hub" http 127.0.0.1:4000
start_proxy "$hub-management" management 127.0.0.1:4001

# --- 1. a 3-replica hub -----------------------------------------------------------------------
t_hub=$SECONDS
# The example hub, with the app at its local address instead of its in-cluster Service.
sed 's#http://chat-app.default.svc:8080/#http://127.0.0.1:8080/#' examples/chat-app/k8s/hub.yaml |
  "$kubectl" apply -f - >/dev/null
mgmt_secret() { "$kubectl" get secret "$hub-management" -o jsonpath='{.data.token}' | grep -q .; }
wait_until 30 "the operator generated the management token" mgmt_secret
PORT=8080 HOST=127.0.0.1 ROOMCAST_API=http://127.0.0.1:4001 WEBHOOK_SECRET="$webhook_secret" \
  ROOMCAST_TOKEN="$("$kubectl" get secret "$hub-management" -o jsonpath='{.data.token}' | base64 -d)" \
  node examples/chat-app/server.mjs >"$state/logs/chat-app.log" 2>&1 &
pids+=($!)
app_up() { grep -q "chat-app listening" "$state/logs/chat-app.log"; }
wait_until 20 "the example app is listening" app_up

wait_until 120 "3 hub pods Running and Ready" pods_ready 3
pod_table >&2
ips="$(pod_ips)"
[[ "$(sort -u <<<"$ips" | grep -c .)" -eq 3 ]] || fail "pod IPs are not 3 distinct addresses: $ips"
if grep -qvE '^10\.244\.0\.[0-9]+$' <<<"$ips"; then fail "a pod IP is outside $pod_range: $ips"; fi
wait_until 30 "the hub Service's EndpointSlices list the 3 ready pods" slices_match_pods
connect_all
process_count 3 || fail "expected 3 hub pod processes, found: $(pod_processes default | xargs)"
# Metrics are on the metrics port (9090, where the probes that made the pods Ready go); the
# client port serves no /metrics.
for ip in $ips; do
  metrics="$(curl -fsS --max-time 5 "http://$ip:9090/metrics")" || fail "/metrics on $ip:9090 failed"
  grep -q '^roomcast_connections ' <<<"$metrics" ||
    fail "no roomcast_connections in /metrics on $ip:9090"
  code="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$ip:3000/metrics")"
  [[ "$code" == 404 ]] || fail "/metrics on the client port $ip:3000 answered $code, not 404"
done
log "ok: /metrics on every pod's metrics port, 404 on its client port"
# The pod's service-account volume works as its in-cluster identity (the kubeconfig the runner
# writes for it), with the hub Role's EndpointSlice access.
pod_kubeconfig="$(ls "$runner_state"/pods/default_"$hub"-0_*/kubeconfig)"
"$kubectl" --kubeconfig "$pod_kubeconfig" get endpointslices -l "kubernetes.io/service-name=$hub-peers" -o name |
  grep -q . || fail "the pod's own identity cannot list its hub's EndpointSlices"
log "hub of 3 up and reachable in $((SECONDS - t_hub))s"

# --- a crashed process is restarted, its restartCount bumped ------------------------------------
t_crash=$SECONDS
crashed_pid="$(pod_pid "$hub-0")"
kill -KILL "$crashed_pid"
restarted() {
  [[ "$("$kubectl" get pod "$hub-0" -o jsonpath='{.status.containerStatuses[0].restartCount}')" == 1 ]] &&
    [[ "$(pod_pid "$hub-0")" != "$crashed_pid" ]] && pods_ready 3
}
wait_until 30 "the killed process of $hub-0 restarted (restartCount 1) and Ready" restarted
[[ "$("$kubectl" get pod "$hub-0" -o jsonpath='{.status.containerStatuses[0].lastState.terminated.exitCode}')" == 137 ]] ||
  fail "lastState of $hub-0 does not record the SIGKILL (exit code 137)"
connect_all
log "crash restart took $((SECONDS - t_crash))s"

# --- pods that cannot start ------------------------------------------------------------------------
# An image the runner has no binary for: kube-scheduler binds the pod to the runner's node, the
# runner reports a failed pull as a kubelet does. A nodeSelector no node has: kube-scheduler
# leaves the pod Pending, PodScheduled=False/Unschedulable.
"$kubectl" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: unknown-image, namespace: default}
spec:
  containers: [{name: c, image: "docker.io/library/busybox:1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-node, namespace: default}
spec:
  nodeSelector: {roomcast.dev/no-such-label: "true"}
  containers: [{name: c, image: "roomcast/roomcast-dataplane:1"}]
EOF
pull_backoff() {
  [[ "$("$kubectl" get pod unknown-image -o jsonpath='{.spec.nodeName} {.status.phase} {.status.containerStatuses[0].state.waiting.reason}')" =~ ^roomcast-e2e-node\ Pending\ (ErrImagePull|ImagePullBackOff)$ ]]
}
unschedulable() {
  [[ "$("$kubectl" get pod no-node -o jsonpath='{.spec.nodeName}{.status.conditions[?(@.type=="PodScheduled")].reason}')" == Unschedulable ]]
}
wait_until 20 "a pod with an unknown image is scheduled, then in ImagePullBackOff" pull_backoff
wait_until 20 "a pod whose nodeSelector fits no node is Unschedulable" unschedulable
"$kubectl" delete pod unknown-image no-node --wait=true --timeout=30s >/dev/null

# --- 2. delete a pod: the StatefulSet recreates it --------------------------------------------
t_del=$SECONDS
old_uid="$("$kubectl" get pod "$hub-1" -o jsonpath='{.metadata.uid}')"
old_pid="$(pod_pid "$hub-1")"
kill -0 "$old_pid" 2>/dev/null || fail "pod $hub-1's process $old_pid is not running"
"$kubectl" delete pod "$hub-1" --wait=true --timeout=60s >/dev/null
! kill -0 "$old_pid" 2>/dev/null || fail "process $old_pid of the deleted pod is still running"
log "ok: deleted pod's process $old_pid is gone ($((SECONDS - t_del))s)"
new_uid_differs() { local u; u="$("$kubectl" get pod "$hub-1" -o jsonpath='{.metadata.uid}')"; [[ -n "$u" && "$u" != "$old_uid" ]]; }
wait_until 60 "the StatefulSet recreated $hub-1" new_uid_differs
wait_until 60 "3 hub pods Running and Ready again" pods_ready 3
wait_until 30 "EndpointSlices list the 3 ready pods again" slices_match_pods
connect_all
log "pod deletion and recreation took $((SECONDS - t_del))s"

# --- force deletion: SIGKILL at once -------------------------------------------------------------
t_force=$SECONDS
old_pid="$(pod_pid "$hub-2")"
"$kubectl" delete pod "$hub-2" --grace-period=0 --force >/dev/null 2>&1
old_gone() { ! kill -0 "$old_pid"; }
wait_until 3 "force-deleted pod's process $old_pid is gone at once" old_gone
wait_until 60 "3 hub pods Running and Ready after the force deletion" pods_ready 3
wait_until 30 "EndpointSlices list the 3 ready pods after the force deletion" slices_match_pods
log "force deletion and recreation took $((SECONDS - t_force))s"

# --- the operator: failover when the leader's pod is deleted ----------------------------------
# The leader releases the Lease on SIGTERM and another operator pod takes it: the standby, or
# the ReplicaSet's replacement pod when that one asks first (it starts within a second, the
# standby retries every 2 s; both are the chart's pods). A hub spec change made afterwards is
# applied: by the new leader, the only one reconciling. The scenarios below (CSR signing, CA
# rotation, scale, roll) run on it.
t_fo=$SECONDS
old_leader="$(lease_holder)"
standby="$(op_table | awk -v l="$old_leader" '$1 != l {print $1}')"
old_leader_pid="$(pod_pid "$old_leader" "$release_ns")"
"$kubectl" delete pod "$old_leader" -n "$release_ns" --wait=true --timeout=60s >/dev/null
! kill -0 "$old_leader_pid" 2>/dev/null || fail "process $old_leader_pid of the deleted leader pod still runs"
new_leader() { leader_is_op_pod && [[ "$(lease_holder)" != "$old_leader" ]]; }
wait_until 30 "another operator pod took the Lease from the deleted leader $old_leader" new_leader
if [[ "$(lease_holder)" == "$standby" ]]; then who="the standby"; else who="the ReplicaSet's replacement"; fi
log "leader now: $(lease_holder), $who ($((SECONDS - t_fo))s after the deletion began)"
wait_until 60 "the Deployment replaced the deleted operator pod (2 Running and Ready)" op_ready 2
pdb_max_unavailable() { [[ "$("$kubectl" get pdb "$hub" -o jsonpath='{.spec.maxUnavailable}')" == "$1" ]]; }
"$kubectl" patch socketiohub "$hub" --type merge -p '{"spec":{"podDisruptionBudget":{"maxUnavailable":2}}}' >/dev/null
wait_until 30 "the new leader applied a hub spec change (PDB maxUnavailable 1 -> 2)" pdb_max_unavailable 2
wait_until 30 "the leader gauges follow the Lease" leader_is_op_pod
check_op_endpoints
log "operator failover took $((SECONDS - t_fo))s"

# --- 3. the shared scenarios (e2e/scenarios/run.mjs) --------------------------------------------
t_sc=$SECONDS
# The chart's PodMonitor for the monitoring phase, rendered as an install with the Prometheus
# Operator's CRDs would render it; kubectl's --local mode turns it into JSON without asking the
# API server (which serves no PodMonitor kind).
"$helm" template roomcast-operator charts/roomcast-operator -n "$release_ns" --set monitoring.podMonitor.enabled=true \
  --api-versions monitoring.coreos.com/v1/PodMonitor --show-only templates/podmonitor.yaml |
  "$kubectl" annotate --local -f - -o json roomcast.dev/rendered-for=e2e >"$state/podmonitor.json"
# Their output also goes to a file, so that a failure can be said again at the end.
# shellcheck disable=SC2086 # a list of phase names
HUB_URL=http://127.0.0.1:4000 HUB_NAME="$hub" KUBECTL="$kubectl" E2E_TIME_SCALE="${E2E_TIME_SCALE:-2}" \
  PODMONITOR="$state/podmonitor.json" node e2e/scenarios/run.mjs $scenarios 2>&1 | tee "$state/scenarios.out" >&2 ||
  fail "the scenarios failed: $(grep -m1 'FAIL:' "$state/scenarios.out" | cut -c1-600)"
left="$("$kubectl" get statefulset "$hub" -o jsonpath='{.spec.replicas}')" # 3 after recover
wait_until 30 "only the $left processes of the remaining pods run" process_count "$left"
log "scenarios took $((SECONDS - t_sc))s"

# --- the operator: helm upgrade to another image tag --------------------------------------------
# The runner maps every tag of the operator image to one binary: the change is in the pod
# template, and the deployment controller replaces every pod (a new ReplicaSet, rolling).
t_up=$SECONDS
op_image() { "$kubectl" get deployment roomcast-operator -n "$release_ns" -o jsonpath='{.spec.template.spec.containers[0].image}'; }
old_image="$(op_image)"
old_op_pods="$(op_table | awk '{print $1}')"
old_op_pids="$(for p in $old_op_pods; do pod_pid "$p" "$release_ns"; done)"
new_tag=0.1.0-e2e-upgrade
"$helm" upgrade roomcast-operator charts/roomcast-operator -n "$release_ns" --reuse-values \
  --set image.tag="$new_tag" >/dev/null
[[ "$(op_image)" == "ghcr.io/$op_image_repo:$new_tag" && "$old_image" != "$(op_image)" ]] ||
  fail "helm upgrade did not change the Deployment's image ($old_image -> $(op_image))"
"$kubectl" rollout status deployment/roomcast-operator -n "$release_ns" --timeout=120s >/dev/null ||
  fail "the operator Deployment's rollout did not complete"
replaced() { # 2 Ready pods, none of them an old one, all of the new image
  op_ready 2 || return 1
  local name
  for name in $(op_table | awk '{print $1}'); do
    grep -qxF "$name" <<<"$old_op_pods" && return 1
    [[ "$("$kubectl" get pod "$name" -n "$release_ns" -o jsonpath='{.spec.containers[0].image}')" == *":$new_tag" ]] || return 1
  done
}
wait_until 60 "the runner replaced both operator pods by pods of the new template" replaced
for p in $old_op_pids; do ! kill -0 "$p" 2>/dev/null || fail "process $p of an old operator pod still runs"; done
wait_until 30 "a pod of the new template holds the Lease" leader_is_op_pod
"$kubectl" patch socketiohub "$hub" --type merge -p '{"spec":{"podDisruptionBudget":{"maxUnavailable":1}}}' >/dev/null
wait_until 30 "the upgraded operator applied a hub spec change (PDB maxUnavailable 2 -> 1)" pdb_max_unavailable 1
check_op_endpoints
log "operator upgrade took $((SECONDS - t_up))s"

# --- 4. delete the hub: garbage collection ------------------------------------------------------
# The garbage collector watches a CRD installed after it started only from its next discovery
# resync (every 30 s from kube-controller-manager's start). A hub deleted before that is noticed
# late (up to 30 s more); after it, at once. Waiting for the resync is the shorter path.
gc_wait=$((t_kcm + 33 - SECONDS))
if ((gc_wait > 0)); then
  log "waiting ${gc_wait}s for the garbage collector to watch SocketIOHubs"
  sleep "$gc_wait"
fi
t_gc=$SECONDS
HUB_URL=http://127.0.0.1:4000 HUB_NAME="$hub" KUBECTL="$kubectl" E2E_TIME_SCALE="${E2E_TIME_SCALE:-2}" \
  node e2e/scenarios/run.mjs delete-hub || fail "deleting the hub failed"
wait_until 30 "no pod process is left" process_count 0
log "garbage collection took $((SECONDS - t_gc))s"

# --- 5. app links: the sio-chat example as a Deployment next to its hub ---------------------------
# examples/sio-chat/k8s/: a 3-pod hub with spec.appLink, and the example's socket.io server as a
# Deployment of 2 pods (image roomcast/sio-chat: the runner runs examples/sio-chat/server.mjs)
# with the endpoint, token Secret and trust ConfigMap the operator made, linked over TLS to
# every hub pod. The Services are stand-ins (no DNS here): the app's endpoint is rewritten to
# the one of sio-chat-app.
t_app=$SECONDS
app_hub=sio-chat
start_proxy "$app_hub" http 127.0.0.1:4010
start_proxy "$app_hub-app" app-link 127.0.0.1:4011
"$kubectl" apply -f examples/sio-chat/k8s/hub.yaml >/dev/null
app_inputs() { # the token Secret and the trust ConfigMap the app's pods read
  "$kubectl" get secret "$app_hub-app-link" -o jsonpath='{.data.token}' | grep -q . &&
    "$kubectl" get configmap "$app_hub-peer-trust" -o jsonpath='{.data.ca\.crt}' | grep -q 'BEGIN CERTIFICATE'
}
wait_until 30 "the operator made the app token Secret and the trust ConfigMap" app_inputs
sed "s#$app_hub-app.default.svc:5100#127.0.0.1:4011#" examples/sio-chat/k8s/app.yaml | "$kubectl" apply -f - >/dev/null
wait_until 120 "3 $app_hub hub pods Running and Ready" pods_ready_in default "roomcast.dev/hub=$app_hub" 3
HUB_URL=http://127.0.0.1:4010 HUB_NAME="$app_hub" APP=sio-chat KUBECTL="$kubectl" E2E_TIME_SCALE="${E2E_TIME_SCALE:-2}" \
  node e2e/scenarios/app-link.mjs || fail "the app-link scenario failed"
"$kubectl" delete -f examples/sio-chat/k8s/app.yaml -f examples/sio-chat/k8s/hub.yaml --wait=true --timeout=60s >/dev/null
wait_until 60 "no pod process is left after the app-link phase" process_count 0
log "app-link phase took $((SECONDS - t_app))s"

# --- the runner itself stops cleanly -------------------------------------------------------------
kill -TERM "$runner_pid"
runner_gone() { ! kill -0 "$runner_pid"; }
wait_until 20 "the runner exited on SIGTERM" runner_gone
if grep -q panicked "$state/logs/pod-runner.log"; then fail "the runner panicked"; fi
log "PASS: pod-runner tier took $((SECONDS - t0))s (hub phases: $((SECONDS - t_hub))s)"
