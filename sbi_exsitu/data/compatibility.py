"""Checks that observation maps match what a posterior was trained on.

Both posteriors (:mod:`sbi_exsitu.posteriors.scalar`,
:mod:`sbi_exsitu.posteriors.map.posterior`)
take maps as an array or a :class:`~sbi_exsitu.data.dataset.MapDataset` and refuse
maps rendered with another :class:`~sbi_exsitu.data.render.RenderConfig`, naming
every difference: a posterior applied to maps of another resolution, channel
set or normalisation returns confident nonsense, not an error.

The same module holds the one set of checks both posteriors run before any
sampling (issue #14, "nothing hangs, nothing silently wrong"): no empty input, no
integer maps, no NaN/inf (also in every batch streamed from a dataset, naming the
sample index), a positive ``num_samples`` and a result that fits in memory.

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> cfg = RenderConfig(resolution=8, channels=("mass",))
    >>> as_observation_maps(np.zeros((1, 8, 8)), cfg, (1, 8, 8)).shape
    (1, 1, 8, 8)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import (
    ObservationError,
    RenderConfigMismatch,
    SamplingLimitError,
)

__all__ = [
    "ObservationError",
    "RenderConfigMismatch",
    "SamplingLimitError",
    "as_observation_maps",
    "available_memory",
    "check_finite_maps",
    "check_render_config",
    "check_sampling_size",
    "iter_observations",
    "particle_cap_warning",
]


def particle_cap_warning(
    trained_cap: int | None, dataset: MapDataset, run_dir: str | Path | None = None
) -> str | None:
    """Why ``dataset``'s particle galaxies may be read low, or None.

    A posterior trained on galaxies of at most ``trained_cap`` star particles
    reads the smoother maps of a galaxy with many more as another galaxy (a mock
    galaxy of f_ex 0.168: 0.148 from 12k particles, 0.098 from 60k). Datasets
    rendered from particles (``render``, ``simulate``) are judged by
    :attr:`~sbi_exsitu.data.map_dataset.MapDataset.particle_cap`, which must be
    at most ``trained_cap``; others (``ingest``: observed maps) are not.

    Example:
        >>> particle_cap_warning(None, None) is None  # the run had no cap
        True
    """
    if trained_cap is None:
        return None
    source = dataset.attrs.get("source")
    if source not in ("render", "simulate"):
        return None
    given = dataset.particle_cap
    if given is not None and given <= trained_cap:
        return None
    run = "RUN" if run_dir is None else str(run_dir)
    had = "no particle cap" if given is None else f"a cap of {given} particles"
    return (
        f"{dataset.path}: rendered with {had}, the run's training galaxies had at "
        f"most {trained_cap}; galaxies with more particles give smoother maps, "
        "which this posterior reads low and narrow. Render them again like the "
        f"run: `sbi-exsitu render FILES --like {run} -o NEW.h5`"
    )


def check_render_config(
    trained: RenderConfig,
    given: RenderConfig,
    where: str = "maps",
    run_dir: str | Path | None = None,
) -> None:
    """Raise :class:`RenderConfigMismatch` unless ``given == trained``.

    Args:
        trained: the config of the training maps.
        given: the config the maps at hand were rendered with.
        where: what the maps are (a file name), for the message.
        run_dir: the posterior's run directory, to name the fix.
    """
    if given != trained:
        run = "RUN" if run_dir is None else str(run_dir)
        raise RenderConfigMismatch(
            f"{where} were rendered with a different config than this posterior "
            "was trained on (given != trained): "
            + "; ".join(given.diff(trained))
            + f". Render them again like the run: `sbi-exsitu render FILES "
            f"--like {run} -o NEW.h5` (MaNGA files: `sbi-exsitu ingest MAPS "
            f"--like {run} -o NEW.h5`)"
        )


def as_observation_maps(
    maps: Any,
    trained: RenderConfig,
    x_shape: tuple[int, int, int],
    render_config: RenderConfig | None = None,
) -> np.ndarray | MapDataset:
    """Checked observations: a dataset as it is, an array as (n, C, H, W) float32.

    Args:
        maps: a :class:`MapDataset`, or (n, C, H, W) / (C, H, W) maps.
        trained: the render config of the training maps.
        x_shape: (C, H, W) the posterior expects.
        render_config: the config the array was rendered with, if known.

    Raises:
        RenderConfigMismatch: another render config, or the wrong shape.
        ObservationError: no observations, integer maps, or NaN/inf values (a
            dataset's values are checked batch by batch by
            :func:`iter_observations`).
    """
    if isinstance(maps, MapDataset):
        check_render_config(trained, maps.render_config, where=str(maps.path))
        if len(maps) == 0:
            raise ObservationError(
                f"{maps.path}: the dataset holds no samples (n_complete = 0); "
                "render or simulate into it first"
            )
        return maps
    if render_config is not None:
        check_render_config(trained, render_config)
    raw = np.asarray(maps)
    if raw.dtype.kind not in "fc" and raw.size:
        # Rendered maps are floats (log surface densities, velocities); integers
        # mean quantised images (e.g. 0..255), whose numbers are not the
        # training maps' numbers: converting would give shifted answers.
        raise ObservationError(
            f"maps have dtype {raw.dtype}, expected floating-point maps as "
            "written by the renderer; pass the rendered float maps (not an "
            "image export), or .astype(np.float32) if the integers are the "
            "physical values"
        )
    if raw.size == 0:
        raise ObservationError(
            f"maps have shape {raw.shape}: no observations to sample from"
        )
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[1:] != tuple(x_shape):
        raise RenderConfigMismatch(
            f"maps have shape {arr.shape[1:]} per observation, expected "
            f"{tuple(x_shape)} (channels {list(trained.channels)} at "
            f"{trained.resolution} px)"
        )
    check_finite_maps(arr, "maps")
    return arr


def check_finite_maps(maps: np.ndarray, where: str, indices: Any = None) -> None:
    """Raise :class:`ObservationError` naming the first sample with NaN or inf.

    Args:
        maps: (n, ...) a batch of maps.
        where: what they are (a file name), for the message.
        indices: the sample index of each row (default 0..n-1).

    Example:
        >>> check_finite_maps(np.array([[0.0], [np.nan]]), "maps")
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.ObservationError: maps: sample 1 has 1 NaN \
or infinite value(s) (field 'maps', expected finite numbers); fix or drop that \
sample before sampling
    """
    bad = ~np.isfinite(maps.reshape(len(maps), -1))
    rows = np.flatnonzero(bad.any(axis=1))
    if rows.size:
        i = rows[0]
        index = int(i if indices is None else np.asarray(indices)[i])
        more = f" (and {rows.size - 1} more samples)" if rows.size > 1 else ""
        raise ObservationError(
            f"{where}: sample {index} has {int(bad[i].sum())} NaN or infinite "
            f"value(s){more} (field 'maps', expected finite numbers); fix or drop "
            "that sample before sampling"
        )


def iter_observations(
    maps: np.ndarray | MapDataset, batch_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, batch)`` of checked (B, C, H, W) float32 observations.

    Arrays were checked whole by :func:`as_observation_maps`; every batch
    streamed from a dataset is checked here, as it is read.
    """
    if isinstance(maps, MapDataset):
        start = 0
        for idx, x in maps.iter_batches(batch_size=batch_size):
            check_finite_maps(x, str(maps.path), idx)
            yield start, np.asarray(x, dtype=np.float32)
            start += len(x)
    else:
        for start in range(0, len(maps), batch_size):
            yield start, maps[start : start + batch_size]


