#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, no containers: etcd, kube-apiserver,
# kube-controller-manager (built by build.sh) and the webhook from the working tree, all on
# 127.0.0.1. No kubelet and no scheduler: pods are admitted and stored, never run, which is
# all an admission webhook's tests need.
#
#   tests/cluster/run.sh up       start (or keep) everything; last stdout line: export KUBECONFIG=...
#   tests/cluster/run.sh down     stop every process it started (by recorded PID); safe twice
#   tests/cluster/run.sh status   what runs, on which ports, and whether it is ready
#   tests/cluster/run.sh stop NAME          stop one component (the fault tests' outages)
#   tests/cluster/run.sh start kube-apiserver   bring a stopped API server back, same state
#
# State (certificates, etcd data, logs, PIDs, ports, kubeconfig) lives in
# ${WI_CLUSTER_DIR:-<repo>/.cluster}. Progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${WI_CLUSTER_DIR:-$ROOT/.cluster}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
WEBHOOK_BIN="$ROOT/target/debug/wi-webhook"
TENANT_ID=00000000-0000-0000-0000-000000000000
SERVICE_CIDR=10.0.0.0/24
# Components in start order; `down` stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager wi-webhook)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

# A PID is ours only while it still runs the binary we started (guards against PID reuse
# after a reboot or a long pause).
alive() {
  local pid bin
  pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  bin=$(cat "$STATE/$1.bin" 2>/dev/null) || return 1
  [ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 1p)" = "$bin" ]
}

stop() {
  local name=$1 pid i
  if alive "$name"; then
    pid=$(pid_of "$name")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do alive "$name" || break; sleep 0.2; done
    if alive "$name"; then
      log "$name did not exit after TERM; KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 25); do alive "$name" || break; sleep 0.2; done
    fi
  fi
  rm -f "$STATE/$name.pid" "$STATE/$name.bin"
}

cmd_down() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[$i]}"; done
  log "down (logs kept in $STATE)"
}

# The last lines of a component's log, on stderr.
tail_log() {
  log "---- last lines of $STATE/$1.log ----"
  tail -n 40 "$STATE/$1.log" >&2 2>/dev/null || true
  log "---- end of $1.log ----"
}

# start NAME BINARY ARGS...: detached (own session, so a Ctrl-C of the caller does not take
# the cluster with it; `down` is the way to stop it), output to NAME.log.
start() {
  local name=$1 bin=$2; shift 2
  log "starting $name"
  setsid "$bin" "$@" </dev/null >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  echo "$bin" >"$STATE/$name.bin"
}

# wait_until NAME SECONDS CMD...: poll CMD until it succeeds; fail early if NAME died.
wait_until() {
  local name=$1 timeout=$2 deadline; shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then tail_log "$name"; die "$name exited (see $STATE/$name.log)"; fi
    if ((SECONDS >= deadline)); then tail_log "$name"; die "$name not ready after ${timeout}s"; fi
    sleep 0.3
  done
}

# N free TCP ports on 127.0.0.1, all bound at once so they differ.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

