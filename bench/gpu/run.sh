#!/usr/bin/env bash
# bench/gpu: what only a CUDA machine shows, as one command, for a machine with an NVIDIA GPU
# and PyTorch 2.11 (whose libtorch the binary runs on) but no Rust toolchain: build the binary
# elsewhere (`cargo build --release`, linked against torch==2.11.0's libtorch) and hand it over.
#
#   1. The device as the worker sees it (`isoflop worker --check-device`).
#   2. Training correctness on CUDA against the CPU: `isoflop bench train` of the small model
#      (bench/train/model-cpu.json) on both, same initial weights (drawn on the CPU from the
#      seed) and same tokens: the first loss must agree to 1e-4 (fp32) / 1e-2 (bf16) relative,
#      the loss after 23 AdamW steps to 2% / 5%.
#   3. MFU and tokens/s of a training step at GPT-2 small and medium shapes (model-124m.json,
#      model-350m.json: the same hidden, layers, heads and non-embedding parameters, 85M and
#      308M, with SwiGLU and untied embeddings) in bf16, isoflop against PyTorch eager and
#      torch.compile (bench/train/run.sh), and the small shape in fp32.
#   4. The whole path on CUDA: `isoflop run` of the quickstart's smallest budget (5 runs, real
#      training with checkpoints, then evaluation jobs) with runtime.device cuda, and the same
#      sweep on the CPU; the final held-out losses must agree within 2% (training on different
#      kernels for ~1,000 steps is not bit-identical), and the wall times are printed.
#
# Usage: ISOFLOP_BIN=PATH [PYTHON=python3] [DATA=data/quickstart] bash bench/gpu/run.sh [OUT]
# Writes the log and every JSON line under OUT (default: a temporary directory) and ends with
# a summary: each check PASS or FAIL, and the MFU table. Exit status 1 if a check failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
bin="$(realpath "${ISOFLOP_BIN:?set ISOFLOP_BIN to an isoflop binary}")"
python="${PYTHON:-python3}"
data="$(realpath "${DATA:-data/quickstart}")"
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ISOFLOP_BIN="$bin" PYTHON="$python" PYTHONUNBUFFERED=1
summary="$out/summary.txt"
: >"$summary"
failed=0
say() { echo "$*" | tee -a "$summary"; }
check() { # check NAME COMMAND...: runs the command, records PASS or FAIL
    local name="$1"; shift
    if "$@"; then say "PASS $name"; else say "FAIL $name"; failed=1; fi
}
t_start=$SECONDS
phase() { echo "== $* (at $((SECONDS - t_start)) s)"; }

phase "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.txt"
check "worker --check-device sees CUDA" bash -c "'$bin' worker --check-device | tee '$out/check-device.txt' && grep -q 'cuda available: true' '$out/check-device.txt'"

phase "correctness: CUDA against the CPU, same weights and tokens"
compare() { # compare PRECISION FIRST_TOL LAST_TOL
    local extra=() p="$1"
    [ "$p" = bf16 ] && extra=(--bf16)
    "$bin" bench train --model-json bench/train/model-cpu.json --batch 8 --steps 20 --device cpu "${extra[@]}" >"$out/correct-cpu-$p.json" || return 1
    "$bin" bench train --model-json bench/train/model-cpu.json --batch 8 --steps 20 --device cuda "${extra[@]}" >"$out/correct-cuda-$p.json" || return 1
    "$python" - "$out/correct-cpu-$p.json" "$out/correct-cuda-$p.json" "$2" "$3" <<'PY'
import json, sys
c, g = (json.load(open(f)) for f in sys.argv[1:3])
tf, tl = float(sys.argv[3]), float(sys.argv[4])
df = abs(c["loss_first"] - g["loss_first"]) / c["loss_first"]
dl = abs(c["loss_last"] - g["loss_last"]) / c["loss_last"]
print(f"{c['precision']}: loss_first cpu {c['loss_first']:.6f} cuda {g['loss_first']:.6f} (rel {df:.2e}, tol {tf:g}); "
      f"loss_last cpu {c['loss_last']:.6f} cuda {g['loss_last']:.6f} (rel {dl:.2e}, tol {tl:g})")
sys.exit(0 if df <= tf and dl <= tl else 1)
PY
}
check "fp32 step on CUDA matches the CPU" compare fp32 1e-4 0.02
check "bf16 step on CUDA matches the CPU" compare bf16 1e-2 0.05

