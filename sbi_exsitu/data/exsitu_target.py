"""The ex-situ target map above the particle shot noise (issue #19).

The raw per-pixel ex-situ fraction of a mock galaxy is the ratio of the
ex-situ and total particle mass in the pixel: with a few particles per pixel,
about half of the unmasked pixels are exactly 0 or 1 (shot noise, not
structure). ``RenderConfig.exsitu_smooth_sigma`` stores instead the ratio of
the Gaussian-smoothed masses (:func:`smoothed_exsitu_fraction`). A fixed kernel
in pixels, chosen by ``benchmarks/exsitu_target.py`` against a 15x richer
independent draw of the same galaxies (docs/map-posterior.md): 1 px at 32 px
and 1.5 px at 64 px; a width adapted to the particle count per pixel did no
better.

Example:
    >>> import numpy as np
    >>> mass = np.zeros((5, 5)); mass[2, 2] = mass[2, 3] = 1.0
    >>> frac = np.where(mass > 0, 0.0, np.nan); frac[2, 3] = 1.0
    >>> float(smoothed_exsitu_fraction(mass, frac, 0.0)[2, 2])
    0.0
    >>> 0.0 < float(smoothed_exsitu_fraction(mass, frac, 1.0)[2, 2]) < 0.5
    True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["smoothed_exsitu_fraction"]


def smoothed_exsitu_fraction(
    mass: np.ndarray, exsitu_fraction: np.ndarray, sigma: float
) -> np.ndarray:
    """smooth(ex-situ mass) / smooth(mass) on an (H, W) image, in [0, 1].

    Both masses are filtered with one Gaussian of ``sigma`` pixels over the
    whole field of view (zero padding, so every particle counts once wherever
    it lies): the ratio stays a mass fraction and a pixel of a few particles of
    one origin gets the fraction of its neighbourhood. NaN where the smoothed
    mass is 0; ``sigma = 0`` returns ``exsitu_fraction`` itself (the raw ratio).

    Args:
        mass: (H, W) stellar mass per pixel (0 where empty).
        exsitu_fraction: (H, W) raw ex-situ mass fraction (NaN where empty).
        sigma: kernel width in pixels.
    """
    if sigma == 0:
        return exsitu_fraction
    ex_mass = np.where(mass > 0, exsitu_fraction * mass, 0.0)
    num = ndimage.gaussian_filter(ex_mass, sigma, mode="constant")
    den = ndimage.gaussian_filter(mass, sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(frac, 0.0, 1.0)
