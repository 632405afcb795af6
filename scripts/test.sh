#!/usr/bin/env bash
# Set up (if needed), lint, and run the fast test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${SBI_EXSITU_VENV:-.venv}"
export MPLBACKEND=Agg
"$VENV/bin/ruff" check sbi_exsitu embeddings tests benchmarks
"$VENV/bin/python" -m pytest -m "not slow and not gpu" -q "$@"
