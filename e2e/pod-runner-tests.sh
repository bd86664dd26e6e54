#!/usr/bin/env bash
# Full-path tier (`make test-e2e`): operator, real controllers and data-plane pods together.
#
# Starts the local control plane (e2e/lib.sh), installs the chart, runs the operator as a local
# process with the chart ServiceAccount's token (as e2e/operator-tests.sh does) and the pod
# runner (e2e/pod-runner: binds pods to its Node and runs each as a roomcast-dataplane process
# on its own 127.0.50.x address). Then, with a 3-replica SocketIOHub:
#   - 3 pods Running and Ready, distinct loopback IPs; the hub Service's EndpointSlices list
#     exactly those 3 ready endpoints (by their stand-in pod IPs: the API refuses loopback ones,
#     see e2e/README.md); a real socket.io-client connects to every pod;
#   - kill -9 of a pod's process: restarted, restartCount 1;
#   - pods with an image the runner has no binary for: unscheduled, or Failed if bound anyway;
#   - delete pod hub-1: its process is gone, the StatefulSet recreates it, it is Ready again;
#   - force-delete pod hub-2: its process is killed at once, the pod comes back;
#   - scale the hub to 1: the other processes are gone;
#   - delete the hub: everything is garbage-collected and no pod process is left.
# Fails loudly (runner, operator, pod and control-plane logs) on the first failure.
# KEEP_STATE=1 keeps the state dir.
set -euo pipefail
tier=pod-runner-tests
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

control_plane_binaries
kubectl="$bin/kubectl"
helm="$bin/helm"

# socket.io-client from the data plane's JS tests' lockfile (same stamp as their run.sh).
command -v node >/dev/null || { log "node (>= 20) is required"; exit 1; }
(
  cd dataplane/tests/js
  stamp=node_modules/.roomcast-lock.sha256
  sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$sum" ]]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$sum" >"$stamp"
  fi
)

t1=$SECONDS
run_cargo build --locked -p roomcast-operator -p roomcast-dataplane -p roomcast-pod-runner --bins
target="${CARGO_TARGET_DIR:-$root/target}/debug"
log "binaries built in $((SECONDS - t1))s"

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

# Pids of processes started by the runner for this run: it starts each in its pod's directory.
pod_processes() {
  local d cwd
  for d in /proc/[0-9]*; do
    cwd="$(readlink "$d/cwd" 2>/dev/null)" || continue
    [[ "$cwd" == "$runner_state/pods/"* ]] && echo "${d#/proc/}"
  done
  return 0
}

