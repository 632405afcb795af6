"""The typer application every command module registers on."""

from __future__ import annotations

import typer

__all__ = ["app", "fail"]

app = typer.Typer(
    name="sbi-exsitu",
    help="Simulation-based inference of the ex-situ stellar mass fraction of galaxies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` to stderr and return an Exit to raise (clean, no traceback)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)
