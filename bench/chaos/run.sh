#!/usr/bin/env bash
# bench/chaos: the chaos drills of tests/chaos.rs at length. Each of the three drills
# (`isoflop run` on SQLite, `isoflop serve` on SQLite, `isoflop serve` on PostgreSQL: a real
# server the test starts) SIGKILLs its coordinator KILLS times at random moments of sweeps of
# real training (6 runs and their evaluation jobs each, a checkpoint every 10 steps; when a
# sweep finishes mid-drill the next one is submitted), SIGKILLs a worker at about 30% of those
# moments and truncates the newest checkpoint of an unfinished run at every fourth, restarts
# it each time, and runs the last sweep to its end; then it audits the store and prints its
# row: runs lost, evaluations duplicated, moments with two live workers of one run, stale
# writes accepted, attempts left active, illegal state edges (all promised 0, which the test
# asserts), damaged checkpoints set aside, steps retrained beyond one checkpoint interval, the
# slowest restart of serve to listening, and the orphaned workers stopped.
# A fourth drill (tests/k8s_e2e.rs, chaos_on_kubernetes) kills `isoflop run` driving Jobs on
# the test control plane (scripts/controlplane.sh), with a pod OOMKilled and a node lost.
# The drills run one after another, so that each has the machine's cores to itself.
#
# Usage: bash bench/chaos/run.sh [KILLS]   (default 50 per drill: 200 coordinator kills)
#        ISOFLOP_CHAOS_SEED=N picks other random moments.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
kills="${1:-50}"
out="$(mktemp)"
echo "bench/chaos: $kills coordinator kills per drill, 4 drills, $(nproc) cores, seed ${ISOFLOP_CHAOS_SEED:-13}"
bash scripts/controlplane.sh >/dev/null
status=0
ISOFLOP_CHAOS_KILLS="$kills" ISOFLOP_CHAOS_OUT="$out" \
    cargo test --release --locked -q -p isoflop-cli --test chaos -- --test-threads 1 --nocapture >"$out.log" 2>&1 || status=$?
ISOFLOP_CHAOS_KILLS="$kills" ISOFLOP_CHAOS_OUT="$out" \
    cargo test --release --locked -q -p isoflop-cli --test k8s_e2e chaos_on_kubernetes -- --nocapture >>"$out.log" 2>&1 || status=$?
grep -E '^(test |failures|thread|the promise|kill [0-9]+:|OOMKilled:|node lost:)' "$out.log" || true
echo
cat "$out"
total=$(awk 'NR > 1 { n += $4 } END { print n + 0 }' "$out")
drills=$(($(wc -l <"$out") - 1))
if [ "$status" -eq 0 ] && [ "$drills" -eq 4 ]; then
    echo "total coordinator kills: $total in $drills drills; promised zeros all 0"
else
    echo "total coordinator kills: $total in $drills drills; BROKEN (cargo test exit $status; log $out.log)"
    exit 1
fi
