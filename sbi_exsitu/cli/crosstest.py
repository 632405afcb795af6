"""``sbi-exsitu crosstest``: the cross-simulator grid of an experiment file."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app


@app.command()
def crosstest(
    config: Path = typer.Argument(
        ...,
        help="Experiment TOML with a [crosstest] table (e.g. configs/paper-grid.toml).",
    ),
    out_dir: Path = typer.Option(
        None, "--out-dir", "-o", help="Study directory (default: [run] out_dir / name)."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the figures."),
    quiet: bool = typer.Option(False, help="No progress output."),
) -> None:
    """Train on each formation model (and their union), test on each, over the
    channels x aperture grid; resumes, reusing finished cells."""
    from sbi_exsitu.studies.crosstest.study import crosstest as run_crosstest

    result = run_crosstest(
        config, out_dir=out_dir, progress=not quiet, plots=not no_plots
    )
    typer.echo(f"study directory: {result.out_dir}")
    typer.echo(f"cells trained: {len(result.trained)}, reused: {len(result.reused)}")
    for path in result.files:
        typer.echo(f"wrote {path}")
