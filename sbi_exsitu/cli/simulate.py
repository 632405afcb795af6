"""``sbi-exsitu simulate``: mock galaxies -> rendered map dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app, fail

__all__ = ["simulate"]


@app.command()
def simulate(
    config: Path = typer.Argument(..., help="Simulation config (TOML)."),
    output: Path = typer.Option(..., "-o", "--output", help="Dataset to write."),
    workers: int = typer.Option(1, help="Local worker processes."),
    scheduler: str | None = typer.Option(
        None, help="Address of an existing Dask scheduler (tcp://host:8786)."
    ),
    resume: bool = typer.Option(False, help="Continue an interrupted output."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Draw mock galaxies, render them from polyhedron cameras, write a dataset.

    Same config (and seed) -> identical file contents, whatever --workers or
    --scheduler; an interrupted run continues with --resume. Observed views
    with too few valid pixels are skipped and counted (printed at the end).
    """
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.data.simulate import SimulationConfig
    from sbi_exsitu.data.simulate import simulate as run

    if workers < 1:
        raise fail(f"--workers is {workers}, expected >= 1")
    cfg = SimulationConfig.from_toml(config)
    path = run(
        cfg,
        output,
        workers=workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        inputs=[config],
    )
    with MapDataset(path) as ds:
        n_gal = len(set(ds.labels["galaxy_id"].tolist()))
        typer.echo(
            f"wrote {n_gal} galaxies ({len(ds)} views) of model '{cfg.model}' to {path}"
        )
        if cfg.render.observe is not None:
            # Skips are a selection effect on the training set: always say so.
            typer.echo(ds.skip_summary().describe())
