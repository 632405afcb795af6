"""The observation stage: galaxies seen the way an IFU survey (MaNGA) sees them.

Mock galaxies and survey files meet in one product, :class:`SpaxelMaps` (maps on
the instrument's spaxel grid, in physical units, with per-channel validity); one
resampler, :func:`to_posterior_grid`, takes it onto a posterior's pixel grid, so
observed mocks and real data go through the same code from there on.
"""

from sbi_exsitu.data.observe.grid import to_posterior_grid
from sbi_exsitu.data.observe.spaxels import SPAXEL_CHANNELS, SpaxelMaps

__all__ = ["SPAXEL_CHANNELS", "SpaxelMaps", "to_posterior_grid"]
