#!/usr/bin/env bash
# bench/fit: isoflop's 4,500-start parametric fit (Chinchilla approach 3: log-sum-exp form,
# summed Huber loss with delta 1e-3, L-BFGS from the standard grid) against the same procedure
# in SciPy (bench/fit/scipy_fit.py: L-BFGS-B, same grid, same two stages, same data), both on
# all cores. Prints both times, both objectives, and the speed ratio last.
#
# Usage: bash bench/fit/run.sh [FILE.csv]   (columns params, tokens, loss; default: the 182
#        C4 runs of Muennighoff et al. 2023 from ../shared/data/reference)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
csv="${1:-}"
if [ -z "$csv" ]; then
    src=../shared/data/reference/muennighoff2023_datablations_c4_182.csv
    [ -f "$src" ] || { echo "bench/fit: $src not found; pass a CSV" >&2; exit 2; }
    csv="$tmp/muennighoff.csv"
    python3 - "$src" "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
with open(sys.argv[2], "w") as f:
    f.write("run,params,tokens,loss\n")
    for r in rows:
        f.write(f"{r['run_name']},{r['params_N']},{r['tokens_D']},{r['final_val_loss']}\n")
PY
fi
"$ISOFLOP_VENV/bin/python" -c "import scipy, numpy" 2>/dev/null || "$ISOFLOP_VENV/bin/pip" install -q scipy numpy
cargo build --release --locked -q -p isoflop-cli
cores=$(nproc)
echo "bench/fit: $(tail -n +2 "$csv" | wc -l) points, 4500 starts, $cores cores"
ours=$("$CARGO_TARGET_DIR/release/isoflop" bench fit --from-csv "$csv" --threads "$cores")
echo "isoflop: $ours"
theirs=$("$ISOFLOP_VENV/bin/python" bench/fit/scipy_fit.py "$csv" --workers "$cores")
echo "scipy:   $theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
o, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rel = abs(o["objective"] - s["objective"]) / abs(s["objective"])
print(f"isoflop {o['seconds']:.3f} s, objective {o['objective']:.12e}, {o['starts_at_best']} starts at the best")
print(f"scipy   {s['seconds']:.3f} s, objective {s['objective']:.12e}, {s['starts_at_best']} starts at the best")
print(f"objectives differ by {rel:.2e} (relative)")
print(f"ratio (scipy time / isoflop time): {s['seconds'] / o['seconds']:.1f}x")
PY
