#!/usr/bin/env bash
# Builds (once) the binaries of the local control plane used by the operator tests and prints
# the directory holding them:
#   kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl                  built from the k8s.io/kubernetes Go module
#   helm                                     built from helm.sh/helm/v3
#   etcd                                     taken from the crates.io package etcd-bin-vendored-linux-amd64
#
# Everything is cached outside the checkout, keyed by version:
#   ${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}/<name>-<version>/
# A second run with the same versions is a no-op. Builds are niced and run one package at a
# time (GO_BUILD_JOBS=N to change that). Measured on the 2-core machine: cold (empty Go module
# and build caches) 13-20 min, mostly kube-apiserver/kube-controller-manager; warm: instant.
#
# Usage: e2e/build-control-plane.sh            # build what is missing, print the bin dir
#        e2e/build-control-plane.sh --print    # only print the bin dir (exit 1 if incomplete)
set -euo pipefail

KUBE_VERSION=1.36.3     # k8s.io/kubernetes; staging modules at v0.36.3 (e2e/tools/kube/go.mod)
HELM_VERSION=3.22.0     # helm.sh/helm/v3 (e2e/tools/helm/go.mod)
ETCD_VERSION=3.7.2      # crates.io etcd-bin-vendored-linux-amd64

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${ROOMCAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast}"
kube_dir="$cache/kube-$KUBE_VERSION"
helm_dir="$cache/helm-$HELM_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
bin_dir="$cache/bin-kube-$KUBE_VERSION-helm-$HELM_VERSION-etcd-$ETCD_VERSION"

# Each binary is cached on its own under kube-<version>/: adding one to this list builds only
# that one (the others, already cached, are reused).
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { echo "[build-control-plane] $*" >&2; }

complete() {
  local b
  for b in "${kube_bins[@]}"; do [[ -x "$kube_dir/$b" ]] || return 1; done
  [[ -x "$helm_dir/helm" && -x "$etcd_dir/etcd" ]]
}

link_bin_dir() {
  mkdir -p "$bin_dir"
  local b
  for b in "${kube_bins[@]}"; do ln -sfn "$kube_dir/$b" "$bin_dir/$b"; done
  ln -sfn "$helm_dir/helm" "$bin_dir/helm"
  ln -sfn "$etcd_dir/etcd" "$bin_dir/etcd"
}

if [[ "${1:-}" == "--print" ]]; then
  complete || { log "control-plane binaries not built yet in $cache"; exit 1; }
  link_bin_dir
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { log "go is required (Go >= 1.26)"; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
# Packages compiled at once; 1 by default because the machines are shared and small.
jobs="${GO_BUILD_JOBS:-1}"
mkdir -p "$cache"

build_kube() {
  local missing=() b
  for b in "${kube_bins[@]}"; do [[ -x "$kube_dir/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "building ${missing[*]} v$KUBE_VERSION (slow on a cold cache)"
  local t0=$SECONDS tmp pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  mkdir -p "$kube_dir"
  tmp="$(mktemp -d "$cache/.kube-build.XXXXXX")"
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=${KUBE_VERSION%%.*}"
  ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION") -X $pkg.gitTreeState=clean"
  if [[ ${#pkgs[@]} -eq 1 ]]; then
    (cd "$here/tools/kube" && nice -n 19 go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$tmp/${missing[0]}" "${pkgs[@]}")
  else
    (cd "$here/tools/kube" && nice -n 19 go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  fi
  for b in "${missing[@]}"; do mv "$tmp/$b" "$kube_dir/$b"; done
  rm -rf "$tmp"
  log "${missing[*]} built in $((SECONDS - t0))s"
}

build_helm() {
  [[ -x "$helm_dir/helm" ]] && return 0
  log "building helm v$HELM_VERSION"
  local t0=$SECONDS tmp
  tmp="$(mktemp -d "$cache/.helm-build.XXXXXX")"
  (cd "$here/tools/helm" &&
    nice -n 19 go build -p "$jobs" -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
      -o "$tmp/helm" helm.sh/helm/v3/cmd/helm)
  rm -rf "$helm_dir" && mv "$tmp" "$helm_dir"
  log "helm built in $((SECONDS - t0))s"
}

fetch_etcd() {
  [[ -x "$etcd_dir/etcd" ]] && return 0
  log "fetching etcd v$ETCD_VERSION from crates.io (etcd-bin-vendored-linux-amd64)"
  local tmp manifest
  tmp="$(mktemp -d "$cache/.etcd-fetch.XXXXXX")"
  mkdir -p "$tmp/src"
  cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "etcd-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
etcd-bin-vendored-linux-amd64 = "=$ETCD_VERSION"
[workspace]
EOF
  : >"$tmp/src/lib.rs"
  (cd "$tmp" && cargo fetch --quiet)
  manifest="$(cd "$tmp" && cargo metadata --format-version 1 --quiet |
    python3 -c 'import json,sys
m=json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="etcd-bin-vendored-linux-amd64"))')"
  mkdir -p "$tmp/out"
  cp "$(dirname "$manifest")/bin/etcd" "$tmp/out/etcd"
  chmod +x "$tmp/out/etcd"
  rm -rf "$etcd_dir" && mv "$tmp/out" "$etcd_dir" && rm -rf "$tmp"
}

fetch_etcd
build_helm
build_kube
link_bin_dir
"$bin_dir/etcd" --version >&2 | head -1 || true
echo "$bin_dir"
