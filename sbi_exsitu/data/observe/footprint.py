"""MaNGA's hexagonal fibre-bundle footprints on the spaxel grid.

A bundle of 19, 37, 61, 91 or 127 fibres (2.5 arcsec pitch) is a hexagon
12.5 to 32.5 arcsec across its corners (Drory et al. 2015, table 2). The survey
assigns each galaxy the smallest bundle that covers it to 1.5 r_e (Primary) or
2.5 r_e (Secondary; Wake et al. 2017, sec. 3); a bundle "covers" radius R when
its nominal radius (half the corner-to-corner width, the size Wake et al. quote)
reaches R.

Example:
    >>> choose_bundle(r_e_arcsec=5.0, coverage_re=1.5)  # needs a 7.5 arcsec radius
    (37, 17.5)
    >>> int(hexagon_mask((40, 40), (20.0, 20.0), 25.0).sum())  # ~ 0.65 * 25^2
    408
"""

from __future__ import annotations

import numpy as np

from sbi_exsitu.data.observe.config import BUNDLES
from sbi_exsitu.data.observe.distance import kpc_per_arcsec

__all__ = ["choose_bundle", "hexagon_mask", "matched_redshift"]


def choose_bundle(r_e_arcsec: float, coverage_re: float) -> tuple[int, float]:
    """(fibres, across in arcsec) of the smallest bundle reaching coverage_re r_e.

    The largest bundle when none does (the galaxy is then covered less far).
    """
    need = coverage_re * r_e_arcsec
    for n_fibres, across in BUNDLES:
        if 0.5 * across >= need:
            return n_fibres, across
    return BUNDLES[-1]


def hexagon_mask(
    shape: tuple[int, int], centre: tuple[float, float], across: float
) -> np.ndarray:
    """(ny, nx) bool: spaxel centres inside a regular hexagon.

    Args:
        shape: the spaxel grid.
        centre: (x, y) of the hexagon's centre, spaxel units (the convention
            of :class:`~sbi_exsitu.data.observe.spaxels.SpaxelMaps`).
        across: corner-to-corner width, spaxels; corners lie on the x axis.
    """
    ny, nx = shape
    x = np.abs(np.arange(nx) + 0.5 - centre[0])[None, :]
    y = np.abs(np.arange(ny) + 0.5 - centre[1])[:, None]
    r = 0.5 * across
    # Flat top and bottom at r * sqrt(3) / 2, slanted sides through the corners.
    return (y <= r * np.sqrt(3) / 2) & (y <= np.sqrt(3) * (r - x))


def matched_redshift(
    r_e_kpc: float, coverage_re: float, across: float, lo: float, hi: float
) -> float:
    """The redshift in ``[lo, hi]`` where a bundle ``across`` arcsec wide reaches
    ``coverage_re`` r_e: MaNGA's size-matched selection (Wake et al. 2017, sec. 3).

    Clipped to the range when no redshift in it matches (the galaxy is then
    covered more or less far than asked).

    Example:
        >>> z = matched_redshift(5.0, 1.5, 32.5, 0.01, 0.15)  # 7.5 kpc / 16.25"
        >>> round(float(kpc_per_arcsec(z)), 3)
        0.462
    """
    # 1e-4 past the exact match (more than the interpolation's ~1e-7 error),
    # so that choose_bundle (>=) picks this bundle and not the next one.
    want = coverage_re * r_e_kpc / (0.5 * across) * (1.0 + 1e-4)
    z = np.geomspace(lo, hi, 2049)
    scale = kpc_per_arcsec(z)  # increasing below z ~ 1.6, so invertible here
    return float(np.interp(want, scale, z, left=lo, right=hi))
