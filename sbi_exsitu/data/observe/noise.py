"""Spatially correlated IFU noise and the covariance correction of binned S/N.

MaNGA cubes are built by drizzling dithered fibre exposures, so neighbouring
spaxels share photons: the noise correlation is close to a Gaussian of the
separation with sigma = 1.92 spaxels (Law et al. 2016, sec. 9.3; Westfall et al.
2019, sec. 4). White noise convolved with a Gaussian kernel of width
sigma / sqrt(2) has exactly that correlation (the autocorrelation of a Gaussian
of width s is a Gaussian of width s sqrt(2)); dividing by the kernel's L2 norm
gives unit variance. The noise of a sum of N correlated spaxels exceeds the
uncorrelated value by n_covar / n_nocovar = 1 + 1.62 log10(N) for N <= 100 and
about 4.2 above (Law et al. 2016, eq. 16 and fig. 18).

Example:
    >>> rng = np.random.default_rng(0)
    >>> z = correlated_noise(rng, (200, 200), 1.92)
    >>> bool(abs(z.std() - 1) < 0.05)
    True
    >>> covariance_factor(np.array([1, 10, 1000]))
    array([1.  , 2.62, 4.24])
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["correlated_noise", "covariance_factor"]


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float
) -> np.ndarray:
    """Unit-variance Gaussian noise on the last two axes of ``shape``.

    Args:
        rng: the random stream.
        shape: (..., ny, nx); leading axes are independent fields.
        sigma: Gaussian correlation length in spaxels (0 = white noise).
    """
    if sigma <= 0:
        return rng.standard_normal(shape)
    s = sigma / np.sqrt(2.0)
    pad = int(np.ceil(4 * s))
    *lead, ny, nx = shape
    # Draw on a padded grid and crop, so the edges have the full variance.
    white = rng.standard_normal((*lead, ny + 2 * pad, nx + 2 * pad))
    x = np.arange(-pad, pad + 1)
    kernel = np.exp(-0.5 * (x / s) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # per axis: the 2-D L2 norm is 1
    out = ndimage.convolve1d(white, kernel, axis=-1, mode="constant")
    out = ndimage.convolve1d(out, kernel, axis=-2, mode="constant")
    return out[..., pad : pad + ny, pad : pad + nx]


def covariance_factor(n: np.ndarray) -> np.ndarray:
    """n_covar / n_nocovar for bins of ``n`` spaxels (Law et al. 2016, eq. 16)."""
    n = np.asarray(n, dtype=np.float64)
    return np.where(n <= 100, 1.0 + 1.62 * np.log10(np.maximum(n, 1.0)), 4.24)
