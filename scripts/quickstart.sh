#!/usr/bin/env bash
# The main job on the embedded default (the mock simulator, no download): simulate a
# small mock dataset, fit the scalar posterior, predict and calibrate on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${SBI_EXSITU_VENV:-.venv}"
export MPLBACKEND=Agg
"$VENV/bin/sbi-exsitu" quickstart "${1:-configs/quickstart.toml}"
