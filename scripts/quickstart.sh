#!/usr/bin/env bash
# README command 1: set everything up, prepare the corpora, and run the quickstart sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
bin/isoflop data prepare --out data/quickstart
bin/isoflop run examples/quickstart.yaml "$@"
