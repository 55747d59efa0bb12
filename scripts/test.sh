#!/usr/bin/env bash
# README command 2: lints and the whole test suite (unit, store, end-to-end with real training).
# Expects scripts/setup.sh to have run (it is idempotent; run it first on a fresh machine).
# Every test binary runs even when an earlier one fails (--no-fail-fast), so one failure never
# hides another; each phase prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
phase() {
    local name=$1 t
    shift
    t=$(date +%s)
    "$@"
    echo "test: $name took $(( $(date +%s) - t )) s"
}
# The Kubernetes end-to-end tests run a real control plane built from Go modules: once per
# version into $HOME/.cache (a few minutes on a fresh machine, nothing when warm).
phase "control plane" bash -c 'bash scripts/controlplane.sh >/dev/null'
# helm v4 for the chart's tests, built from its Go module once per version (about 4 minutes
# on a fresh machine, nothing when warm).
phase "helm" bash -c 'bash scripts/helm.sh >/dev/null'
phase "cargo fmt" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --release --locked --workspace --all-targets -- -D warnings
# The chart's checks print `chart: N passed, N failed`; a failure here does not stop the suite.
chart_checks() {
    local log rc=0
    log=$(mktemp)
    cargo test --release --locked -p isoflop-cli --test chart -- --nocapture >"$log" 2>&1 || rc=$?
    grep -E '^chart: ' "$log" || true
    [ "$rc" -eq 0 ] || tail -n 60 "$log"
    rm -f "$log"
    return "$rc"
}
chart=0
phase "chart" chart_checks || chart=1
# The coordinator image without a registry: Debian's packages, the binary built without the
# trainer, an OCI archive; then `isoflop --version` inside it (deploy/images/).
coordinator_image() {
    local archive
    archive=$(bash deploy/images/build-offline.sh coordinator "$CARGO_TARGET_DIR/images" | tail -n 1)
    bash deploy/images/check-offline.sh "$archive"
}
phase "coordinator image" coordinator_image
# The web page's vendored chart library equals its locked npm package.
web=0
phase "web assets" bash scripts/web-assets.sh check || web=1
# The page and its API against a real daemon, then in Debian's chromium (tests/web.rs); prints
# the browser's figures and where the screenshots are (ci-output/browser/).
web_checks() {
    local log rc=0
    log=$(mktemp)
    cargo test --release --locked -p isoflop-cli --test web -- --nocapture --test-threads 1 >"$log" 2>&1 || rc=$?
    grep -E '^(browser test|screenshot|test result)' "$log" || true
    [ "$rc" -eq 0 ] || tail -n 60 "$log"
    rm -f "$log"
    return "$rc"
}
phase "web page" web_checks || web=1
phase "cargo test" cargo test --release --locked --workspace --no-fail-fast
[ "$web" -eq 0 ] || exit 1
exit "$chart"