mfu() { # mfu TAG MODEL BATCH STEPS [BF16]
    local tag="$1"
    phase "MFU $tag"
    BF16="${5:-0}" timeout "${MFU_TIMEOUT:-300}" bash bench/train/run.sh "$2" "$3" "$4" cuda 2>&1 | tee "$out/mfu-$tag.txt"
    local rc="${PIPESTATUS[0]}"
    [ "$rc" = 0 ] || say "FAIL MFU $tag (exit $rc)"
}
mfu 124m-bf16 bench/train/model-124m.json 32 20 1
mfu 350m-bf16 bench/train/model-350m.json 16 20 1

phase "the whole path: isoflop run of the quickstart's smallest budget, CUDA and CPU"
work="$(mktemp -d)"
sweep() { # sweep DEVICE
    sed -e "s|^name: quickstart|name: gpu-check-$1|" \
        -e 's|^budgets: .*|budgets: [5.0e11]|' \
        -e "s|manifest: .*|manifest: $data/manifest.json|" \
        -e "s|^  sqlite: .*|  sqlite: $work/$1.db|" \
        -e "s|^  checkpoint_every: .*|  checkpoint_every: 100\n  device: $1|" \
        -e 's|^  max_parallel: .*|  max_parallel: 5|' \
        examples/quickstart.yaml >"$work/$1.yaml"
    local t0=$SECONDS
    (cd "$work" && "$bin" run "$1.yaml" --plain) >"$out/sweep-$1.log" 2>&1
    local rc=$?
    echo "sweep on $1: exit $rc, $((SECONDS - t0)) s" | tee -a "$out/sweep-times.txt"
    "$bin" status "gpu-check-$1" --store "$work/$1.db" --format json >"$out/sweep-$1.json"
    "$bin" status "gpu-check-$1" --store "$work/$1.db" | tee -a "$out/sweep-$1.log"
    return "$rc"
}
check "isoflop run on CUDA" sweep cuda
check "isoflop run on the CPU" sweep cpu
check "CUDA sweep's held-out losses match the CPU's (2%)" "$python" - "$out/sweep-cpu.json" "$out/sweep-cuda.json" <<'PY'
import json, sys
c, g = (json.load(open(f)) for f in sys.argv[1:3])
cr = {r["name"]: r for r in c["runs"]}
worst, n = 0.0, 0
for r in g["runs"]:
    a = cr[r["name"]]
    for dist, e in r["evals"].items():
        x = a["evals"][dist]["loss"]
        d = abs(e["loss"] - x) / x
        worst, n = max(worst, d), n + 1
    print(f"{r['name']}: state {r['state']}/{a['state']}, train loss cuda {r['loss']:.4f} cpu {a['loss']:.4f}")
print(f"{n} held-out losses compared, largest relative difference {worst:.2e}")
ok = n > 0 and worst <= 0.02 and all(r["state"] == "succeeded" for r in g["runs"] + c["runs"])
sys.exit(0 if ok else 1)
PY

mfu 124m-fp32 bench/train/model-124m.json 16 10 0

phase "summary"
"$python" - "$out" <<'PY' | tee -a "$summary"
import glob, json, os, sys
print(f"{'shape':<12} {'impl':<14} {'tokens/s':>10} {'MFU':>7} {'loss_last':>10}")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "mfu-*.txt"))):
    tag = os.path.basename(f)[4:-4]
    for line in open(f):
        for name, key in (("isoflop", "isoflop:"), ("torch eager", "torch eager:"), ("torch compile", "torch compile:")):
            if line.startswith(key):
                try:
                    r = json.loads(line[len(key):])
                except ValueError:
                    continue
                if "tokens_per_second" in r:
                    print(f"{tag:<12} {name:<14} {r['tokens_per_second']:>10.0f} {r.get('mfu', 0):>7.3f} {r.get('loss_last', float('nan')):>10.4f}")
                else:
                    print(f"{tag:<12} {name:<14} skipped: {r.get('error')}")
        if line.startswith("ratio"):
            print(f"{tag:<12} {line.strip()}")
PY
echo "total $((SECONDS - t_start)) s" | tee -a "$summary"
exit "$failed"
