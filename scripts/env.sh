# Source this file: the environment every isoflop build, test and run uses.
# ISOFLOP_VENV (default: $HOME/.cache/isoflop/venv) holds torch==2.11.0, whose libtorch tch links.
export ISOFLOP_VENV="${ISOFLOP_VENV:-$HOME/.cache/isoflop/venv}"
export PATH="$ISOFLOP_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
_isoflop_torch_lib="$(ls -d "$ISOFLOP_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n 1 || true)"
export LD_LIBRARY_PATH="${_isoflop_torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Build outputs live outside the clone so a fresh clone reuses the (slow) torch-sys build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/isoflop/target}"
unset _isoflop_torch_lib
