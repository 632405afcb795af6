"""``eagle-like``: stellar-population recipes in the manner of EAGLE-L100 (Ref).

Shares every gravity-driven parameter with the other models (see
:data:`~sbi_exsitu.data.mock.parameters.GRAVITY_FIELDS`); differs in

- f_ex–M*: M0 = 10^11.7, alpha = 1, i.e. f_ex ≈ 0.17 at 1e11 Msun (Qu+17:
  ~20% ex situ above 1e11, in situ dominating below 10^10.5);
- metallicity: shallow in-situ gradients inside R_e (−0.05 to −0.15 dex per R_e)
  that flatten beyond it (median outer gradient near zero, 001 fig. 13), and a
  flatter MZR at low mass (log Z/Z☉ = −0.35, −0.10, +0.05 at 1e9, 1e10, 1e11 Msun;
  EAGLE-Ref's low-mass metallicities are too high, Schaye+15 fig. 13), so accreted
  stars are only mildly metal-poorer and outer gradients stay flat;
- ages: 0.5 Gyr older than ``tng-like``.

Example:
    >>> model = EagleLike()
    >>> round(float(model.mean_f_ex(11.0)), 2)
    0.17
"""

from __future__ import annotations

from dataclasses import dataclass

from sbi_exsitu.data.mock.base import FormationModel
from sbi_exsitu.data.mock.registry import register_model

__all__ = ["EagleLike"]


@register_model("eagle-like")
@dataclass(frozen=True)
class EagleLike(FormationModel):
    """EAGLE-L100-like stellar populations (see the module docstring)."""

    fex_log_m0: float = 11.7
    fex_slope: float = 1.0
    age_offset_gyr: float = 0.0
    mzr_z_sat: float = 0.275
    mzr_amplitude: float = 0.625
    mzr_scale_dex: float = 1.958
    insitu_z_gradient_inner_range: tuple[float, float] = (-0.15, -0.05)
    insitu_z_gradient_outer_range: tuple[float, float] = (-0.03, 0.03)
    exsitu_z_offset_dex: float = -0.1
