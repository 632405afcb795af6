"""``sbi-exsitu inspect``: validation figures of map datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app

__all__ = ["inspect"]


@app.command()
def inspect(
    datasets: list[Path] = typer.Argument(..., help="Map datasets (HDF5) to compare."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory for the PNGs."),
) -> None:
    """Validation figures: example maps, f_ex-M*, ring gradients (001 figs. 2, 3,
    13), ex-situ radial profiles and, for mock sets, the accreted debris."""
    from sbi_exsitu.studies.inspection import inspect_datasets

    written = inspect_datasets(datasets, output)
    for path in written:
        typer.echo(f"wrote {path}")
