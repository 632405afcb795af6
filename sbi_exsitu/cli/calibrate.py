"""``sbi-exsitu calibrate``: SBC, expected coverage, TARP and PIT for a run."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app


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
    from sbi_exsitu.data.dataset import DatasetError, MapDataset
    from sbi_exsitu.evaluation.calibration import calibrate_dataset
    from sbi_exsitu.posteriors import load_posterior

    post = load_posterior(run, device=device)
    if getattr(post, "kind", "scalar") == "map":
        _calibrate_map(post, run, data, out, num_samples, seed)
        return
    if data is None:
        dataset, indices = post.test_split()
        out_dir = out or run / "calibration"
    else:
        dataset = MapDataset(data)
        post.check_render_config(dataset.render_config, where=str(data))
        if not dataset.has_labels:
            raise DatasetError(
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
        out_dir=out_dir,
        num_samples=num_samples,
        seed=seed,
        progress=not quiet,
    )
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


def _calibrate_map(
    post, run: Path, data: Path | None, out: Path | None, num_samples: int, seed: int
) -> None:
    """Per-pixel coverage and implied-f_ex coverage of a map-valued posterior."""
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.evaluation.map_coverage import map_calibration

    if data is None:
        dataset, indices = post.test_split()
        out_dir = out or run / "calibration"
    else:
        dataset = MapDataset(data)
        indices = None
        out_dir = out or run / f"calibration-{data.stem}"
    if indices is None:
        import numpy as np

        indices = np.arange(len(dataset))
    # Map draws are (n, S, H, W): 100 per observation keep memory modest.
    result = map_calibration(
        post,
        dataset,
        indices,
        num_samples=min(num_samples, 100),
        seed=seed,
        out_dir=out_dir,
    )
    for key in (
        "pixel_coverage_error_68",
        "pixel_coverage_error_95",
        "fex_coverage_error_68",
    ):
        if key in result:
            typer.echo(f"{key}: {result[key]}")
    typer.echo(f"plot: {out_dir / 'map_coverage.png'}")
