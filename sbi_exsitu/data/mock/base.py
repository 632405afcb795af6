"""The mock formation model: a prior over galaxies and a particle sampler.

A :class:`FormationModel` is a frozen dataclass of named parameters; ``draw(seed)``
returns a galaxy's :class:`~sbi_exsitu.data.particles.Particles` with an exact
per-particle
ex-situ flag, plus a dict of the drawn galaxy parameters. Every galaxy has

- an **in-situ** component: an exponential disc (rotation-supported, asymmetric drift)
  plus a Sérsic bulge of per-galaxy fraction B/T ~ U(0.02, 0.4) of the in-situ mass
  (SDSS discs span B/T ≈ 0-0.5, Gadotti 2009) and a heated / kicked-out in-situ
  halo of U(0, 0.1) of it (in the ex-situ spheroid's shape, populations of the inner
  disc; in-situ haloes hold a few to tens of per cent of halo stars, Font et al.
  2011, Cooper et al. 2015), with inside-out ages and a negative metallicity
  gradient; its metallicity follows a stellar mass–metallicity relation (MZR);
- an **ex-situ** component made of satellite **debris**
  (:mod:`~sbi_exsitu.data.mock.debris`): a merger history (number, mass ratios from
  the major / minor / very-minor mix, infall times), each satellite with its own
  population (ages truncated at infall, MZR at its own mass) stripped along an
  orbit in the galaxy's potential — old events phase-mixed into a halo, recent
  ones streams and shells, some prograde in the disc plane. ``debris_fraction``
  < 1 keeps part of it as the earlier smooth Sérsic n≈3–4 spheroid (R_e,ex / R_e,in
  ≈ 2–4, isotropic Jeans, v/σ ≲ 0.3, MZR at a per-particle progenitor mass);
  ``info`` carries the ERGO-ML assembly labels (Eisert et al. 2023);
- an NFW **dark halo** (Moster+13 stellar-to-halo mass relation, Dutton & Macciò 2014
  concentrations) that enters the potential only;
- a random 3D orientation.

Every number is a parameter; the defaults, with their sources:
f_ex(M*) = 1 / (1 + (M*/M0)^-α) with 0.3 dex scatter in log10(f/(1-f))
(Rodriguez-Gomez+16, Qu+17), particle mass 1.4e6 Msun (TNG100), in-situ ages 6–10 Gyr,
ex-situ ages 10–12 Gyr, MZR log Z/Z☉ = −0.6, −0.23, +0.05 at 1e9, 1e10, 1e11 Msun
(Gallazzi+05-like), in-situ gradients −0.1 to −0.3 dex / R_e, ex-situ mass from major
(μ > 1/4, 50%), minor (1/10–1/4, 20%) and very minor / stripped (30%) mergers.

The parameters split in two groups (:mod:`sbi_exsitu.data.mock.parameters`):
registered models share the gravity-driven ones and differ only in the stellar
populations and the f_ex–M* relation.

Particle count: ``N = clip(M* / particle_mass, min_particles, max_particles)`` and the
particle mass is rescaled to ``M* / N`` — coarser than TNG100 for massive galaxies
when the cap binds (speed), finer for the least massive ones (so that a 4 r_e map is
not mostly empty). The ex-situ particle count is ``round(f_ex N)``, so the measured
f_ex equals the drawn one to 1/(2N).

Randomness: ``draw`` splits the seed into three independent streams (prior draw of
M* and f_ex; structure and phase space; stellar populations), so two models that
share the gravity-driven parameters give bit-identical positions and velocities for
the same seed, M* and f_ex.

Example:
    >>> model = FormationModel()
    >>> particles, info = model.draw(0, log_mstar=10.5, f_ex=0.2)
    >>> abs(particles.f_ex - 0.2) < 1e-3, round(particles.log_mstar, 3)
    (True, 10.5)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sbi_exsitu.data.mock._sampling import (
    Z_SUN,
    SeedLike,
    _child,
    _streams,
    phase_space,
    populations,
)
from sbi_exsitu.data.mock.debris import (
    AccretionHistory,
    OrbitRecipe,
    assembly_summaries,
    draw_history,
)
from sbi_exsitu.data.mock.parameters import (
    GRAVITY_FIELDS,
    POPULATION_FIELDS,
    ModelError,
    validate_model,
)
from sbi_exsitu.data.mock.profiles import (
    NFW,
    ExponentialDisc,
    GalaxyStructure,
    Sersic,
)
from sbi_exsitu.data.particles import Particles

__all__ = [
    "FormationModel",
    "GalaxyStructure",
    "ModelError",
    "GRAVITY_FIELDS",
    "POPULATION_FIELDS",
    "Z_SUN",
    "SeedLike",
]


@dataclass(frozen=True)
class FormationModel:
    """A mock galaxy-formation model (defaults: shared physics, TNG-like recipes).

    Ranges ``(low, high)`` are uniform priors drawn per galaxy. Subclasses register
    themselves with :func:`sbi_exsitu.data.mock.registry.register_model` and override
    only :data:`POPULATION_FIELDS`.

    Raises:
        ModelError: a parameter lies outside its physical range (the message names
            the parameter, its value and the allowed range).
    """

    name: ClassVar[str] = "base"

    # --- prior and sampling -------------------------------------------------
    #: log10 M*/Msun, uniform prior ([10, 12], the mass range of 001).
    log_mstar_range: tuple[float, float] = (10.0, 12.0)
    #: Target particle mass in Msun (TNG100: 1.4e6).
    particle_mass: float = 1.4e6
    #: Cap on star particles per galaxy; the particle mass grows when it binds.
    max_particles: int = 30_000
    #: Floor on star particles so low-mass galaxies still fill a 4 r_e map (the
    #: particle mass shrinks when it binds; never above ``max_particles``).
    min_particles: int = 10_000

    # --- f_ex–M* relation (population) --------------------------------------
    #: log10 M0 of f_ex = 1 / (1 + (M*/M0)^-alpha) (TNG-like 11.5).
    fex_log_m0: float = 11.5
    #: alpha of the f_ex–M* relation.
    fex_slope: float = 1.0
    #: Scatter of log10(f_ex / (1 - f_ex)) at fixed M* (dex).
    fex_scatter_dex: float = 0.3

    # --- structure (gravity) ------------------------------------------------
    #: Projected half-mass radius of the in-situ disc at the pivot mass (kpc).
    disc_re_kpc: float = 3.5
    #: Pivot log10 in-situ mass of the disc size–mass relation.
    disc_re_logm_pivot: float = 10.5
    #: Slope dlog r_e / dlog M_in (late types, Shen+03 / van der Wel+14 ≈ 0.25).
    disc_re_slope: float = 0.25
    #: Log-normal scatter of the disc size (dex); late types scatter by
    #: σ(log R_e) ≈ 0.16-0.19 dex at fixed mass (van der Wel+14).
    disc_re_scatter_dex: float = 0.18
    #: Disc thickness z0 / R_d, uniform prior.
    disc_thickness_range: tuple[float, float] = (0.1, 0.25)
    #: sigma_z / sigma_R of the disc (solar neighbourhood ≈ 0.5–0.6).
    disc_sigma_z_over_r: float = 0.6
    #: Fraction of the in-situ mass in a compact bulge, uniform prior per galaxy
    #: (in-situ, dispersion-supported; SDSS discs span B/T ≈ 0-0.5, Gadotti 2009).
    bulge_fraction_range: tuple[float, float] = (0.02, 0.4)
    #: Fraction of the in-situ mass heated or kicked out into a spheroidal in-situ
    #: halo (shape of the ex-situ spheroid), uniform prior per galaxy; in-situ
    #: haloes hold a few to tens of per cent of halo stars (Font+11, Cooper+15).
    insitu_halo_fraction_range: tuple[float, float] = (0.0, 0.1)
    #: Bulge R_e / disc R_e.
    bulge_re_ratio: float = 0.2
    #: Bulge Sérsic index.
    bulge_sersic_n: float = 1.5
    #: Ex-situ spheroid Sérsic index, uniform prior (3–4).
    exsitu_sersic_n_range: tuple[float, float] = (3.0, 4.0)
    #: R_e,ex / R_e,in, uniform prior (2–4).
    exsitu_re_ratio_range: tuple[float, float] = (2.0, 4.0)
    #: Ex-situ v/sigma (prograde streaming), uniform prior (0–0.3).
    exsitu_spin_range: tuple[float, float] = (0.0, 0.3)
    #: Moster+13 SHMR at z=0: normalisation N.
    shmr_norm: float = 0.0351
    #: Moster+13: log10 M1 (Msun).
    shmr_log_m1: float = 11.59
    #: Moster+13: low-mass slope beta.
    shmr_beta: float = 1.376
    #: Moster+13: high-mass slope gamma.
    shmr_gamma: float = 0.608
    #: Scatter of log10 M_halo at fixed M* (dex).
    halo_scatter_dex: float = 0.15
    #: Dutton & Macciò 2014 c200(M200): log10 c = a + b log10(M / 1e12 h^-1 Msun).
    conc_a: float = 0.905
    #: Dutton & Macciò 2014 slope b.
    conc_b: float = -0.101
    #: Scatter of log10 c (dex).
    conc_scatter_dex: float = 0.11
    #: Ex-situ mass fractions from major / minor / very-minor+stripped mergers
    #: (Rodriguez-Gomez+16: 50%, 20%, 20% + 10%).
    merger_class_fractions: tuple[float, ...] = (0.5, 0.2, 0.3)
    #: log10 mass-ratio bin edges of those classes (1, 1/4, 1/10, 1/100).
    merger_log_mu_edges: tuple[float, ...] = (0.0, -0.6, -1.0, -2.0)
    #: Dirichlet concentration of a galaxy's class shares around those means.
    merger_class_concentration: float = 4.0
    #: Fraction of the ex-situ stars that arrive as orbit-integrated satellite
    #: debris (:mod:`~sbi_exsitu.data.mock.debris`); the rest is the smooth Sérsic
    #: spheroid (0 = the smooth-spheroid world of earlier versions).
    debris_fraction: float = 1.0
    #: Infall lookback time = infall_max_gyr Beta(a, b) (mean ≈ 7.7 Gyr, z ≈ 1).
    infall_beta: tuple[float, float] = (2.0, 1.3)
    #: Scale of that Beta variable (Gyr).
    infall_max_gyr: float = 12.5
    #: Host mass at lookback t = M* 10^(-g t); mass ratios are taken at infall
    #: (half of today's mass at z ≈ 1, van Dokkum+13).
    host_growth_dex_per_gyr: float = 0.04
    #: Debris apocentre of a mu = 1 satellite, in in-situ R_e (Amorisco 2017).
    debris_apo_re: float = 2.0
    #: Apocentre ∝ mu^-slope: massive satellites deposit their stars deeper.
    debris_apo_mu_slope: float = 0.35
    #: Log-normal scatter of the apocentre (dex).
    debris_apo_scatter_dex: float = 0.2
    #: Tangential speed at apocentre / V_c, uniform prior (low = shells).
    debris_kappa_range: tuple[float, float] = (0.05, 0.6)
    #: Probability that an event is prograde within 25 deg of the disc plane
    #: (accreted discs in about a third of Auriga haloes, Gómez+17).
    disc_plane_merger_fraction: float = 0.15
    #: Integration-time cap in apocentric periods (streams are mixed by then).
    debris_max_orbits: float = 8.0
    #: Leapfrog steps per tracer orbit (480 keep the median, 90th and 99th
    #: percentile debris radii within ~7% of 2000-step runs).
    debris_steps: int = 480
    #: Integrated tracer orbits per galaxy (512 in the scheme-1 worlds; 1024 make
    #: streams continuous, ``benchmarks/structure_prior.py``'s figure).
    debris_tracers: int = 1024
    #: How tracers leave their satellite (:class:`~sbi_exsitu.data.mock.debris.
    #: OrbitRecipe` ``scheme``): 2 = stripped along the satellite's orbit
    #: (streams and shells for recent events); 1 = the phase-mixed debris of
    #: earlier versions, kept so their datasets re-draw bit for bit.
    debris_scheme: int = 2

    # --- stellar populations ------------------------------------------------
    #: Age shift of all stars (Gyr); TNG galaxies are younger than EAGLE's (001).
    age_offset_gyr: float = 0.0
    #: Central in-situ age at log M* = 10.5 (Gyr).
    insitu_age_pivot_gyr: float = 8.0
    #: Downsizing: d(central age) / d log M* (Gyr / dex).
    insitu_age_slope: float = 1.0
    #: Inside-out age gradient of the in-situ stars (Gyr per R_e,in; negative).
    insitu_age_gradient: float = -1.0
    #: Per-particle age scatter (Gyr).
    age_scatter_gyr: float = 1.0
    #: Ex-situ ages, uniform prior per particle (Gyr; 10–12).
    exsitu_age_range: tuple[float, float] = (10.0, 12.0)
    #: Ages are clipped to [0.1, age_max_gyr].
    age_max_gyr: float = 13.7
    #: MZR log Z/Z☉ = z_sat - amplitude exp(-(log M - 9) / scale).
    mzr_z_sat: float = 0.923
    #: MZR amplitude (dex).
    mzr_amplitude: float = 1.523
    #: MZR curvature scale (dex in mass).
    mzr_scale_dex: float = 3.59
    #: In-situ metallicity gradient inside the break (dex per R_e,in), uniform prior.
    insitu_z_gradient_inner_range: tuple[float, float] = (-0.3, -0.2)
    #: In-situ metallicity gradient beyond the break (dex per R_e,in), uniform prior.
    insitu_z_gradient_outer_range: tuple[float, float] = (-0.3, -0.2)
    #: Break radius of the in-situ metallicity profile (units of R_e,in).
    insitu_z_break: float = 1.0
    #: Offset of ex-situ metallicities from the z=0 MZR (dex): progenitors were
    #: accreted at z ~ 1-2, when the MZR was lower (e.g. Gallazzi+14).
    exsitu_z_offset_dex: float = -0.1
    #: Ex-situ metallicity gradient (dex per R_e,ex; roughly flat).
    exsitu_z_gradient: float = 0.0
    #: Per-particle metallicity scatter (dex).
    z_scatter_dex: float = 0.1

    def __post_init__(self) -> None:
        validate_model(self)

    # ------------------------------------------------------------------ API
    def params(self) -> dict[str, Any]:
        """All parameters as a plain dict (tuples as lists; JSON-ready)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }

    def mean_f_ex(self, log_mstar: np.ndarray | float) -> np.ndarray:
        """The median f_ex at ``log_mstar``: 1 / (1 + (M*/M0)^-alpha)."""
        x = self.fex_slope * (np.asarray(log_mstar, dtype=float) - self.fex_log_m0)
        return 1.0 / (1.0 + 10.0 ** (-x))

    def mzr(self, log_mass: np.ndarray | float) -> np.ndarray:
        """Stellar mass–metallicity relation, log10 Z/Z☉ at ``log_mass``."""
        dm = np.asarray(log_mass, dtype=float) - 9.0
        return self.mzr_z_sat - self.mzr_amplitude * np.exp(-dm / self.mzr_scale_dex)

    def halo_mass(self, log_mstar: float) -> float:
        """log10 M200 whose Moster+13 mean stellar mass is ``log_mstar``."""
        log_mh = np.linspace(9.0, 16.5, 2001)
        x = 10.0 ** (log_mh - self.shmr_log_m1)
        ratio = 2.0 * self.shmr_norm / (x ** (-self.shmr_beta) + x**self.shmr_gamma)
        return float(np.interp(log_mstar, log_mh + np.log10(ratio), log_mh))

    def structure(self, info: dict[str, Any]) -> GalaxyStructure:
        """Rebuild the analytic mass model of a galaxy from its ``draw`` info."""
        # Component masses from the particle counts, so the model is exact.
        # The debris is a potential proxy: its mass is put in the Sérsic spheroid,
        # and so is the in-situ halo, which shares its shape.
        m_p = info["particle_mass"]
        n_halo = info.get("n_insitu_halo", 0)
        m_sph = (info["n_exsitu"] + n_halo) * m_p
        m_bulge = info["n_bulge"] * m_p
        m_disc = (
            info["n_particles"] - info["n_exsitu"] - info["n_bulge"] - n_halo
        ) * m_p
        r_d = info["r_e_insitu"] / 1.678  # projected half-mass of an exponential
        return GalaxyStructure(
            disc=ExponentialDisc(m_disc, r_d, info["disc_z0"]),
            bulge=Sersic(
                m_bulge, self.bulge_re_ratio * info["r_e_insitu"], self.bulge_sersic_n
            ),
            spheroid=Sersic(m_sph, info["r_e_exsitu"], info["sersic_n_exsitu"]),
            halo=NFW(10.0 ** info["log_mhalo"], info["halo_concentration"]),
        )

    def draw_prior(self, seed: SeedLike) -> tuple[float, float]:
        """``(log_mstar, f_ex)`` of the galaxy ``draw(seed)`` would make, cheaply.

        Example:
            >>> log_mstar, f_ex = FormationModel().draw_prior(0)
            >>> 10 <= log_mstar <= 12 and 0 < f_ex < 1
            True
        """
        d = self._draw_prior(_streams(seed)[0], None, None)
        return d["log_mstar_target"], d["f_ex_target"]

    def draw(
        self,
        seed: SeedLike,
        *,
        log_mstar: float | None = None,
        f_ex: float | None = None,
    ) -> tuple[Particles, dict[str, Any]]:
        """Draw one galaxy.

        Args:
            seed: an int or a :class:`numpy.random.SeedSequence`; same seed, same
                galaxy.
            log_mstar: fix log10 M* instead of drawing it from the prior.
            f_ex: fix the target ex-situ fraction instead of drawing it.

        Returns:
            ``(particles, info)``; ``info`` holds the drawn galaxy parameters
            (``log_mstar``, ``f_ex`` (measured, exact), ``f_ex_target``,
            ``r_e_insitu``, ``r_e_exsitu``, ``log_mhalo``, ...) and the merger
            history's :data:`~sbi_exsitu.data.mock.debris.ASSEMBLY_LABELS`, all
            JSON-ready.

        Raises:
            ModelError: ``log_mstar`` or ``f_ex`` outside their physical range.
        """
        s_prior, s_struct, s_pop = _streams(seed)
        info = self._draw_prior(s_prior, log_mstar, f_ex)
        n_tot, n_ex = self._particle_counts(info)
        m_particle = 10.0 ** info["log_mstar_target"] / n_tot
        info.update(
            n_particles=n_tot,
            n_exsitu=n_ex,
            particle_mass=m_particle,
            f_ex=n_ex / n_tot,
            log_mstar=info["log_mstar_target"],
        )
        info.update(self._draw_structure_params(s_struct, info))
        n_in = n_tot - n_ex
        info["n_bulge"] = int(round(info["bulge_fraction"] * n_in))
        info["n_insitu_halo"] = int(round(info["insitu_halo_fraction"] * n_in))
        history = self._history(s_struct, info)
        struct = self.structure(info)
        pos, vel, cyl_r, is_ex, event = phase_space(
            self, s_struct, struct, info, history
        )
        age, z = populations(self, s_pop, info, cyl_r, is_ex, pos, event, history)
        particles = Particles(
            pos=pos,
            vel=vel,
            mass=np.full(n_tot, m_particle),
            age=age,
            metallicity=z,
            ex_situ=is_ex,
            name=f"{self.name}",
        )
        info["half_mass_radius"] = particles.half_mass_radius
        info["model"] = self.name
        return particles, info

    # ------------------------------------------------------------- internals
    def _draw_prior(
        self, ss: np.random.SeedSequence, log_mstar: float | None, f_ex: float | None
    ) -> dict[str, Any]:
        rng = np.random.default_rng(ss)
        lo, hi = self.log_mstar_range
        u, eps = rng.random(), rng.normal()  # always drawn: fixed stream layout
        if log_mstar is None:
            log_mstar = lo + (hi - lo) * u
        elif not 6.0 <= log_mstar <= 13.5:
            raise ModelError(f"log_mstar={log_mstar} is outside [6, 13.5]")
        if f_ex is None:
            logit = self.fex_slope * (log_mstar - self.fex_log_m0)
            f_ex = 1.0 / (1.0 + 10.0 ** -(logit + self.fex_scatter_dex * eps))
        elif not 0.0 <= f_ex <= 1.0:
            raise ModelError(f"f_ex={f_ex} is outside [0, 1]")
        return {"log_mstar_target": float(log_mstar), "f_ex_target": float(f_ex)}

    def _particle_counts(self, info: dict[str, Any]) -> tuple[int, int]:
        n_ideal = 10.0 ** info["log_mstar_target"] / self.particle_mass
        # The cap wins over the floor, so setting only max_particles always works.
        floor = min(self.min_particles, self.max_particles)
        n_tot = int(np.clip(round(n_ideal), floor, self.max_particles))
        return n_tot, int(round(info["f_ex_target"] * n_tot))

    def _draw_structure_params(
        self, ss: np.random.SeedSequence, info: dict[str, Any]
    ) -> dict[str, Any]:
        # A child stream so that the particle phase-space stream stays separate.
        rng = np.random.default_rng(_child(ss, 0))
        m_star = 10.0 ** info["log_mstar"]
        m_in = max((1.0 - info["f_ex"]) * m_star, 1e-3 * m_star)
        log_re = (
            np.log10(self.disc_re_kpc)
            + self.disc_re_slope * (np.log10(m_in) - self.disc_re_logm_pivot)
            + self.disc_re_scatter_dex * rng.normal()
        )
        r_e_in = 10.0**log_re
        log_mh = (
            self.halo_mass(info["log_mstar"]) + self.halo_scatter_dex * rng.normal()
        )
        h = 0.6774
        log_c = (
            self.conc_a
            + self.conc_b * (log_mh - 12.0 + np.log10(h))
            + self.conc_scatter_dex * rng.normal()
        )
        return {
            "r_e_insitu": float(r_e_in),
            "r_e_exsitu": float(r_e_in * rng.uniform(*self.exsitu_re_ratio_range)),
            "sersic_n_exsitu": float(rng.uniform(*self.exsitu_sersic_n_range)),
            "disc_z0": float(r_e_in / 1.678 * rng.uniform(*self.disc_thickness_range)),
            "exsitu_spin": float(rng.uniform(*self.exsitu_spin_range)),
            "log_mhalo": float(log_mh),
            "halo_concentration": float(10.0**log_c),
            "bulge_fraction": float(rng.uniform(*self.bulge_fraction_range)),
            "insitu_halo_fraction": float(
                rng.uniform(*self.insitu_halo_fraction_range)
            ),
        }

    def _history(
        self, ss: np.random.SeedSequence, info: dict[str, Any]
    ) -> AccretionHistory:
        """The galaxy's satellites; their summaries go into ``info``."""
        m_star = 10.0 ** info["log_mstar"]
        history = draw_history(
            np.random.default_rng(_child(ss, 2)),
            info["f_ex"] * m_star,
            m_star,
            class_fractions=self.merger_class_fractions,
            log_mu_edges=self.merger_log_mu_edges,
            concentration=self.merger_class_concentration,
            infall_beta=self.infall_beta,
            infall_max_gyr=self.infall_max_gyr,
            host_growth_dex_per_gyr=self.host_growth_dex_per_gyr,
        )
        info.update(assembly_summaries(history))
        info["n_debris"] = int(round(self.debris_fraction * info["n_exsitu"]))
        return history

    def orbit_recipe(self) -> OrbitRecipe:
        """The debris orbit and stripping parameters of this model."""
        return OrbitRecipe(
            apo_re=self.debris_apo_re,
            apo_mu_slope=self.debris_apo_mu_slope,
            apo_scatter_dex=self.debris_apo_scatter_dex,
            kappa_range=self.debris_kappa_range,
            disc_plane_fraction=self.disc_plane_merger_fraction,
            max_orbits=self.debris_max_orbits,
            steps=int(self.debris_steps),
            snapshots=max(int(self.debris_steps) // 4, 1),
            tracers=int(self.debris_tracers),
            scheme=int(self.debris_scheme),
        )
