"""One galaxy as an IFU delivers it: maps on the instrument's spaxel grid.

The common product of the two ways an observation is made: the mock observation
stage (particles -> PSF -> footprint -> noise -> binning) and the survey readers
(MaNGA DAP MAPS plus a stellar-population catalogue). Everything downstream — the
resampling onto a posterior's grid and the paper's preprocessing — reads only this,
so mocks and real galaxies cannot drift apart in how they are treated.

Units are those of :class:`sbi_exsitu.data.render.PixelStatistics`, so the
preprocessing of rendered maps applies unchanged:

* ``mass``: stellar mass per spaxel (Msun; any constant factor is harmless, the
  maps are standardised);
* ``velocity``: line-of-sight velocity relative to systemic (km/s, positive =
  receding);
* ``dispersion``: line-of-sight velocity dispersion with the instrumental
  broadening removed (km/s);
* ``age``: mass-weighted stellar age (Gyr);
* ``metallicity``: mass-weighted metal mass fraction Z (linear, not log).

Arrays are (ny, nx), indexed ``[y, x]`` as astropy reads a FITS image; the spaxel
(i, j) covers x in [j, j + 1) and y in [i, i + 1) in spaxel units, so a centre
at (nx / 2, ny / 2) is the middle of the array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sbi_exsitu.errors import ObservationError

__all__ = ["SPAXEL_CHANNELS", "SpaxelMaps"]

SPAXEL_CHANNELS: tuple[str, ...] = (
    "mass",
    "velocity",
    "dispersion",
    "age",
    "metallicity",
)


@dataclass(frozen=True)
class SpaxelMaps:
    """Maps of one galaxy (one view) on an IFU's spaxel grid.

    Attributes:
        name: what the galaxy is, for messages (e.g. ``"manga-8485-1901"``).
        values: channel name -> (ny, nx) float64 map, units as in the module
            docstring; a subset of :data:`SPAXEL_CHANNELS`.
        valid: channel name -> (ny, nx) bool, the spaxels whose value may be
            used (inside the footprint, not flagged, above the S/N threshold).
        spaxel_arcsec: spaxel side (MaNGA: 0.5 arcsec).
        centre: (x, y) of the galaxy centre in spaxel units (see the module
            docstring for the convention).
        r_e_arcsec: the half-light (or half-mass) radius that sets the posterior's
            grid, arcsec.
        redshift: the galaxy's redshift, or None when unknown.
        bin_id: (ny, nx) int, the bin each spaxel belongs to (-1 = none), or None
            for unbinned maps.
        error: channel name -> (ny, nx) 1-sigma error, where known.
    """

    name: str
    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    spaxel_arcsec: float
    centre: tuple[float, float]
    r_e_arcsec: float
    redshift: float | None = None
    bin_id: np.ndarray | None = None
    error: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.values) - set(SPAXEL_CHANNELS))
        if unknown:
            raise ObservationError(
                f"{self.name}: unknown channels {unknown}, "
                f"expected a subset of {list(SPAXEL_CHANNELS)}"
            )
        if set(self.valid) != set(self.values):
            raise ObservationError(
                f"{self.name}: 'valid' has channels {sorted(self.valid)} but "
                f"'values' has {sorted(self.values)}; give one mask per channel"
            )
        shapes = {a.shape for a in [*self.values.values(), *self.valid.values()]}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ObservationError(
                f"{self.name}: every map must be one 2-D (ny, nx) array, got "
                f"shapes {sorted(shapes)}"
            )
        if not self.spaxel_arcsec > 0 or not self.r_e_arcsec > 0:
            raise ObservationError(
                f"{self.name}: spaxel_arcsec={self.spaxel_arcsec} and "
                f"r_e_arcsec={self.r_e_arcsec} must both be > 0"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the spaxel grid."""
        return next(iter(self.values.values())).shape

    def usable(self, channels: tuple[str, ...]) -> np.ndarray:
        """(ny, nx) bool: spaxels valid in every one of ``channels``.

        Raises:
            ObservationError: a channel is missing, naming what the maps hold.
        """
        missing = [c for c in channels if c not in self.values]
        if missing:
            raise ObservationError(
                f"{self.name}: no {missing} map; these maps hold {sorted(self.values)}"
            )
        return np.logical_and.reduce([self.valid[c] for c in channels])
