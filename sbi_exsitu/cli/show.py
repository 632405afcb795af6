"""``sbi-exsitu show``: draw one sample of a dataset to a PNG."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app

__all__ = ["show"]


@app.command()
def show(
    dataset: Path = typer.Argument(..., help="Dataset file (HDF5)."),
    index: int = typer.Option(0, "-i", "--index", help="Sample index (-1 = last)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Image to write (default <dataset>_<index>.png)."
    ),
    dpi: int = typer.Option(120, help="Resolution of the image."),
) -> None:
    """Plot every map of one sample (and its ex-situ map when labelled)."""
    from sbi_exsitu.figures import save_sample

    if output is None:
        output = Path(f"{dataset.stem}_{index}.png")
    save_sample(dataset, index, output, dpi=dpi)
    typer.echo(f"wrote {output}")
