#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# from the Go modules pinned in tests/controlplane/go.mod, once per version, into
#   $HOME/.cache/isoflop/controlplane/<kubernetes version>-<go.sum digest>/
# and prints that directory. A warm cache costs nothing; a fresh machine builds (~10 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/tests/controlplane"
version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "controlplane: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
digest=$(cat "$mod/go.mod" "$mod/go.sum" "$mod/cmd/etcd/main.go" | sha256sum | cut -c1-12)
out="${ISOFLOP_CONTROLPLANE_CACHE:-$HOME/.cache/isoflop/controlplane}/${version}-${digest}"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler)
ready=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || ready=0; done
if [ "$ready" = 1 ]; then echo "$out"; exit 0; fi
# One build at a time: a second caller waits for the first and then finds the binaries.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
ready=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || ready=0; done
if [ "$ready" = 1 ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "controlplane: Go is required to build the test control plane" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
start=$(date +%s)
(
  cd "$mod"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  go build -trimpath -ldflags=-s -o "$out.tmp/etcd" ./cmd/etcd
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    go build -trimpath -ldflags=-s -o "$out.tmp/$b" "k8s.io/kubernetes/cmd/$b"
  done
) >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "controlplane: built ${bins[*]} ${version} in $(( $(date +%s) - start )) s" >&2
echo "$out"
