"""Command-line interface: a thin shell over the Python API.

Each command lives in its own module and registers itself on :data:`app`; this
module only imports them. Add a command by adding a module and one import below.
"""

from __future__ import annotations

from sbi_exsitu.cli._app import app

# Command modules register themselves on import (order = order in --help).
from sbi_exsitu.cli import (  # noqa: E402,F401  isort: skip
    quickstart,
    simulate,
    render,
    ingest,
    show,
    inspect,
    fit,
    calibrate,
    crosstest,
)

__all__ = ["app", "main"]


def main() -> None:
    """Entry point for ``python -m sbi_exsitu``."""
    app()
