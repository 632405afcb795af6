"""Checks that observation maps match what a posterior was trained on.

Both posteriors (:mod:`sbi_exsitu.posteriors.scalar`,
:mod:`sbi_exsitu.posteriors.map.posterior`)
take maps as an array or a :class:`~sbi_exsitu.data.dataset.MapDataset` and refuse
maps rendered with another :class:`~sbi_exsitu.data.render.RenderConfig`, naming
every difference: a posterior applied to maps of another resolution, channel
set or normalisation returns confident nonsense, not an error.

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> cfg = RenderConfig(resolution=8, channels=("mass",))
    >>> as_observation_maps(np.zeros((1, 8, 8)), cfg, (1, 8, 8)).shape
    (1, 1, 8, 8)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import RenderConfigMismatch

__all__ = ["RenderConfigMismatch", "as_observation_maps", "check_render_config"]


def check_render_config(
    trained: RenderConfig, given: RenderConfig, where: str = "maps"
) -> None:
    """Raise :class:`RenderConfigMismatch` unless ``given == trained``.

    Args:
        trained: the config of the training maps.
        given: the config the maps at hand were rendered with.
        where: what the maps are (a file name), for the message.
    """
    if given != trained:
        raise RenderConfigMismatch(
            f"{where} were rendered with a different config than this posterior "
            "was trained on (given != trained): " + "; ".join(given.diff(trained))
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
        ValueError: NaN or infinite values.
    """
    if isinstance(maps, MapDataset):
        check_render_config(trained, maps.render_config, where=str(maps.path))
        return maps
    if render_config is not None:
        check_render_config(trained, render_config)
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[1:] != tuple(x_shape):
        raise RenderConfigMismatch(
            f"maps have shape {arr.shape[1:]} per observation, expected "
            f"{tuple(x_shape)} (channels {list(trained.channels)} at "
            f"{trained.resolution} px)"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("maps contain NaN or infinite values")
    return arr