def available_memory() -> int | None:
    """Bytes of memory available to this process now (None if unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_sampling_size(
    n_obs: int, num_samples: Any, values_per_draw: int, *, hint: str = ""
) -> None:
    """Refuse a ``num_samples`` that is not positive or whose draws cannot fit.

    The draws are ``n_obs * num_samples * values_per_draw`` float32 values,
    held at once; refusing up front beats swapping for an hour, then dying.

    Args:
        n_obs: observations sampled in one call.
        num_samples: draws per observation.
        values_per_draw: D for a scalar posterior, H * W for a map posterior.
        hint: how else to get the draws, appended to the message.

    Example:
        >>> check_sampling_size(10, 0, 1)
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.SamplingLimitError: num_samples is 0, \
expected a positive integer (e.g. 1000)
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise SamplingLimitError(
            f"num_samples is {num_samples!r}, expected a positive integer (e.g. 1000)"
        )
    if num_samples < 1:
        raise SamplingLimitError(
            f"num_samples is {num_samples}, expected a positive integer (e.g. 1000)"
        )
    need = 4 * int(n_obs) * int(num_samples) * int(values_per_draw)
    avail = available_memory()
    if avail is not None and need > avail:
        raise SamplingLimitError(
            f"{n_obs} observations x {num_samples} draws x {values_per_draw} "
            f"values need {need / 2**30:.3g} GiB, more than the "
            f"{avail / 2**30:.3g} GiB of memory available; lower num_samples"
            + (f" or {hint}" if hint else "")
        )
