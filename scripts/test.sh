#!/usr/bin/env bash
# README command 2: lints and the whole test suite (unit, store, end-to-end with real training).
# Expects scripts/setup.sh to have run (it is idempotent; run it first on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo test --release --locked --workspace
