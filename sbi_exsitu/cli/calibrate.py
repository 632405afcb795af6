"""``sbi-exsitu calibrate``: SBC, expected coverage, TARP and PIT for a run."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app, fail


@app.command()
def calibrate(
    run: Path = typer.Argument(..., help="Run directory written by `fit`."),
    data: Path = typer.Option(
        None,
        "--data",
        help="Labelled test dataset (.h5); default: the run's own held-out test split.",
    ),
    out: Path = typer.Option(
        None,
        "-o",
        "--out",
        help="Output directory (default: RUN/calibration or RUN/calibration-<data>).",
    ),
    num_samples: int = typer.Option(1000, help="Posterior draws per observation."),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Check the posterior's calibration; writes coverage.png and calibration.json."""
    from sbi_exsitu.calibration import calibrate_dataset
    from sbi_exsitu.dataset import DatasetError, MapDataset
    from sbi_exsitu.posterior import RenderConfigMismatch, load_posterior

    try:
        post = load_posterior(run, device=device)
        if data is None:
            dataset, indices = post.test_split()
            out_dir = out or run / "calibration"
        else:
            dataset = MapDataset(data)
            post.check_render_config(dataset.render_config, where=str(data))
            if not dataset.has_labels:
                raise ValueError(
                    f"{data}: calibration needs the true f_ex of every observation, "
                    "but this dataset is unlabelled (e.g. cutouts rendered without "
                    "--flags)"
                )
            indices = None
            out_dir = out or run / f"calibration-{data.stem}"
        report = calibrate_dataset(
            post,
            dataset,
            indices,
            num_samples=num_samples,
            seed=seed,
            progress=not quiet,
        )
    except (
        DatasetError,
        RenderConfigMismatch,
        FileNotFoundError,
        ValueError,
        KeyError,
    ) as err:
        raise fail(str(err)) from None
    report.save(out_dir)
    plots = report.plot(out_dir)
    typer.echo(f"verdict: {report.verdict}  ({report.verdict_rule})")
    typer.echo(
        f"max |coverage - credibility| = {report.max_abs_coverage_error:.3f}, "
        f"signed area = {report.coverage_area:+.3f}"
    )
    typer.echo(f"wrote {out_dir / 'calibration.json'}")
    for p in plots:
        typer.echo(f"plot: {p}")
