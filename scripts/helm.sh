#!/usr/bin/env bash
# Builds helm (v4, from its Go module) once per version into
#   $HOME/.cache/isoflop/tools/helm-<version>/helm
# and prints that path. The chart's tests (tests/chart.rs) and its install test run it. A warm
# cache costs nothing; a fresh machine builds it in about 5 minutes on 2 cores.
set -euo pipefail
version=v4.3.2
out="${ISOFLOP_TOOLS_CACHE:-$HOME/.cache/isoflop/tools}/helm-$version"
if [ -x "$out/helm" ]; then echo "$out/helm"; exit 0; fi
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [ -x "$out/helm" ]; then echo "$out/helm"; exit 0; fi
command -v go >/dev/null || { echo "helm: Go is required to build helm" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
start=$(date +%s)
CGO_ENABLED=0 GOBIN="$out.tmp" go install -trimpath -ldflags=-s "helm.sh/helm/v4/cmd/helm@$version" >&2
rm -rf "$out" && mv "$out.tmp" "$out"
echo "helm: built $version in $(( $(date +%s) - start )) s" >&2
echo "$out/helm"
