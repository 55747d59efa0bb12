#!/usr/bin/env bash
# README command 2: lints and the whole test suite (unit, store, end-to-end with real training).
# Expects scripts/setup.sh to have run (it is idempotent; run it first on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# The Kubernetes end-to-end tests run a real control plane built from Go modules: once per
# version into $HOME/.cache (a few minutes on a fresh machine, nothing when warm).
t=$(date +%s)
bash scripts/controlplane.sh >/dev/null
echo "test: control plane ready in $(( $(date +%s) - t )) s"
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace --no-fail-fast
