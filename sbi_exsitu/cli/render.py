"""``sbi-exsitu render``: TNG / EAGLE files -> rendered map dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sbi_exsitu.cli._app import app, fail

__all__ = ["render", "resolve_render_config"]


def resolve_render_config(config: Path | None, like: Path | None) -> Any:
    """The RenderConfig of ``--config`` (TOML or JSON) or ``--like RUN``.

    Shared by ``render`` and ``ingest``; the default config when neither is given.
    """
    from sbi_exsitu.data.render import RenderConfig
    from sbi_exsitu.errors import ConfigError, RunError
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.schema import load_toml

    if config is not None and like is not None:
        raise fail("--config and --like exclude each other; give one")
    if like is not None:
        config = RunDirectory(like).render_config_file
        if not config.is_file():
            raise RunError(
                f"{like}: not a run directory (no {config.name}); give the "
                "directory `sbi-exsitu fit` wrote"
            )
    if config is None:
        return RenderConfig()
    if config.suffix == ".json":
        import json

        try:
            data = json.loads(config.read_text())
        except ValueError as err:
            raise ConfigError(f"{config}: not a render config JSON ({err})") from None
        return RenderConfig.from_dict(data, where=str(config))
    doc = load_toml(config)
    return RenderConfig.from_dict(doc.get("render", doc), where=f"{config} [render]")


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
        None,
        help="TOML with a [render] table (or top-level render keys), or a run's "
        "render_config.json.",
    ),
    like: Path | None = typer.Option(
        None,
        help="Render like this run (its render_config.json), so that `predict "
        "RUN` accepts the output.",
    ),
    catalogue: str | None = typer.Option(
        None,
        help="Subhalo JSON per file; '{stem}' is replaced by each file's name. "
        "Default: <stem>.json next to each file, when there is one.",
    ),
    no_catalogue: bool = typer.Option(
        False, "--no-catalogue", help="Use no subhalo JSON at all."
    ),
    model: str | None = typer.Option(None, help="Model label (default TNG/EAGLE)."),
    workers: int = typer.Option(1, help="Local worker processes."),
    scheduler: str | None = typer.Option(
        None, help="Address of an existing Dask scheduler."
    ),
    max_particles: int | None = typer.Option(
        None,
        help="Render galaxies with more star particles from a random N of them "
        "(masses scaled up, M* kept). Default with --like: the cap of the run's "
        "training data; 0 keeps every particle.",
    ),
    seed: int = typer.Option(0, help="Seed of the particle subsamples."),
    resume: bool = typer.Option(False, help="Continue an interrupted output."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Render simulation cutouts into the dataset schema of ``simulate``.

    Files that cannot be read are reported and skipped; the exit code is 1 if
    any file failed, 2 if none could be written. With ``--like RUN`` galaxies
    with more particles than the run's training galaxies are subsampled to that
    cap: a posterior reads the smoother maps of many more particles low.
    """
    from sbi_exsitu.data.render_files import render_files

    if flags is None and offsets is not None:
        raise fail("--offsets needs --flags (the stars_NNN.hdf5 file to slice)")
    if no_catalogue and catalogue is not None:
        raise fail("--catalogue and --no-catalogue exclude each other")
    render_config = resolve_render_config(config, like)
    if max_particles is not None and max_particles < 0:
        raise fail(f"--max-particles is {max_particles}; give N >= 1, or 0 for no cap")
    if max_particles is None and like is not None:
        from sbi_exsitu.studies.predict import training_particle_cap

        max_particles = training_particle_cap(like)
        if max_particles is not None:
            typer.echo(f"capping galaxies at {max_particles} particles, as {like}")
    summary = render_files(
        files,
        output,
        config=render_config,
        views=views,
        flags=flags,
        offsets=offsets,
        catalogue=False if no_catalogue else (catalogue or True),
        model=model,
        workers=workers,
        scheduler=scheduler,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        max_particles=max_particles or None,
        seed=seed,
    )
    for path, notes in summary.provenance.items():
        typer.echo(f"{path}: " + "; ".join(f"{k}: {v}" for k, v in notes.items()))
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
