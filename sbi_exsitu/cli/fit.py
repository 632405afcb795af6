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
    maps: Path = typer.Argument(
        ..., help="Dataset (.h5) of observations, or a MaNGA DAP MAPS .fits.gz."
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output table: .csv or .h5"),
    num_samples: int | None = typer.Option(
        None, help="Posterior draws per observation [default: 1000; 100 for maps]."
    ),
    samples: bool = typer.Option(
        False, "--samples", help="Also store the draws (HDF5 output only)."
    ),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
    pipe3d: Path | None = typer.Option(
        None, help="Pipe3D file of the MAPS galaxy (MaNGA input only)."
    ),
    misspec: bool = typer.Option(
        True,
        "--misspec/--no-misspec",
        help="Flag observations unlike the training set (misspec_* columns).",
    ),
) -> None:
    """Posterior summaries (median, mean, std, HDIs) for every observation in MAPS.

    Columns per target: <name>_median, _mean, _std, _hdi68_low/high,
    _hdi95_low/high; and, for a scalar run, misspec_score, misspec_pvalue and
    misspec_flag (1 = this galaxy is unlike the training set: do not trust its
    posterior), from the run's detector (fitted on first use from the training
    data, then saved in the run).

    For a map run: the implied f_ex per observation in the mask (f_ex_*) and,
    with the run's outside-mask head, of the whole galaxy (f_ex_galaxy_*, the
    columns to compare with the f_ex label); with an .h5 output also the
    posterior mean and std maps (maps/mean, maps/std).

    A MaNGA MAPS file (with --pipe3d) is ingested on the run's grid first, as
    `sbi-exsitu ingest MAPS --pipe3d P3D --like RUN -o obs.h5` does.
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
        misspecification=misspec,
        pipe3d=pipe3d,
    )
    typer.echo(f"wrote {path}")
