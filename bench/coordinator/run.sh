#!/usr/bin/env bash
# bench/coordinator: `isoflop serve` under load, on SQLite and on PostgreSQL (a real server the
# benchmark starts, as the tests do). The load generator (bench/coordinator/src/main.rs) serves
# a sweep of 10,000 runs through the external executor (attempts handed out through a spool
# directory), times `isoflop submit` and `isoflop status` of it, and plays 1,000 workers over
# the worker gRPC API, each reporting one progress point a second. It prints reports per
# second, p50 / p99 / max report latency, store transactions per second, the coordinator's
# CPU and peak memory, and the floor beside them: the same number of report transactions
# written straight to the same database by a minimal program. Ratios last.
#
# Usage: bash bench/coordinator/run.sh [WORKERS [RUNS [SECONDS]]]   (default 1000 10000 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
workers="${1:-1000}"
runs="${2:-10000}"
seconds="${3:-30}"
cargo build --release --locked -q -p isoflop-cli -p isoflop-bench-coordinator
target="${CARGO_TARGET_DIR:-target}/release"
echo "bench/coordinator: $workers workers, $runs runs, ${seconds} s window, $(nproc) cores"
"$target/isoflop-loadgen" --isoflop "$target/isoflop" --workers "$workers" --runs "$runs" --seconds "$seconds"
