"""``tng-like``: stellar-population recipes in the manner of IllustrisTNG100.

Shares every gravity-driven parameter with the other models (see
:data:`~sbi_exsitu.data.mock.parameters.GRAVITY_FIELDS`); differs in

- f_ex–M*: M0 = 10^11.5, alpha = 1, i.e. f_ex ≈ 0.03 / 0.24 / 0.76 at 1e10 / 1e11 /
  1e12 Msun (Rodriguez-Gomez+16 for Illustris-like runs);
- metallicity: steep, predominantly negative in-situ gradients continuing outside
  R_e (−0.2 to −0.3 dex per R_e, 001 fig. 13 and sec. 7.1.2) and the observed MZR
  (log Z/Z☉ = −0.6, −0.23, +0.05 at 1e9, 1e10, 1e11 Msun) for the accreted
  progenitors, so accreted stars are markedly metal-poorer;
- ages: 0.5 Gyr younger overall than ``eagle-like`` (001 sec. 2.4: the TNG sample is
  younger); a constant shift leaves standardised age maps unchanged.

Example:
    >>> model = TNGLike()
    >>> round(float(model.mean_f_ex(11.0)), 2)
    0.24
"""

from __future__ import annotations

from dataclasses import dataclass

from sbi_exsitu.data.mock.base import FormationModel
from sbi_exsitu.data.mock.registry import register_model

__all__ = ["TNGLike"]


@register_model("tng-like")
@dataclass(frozen=True)
class TNGLike(FormationModel):
    """TNG100-like stellar populations (see the module docstring)."""

    fex_log_m0: float = 11.5
    fex_slope: float = 1.0
    age_offset_gyr: float = -0.5
    mzr_z_sat: float = 0.923
    mzr_amplitude: float = 1.523
    mzr_scale_dex: float = 3.59
    insitu_z_gradient_inner_range: tuple[float, float] = (-0.3, -0.2)
    insitu_z_gradient_outer_range: tuple[float, float] = (-0.3, -0.2)
    exsitu_z_offset_dex: float = -0.1