tier_cleanup() {
  local rc=$? p
  set +e
  if [[ $rc -ne 0 ]]; then
    log "FAILED (exit $rc)"
    "$kubectl" get nodes,pods,statefulsets,endpointslices -A -o wide >&2 2>&1
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

fail() { log "FAIL: $*"; exit 1; }

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

# --- chart, operator, runner --------------------------------------------------------------
release_ns=roomcast-system
# The operator runs below as a local process; its chart Deployment (an image the runner cannot
# run) is scaled to 0.
"$helm" install roomcast-operator charts/roomcast-operator -n "$release_ns" --create-namespace \
  --set replicaCount=0 >/dev/null
"$kubectl" wait --for condition=Established crd/socketiohubs.roomcast.dev --timeout=60s >/dev/null

token="$("$kubectl" create token roomcast-operator -n "$release_ns" --duration 2h)"
bash e2e/control-plane.sh kubeconfig "$state" "$state/operator.kubeconfig" "$token" roomcast-operator "$release_ns"

KUBECONFIG="$state/operator.kubeconfig" POD_NAMESPACE="$release_ns" \
  "$target/roomcast-operator" run --leader-elect=false --metrics-addr 127.0.0.1:0 \
  >"$state/logs/operator.log" 2>&1 &
pids+=($!)

"$target/roomcast-pod-runner" --state-dir "$runner_state" \
  --ip-range 127.0.50.0/24 --advertise-range 239.0.50.0/24 \
  --image "roomcast/roomcast-dataplane=$target/roomcast-dataplane" \
  >"$state/logs/pod-runner.log" 2>&1 &
pids+=($!)
runner_pid=$!
node_ready() {
  [[ "$("$kubectl" get node roomcast-e2e-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_until 30 "runner Node registered and Ready" node_ready

# --- helpers over the hub's pods ---------------------------------------------------------------
hub=hub
sel="roomcast.dev/hub=$hub"
# Lines "NAME PHASE READY API-IP LOOPBACK-IP" of the hub's pods that are not terminating (a
# terminating pod's line has a 6th field, its deletionTimestamp).
pod_table() {
  "$kubectl" get pods -l "$sel" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.status.podIP} {.metadata.annotations.roomcast\.dev/pod-runner-loopback-ip} {.metadata.deletionTimestamp}{"\n"}{end}' |
    awk 'NF == 5'
}
# True when exactly N hub pods exist and all are Running and Ready.
pods_ready() {
  local n="$1" table
  table="$("$kubectl" get pods -l "$sel" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}')"
  [[ "$(grep -c . <<<"$table")" -eq "$n" ]] || return 1
  ! grep -qv ' Running True $' <<<"$table"
}
pod_pid() { # the process id the runner reports for a pod (containerID roomcast-pod-runner://PID)
  local id
  id="$("$kubectl" get pod "$1" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  [[ "$id" == roomcast-pod-runner://* ]] || fail "pod $1 has no runner container id ($id)"
  echo "${id#roomcast-pod-runner://}"
}
ready_slice_ips() { # sorted addresses of the ready endpoints of the hub's client Service
  "$kubectl" get endpointslices -l "kubernetes.io/service-name=$hub" \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | sort
}
pod_ips() { pod_table | awk '{print $4}' | sort; }
loopback_ips() { pod_table | awk '{print $5}' | sort; }
slices_match_pods() { [[ -n "$(pod_ips)" && "$(ready_slice_ips)" == "$(pod_ips)" ]]; }
connect_all() {
  local urls=() ip
  for ip in $(loopback_ips); do urls+=("http://$ip:3000"); done
  node e2e/pod-runner/connect.mjs "${urls[@]}" >&2 || fail "socket.io-client could not connect to every pod"
}

# --- 1. a 3-replica hub -----------------------------------------------------------------------
t_hub=$SECONDS
"$kubectl" apply -f - >/dev/null <<EOF
apiVersion: roomcast.dev/v1alpha1
kind: SocketIOHub
metadata:
  name: $hub
  namespace: default
spec:
  replicas: 3
EOF
wait_until 120 "3 hub pods Running and Ready" pods_ready 3
pod_table >&2
# Each pod: a distinct loopback address its process listens on, and the stand-in the API shows
# (the API refuses loopback addresses in EndpointSlices) with the same host part.
ips="$(loopback_ips)"
[[ "$(sort -u <<<"$ips" | grep -c .)" -eq 3 ]] || fail "loopback IPs are not 3 distinct addresses: $ips"
if grep -qvE '^127\.0\.50\.[0-9]+$' <<<"$ips"; then fail "a loopback IP is outside 127.0.50.0/24: $ips"; fi
while read -r _ _ _ api_ip lo_ip; do
  [[ "${api_ip#239.0.50.}" == "${lo_ip#127.0.50.}" && "$api_ip" == 239.0.50.* ]] ||
    fail "pod IP $api_ip does not stand for loopback IP $lo_ip"
done < <(pod_table)
wait_until 30 "the hub Service's EndpointSlices list the 3 ready pods" slices_match_pods
connect_all
[[ "$(pod_processes | grep -c .)" -eq 3 ]] || fail "expected 3 pod processes, found: $(pod_processes | xargs)"
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

# --- pods the runner cannot run -------------------------------------------------------------------
# Unbound with an unknown image: left Pending, unschedulable, as kube-scheduler would.
# Bound to the runner's node with an unknown image: Failed, with the reason in its status.
"$kubectl" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: unknown-unbound, namespace: default}
spec:
  containers: [{name: c, image: "docker.io/library/busybox:1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: unknown-bound, namespace: default}
spec:
  nodeName: roomcast-e2e-node
  containers: [{name: c, image: "docker.io/library/busybox:1"}]
EOF
unschedulable() {
  [[ "$("$kubectl" get pod unknown-unbound -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}')" == Unschedulable ]]
}
failed_unknown() {
  [[ "$("$kubectl" get pod unknown-bound -o jsonpath='{.status.phase} {.status.message}')" == "Failed image "*"not known to the pod runner"* ]]
}
wait_until 20 "a pod with an unknown image stays unscheduled" unschedulable
wait_until 20 "a pod with an unknown image bound to the runner is Failed" failed_unknown
"$kubectl" delete pod unknown-unbound unknown-bound --wait=true --timeout=30s >/dev/null

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

# --- 3. scale to 1 ------------------------------------------------------------------------------
t_scale=$SECONDS
gone_pids=("$(pod_pid "$hub-1")" "$(pod_pid "$hub-2")")
"$kubectl" scale socketiohub "$hub" --replicas=1 >/dev/null
wait_until 90 "the hub scaled down to 1 Ready pod" pods_ready 1
only_hub0() { [[ "$("$kubectl" get pods -l "$sel" -o name)" == "pod/$hub-0" ]]; }
wait_until 60 "only $hub-0 is left" only_hub0
for p in "${gone_pids[@]}"; do ! kill -0 "$p" 2>/dev/null || fail "process $p of a removed pod is still running"; done
[[ "$(pod_processes | grep -c .)" -eq 1 ]] || fail "expected 1 pod process, found: $(pod_processes | xargs)"
wait_until 30 "EndpointSlices list the 1 ready pod" slices_match_pods
log "scale 3 -> 1 took $((SECONDS - t_scale))s"

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
"$kubectl" delete socketiohub "$hub" --wait=true --timeout=60s >/dev/null
nothing_left() {
  [[ -z "$("$kubectl" get statefulsets,services,configmaps,secrets,pods,poddisruptionbudgets -l "$sel" -o name)" ]] &&
    [[ -z "$(pod_processes)" ]]
}
wait_until 90 "the hub's objects are garbage-collected and no pod process is left" nothing_left
log "garbage collection took $((SECONDS - t_gc))s"

# --- the runner itself stops cleanly -------------------------------------------------------------
kill -TERM "$runner_pid"
runner_gone() { ! kill -0 "$runner_pid"; }
wait_until 20 "the runner exited on SIGTERM" runner_gone
if grep -q panicked "$state/logs/pod-runner.log"; then fail "the runner panicked"; fi
log "PASS: pod-runner tier took $((SECONDS - t0))s (hub phases: $((SECONDS - t_hub))s)"
