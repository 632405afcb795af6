"""Survey galaxies -> the standard map dataset, on a posterior's grid.

The survey counterpart of :mod:`sbi_exsitu.data.render_files`: each MaNGA galaxy
(a DAP MAPS file, optionally with its Pipe3D file) is read into
:class:`~sbi_exsitu.data.observe.SpaxelMaps`
(:func:`~sbi_exsitu.data.readers.manga.read_manga`), resampled onto the
posterior's grid (:func:`~sbi_exsitu.data.observe.grid.to_posterior_grid`, the
resampler the mock observations use) and preprocessed with the observation's
valid mask (:func:`~sbi_exsitu.data.render.preprocess` with ``valid=``). The
result is an unlabelled dataset (f_ex, log M* and the ex-situ maps NaN) whose
``render_config`` attribute is the posterior's, observation config included,
so ``predict`` accepts it and refuses it for any other posterior.

Every file is read and resampled before anything is written: a bad file is an
error naming it, and no half-written dataset is left behind.

Which DAP type fits a posterior follows from its ``[observe]`` table: unbinned
observations (``target_snr = false``) match the per-spaxel ``SPX`` maps, binned
ones (``target_snr = 10``, the DAP's S/N target) the ``VOR10`` and ``HYB10``
maps, whose stellar kinematics are binned alike (Westfall et al. 2019).

Example:
    >>> import tempfile, pathlib
    >>> from sbi_exsitu.data.observe.config import ObserveConfig
    >>> from sbi_exsitu.data.readers.manga_fixtures import write_manga_galaxy
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> fx = write_manga_galaxy(d)
    >>> cfg = RenderConfig(resolution=16, min_pixels=4, observe=ObserveConfig())
    >>> s = ingest_manga([fx.maps], d / "obs.h5", config=cfg, pipe3d=[fx.pipe3d])
    >>> s.n_galaxies, s.output.name
    (1, 'obs.h5')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbi_exsitu.atomic import check_output_path
from sbi_exsitu.data.dataset import DatasetWriter
from sbi_exsitu.data.observe.grid import to_posterior_grid
from sbi_exsitu.data.readers.manga import read_manga
from sbi_exsitu.data.render import RenderConfig, RenderedViews, RenderError, preprocess
from sbi_exsitu.errors import ObservationError, RenderConfigMismatch

__all__ = ["IngestSummary", "expected_daptypes", "ingest_manga"]


@dataclass
class IngestSummary:
    """What :func:`ingest_manga` wrote.

    Attributes:
        output: the dataset file.
        n_galaxies: galaxies written (one view each).
        notes: file -> what was read (DAP type, centre source, valid pixels).
    """

    output: Path
    n_galaxies: int = 0
    notes: dict[str, str] = field(default_factory=dict)


def expected_daptypes(
    config: RenderConfig, where: str = "posterior"
) -> tuple[str, ...]:
    """DAP type prefixes that match ``config``'s observation (module docstring).

    Raises:
        RenderConfigMismatch: ``config`` has no ``[observe]`` table, i.e. the
            posterior was trained on idealised maps, which survey maps are not.
    """
    observe = getattr(config, "observe", None)
    if observe is None:
        raise RenderConfigMismatch(
            f"{where} was trained on idealised maps (no [observe] table in its "
            "config), but survey (MaNGA) maps are observed: PSF, footprint, noise "
            "and binning change them. Train a posterior on observed mocks (add "
            "an [observe] table to the config) and ingest with that run"
        )
    return ("SPX",) if observe.target_snr is None else ("VOR10", "HYB10")


def _one(
    maps: Path, pipe3d: Path | None, config: RenderConfig, prefixes: tuple[str, ...]
) -> tuple[RenderedViews, str]:
    spaxels = read_manga(maps, pipe3d, daptype=prefixes)
    stats, valid = to_posterior_grid(spaxels, config)
    try:
        image, mask = preprocess(stats, config, valid=valid)
    except RenderError as err:
        raise ObservationError(f"{maps}: {err}") from None
    views = RenderedViews(
        maps=image[None].astype(np.float32),
        exsitu=np.full((1, *mask.shape), np.nan, np.float32),
        mask=mask[None],
        # The line of sight is the survey's; there is no camera direction.
        directions=np.full((1, 3), np.nan),
    )
    note = f"{spaxels.name}; {int(mask.sum())} valid pixels of {mask.size}"
    return views, note


def ingest_manga(
    maps: Sequence[str | Path],
    out: str | Path,
    *,
    config: RenderConfig,
    pipe3d: Sequence[str | Path | None] | None = None,
    overwrite: bool = False,
    where: str = "the posterior",
) -> IngestSummary:
    """Write MaNGA galaxies as an unlabelled dataset on ``config``'s grid.

    Args:
        maps: DAP MAPS files, one galaxy each.
        out: the dataset to write.
        config: the posterior's render config (``--like RUN``); it must carry
            an observation config.
        pipe3d: the Pipe3D file of each galaxy (same order), or None for
            kinematics only (then ``config`` may hold only kinematic channels).
        overwrite: replace an existing ``out``.
        where: what ``config`` belongs to, for messages (e.g. the run).

    Raises:
        RenderConfigMismatch: ``config`` has no observation config.
        ReaderError: a file is malformed, of the wrong DAP type, or all masked.
        ObservationError: a galaxy lacks a channel ``config`` needs, or too few
            of its pixels are valid on the posterior's grid.
        OutputPathError: ``out`` is an input or cannot be written.
    """
    if not maps:
        raise ObservationError("no MAPS files given")
    prefixes = expected_daptypes(config, where)
    paths = [Path(p) for p in maps]
    p3d = list(pipe3d) if pipe3d is not None else [None] * len(paths)
    if len(p3d) != len(paths):
        raise ObservationError(
            f"{len(paths)} MAPS files but {len(p3d)} Pipe3D files; give one "
            "Pipe3D file per MAPS file, in the same order"
        )
    p3d_paths = [None if p is None else Path(p) for p in p3d]
    check_output_path(
        out, inputs=[*paths, *[p for p in p3d_paths if p]], overwrite=True
    )
    # Everything is read first: an error leaves no partial dataset behind.
    results = [
        _one(m, p, config, prefixes) for m, p in zip(paths, p3d_paths, strict=True)
    ]
    summary = IngestSummary(output=Path(out))
    attrs = {
        "source": "ingest",
        "files": [str(p) for p in paths],
        "pipe3d": [None if p is None else str(p) for p in p3d_paths],
    }
    with DatasetWriter(out, config, overwrite=overwrite, attrs=attrs) as writer:
        for i, (views, note) in enumerate(results):
            writer.add_galaxy(
                views,
                galaxy_id=i,
                f_ex=math.nan,
                log_mstar=math.nan,
                half_mass_radius=math.nan,
                model="MaNGA",
            )
            summary.n_galaxies += 1
            summary.notes[str(paths[i])] = note
    return summary
