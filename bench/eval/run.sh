#!/usr/bin/env bash
# bench/eval: multiple-choice scoring, isoflop against lm-evaluation-harness's `hf` backend, on
# the same model, the same items and the same CPU cores.
#
# A quickstart-shaped model (hidden 96, 3 layers, byte tokenizer, 128-token window; trained
# for a moment, since only its shape matters) is scored on MMLU, 5-shot, N questions per subject
# (default 20: 1,140 questions, 4,560 choices). isoflop: the second `isoflop run` of the sweep
# once the task is added (it trains nothing: coordinator, worker process, checkpoint load,
# scoring, storing every item). lm-eval 0.4.13: `python -m lm_eval` on the model exported with
# `isoflop export --format hf` and a local task over the items isoflop compiled (import, load,
# scoring). Both wall-clock, end to end; the ratio is printed last.
#
# Usage: bash bench/eval/run.sh [N]   (needs scripts/quickstart.sh's data/quickstart and
#        scripts/install-evals.sh's MMLU wheel and lm-eval)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
per_subject="${1:-20}"
[ -f data/quickstart/manifest.json ] || { echo "bench/eval: run scripts/quickstart.sh first (data/quickstart)" >&2; exit 2; }
lm_eval_dir="${ISOFLOP_LM_EVAL:-$HOME/.cache/isoflop/lm-eval-0.4.13}"
[ -d "$lm_eval_dir/lm_eval" ] || { echo "bench/eval: run scripts/install-evals.sh first (lm-eval)" >&2; exit 2; }
cargo build --release --locked -q -p isoflop-cli
bin="$CARGO_TARGET_DIR/release/isoflop"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
spec() {
    cat <<YAML
name: bench-eval
budgets: [2.0e11]
budget_convention: detailed
model: {family: llama, seq_len: 128, rope_theta: 10000, qk_norm: true}
grid:
  hidden: [96]
  layers: {width_per_layer: 32}
  heads: {head_size: 16}
  ffn_multiplier: 4
  fixed_batch: 32
  lr_constant: 0.1
  lr_max: 0.01
  flop_tolerance: 0.1
recipe: {warmup_frac: 0.1, decay_frac: 0.2, weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0}
data:
  tokenizer: byte
  manifest: $PWD/data/quickstart/manifest.json
  corpora: [{name: mix}]
  eval_tokens: 4096
eval:
  heldout: false
$1
executor: {kind: local, max_parallel: 1, threads_per_run: $(nproc)}
store: {sqlite: state/isoflop.db}
YAML
}
spec "  tasks: []" > "$tmp/train.yaml"
"$bin" run "$tmp/train.yaml" --plain > "$tmp/train.log"
spec "  tasks: [{name: mmlu, mmlu: {shots: 5, per_subset: $per_subject}}]" > "$tmp/eval.yaml"
t0=$(date +%s.%N)
"$bin" run "$tmp/eval.yaml" --plain > "$tmp/eval.log"
t1=$(date +%s.%N)
db="$tmp/state/isoflop.db"
run=$(sqlite3 "$db" "SELECT r.run_id FROM runs r WHERE r.run_id NOT IN (SELECT run_id FROM eval_jobs)")
items=$(sqlite3 "$db" "SELECT config_json FROM runs WHERE run_id IN (SELECT run_id FROM eval_jobs)" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["task"]["multiple_choice"]["items"]["path"])')
questions=$(wc -l < "$items")
"$bin" export "$run" --out "$tmp/hf" --store "$db" > /dev/null
mkdir -p "$tmp/tasks"
cat > "$tmp/tasks/bench_mmlu.yaml" <<YAML
task: bench_mmlu
dataset_path: json
dataset_kwargs: {data_files: {test: $items}}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: " "
metric_list: [{metric: acc}, {metric: acc_norm}]
YAML
t2=$(date +%s.%N)
(cd "$tmp" && PYTHONPATH="$lm_eval_dir" HF_HOME="$tmp/hf-home" HF_DATASETS_CACHE="$tmp/hf-datasets" \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    "$ISOFLOP_VENV/bin/python" -m lm_eval --model hf --model_args "pretrained=$tmp/hf,dtype=float32" \
    --tasks bench_mmlu --include_path "$tmp/tasks" --batch_size 32 --device cpu > "$tmp/lm-eval.log" 2>&1) \
    || { tail -20 "$tmp/lm-eval.log"; exit 1; }
t3=$(date +%s.%N)
ours_acc=$(sqlite3 "$db" "SELECT value FROM eval_results WHERE subset = 'all' AND metric = 'acc'")
theirs_acc=$(grep -E '^\|bench_mmlu' "$tmp/lm-eval.log" | grep -E '\|acc ' | head -1 | awk -F'|' '{print $8}' | tr -d ' ')
python3 - "$t0" "$t1" "$t2" "$t3" "$questions" "$(nproc)" "$ours_acc" "$theirs_acc" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
q, cores, ours_acc, theirs_acc = int(sys.argv[5]), sys.argv[6], sys.argv[7], sys.argv[8]
ours, theirs = t1 - t0, t3 - t2
print(f"bench/eval: {q} MMLU questions (5-shot, 4 choices), a 493k-parameter model, {cores} cores")
print(f"isoflop (isoflop run, evaluation only): {ours:.1f} s, {q / ours:.1f} questions/s, acc {float(ours_acc):.4f}")
print(f"lm-eval 0.4.13 hf, batch 32:            {theirs:.1f} s, {q / theirs:.1f} questions/s, acc {theirs_acc}")
print(f"ratio: {theirs / ours:.2f}x")
PY
