#!/usr/bin/env bash
# A throwaway Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC on, generated
# CA, serving certificate, service-account keys and static tokens; the aggregation layer on,
# with a front-proxy CA and client certificate, so a test can register an APIService such as
# operator/tests/metrics_standin.rs), kube-controller-manager (StatefulSet, garbage collector,
# EndpointSlice... controllers; root-ca-cert-publisher writes the kube-root-ca.crt ConfigMap
# that pods' service-account volumes project; the HorizontalPodAutoscaler controller, syncing
# every ROOMCAST_E2E_HPA_SYNC, default 1s, against 15s in a real cluster) and kube-scheduler
# (the real one: it binds pods to the Nodes that fit them, and marks the others
# PodScheduled=False/Unschedulable). No kubelet: with no Node registered every pod stays Pending
# (unschedulable) unless a test patches its status; the pod runner (e2e/pod-runner) registers
# a Node and runs the pods the scheduler binds to it.
#
#   e2e/control-plane.sh start STATE_DIR   # prints nothing; writes STATE_DIR/admin.kubeconfig
#   e2e/control-plane.sh stop STATE_DIR
#   e2e/control-plane.sh kubeconfig STATE_DIR FILE TOKEN USER NAMESPACE   # a token kubeconfig
#
# Binaries come from e2e/build-control-plane.sh (cached). Logs: STATE_DIR/logs/*.log
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:?usage: control-plane.sh start|stop STATE_DIR}"
state="${2:?usage: control-plane.sh start|stop STATE_DIR}"

log() { echo "[control-plane] $*" >&2; }

# A port for a component to bind later, below the kernel's ephemeral range: a port from a bind
# to port 0 lies inside that range, and an outgoing connection can take it as its source port
# before the component binds it (kube-controller-manager once failed with "address already in
# use" that way).
free_port() {
  python3 -c '
import random, socket
first = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(500):
    port = random.randrange(10000, first) if first > 11000 else 0
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
else:
    raise SystemExit("no free port")
'
}

# kubeconfig FILE TOKEN USER NAMESPACE: a kubeconfig for this control plane (its api-port
# and CA under $state) that authenticates with a bearer token.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$(cat "$state/api-port")
    certificate-authority-data: $(base64 -w0 <"$state/pki/ca.crt")
users:
- name: $3
  user:
    token: $2
contexts:
- name: e2e
  context: {cluster: e2e, user: $3, namespace: $4}
current-context: e2e
EOF
}

stop() {
  local name pid
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [[ -f "$state/$name.pid" ]] || continue
    pid="$(cat "$state/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$state/$name.pid"
  done
}

wait_for() { # url, token|"", timeout seconds, what
  local url="$1" token="$2" timeout="$3" what="$4" t0=$SECONDS
  local auth=()
  [[ -n "$token" ]] && auth=(-H "Authorization: Bearer $token")
  until curl -fsS --max-time 2 --cacert "$state/pki/ca.crt" "${auth[@]}" "$url" >/dev/null 2>&1; do
    if ((SECONDS - t0 > timeout)); then
      log "$what did not become ready within ${timeout}s; last log lines:"
      tail -n 30 "$state/logs/$what.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

start() {
  local bin
  bin="$("$here/build-control-plane.sh" --print)"
  mkdir -p "$state/pki" "$state/logs" "$state/etcd"
  chmod 700 "$state/etcd" "$state/pki"
  local pki="$state/pki"

  # --- certificates, keys, tokens -------------------------------------------------------
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=roomcast-e2e-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  # The aggregation layer (APIServices, e.g. the custom metrics API the HPA controller reads):
  # kube-apiserver proxies to an extension server with this client certificate, and the
  # extension server trusts the front-proxy CA for it (the extension-apiserver-authentication
  # ConfigMap publishes that CA). EC keys: cheaper to generate than RSA.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=roomcast-e2e-front-proxy-ca" \
    -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=front-proxy-client" \
    -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/front-proxy-client.ext"
  openssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/front-proxy-client.ext" -out "$pki/front-proxy-client.crt" 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local admin_token kcm_token sched_token
  admin_token="$(openssl rand -hex 24)"
  kcm_token="$(openssl rand -hex 24)"
  sched_token="$(openssl rand -hex 24)"
  cat >"$pki/tokens.csv" <<EOF
$admin_token,roomcast-e2e-admin,roomcast-e2e-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
$sched_token,system:kube-scheduler,system:kube-scheduler,"system:masters"
EOF

  local etcd_port etcd_peer api_port
  etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port)"
  echo "$api_port" >"$state/api-port"

  kubeconfig "$state/admin.kubeconfig" "$admin_token" admin default
  kubeconfig "$state/kcm.kubeconfig" "$kcm_token" kcm default
  kubeconfig "$state/scheduler.kubeconfig" "$sched_token" kube-scheduler default
  echo "$admin_token" >"$state/admin-token"

  # --- etcd ----------------------------------------------------------------------------
  "$bin/etcd" --name e2e --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "e2e=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn \
    >"$state/logs/etcd.log" 2>&1 &
  echo $! >"$state/etcd.pid"
  local t0=$SECONDS
  until curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1; do
    ((SECONDS - t0 > 30)) && { log "etcd did not start"; tail -n 30 "$state/logs/etcd.log" >&2; return 1; }
    sleep 0.2
  done

  # --- kube-apiserver ------------------------------------------------------------------
  "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --cert-dir "$state/pki/apiserver-generated" --profiling=false \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    >"$state/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$state/kube-apiserver.pid"
  wait_for "https://127.0.0.1:$api_port/readyz" "$admin_token" 120 kube-apiserver

  # --- kube-controller-manager --------------------------------------------------------
  "$bin/kube-controller-manager" \
    --kubeconfig "$state/kcm.kubeconfig" \
    --authentication-kubeconfig "$state/kcm.kubeconfig" --authorization-kubeconfig "$state/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --controllers 'statefulset,garbagecollector,endpointslice,replicaset,deployment,namespace,disruption,serviceaccount,root-ca-cert-publisher,horizontalpodautoscaling' \
    --horizontal-pod-autoscaler-sync-period "${ROOMCAST_E2E_HPA_SYNC:-1s}" \
    --concurrent-gc-syncs 4 --profiling=false \
    >"$state/logs/kube-controller-manager.log" 2>&1 &
  echo $! >"$state/kube-controller-manager.pid"

  # --- kube-scheduler ------------------------------------------------------------------
  "$bin/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" \
    --leader-elect=false --profiling=false \
    >"$state/logs/kube-scheduler.log" 2>&1 &
  echo $! >"$state/kube-scheduler.pid"
  sleep 1
  for name in kube-controller-manager kube-scheduler; do
    kill -0 "$(cat "$state/$name.pid")" 2>/dev/null || {
      log "$name exited"; tail -n 30 "$state/logs/$name.log" >&2; return 1; }
  done
  log "up: https://127.0.0.1:$api_port (kubeconfig $state/admin.kubeconfig)"
}

case "$cmd" in
  start) start || { stop; exit 1; } ;;
  stop) stop ;;
  kubeconfig) kubeconfig "${3:?kubeconfig needs FILE TOKEN USER NAMESPACE}" "${4:?token}" "${5:?user}" "${6:?namespace}" ;;
  *) echo "usage: control-plane.sh start|stop STATE_DIR | kubeconfig STATE_DIR FILE TOKEN USER NAMESPACE" >&2; exit 2 ;;
esac
