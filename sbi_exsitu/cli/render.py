"""``sbi-exsitu render``: TNG / EAGLE files -> rendered map dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from sbi_exsitu.cli._app import app, fail

__all__ = ["render"]


@app.command()
def render(
    files: list[Path] = typer.Argument(..., help="TNG cutouts / EAGLE files."),
    output: Path = typer.Option(..., "-o", "--output", help="Dataset to write."),
    flags: str | None = typer.Option(
        None,
        help="Stellar Assembly flags: stars_NNN.hdf5 (with --offsets) or a "
        "per-cutout file; '{stem}' is replaced by each cutout's name.",
    ),
    offsets: Path | None = typer.Option(None, help="offsets_NNN.hdf5."),
    views: int = typer.Option(12, help="Cameras per galaxy: 4, 6, 8, 12 or 20."),
    config: Path | None = typer.Option(
        None, help="TOML with a [render] table (or top-level render keys)."
    ),
    catalogue: bool = typer.Option(
        True, help="Use <stem>.json next to each file (API subhalo JSON)."
    ),
    model: str | None = typer.Option(None, help="Model label (default TNG/EAGLE)."),
    workers: int = typer.Option(1, help="Local worker processes."),
    scheduler: str | None = typer.Option(
        None, help="Address of an existing Dask scheduler."
    ),
    resume: bool = typer.Option(False, help="Continue an interrupted output."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Render simulation cutouts into the dataset schema of ``simulate``.

    Files that cannot be read are reported and skipped; the exit code is 1 if
    any file failed, 2 if none could be written.
    """
    from sbi_exsitu.data.render import RenderConfig
    from sbi_exsitu.data.render_files import render_files
    from sbi_exsitu.schema import load_toml

    if flags is None and offsets is not None:
        raise fail("--offsets needs --flags (the stars_NNN.hdf5 file to slice)")
    render_config = RenderConfig()
    if config is not None:
        doc = load_toml(config)
        section = doc.get("render", doc)
        render_config = RenderConfig.from_dict(section, where=f"{config} [render]")
    summary = render_files(
        files,
        output,
        config=render_config,
        views=views,
        flags=flags,
        offsets=offsets,
        catalogue=catalogue,
        model=model,
        workers=workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    for failure in summary.failures:
        typer.secho(
            f"skipped {failure.path}: {failure.error}", err=True, fg=typer.colors.YELLOW
        )
    unlabelled = summary.n_galaxies - summary.n_labelled
    typer.echo(
        f"wrote {summary.n_galaxies} galaxies ({summary.n_views} views, "
        f"{summary.n_labelled} labelled, {unlabelled} unlabelled) to {output}"
        + (f"; {summary.n_resumed} already done" if summary.n_resumed else "")
        + (f"; {len(summary.failures)} files skipped" if summary.failures else "")
    )
    if summary.failures:
        raise typer.Exit(1 if summary.n_galaxies + summary.n_resumed else 2)
