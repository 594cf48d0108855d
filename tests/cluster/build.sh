#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager, kubectl, etcd) and
# helm (the chart's tests) from source through the Go module proxy, once, into a cache outside
# the clone keyed by version.
#
#   tests/cluster/build.sh          build what is missing, print the bin directory last
#
# k8s.io/kubernetes replaces every staging module with ./staging/..., so `go install
# k8s.io/kubernetes/cmd/...@v1.34.x` refuses. We build from a small wrapper module that
# requires k8s.io/kubernetes and replaces each staging module with the matching published
# v0.34.x; the list is read from that version's own go.mod, not typed by hand.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
CACHE_ROOT="${WI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wi-webhook}"
BIN_DIR="$CACHE_ROOT/controlplane-$KUBE_VERSION-etcd-$ETCD_VERSION/bin"
WORK="$CACHE_ROOT/controlplane-$KUBE_VERSION-etcd-$ETCD_VERSION/src"
HELM_DIR="$CACHE_ROOT/helm-$HELM_VERSION"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need() { [ -x "$BIN_DIR/$1" ] || return 0; return 1; }

mkdir -p "$BIN_DIR" "$WORK"
# One build at a time per cache: a second caller (another clone, a parallel `run.sh up`)
# waits here and then finds the binaries built.
exec 9>"$CACHE_ROOT/build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_ROOT/build.lock; waiting for it"
  flock 9
fi
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

# Progress while `go build` is silent for minutes: a line every 30 s with what is done.
progress() {
  local what=$1 start=$SECONDS
  while sleep 30; do log "$what: still building ($((SECONDS - start)) s)"; done
}

build_kube() {
  local bins=() b
  for b in kube-apiserver kube-controller-manager kubectl; do need "$b" && bins+=("$b"); done
  [ ${#bins[@]} -eq 0 ] && return 0
  local dir="$WORK/kubernetes" minor major
  mkdir -p "$dir"
  log "resolving k8s.io/kubernetes@$KUBE_VERSION"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -f "$gomod" ] || { log "cannot read go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  local staging_version="v0.${KUBE_VERSION#v1.}"
  {
    echo "module wi-webhook.test/controlplane"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    # every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.34.N`
    sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "downloading modules for k8s.io/kubernetes@$KUBE_VERSION (staging modules at $staging_version)"
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  major=1; minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${bins[@]}"; do
    log "building $b $KUBE_VERSION (several minutes on 2 cores)"
    local t0=$SECONDS
    progress "$b" & local pp=$!
    if ! (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "k8s.io/kubernetes/cmd/$b"); then
      kill $pp 2>/dev/null; log "FAILED to build $b"; exit 1
    fi
    kill $pp 2>/dev/null || true
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    log "built $b in $((SECONDS - t0)) s"
  done
}

build_etcd() {
  need etcd || return 0
  local dir="$WORK/etcd"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module wi-webhook.test/etcd

go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1/')

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  log "downloading modules for etcd $ETCD_VERSION"
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  log "building etcd $ETCD_VERSION"
  local t0=$SECONDS
  progress etcd & local pp=$!
  if ! (cd "$dir" && go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3); then
    kill $pp 2>/dev/null; log "FAILED to build etcd"; exit 1
  fi
  kill $pp 2>/dev/null || true
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  log "built etcd in $((SECONDS - t0)) s"
}

# helm, in a directory of its own version (a new control plane does not rebuild it), linked
# into the bin directory so the tests find it next to kubectl.
build_helm() {
  if [ ! -x "$HELM_DIR/bin/helm" ]; then
    local dir="$HELM_DIR/src"
    mkdir -p "$dir" "$HELM_DIR/bin"
    cat > "$dir/go.mod" <<GOMOD
module wi-webhook.test/helm

go $(go env GOVERSION | sed 's/^go//; s/\([0-9]*\.[0-9]*\).*/\1/')

require helm.sh/helm/v3 $HELM_VERSION
GOMOD
    cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
    log "downloading modules for helm $HELM_VERSION"
    (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
    log "building helm $HELM_VERSION"
    local t0=$SECONDS
    progress helm & local pp=$!
    if ! (cd "$dir" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" -o "$HELM_DIR/bin/helm.tmp" helm.sh/helm/v3/cmd/helm); then
      kill $pp 2>/dev/null; log "FAILED to build helm"; exit 1
    fi
    kill $pp 2>/dev/null || true
    mv "$HELM_DIR/bin/helm.tmp" "$HELM_DIR/bin/helm"
    log "built helm in $((SECONDS - t0)) s"
  fi
  ln -sfn "$HELM_DIR/bin/helm" "$BIN_DIR/helm"
}

build_etcd
build_kube
build_helm
"$BIN_DIR/kube-apiserver" --version >&2
"$BIN_DIR/helm" version --short >&2
"$BIN_DIR/etcd" --version | sed -n 1p >&2
echo "$BIN_DIR"
