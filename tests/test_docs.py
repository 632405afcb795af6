"""The documentation builds with ``--strict``: no broken link, nav entry or API ref.

The API pages are generated from the docstrings, so a renamed module, a moved
function or a malformed ``Args:`` section fails here rather than on the website.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        "mkdocs build --strict failed (needs the docs extra: "
        "pip install -e '.[docs]'):\n" + done.stderr[-4000:]
    )
    # Guards against a build that passes because the API pages went missing.
    api = (tmp_path / "api" / "posteriors" / "index.html").read_text(encoding="utf-8")
    assert "load_posterior" in api
    assert "ExSituPosterior" in api
    embeddings = (tmp_path / "api" / "embeddings" / "index.html").read_text(
        encoding="utf-8"
    )
    assert "build_embedding" in embeddings
