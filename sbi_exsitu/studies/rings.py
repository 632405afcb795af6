"""Ring means of maps at radii in units of r_e (shared by the inspection figures).

Ring means use the unmasked pixels whose centre lies within ``max(1 px, 0.15 r)``
of the ring radius ``r``; a ring without data gives NaN.

Example:
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:32, :32] + 0.5 - 16
    >>> maps = (np.hypot(xx, yy) / 8)[None, None]  # r in r_e (fov = 4 r_e)
    >>> means = ring_means(maps, np.ones((1, 32, 32), bool), 4.0, radii=(1.0,))
    >>> round(float(means[0, 0, 0]), 1)
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sbi_exsitu.data.dataset import MapDataset

__all__ = ["ring_means", "dataset_label"]

#: Ring radii (r_e) of the 001 fig. 13 gradients.
_RADII = (0.25, 0.5, 1.0, 2.0)


def _ring_weights(size: int, fov_re: float, radii: Sequence[float]) -> np.ndarray:
    """(R, H*W) 0/1 weights of the pixels in each ring."""
    centre = np.arange(size) + 0.5 - size / 2
    r_px = np.hypot(centre[:, None], centre[None, :]).ravel()
    px_per_re = size / fov_re
    rings = []
    for r in radii:
        half = max(1.0, 0.15 * r * px_per_re)
        rings.append(np.abs(r_px - r * px_per_re) <= half)
    return np.asarray(rings, dtype=np.float64)


def ring_means(
    maps: np.ndarray,
    mask: np.ndarray,
    fov_re: float,
    radii: Sequence[float] = _RADII,
) -> np.ndarray:
    """Mean of the unmasked pixels in rings at ``radii`` (in r_e).

    Args:
        maps: (N, C, H, W) maps.
        mask: (N, H, W) bool, pixels holding data.
        fov_re: field of view (full width) in r_e.
        radii: ring radii in r_e.

    Returns:
        (N, C, R) ring means, NaN where a ring has no unmasked pixel.
    """
    n, c, h, w = maps.shape
    weights = _ring_weights(h, fov_re, radii)  # (R, P)
    m = mask.reshape(n, 1, h * w).astype(np.float64)
    sums = (maps.reshape(n, c, h * w) * m) @ weights.T
    counts = m @ weights.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def dataset_label(ds: MapDataset) -> str:
    """The dataset's formation model names (or its file stem), for legends."""
    models = sorted(set(ds.labels["model"].tolist()))
    return "+".join(models) if models else ds.path.stem
