"""``sbi-exsitu quickstart``."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app


@app.command()
def quickstart(
    config: Path | None = typer.Argument(
        None,
        help="Experiment TOML with a \\[simulate] table, or the name of a packaged "
        "config (default: the packaged quickstart.toml).",
        show_default=False,
    ),
    workers: int = typer.Option(1, help="Local processes for simulation."),
    num_samples: int = typer.Option(1000, help="Posterior draws per observation."),
    quiet: bool = typer.Option(False, help="No progress output."),
) -> None:
    """Simulate a mock set, fit, predict new galaxies, calibrate: the whole chain."""
    from sbi_exsitu.studies.quickstart import quickstart as run

    result = run(config, workers=workers, progress=not quiet, num_samples=num_samples)
    overall = result.metrics.get("test", {}).get("f_ex", {}).get("overall", {})
    if overall:
        typer.echo(
            "test split: "
            + ", ".join(
                f"{k}={overall[k]:.4f}"
                for k in ("bias", "scatter", "rmse", "nlpd")
                if overall.get(k) is not None
            )
        )
    typer.echo(f"calibration verdict: {result.verdict}")
    typer.echo(f"predictions for new galaxies: {result.predictions}")
    typer.echo(f"run directory: {result.run_dir}")
    typer.echo("plots:")
    for plot in result.plots:
        typer.echo(f"  {plot}")
