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
phase "cargo fmt" cargo fmt --all -- --check
phase "cargo clippy" cargo clippy --release --locked --workspace --all-targets -- -D warnings
phase "cargo test" cargo test --release --locked --workspace --no-fail-fast
