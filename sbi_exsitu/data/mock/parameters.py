"""The formation-model parameters: physical ranges, the two groups, validation.

The parameters split in two groups: :data:`GRAVITY_FIELDS` (mass profiles,
kinematics, assembly mix and sampling resolution), which registered models must
share, and :data:`POPULATION_FIELDS` (ages, metallicities, the f_ex-M* relation),
in which they may differ, as TNG100 and EAGLE do (001 sec. 7.1.2).

Example:
    >>> "fex_slope" in POPULATION_FIELDS, "disc_re_kpc" in GRAVITY_FIELDS
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from sbi_exsitu.errors import ModelError

if TYPE_CHECKING:
    from sbi_exsitu.data.mock.base import FormationModel

__all__ = ["GRAVITY_FIELDS", "POPULATION_FIELDS", "ModelError", "validate_model"]


# Physical ranges: (low, high) inclusive; None = unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "log_mstar_range": (6.0, 13.5),
    "particle_mass": (1e2, 1e10),
    "max_particles": (100, 10_000_000),
    "min_particles": (100, 10_000_000),
    "fex_log_m0": (8.0, 14.0),
    "fex_slope": (0.01, 10.0),
    "fex_scatter_dex": (0.0, 3.0),
    "disc_re_kpc": (0.1, 50.0),
    "disc_re_logm_pivot": (6.0, 13.5),
    "disc_re_slope": (0.0, 1.0),
    "disc_re_scatter_dex": (0.0, 1.0),
    "disc_thickness_range": (0.01, 1.0),
    "disc_sigma_z_over_r": (0.05, 2.0),
    "bulge_fraction_range": (0.0, 0.9),
    "insitu_halo_fraction_range": (0.0, 0.5),
    "bulge_re_ratio": (0.01, 2.0),
    "bulge_sersic_n": (0.5, 10.0),
    "exsitu_sersic_n_range": (0.5, 10.0),
    "exsitu_re_ratio_range": (0.1, 20.0),
    "exsitu_spin_range": (0.0, 1.0),
    "shmr_norm": (1e-4, 1.0),
    "shmr_log_m1": (9.0, 14.0),
    "shmr_beta": (0.0, 5.0),
    "shmr_gamma": (0.0, 5.0),
    "halo_scatter_dex": (0.0, 1.0),
    "conc_a": (0.0, 2.0),
    "conc_b": (-1.0, 1.0),
    "conc_scatter_dex": (0.0, 1.0),
    "merger_class_fractions": (0.0, 1.0),
    "merger_log_mu_edges": (-5.0, 0.0),
    "merger_class_concentration": (0.01, 1e4),
    "debris_fraction": (0.0, 1.0),
    "infall_beta": (0.1, 20.0),
    "infall_max_gyr": (0.1, 13.7),
    "host_growth_dex_per_gyr": (0.0, 0.5),
    "debris_apo_re": (0.05, 100.0),
    "debris_apo_mu_slope": (0.0, 2.0),
    "debris_apo_scatter_dex": (0.0, 1.0),
    "debris_kappa_range": (0.0, 1.5),
    "disc_plane_merger_fraction": (0.0, 1.0),
    "debris_max_orbits": (0.1, 1000.0),
    "debris_steps": (1, 100_000),
    "debris_tracers": (1, 1_000_000),
    "debris_scheme": (1, 2),
    "age_offset_gyr": (-5.0, 5.0),
    "insitu_age_pivot_gyr": (0.1, 13.8),
    "insitu_age_slope": (-5.0, 5.0),
    "insitu_age_gradient": (-5.0, 5.0),
    "age_scatter_gyr": (0.0, 5.0),
    "exsitu_age_range": (0.1, 13.8),
    "age_max_gyr": (1.0, 13.8),
    "mzr_z_sat": (-2.0, 2.0),
    "mzr_amplitude": (0.0, 5.0),
    "mzr_scale_dex": (0.1, 20.0),
    "insitu_z_gradient_inner_range": (-2.0, 2.0),
    "insitu_z_gradient_outer_range": (-2.0, 2.0),
    "insitu_z_break": (0.0, 10.0),
    "exsitu_z_offset_dex": (-2.0, 2.0),
    "exsitu_z_gradient": (-2.0, 2.0),
    "z_scatter_dex": (0.0, 1.0),
}

#: Parameters registered models must share: mass profiles, kinematics, assembly mix
#: and the sampling resolution.
GRAVITY_FIELDS: tuple[str, ...] = (
    "log_mstar_range", "particle_mass", "max_particles", "min_particles",
    "disc_re_kpc", "disc_re_logm_pivot", "disc_re_slope", "disc_re_scatter_dex",
    "disc_thickness_range", "disc_sigma_z_over_r", "bulge_fraction_range",
    "insitu_halo_fraction_range",
    "bulge_re_ratio", "bulge_sersic_n", "exsitu_sersic_n_range",
    "exsitu_re_ratio_range", "exsitu_spin_range", "shmr_norm", "shmr_log_m1",
    "shmr_beta", "shmr_gamma", "halo_scatter_dex", "conc_a", "conc_b",
    "conc_scatter_dex", "merger_class_fractions", "merger_log_mu_edges",
    "merger_class_concentration", "debris_fraction", "infall_beta",
    "infall_max_gyr", "host_growth_dex_per_gyr", "debris_apo_re", "debris_apo_mu_slope",
    "debris_apo_scatter_dex", "debris_kappa_range", "disc_plane_merger_fraction",
    "debris_max_orbits", "debris_steps", "debris_tracers", "debris_scheme",
)  # fmt: skip
#: Parameters in which models may differ: stellar populations and f_ex–M*.
POPULATION_FIELDS: tuple[str, ...] = tuple(
    k for k in _RANGES if k not in GRAVITY_FIELDS
)


def validate_model(model: FormationModel) -> None:
    """Raise :class:`ModelError` naming the first parameter out of its range."""
    where = f"model '{model.name}'"
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        lo, hi = _RANGES.get(f.name, (None, None))
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ModelError(
                    f"{where}: parameter '{f.name}' must be numeric, got {value!r}"
                )
            if (
                not math.isfinite(v)
                or (lo is not None and v < lo)
                or (hi is not None and v > hi)
            ):
                raise ModelError(
                    f"{where}: parameter '{f.name}' = {value!r} is outside its "
                    f"physical range [{lo}, {hi}]"
                )
        if f.name.endswith("_range"):
            if len(values) != 2 or values[0] > values[1]:
                raise ModelError(
                    f"{where}: parameter '{f.name}' = {value!r} must be a pair "
                    "(low, high) with low <= high"
                )
    for key in (
        "max_particles", "min_particles", "debris_steps", "debris_tracers",
        "debris_scheme",
    ):  # fmt: skip
        if int(getattr(model, key)) != getattr(model, key):
            raise ModelError(f"{where}: parameter '{key}' must be an integer")
    fr, edges = model.merger_class_fractions, model.merger_log_mu_edges
    if len(edges) != len(fr) + 1 or any(
        a <= b for a, b in zip(edges[:-1], edges[1:], strict=True)
    ):
        raise ModelError(
            f"{where}: 'merger_log_mu_edges' must be {len(fr) + 1} decreasing values "
            f"(one more than 'merger_class_fractions'), got {edges!r}"
        )
    if not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ModelError(
            f"{where}: 'merger_class_fractions' must sum to 1, got {sum(fr):.6g}"
        )
