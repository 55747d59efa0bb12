#!/usr/bin/env bash
# The web page's vendored chart library (crates/isoflop-server/assets/vendor) against the
# package its package.json and lockfile pin: `check` (CI) installs the locked package into a
# scratch directory and fails when a vendored file differs; `update` copies the files in.
# The files are embedded in the binary, so `cargo build` needs neither npm nor this script.
set -euo pipefail
mode="${1:-check}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="$root/crates/isoflop-server/assets"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp "$assets/package.json" "$assets/package-lock.json" "$scratch/"
(cd "$scratch" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$HOME/.cache/isoflop/npm" >/dev/null)
pkg="$scratch/node_modules/uplot"
version="$(node -p "require('$pkg/package.json').version")"
status=0
for pair in "dist/uPlot.iife.min.js:uPlot.iife.min.js" "dist/uPlot.min.css:uPlot.min.css" "LICENSE:uPlot.LICENSE"; do
  from="$pkg/${pair%%:*}"
  to="$assets/vendor/${pair##*:}"
  if [ "$mode" = update ]; then
    cp "$from" "$to"
  elif ! cmp -s "$from" "$to"; then
    echo "web assets: vendor/${pair##*:} differs from uplot $version's ${pair%%:*} (scripts/web-assets.sh update)" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "web assets: vendor/ equals uplot $version from the lockfile"
exit "$status"
