#!/usr/bin/env bash
# bench/web: the web page of a 500-run sweep under live load. bench/coordinator's load
# generator serves the sweep (SQLite) with the page on a loopback port and plays WORKERS
# workers reporting once a second; bench/web/measure.mjs measures the page in Debian's
# chromium meanwhile: the server's answer times and sizes, time to first render and to live,
# and what the stream's updates cost the page. The ratio last: a full reload against one live
# update (the peer: reloading the page, what a page without a stream makes its user do).
#
# Usage: bash bench/web/run.sh [RUNS [WORKERS [SECONDS]]]   (default 500 100 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
runs="${1:-500}"
workers="${2:-100}"
seconds="${3:-10}"
cargo build --release --locked -q -p isoflop-cli -p isoflop-bench-coordinator
target="${CARGO_TARGET_DIR:-target}/release"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$target/isoflop-loadgen" --isoflop "$target/isoflop" --workers "$workers" --runs "$runs" --seconds $((seconds + 90)) \
    --backends sqlite --http-port "$port" >"$log" 2>&1 &
gen=$!
# The generator's own `isoflop serve` first: killing the generator alone would orphan it.
trap 'pkill -P $gen 2>/dev/null || true; kill $gen 2>/dev/null || true; rm -f "$log"' EXIT
# Until every simulated worker is running.
for _ in $(seq 1 600); do
    running=$(curl -s "http://127.0.0.1:$port/api/v1/sweeps/load" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["states"].get("running", 0))' 2>/dev/null || echo 0)
    [ "$running" -ge "$workers" ] && break
    sleep 0.5
done
echo "bench/web: $runs runs, $running running with a simulated worker each reporting once a second, $(nproc) cores"
node bench/web/measure.mjs "http://127.0.0.1:$port" load "$seconds"
