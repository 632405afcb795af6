"""``sbi-exsitu fit`` and ``sbi-exsitu predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app


@app.command()
def fit(
    config: Path = typer.Argument(..., help="Experiment TOML file (see configs/)."),
    overwrite: bool = typer.Option(False, help="Replace a run of another config."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:N (overrides [run])."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Train the posterior of CONFIG; resumes an interrupted run."""
    import dataclasses

    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.training.fit import fit as run_fit

    cfg = ExperimentConfig.from_toml(config)
    if device:
        cfg = cfg.replace(run=dataclasses.replace(cfg.run, device=device))
    result = run_fit(cfg, overwrite=overwrite, progress=not quiet)
    _print_fit_summary(result.run_dir, result.metrics)


def _print_fit_summary(run_dir: Path, metrics: dict) -> None:
    typer.echo(f"run directory: {run_dir}")
    for name in metrics.get("targets", []):
        overall = metrics.get("test", {}).get(name, {}).get("overall")
        if overall:
            parts = ", ".join(
                f"{k}={v:.4f}" for k, v in overall.items() if isinstance(v, float)
            )
            typer.echo(f"test {name}: {parts}")
    for plot in ("training_curves.png", "predictions.png"):
        if (run_dir / plot).exists():
            typer.echo(f"plot: {run_dir / plot}")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run directory written by `fit`."),
    maps: Path = typer.Argument(..., help="Dataset (.h5) of observations."),
    out: Path = typer.Option(..., "-o", "--out", help="Output table: .csv or .h5"),
    num_samples: int | None = typer.Option(
        None, help="Posterior draws per observation [default: 1000; 100 for maps]."
    ),
    samples: bool = typer.Option(
        False, "--samples", help="Also store the draws (HDF5 output only)."
    ),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
) -> None:
    """Posterior summaries (median, mean, std, HDIs) for every observation in MAPS.

    For a map run: the implied f_ex per observation, and with an .h5 output the
    posterior mean and std maps (maps/mean, maps/std).
    """
    from sbi_exsitu.studies.predict import predict as run_predict

    path = run_predict(
        run,
        maps,
        out,
        num_samples=num_samples,
        seed=seed,
        save_samples=samples,
        device=device,
    )
    typer.echo(f"wrote {path}")
