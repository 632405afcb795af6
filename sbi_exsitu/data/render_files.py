"""Render TNG cutouts and EAGLE particle files into a map dataset.

The real-data counterpart of the mock simulator: each file is read into
:class:`~sbi_exsitu.data.particles.Particles` (:mod:`sbi_exsitu.data.readers`),
rendered from
the vertices of a polyhedron (:func:`~sbi_exsitu.data.render.render_views`) and
appended to a :class:`~sbi_exsitu.data.dataset.DatasetWriter` file, the same schema
every later command reads. Files are processed in parallel (local processes or a
Dask cluster, :func:`~sbi_exsitu.data.parallel.parallel_map`) and written in input
order; a file that cannot be read or rendered is recorded in
:attr:`RenderSummary.failures` and skipped, the others are kept.

Labels: with Stellar Assembly flags, f_ex is the ex-situ mass over the total mass
of the kept particles and the ex-situ map is rendered like every other map;
without flags f_ex is NaN and the ex-situ maps are NaN (unlabelled observations).
The galaxy id of a file is its position in ``paths``; the list of files is
stored in the dataset attribute ``files``, so ``resume`` needs the same list.

Particle cap (``max_particles``): a galaxy with more star particles is rendered
from a random ``max_particles`` of them, heavier so that M* is unchanged
(:func:`~sbi_exsitu.data.particles.subsample`, seeded per file). A posterior
trained on maps of at most N particles reads the smoother maps of a galaxy with
many more particles as another galaxy, low and narrow: a mock galaxy of f_ex
0.168 read 0.148 from 12k particles (the training cap), 0.120 from 30k and 0.098
from 60k (``benchmarks/particle_resampling.py``). ``sbi-exsitu render --like RUN``
therefore caps at the run's training cap. Labels (f_ex, M*) and r_e stay those
of the full galaxy; the cap is stored as the attribute ``max_particles`` and
what it did in each file's provenance.

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> from sbi_exsitu.data.readers.fixtures import write_tng_cutout
    >>> rng = np.random.default_rng(0)
    >>> p = Particles(pos=rng.normal(size=(4000, 3)), vel=rng.normal(size=(4000, 3)),
    ...               mass=np.full(4000, 1e6), age=np.full(4000, 5.0),
    ...               metallicity=np.full(4000, 0.01))
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_tng_cutout(d / "cutout_1.hdf5", p)
    >>> s = render_files([d / "cutout_1.hdf5"], d / "maps.h5",
    ...                  config=RenderConfig(resolution=16), views=4)
    >>> s.n_galaxies, s.n_views, s.failures
    (1, 4, [])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sbi_exsitu.atomic import check_output_path
from sbi_exsitu.data.cameras import VIEW_COUNTS
from sbi_exsitu.data.dataset import DatasetWriter
from sbi_exsitu.data.parallel import parallel_map
from sbi_exsitu.data.particles import Particles, ParticlesError, subsample
from sbi_exsitu.data.readers import ReaderError, read_galaxy
from sbi_exsitu.data.render import (
    RenderConfig,
    RenderedViews,
    RenderError,
    render_views,
)
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "FileFailure",
    "RenderSummary",
    "cap_particles",
    "render_files",
    "render_one_file",
]


@dataclass(frozen=True)
class FileFailure:
    """A file that was skipped, and why."""

    path: str
    error: str


@dataclass
class RenderSummary:
    """What :func:`render_files` wrote.

    Attributes:
        output: the dataset file.
        n_galaxies: galaxies written by this call.
        n_views: samples (galaxy-views) written by this call.
        n_labelled: galaxies written with an f_ex label.
        n_resumed: galaxies already in the file (``resume``) and not redone.
        failures: the files skipped, with their errors.
        provenance: file -> what its reader did (wind cells dropped, catalogue
            used, where centre, systemic velocity and r_e came from).
    """

    output: Path
    n_galaxies: int = 0
    n_views: int = 0
    n_labelled: int = 0
    n_resumed: int = 0
    failures: list[FileFailure] = field(default_factory=list)
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    config: dict[str, Any]
    views: int
    flags: str | None
    offsets: str | None
    catalogue: bool | str
    max_particles: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class _Result:
    index: int
    path: str
    views: RenderedViews | None = None
    f_ex: float = math.nan
    log_mstar: float = math.nan
    half_mass_radius: float = math.nan
    model: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def render_one_file(task: _Task) -> _Result:
    """Read and render one file; expected errors become a failed result.

    Module-level so that process pools and Dask workers can pickle it.
    """
    try:
        flags = task.flags
        if flags is not None and "{stem}" in flags:
            flags = flags.replace("{stem}", Path(task.path).stem)
        particles, fmt = read_galaxy(
            task.path, flags=flags, offsets=task.offsets, catalogue=task.catalogue
        )
        rendered = cap_particles(
            particles, task.max_particles, derive_seed(task.seed, "cap", task.index)
        )
        config = RenderConfig.from_dict(task.config)
        views = render_views(rendered, config, task.views)
    except (ReaderError, RenderError, ParticlesError, OSError, ValueError) as err:
        return _Result(
            index=task.index, path=task.path, error=f"{type(err).__name__}: {err}"
        )
    return _Result(
        index=task.index,
        path=task.path,
        views=views,
        f_ex=particles.f_ex,
        log_mstar=particles.log_mstar,
        half_mass_radius=particles.half_mass_radius,
        model=fmt,
        provenance=dict(rendered.provenance),
    )


def cap_particles(
    particles: Particles, max_particles: int | None, seed: int
) -> Particles:
    """The galaxy with at most ``max_particles`` star particles (see module doc).

    A galaxy within the cap (or no cap) is returned as it is. Otherwise a seeded
    random ``max_particles`` of its particles, heavier so that M* is unchanged;
    r_e stays the full galaxy's (the catalogue's, or measured on all particles),
    and the provenance says what was done.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> p = Particles(pos=rng.normal(size=(500, 3)), vel=np.zeros((500, 3)),
        ...               mass=np.full(500, 1e6), age=np.ones(500),
        ...               metallicity=np.full(500, 0.02))
        >>> q = cap_particles(p, 200, seed=0)
        >>> len(q), q.half_mass_radius == p.half_mass_radius
        (200, True)
        >>> q.provenance["particles"]
        '500 -> 200 (max_particles)'
    """
    if max_particles is None or len(particles) <= max_particles:
        return particles
    capped = subsample(particles, int(max_particles), seed)
    return dataclasses.replace(
        capped,
        half_mass_radius=particles.half_mass_radius,
        provenance={
            **particles.provenance,
            "particles": f"{len(particles)} -> {int(max_particles)} (max_particles)",
        },
    )


def render_files(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    config: RenderConfig | None = None,
    views: int = 12,
    flags: str | Path | None = None,
    offsets: str | Path | None = None,
    catalogue: bool | str | Path = True,
    model: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    max_particles: int | None = None,
    seed: int = 0,
) -> RenderSummary:
    """Render simulation files into one dataset.

    Args:
        paths: TNG cutouts and/or EAGLE particle files (one galaxy each).
        out: the dataset file to write.
        config: the render configuration (default: :class:`RenderConfig`).
        views: cameras per galaxy, a polyhedron vertex count (4, 6, 8, 12, 20).
        flags: Stellar Assembly flags for TNG cutouts: ``stars_NNN.hdf5`` (with
            ``offsets``) or a per-cutout file; ``{stem}`` in the path is replaced
            by each cutout's file stem (e.g. ``flags/{stem}.hdf5``).
        offsets: ``offsets_NNN.hdf5`` for slicing a full-snapshot flag file.
        catalogue: the subhalo JSON (the web API's, or EAGLE database fields)
            for centre and half-mass radius: True uses ``<stem>.json`` next to
            a file when there is one, a path (``{stem}`` replaced by each
            file's stem) must exist, False uses none. What each file used is
            in :attr:`RenderSummary.provenance`.
        model: the ``model`` label stored per sample (default: ``"TNG"`` or
            ``"EAGLE"`` from each file's format).
        workers: local processes.
        scheduler: address of an existing Dask scheduler (overrides workers).
        resume: continue an interrupted output, skipping finished galaxies.
        overwrite: replace an existing output.
        progress: show a progress bar.
        max_particles: render galaxies with more star particles from a random
            ``max_particles`` of them (module doc); None keeps every particle.
        seed: seed of those subsamples (file ``i`` uses a seed derived from
            ``seed`` and ``i``, so a resumed run draws the same particles).

    Returns:
        A :class:`RenderSummary`; per-file errors are in ``failures``.

    Raises:
        ValueError: ``views`` is not a polyhedron vertex count, or no paths, or
            ``max_particles`` is below 1.
        OutputPathError: ``out`` is an input (a cutout, its catalogue JSON, the
            flags or offsets file) or cannot be written; checked before any work.
        OutputBusyError: another process is writing ``out``.
        DatasetError: the output exists (without resume/overwrite) or differs.
    """
    if views not in VIEW_COUNTS:
        raise RenderError(f"views is {views}, expected one of {list(VIEW_COUNTS)}")
    if not paths:
        raise RenderError("no input files given")
    if max_particles is not None and (
        isinstance(max_particles, bool) or int(max_particles) < 1
    ):
        raise RenderError(
            f"max_particles is {max_particles!r}, expected a positive integer "
            "(or None to keep every particle)"
        )
    cap = None if max_particles is None else int(max_particles)
    config = config or RenderConfig()
    paths = [str(Path(p)) for p in paths]
    catalogues = []
    if catalogue is not False:
        pattern = "{stem}.json" if catalogue is True else str(catalogue)
        catalogues = [
            Path(p).parent / pattern.replace("{stem}", Path(p).stem)
            if catalogue is True
            else Path(pattern.replace("{stem}", Path(p).stem))
            for p in paths
        ]
    # An existing out is refused by DatasetWriter, naming --resume and --overwrite.
    check_output_path(out, inputs=[*paths, *catalogues, flags, offsets], overwrite=True)
    attrs = {
        "source": "render",
        "files": paths,
        "views": views,
        "flags": None if flags is None else str(flags),
        "offsets": None if offsets is None else str(offsets),
        "max_particles": cap,
        "particle_seed": int(seed),
    }
    summary = RenderSummary(output=Path(out))
    with DatasetWriter(
        out, config, resume=resume, overwrite=overwrite, attrs=attrs
    ) as writer:
        done = writer.completed_galaxies()
        summary.n_resumed = len(done)
        tasks = [
            _Task(
                index=i,
                path=p,
                config=config.to_dict(),
                views=views,
                flags=None if flags is None else str(flags),
                offsets=None if offsets is None else str(offsets),
                catalogue=catalogue if isinstance(catalogue, bool) else str(catalogue),
                max_particles=cap,
                seed=int(seed),
            )
            for i, p in enumerate(paths)
            if i not in done
        ]
        bar = tqdm(
            total=len(paths),
            initial=len(paths) - len(tasks),
            unit="file",
            desc="render",
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            for result in parallel_map(
                render_one_file, tasks, workers=workers, scheduler=scheduler
            ):
                bar.update(1)
                if result.error is not None or result.views is None:
                    summary.failures.append(FileFailure(result.path, str(result.error)))
                else:
                    writer.add_galaxy(
                        result.views,
                        galaxy_id=result.index,
                        f_ex=result.f_ex,
                        log_mstar=result.log_mstar,
                        half_mass_radius=result.half_mass_radius,
                        model=model or result.model,
                    )
                    summary.n_galaxies += 1
                    summary.n_views += len(result.views)
                    summary.n_labelled += int(np.isfinite(result.f_ex))
                    summary.provenance[result.path] = result.provenance
                bar.set_postfix(
                    views=summary.n_views, skipped=len(summary.failures), refresh=False
                )
    return summary
