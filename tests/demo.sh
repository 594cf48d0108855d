#!/usr/bin/env bash
# The main job on its embedded default: a local real control plane (etcd, kube-apiserver,
# kube-controller-manager) with wi-webhook registered, the seed's agent pool applied as
# written, and the pod the ReplicaSet controller created shown as the API server stored it,
# mutated by the webhook. The control plane stays up afterwards for exploring with kubectl;
# `tests/cluster/run.sh down` stops it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export_line=$(tests/cluster/run.sh up | tail -n 1)
eval "$export_line"
# shellcheck source=/dev/null
. "${WI_CLUSTER_DIR:-$ROOT/.cluster}/cluster.env"
k() { "$KUBECTL" "$@"; }

echo
echo "==> kubectl apply -f examples/seed-agent.yaml (the seed's namespace, ServiceAccount, Secret, Deployment)"
k apply -f examples/seed-agent.yaml
ns=ado-agents-omtest1

echo
echo "==> waiting for the ReplicaSet controller to create the agent pod"
for _ in $(seq 1 120); do
  pod=$(k -n "$ns" get pods -l app=ado-agent-omtest1 -o name 2>/dev/null | sed -n 1p)
  [ -n "$pod" ] && break
  sleep 0.5
done
if [ -z "${pod:-}" ]; then
  echo "no pod after 60 s; events:" >&2
  k -n "$ns" get events >&2
  exit 1
fi

echo
echo "==> kubectl -n $ns describe $pod   (no kubelet here: the pod is admitted and stored, never run)"
k -n "$ns" describe "$pod"

echo
echo "==> what the webhook added (the Deployment's template had one container and one volume)"
k -n "$ns" get "$pod" -o go-template='{{range .spec.initContainers}}init container {{.name}} {{if .restartPolicy}}(native sidecar, restartPolicy {{.restartPolicy}}){{end}}
{{end}}{{range .spec.containers}}container {{.name}}: env {{range .env}}{{.name}} {{end}}
{{end}}{{range .spec.volumes}}volume {{.name}}
{{end}}'

echo
echo "The control plane is still running: $export_line"
echo "Stop it with: tests/cluster/run.sh down"
