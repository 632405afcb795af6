"""The observation stage: galaxies seen the way an IFU survey (MaNGA) sees them.

Mock galaxies and survey files meet in one product, :class:`SpaxelMaps` (maps on
the instrument's spaxel grid, in physical units, with per-channel validity); one
resampler, :func:`to_posterior_grid`, takes it onto a posterior's pixel grid, so
observed mocks and real data go through the same code from there on.

Modules: ``config`` (:class:`ObserveConfig`, every switch and its source),
``distance`` (Planck18 kpc/arcsec), ``footprint`` (hexagonal bundles),
``noise`` (correlated noise, covariance correction), ``binning`` (S/N binning
with powerbin), ``stage`` (particles -> :class:`SpaxelMaps`), ``grid`` (the
resampler), ``spaxels`` (the product).
"""

from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.data.observe.distance import kpc_per_arcsec
from sbi_exsitu.data.observe.grid import to_posterior_grid
from sbi_exsitu.data.observe.spaxels import SPAXEL_CHANNELS, SpaxelMaps
from sbi_exsitu.data.observe.stage import observe_views, render_observed_views

__all__ = [
    "SPAXEL_CHANNELS",
    "ObserveConfig",
    "SpaxelMaps",
    "kpc_per_arcsec",
    "observe_views",
    "render_observed_views",
    "to_posterior_grid",
]
