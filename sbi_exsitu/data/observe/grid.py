"""Resample IFU spaxel maps onto a posterior's pixel grid.

The one bridge from :class:`~sbi_exsitu.data.observe.spaxels.SpaxelMaps` (mock
observations and survey readers alike) to the :class:`PixelStatistics` that
:func:`sbi_exsitu.data.render.preprocess` turns into a posterior's input.

The posterior grid has ``config.resolution`` pixels over ``config.fov_re *
r_e_arcsec`` arcsec, centred on ``spaxels.centre``. Each posterior pixel is
supersampled with k x k sub-points (k chosen so sub-points are at most half a
spaxel apart), each sub-point reading the spaxel it falls on:

* mass is area-weighted (each sub-point carries its share of the spaxel's
  surface density), so total mass is conserved where the grids overlap;
* velocity, age and metallicity are mass-weighted means of the spaxel values;
* dispersion goes through the second moment: sigma_pix^2 = <sigma^2 + v^2> -
  <v>^2 (mass-weighted), so a pixel spanning a velocity gradient gets the
  broadening a coarser spaxel would have measured;
* a pixel is valid when more than ``min_coverage`` of its sub-points fall on
  usable spaxels (valid in every channel the resampling needs) and it holds
  mass.

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.observe.spaxels import SpaxelMaps
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> ones = np.ones((40, 40))
    >>> sm = SpaxelMaps("toy", {"mass": ones, "velocity": 0 * ones},
    ...                 {"mass": ones > 0, "velocity": ones > 0},
    ...                 spaxel_arcsec=0.5, centre=(20.0, 20.0), r_e_arcsec=2.0)
    >>> cfg = RenderConfig(resolution=8, channels=("mass", "velocity"))
    >>> stats, valid = to_posterior_grid(sm, cfg)
    >>> round(float(stats.mass.sum()), 6), int(valid.sum())  # 16x16 spaxels
    (256.0, 64)
"""

from __future__ import annotations

import math

import numpy as np

from sbi_exsitu.data.observe.spaxels import SpaxelMaps
from sbi_exsitu.data.render import PixelStatistics, RenderConfig
from sbi_exsitu.errors import ObservationError

__all__ = ["to_posterior_grid", "posterior_pixel_spaxels"]


def posterior_pixel_spaxels(spaxels: SpaxelMaps, config: RenderConfig) -> float:
    """Side of one posterior pixel in spaxels."""
    width_arcsec = config.fov_re * spaxels.r_e_arcsec
    return width_arcsec / spaxels.spaxel_arcsec / config.resolution


def _needed_channels(spaxels: SpaxelMaps, config: RenderConfig) -> tuple[str, ...]:
    # Mass weights every other channel; dispersion needs the velocity for its
    # second moment when the maps carry one.
    need = ["mass", *config.channels]
    if "dispersion" in config.channels and "velocity" in spaxels.values:
        need.append("velocity")
    missing = sorted({c for c in need if c not in spaxels.values})
    if missing:
        raise ObservationError(
            f"{spaxels.name}: the posterior's channels {list(config.channels)} need "
            f"{missing} but these maps hold {sorted(spaxels.values)}; render a "
            "config without those channels or give maps that carry them"
        )
    return tuple(dict.fromkeys(need))


def to_posterior_grid(
    spaxels: SpaxelMaps, config: RenderConfig, min_coverage: float = 0.5
) -> tuple[PixelStatistics, np.ndarray]:
    """Resample spaxel maps onto the posterior's grid (see the module docstring).

    Args:
        spaxels: one view on the IFU's spaxel grid.
        config: the posterior's render config (resolution, fov_re, channels).
        min_coverage: fraction of a pixel's area that must fall on usable
            spaxels for it to be valid.

    Returns:
        ``(stats, valid)``: :class:`PixelStatistics` on the posterior grid
        (``count`` holds the usable area in spaxels, ``exsitu_fraction`` is NaN:
        the ex-situ map is never observed) and the (H, W) bool valid mask, to be
        passed as ``valid=`` to :func:`~sbi_exsitu.data.render.preprocess`.

    Raises:
        ObservationError: a channel the config needs is missing.
    """
    need = _needed_channels(spaxels, config)
    usable = spaxels.usable(need)
    ny, nx = spaxels.shape
    n = config.resolution
    pix = posterior_pixel_spaxels(spaxels, config)
    # Sub-points at most half a spaxel apart: every spaxel a pixel overlaps by
    # more than a sliver is sampled, and the area weights converge as 1/k.
    k = max(1, math.ceil(2.0 * pix))
    step = pix / k
    cx, cy = spaxels.centre
    offs = (np.arange(n * k) + 0.5) * step - 0.5 * n * pix
    sx = np.floor(cx + offs).astype(np.intp)
    sy = np.floor(cy + offs).astype(np.intp)
    okx, oky = (sx >= 0) & (sx < nx), (sy >= 0) & (sy < ny)
    sx, sy = np.clip(sx, 0, nx - 1), np.clip(sy, 0, ny - 1)
    on = usable[sy[:, None], sx[None, :]] & oky[:, None] & okx[None, :]

    def sample(a: np.ndarray) -> np.ndarray:
        return np.where(on, a[sy[:, None], sx[None, :]], 0.0)

    def pool(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, k, n, k).sum(axis=(1, 3))

    # Each sub-point covers step^2 spaxels of area: its share of the spaxel mass.
    m_sub = sample(spaxels.values["mass"]) * step**2
    mass = pool(m_sub)
    area = pool(on.astype(np.float64)) * step**2
    valid = (area > min_coverage * pix**2) & (mass > 0) & np.isfinite(mass)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(valid, 1.0 / np.where(valid, mass, 1.0), np.nan)

        def mean(a: np.ndarray) -> np.ndarray:
            return pool(m_sub * sample(a)) * inv

        nan = np.full((n, n), np.nan)
        out = {c: nan for c in ("velocity", "dispersion", "age", "metallicity")}
        has_v = "velocity" in spaxels.values
        if has_v:
            out["velocity"] = mean(spaxels.values["velocity"])
        if "dispersion" in spaxels.values:
            s = spaxels.values["dispersion"]
            if has_v:
                v = spaxels.values["velocity"]
                second = mean(s * s + v * v) - out["velocity"] ** 2
            else:
                second = mean(s * s)
            out["dispersion"] = np.sqrt(np.maximum(second, 0.0))
        for c in ("age", "metallicity"):
            if c in spaxels.values:
                out[c] = mean(spaxels.values[c])
    stats = PixelStatistics(
        mass=np.where(valid, mass, 0.0),
        count=area,
        velocity=out["velocity"],
        dispersion=out["dispersion"],
        age=out["age"],
        metallicity=out["metallicity"],
        exsitu_fraction=nan,
    )
    return stats, valid
