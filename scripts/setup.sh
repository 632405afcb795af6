#!/usr/bin/env bash
# Create .venv and install sbi-exsitu with its dev tools. Idempotent and cheap when
# nothing changed: a stamp keyed on pyproject.toml skips the pip work.
#
# The CPU build of torch goes in FIRST: a bare `torch` requirement on a fresh venv
# pulls a multi-GB CUDA build, while `torch==2.13.0` resolves to the CPU wheel this
# machine keeps on disk. pyproject.toml keeps a normal range so users elsewhere get
# their own build (GPU users: install the torch build you want before this script).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SBI_EXSITU_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.sbi-exsitu-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
    exit 0
fi
echo "[setup] creating $VENV and installing sbi-exsitu (first run takes ~2 minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" install "torch==2.13.0" \
        || echo "[setup] torch==2.13.0 not available here; pip resolves torch from pyproject" >&2
fi
"${pip[@]}" install -e ".[dev]"
rm -f "$VENV"/.sbi-exsitu-*
touch "$stamp"
echo "[setup] done" >&2
