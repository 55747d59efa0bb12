#!/usr/bin/env bash
# bench/train: one training step (forward, backward, global-norm clipping at 1.0, AdamW) of a
# Llama-style model, isoflop (`isoflop bench train`, tch/libtorch, flat-buffer AdamW) against
# the same model and step in plain PyTorch (bench/train/torch_train.py), eager and
# torch.compile (skipped, with the reason, where it fails). Both sides train on the same
# random tokens (splitmix64(seed) mod vocab_size), after the same number of warm-up steps,
# with libtorch's default thread count (all cores) unless THREADS is set.
# Prints the JSON line of each, and the throughput ratios (ours / eager, ours / compile) last:
# of the mean throughput over all timed steps (the headline), then (CPU) of the throughput at
# the median step time, which a busy machine disturbs less.
#
# Usage: bash bench/train/run.sh [MODEL.json] [BATCH] [STEPS] [DEVICE]
#        (defaults: bench/train/model-cpu.json, 8, 20, cpu; BF16=1 passes --bf16 to both sides:
#         bf16 mixed precision with fp32 master weights, meant for CUDA, runs on CPU too;
#         THREADS=N pins the intra-op threads of both sides; ISOFLOP_BIN=PATH runs that binary
#         instead of building one, PYTHON=PATH runs the PyTorch side with that interpreter,
#         as on a GPU machine without cargo or the venv: see bench/gpu/run.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
model="${1:-bench/train/model-cpu.json}"
batch="${2:-8}"
steps="${3:-20}"
device="${4:-cpu}"
extra=()
[ "${BF16:-0}" = 1 ] && extra+=(--bf16)
[ -n "${THREADS:-}" ] && extra+=(--threads "$THREADS")
bin="${ISOFLOP_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --release --locked -q -p isoflop-cli
    bin="$CARGO_TARGET_DIR/release/isoflop"
fi
python="${PYTHON:-$ISOFLOP_VENV/bin/python}"
echo "bench/train: $model batch $batch steps $steps device $device, $(nproc) cores"
ours=$("$bin" bench train --model-json "$model" --batch "$batch" --steps "$steps" \
    --device "$device" "${extra[@]}")
echo "isoflop:       $ours"
# Both sides measure MFU against the peak isoflop looked up for this device and precision.
peak=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("peak_flops", 0))' "$ours")
[ "$peak" != 0 ] && [ "$peak" != 0.0 ] && extra+=(--peak-flops "$peak")
torch_out=$("$python" bench/train/torch_train.py --model-json "$model" --batch "$batch" \
    --steps "$steps" --device "$device" "${extra[@]}")
eager=$(grep '"torch-eager"' <<<"$torch_out")
compiled=$(grep '"torch-compile"' <<<"$torch_out")
echo "torch eager:   $eager"
echo "torch compile: $compiled"
python3 - "$ours" "$eager" "$compiled" <<'PY'
import json, sys
o, e, c = (json.loads(a) for a in sys.argv[1:4])
ours = o["tokens_per_second"]
print(f"tokens/s: isoflop {ours:.0f}, torch eager {e['tokens_per_second']:.0f}", end="")
print(f", torch compile {c['tokens_per_second']:.0f}" if "tokens_per_second" in c else f", torch compile skipped ({c.get('error')})")
line = f"ratio: isoflop / torch eager = {ours / e['tokens_per_second']:.3f}x"
if "tokens_per_second" in c:
    line += f", isoflop / torch compile = {ours / c['tokens_per_second']:.3f}x"
print(line)
med = lambda r: r.get("tokens_per_second_median")
if med(o) and med(e):
    line = f"ratio at the median step time: isoflop / torch eager = {med(o) / med(e):.3f}x"
    if med(c):
        line += f", isoflop / torch compile = {med(o) / med(c):.3f}x"
    print(line)
PY