apiserver_ready() {
  [ "$(curl -sf --max-time 2 --cacert "$STATE/pki/cp/ca.crt" "https://127.0.0.1:$APISERVER_PORT/readyz")" = ok ]
}
webhook_ready() { curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$WEBHOOK_METRICS_PORT/readyz"; }
kcm_ready() {
  [ "$(curl -sf --max-time 2 -k "https://127.0.0.1:$KCM_PORT/healthz")" = ok ]
}
default_sa_exists() { kubectl --kubeconfig "$STATE/kubeconfig" -n default get serviceaccount default; }

want_webhook() { [ "${WI_SKIP_WEBHOOK:-}" != 1 ]; }

# Control plane healthy: every process alive and answering.
control_plane_healthy() {
  [ -f "$STATE/cluster.env" ] || return 1
  # shellcheck source=/dev/null
  . "$STATE/cluster.env"
  alive etcd && alive kube-apiserver && alive kube-controller-manager && apiserver_ready
}

webhook_healthy() {
  alive wi-webhook && webhook_ready &&
    [ "$(cat "$STATE/wi-webhook.sha256" 2>/dev/null)" = "$(sha256sum <"$WEBHOOK_BIN")" ]
}

# A kubeconfig for the admin client certificate (O=system:masters), certificates inline so
# it works from any directory and for any client library.
write_kubeconfig() {
  local pki=$STATE/pki/cp
  cat >"$STATE/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: wi-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$pki/client.crt")
    client-key-data: $(base64 -w0 <"$pki/client.key")
contexts:
- name: wi-e2e
  context: {cluster: wi-e2e, user: admin}
current-context: wi-e2e
EOF
  chmod 600 "$STATE/kubeconfig.tmp"
  mv "$STATE/kubeconfig.tmp" "$STATE/kubeconfig"
}

# The API server, on the ports and with the certificates of cluster.env and pki/ (also how
# `start kube-apiserver` brings it back after `stop kube-apiserver`).
start_apiserver() {
  local pki=$STATE/pki/cp
  # --allow-privileged: the injected azwi-proxy-init container is privileged.
  # --endpoint-reconciler-type=none: the `kubernetes` Service cannot point at a loopback IP.
  # --requestheader-*: published for the controller-manager's delegated authentication (its
  # /healthz), which otherwise logs errors about a missing CA bundle.
  # --feature-gates=HostnameOverride=true: enables the alpha pod field spec.hostnameOverride
  # (new in 1.34), which the webhook's Kubernetes types (1.33) do not know; the end-to-end
  # tests prove such fields survive the mutation.
  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$pki/tls.crt" --tls-private-key-file="$pki/tls.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --feature-gates=HostnameOverride=true \
    --profiling=false -v=1
  wait_until kube-apiserver 90 apiserver_ready
}

start_control_plane() {
  cmd_down 2>/dev/null
  # Only what this script creates: WI_CLUSTER_DIR may point at a directory holding more.
  rm -rf "$STATE/pki" "$STATE/etcd-data" "$STATE"/*.log "$STATE/cluster.env" \
    "$STATE/kubeconfig" "$STATE/wi-webhook.sha256"

  local ports
  read -r -a ports <<<"$(free_ports 6)"
  cat >"$STATE/cluster.env" <<EOF
ETCD_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
APISERVER_PORT=${ports[2]}
KCM_PORT=${ports[3]}
WEBHOOK_PORT=${ports[4]}
WEBHOOK_METRICS_PORT=${ports[5]}
KUBECTL=$BIN/kubectl
EOF
  # shellcheck source=/dev/null
  . "$STATE/cluster.env"

  # Certificates from the project's own code: the control plane's CA, the API server's
  # serving certificate (its in-cluster names too), the admin client certificate and the
  # service-account token signing key.
  log "generating certificates"
  "$WEBHOOK_BIN" certs generate --out "$STATE/pki/cp" \
    --dns localhost --dns kubernetes --dns kubernetes.default --dns kubernetes.default.svc \
    --dns kubernetes.default.svc.cluster.local --ip 127.0.0.1 --ip 10.0.0.1 \
    --client-cn admin --client-org system:masters --sa-key >/dev/null

  start etcd "$BIN/etcd" --name wi-e2e --data-dir "$STATE/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "wi-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_until etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver
  write_kubeconfig

  local pki=$STATE/pki/cp
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" \
    --authorization-kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-name=wi-e2e --profiling=false -v=1
  # The `default` ServiceAccount proves the controller-manager reaches the API and works.
  wait_until kube-controller-manager 90 default_sa_exists
  wait_until kube-controller-manager 30 kcm_ready
}

start_webhook() {
  stop wi-webhook
  # The webhook is ready only once it has listed AgentPools: the CRD comes first, from the
  # committed manifest (the one `kubectl apply -k manifests/` installs).
  log "installing the AgentPool CRD"
  kubectl --kubeconfig "$STATE/kubeconfig" apply -f "$ROOT/manifests/base/crd-agentpools.yaml" >&2
  kubectl --kubeconfig "$STATE/kubeconfig" wait --for=condition=Established --timeout=60s \
    crd/agentpools.wi-webhook.dev >&2
  log "generating the webhook's certificates"
  local ca_bundle
  ca_bundle=$("$WEBHOOK_BIN" certs generate --out "$STATE/pki/webhook" --dns localhost --ip 127.0.0.1)
  # Plain logs in the log file (tracing colours them by default).
  NO_COLOR=1 start wi-webhook "$WEBHOOK_BIN" serve \
    --listen "127.0.0.1:$WEBHOOK_PORT" --metrics-listen "127.0.0.1:$WEBHOOK_METRICS_PORT" \
    --tls-cert-file "$STATE/pki/webhook/tls.crt" --tls-key-file "$STATE/pki/webhook/tls.key" \
    --tenant-id "$TENANT_ID" --kubeconfig "$STATE/kubeconfig"
  sha256sum <"$WEBHOOK_BIN" >"$STATE/wi-webhook.sha256"
  wait_until wi-webhook 60 webhook_ready

  # The configurations the webhook expects, printed by the webhook itself (as the committed
  # manifests are), pointed at the local listener.
  log "registering the wi-webhook mutating and validating webhook configurations"
  "$WEBHOOK_BIN" webhook-config --url "https://127.0.0.1:$WEBHOOK_PORT" --ca-bundle "$ca_bundle" |
    kubectl --kubeconfig "$STATE/kubeconfig" apply -f - >&2
}

cmd_up() {
  local t0=$SECONDS
  BIN=$("$ROOT/tests/cluster/build.sh" | tail -n 1)
  [ -x "$BIN/kube-apiserver" ] || die "build.sh did not produce $BIN/kube-apiserver"
  export PATH="$BIN:$PATH"

  log "building the webhook (cargo build -p wi-webhook)"
  (cd "$ROOT" && cargo build -p wi-webhook) >&2 || die "cargo build -p wi-webhook failed"

  # From here on, a failure leaves nothing running (logs are kept for the post-mortem).
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed; stopping the cluster"; cmd_down; fi' EXIT

  if control_plane_healthy; then
    log "control plane already up (API server on 127.0.0.1:$APISERVER_PORT)"
  else
    start_control_plane
  fi
  if want_webhook; then
    # Keep a healthy webhook only if it is the binary just built from the working tree.
    if webhook_healthy; then
      log "webhook already up and current"
    else
      start_webhook
    fi
  else
    log "WI_SKIP_WEBHOOK=1: no webhook (development of the control plane only)"
    stop wi-webhook
    kubectl --kubeconfig "$STATE/kubeconfig" delete mutatingwebhookconfiguration,validatingwebhookconfiguration wi-webhook \
      --ignore-not-found >&2
  fi
  trap - EXIT
  log "up in $((SECONDS - t0)) s; state in $STATE"
  echo "export KUBECONFIG=$STATE/kubeconfig"
}

# Exit 0 only when every process runs and answers.
cmd_status() {
  local name pid r rc=0 any=0
  if [ -f "$STATE/cluster.env" ]; then
    # shellcheck source=/dev/null
    . "$STATE/cluster.env"
  fi
  for name in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$name")
    if alive "$name"; then
      echo "$name: running (pid $pid)"
      any=1
    else
      echo "$name: not running"
      rc=1
    fi
  done
  if [ $any = 0 ]; then
    echo "stopped (state and logs in $STATE)"
    return 1
  fi
  if apiserver_ready; then r=ready; else r="NOT ready"; rc=1; fi
  echo "kube-apiserver: https://127.0.0.1:$APISERVER_PORT ($r), etcd http://127.0.0.1:$ETCD_PORT"
  if kcm_ready; then r=healthy; else r="NOT healthy"; rc=1; fi
  echo "kube-controller-manager: https://127.0.0.1:$KCM_PORT/healthz ($r)"
  if webhook_ready; then r=ready; else r="NOT ready"; rc=1; fi
  echo "wi-webhook: https://127.0.0.1:$WEBHOOK_PORT/mutate, http://127.0.0.1:$WEBHOOK_METRICS_PORT/metrics ($r)"
  echo "export KUBECONFIG=$STATE/kubeconfig"
  return $rc
}

# stop NAME: one component, as `down` stops it; the others keep running.
cmd_stop() {
  [[ " ${COMPONENTS[*]} " == *" ${1:-} "* ]] || die "stop: not a component: ${1:-} (${COMPONENTS[*]})"
  stop "$1"
}

# start kube-apiserver: after `stop kube-apiserver`, the same server again (ports, flags,
# certificates and etcd data of the running cluster), waiting until it is ready.
cmd_start() {
  [ "${1:-}" = kube-apiserver ] || die "start: only kube-apiserver can be started alone"
  [ -f "$STATE/cluster.env" ] || die "no cluster in $STATE: run up first"
  # shellcheck source=/dev/null
  . "$STATE/cluster.env"
  BIN=$(dirname "$KUBECTL")
  alive etcd || die "etcd is not running: run up"
  alive kube-apiserver && { log "kube-apiserver already running"; return; }
  start_apiserver
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop) cmd_stop "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  *)
    echo "usage: $0 up|down|status|stop NAME|start kube-apiserver" >&2
    exit 2
    ;;
esac
