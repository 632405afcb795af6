"""``sbi-exsitu ingest``: MaNGA DAP MAPS (+ Pipe3D) files -> a dataset for a run."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app, fail
from sbi_exsitu.cli.render import resolve_render_config

__all__ = ["ingest"]


@app.command()
def ingest(
    maps: list[Path] = typer.Argument(
        ..., help="DAP MAPS files, manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Dataset to write."),
    like: Path | None = typer.Option(
        None, help="Run directory whose grid and observation to match."
    ),
    config: Path | None = typer.Option(
        None, help="A run's render_config.json (instead of --like)."
    ),
    pipe3d: list[Path] | None = typer.Option(
        None,
        help="Pipe3D file of each galaxy, manga-PLATE-IFU.Pipe3D.cube.fits.gz "
        "(repeat, in the order of MAPS).",
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
) -> None:
    """Resample MaNGA galaxies onto a run's grid as an unlabelled dataset.

    The output is what `predict RUN` reads; the run must have been trained on
    observed mocks (an [observe] table), whose binning sets the DAP type
    accepted (unbinned: SPX; binned: VOR10 or HYB10).
    """
    from sbi_exsitu.data.ingest import ingest_manga

    if like is None and config is None:
        raise fail("give the run to match: --like RUN (or --config render_config.json)")
    render_config = resolve_render_config(config, like)
    summary = ingest_manga(
        maps,
        output,
        config=render_config,
        pipe3d=pipe3d or None,
        overwrite=overwrite,
        where=str(like or config),
    )
    for path, note in summary.notes.items():
        typer.echo(f"{path}: {note}")
    typer.echo(f"wrote {summary.n_galaxies} galaxies (unlabelled) to {output}")
