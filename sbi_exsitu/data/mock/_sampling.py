"""Particle sampling of the formation models: phase space, populations, seeds.

:func:`phase_space` places the disc, bulge, in-situ halo, smooth ex-situ
spheroid and satellite debris; :func:`populations` gives them ages and
metallicities (the recipes are described in :mod:`sbi_exsitu.data.mock.base`).

Example:
    >>> _split_counts(10, np.array([2.0, 1.0, 1.0])).tolist()
    [5, 3, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial.transform import Rotation

from sbi_exsitu.data.mock.debris import AccretionHistory, spray_debris
from sbi_exsitu.data.mock.profiles import (
    GalaxyStructure,
    cylindrical_to_cartesian,
    disc_kinematics,
    sample_spheroid,
)
from sbi_exsitu.errors import ModelError

if TYPE_CHECKING:
    from sbi_exsitu.data.mock.base import FormationModel

__all__ = ["phase_space", "populations", "SeedLike", "Z_SUN"]

#: Solar metal mass fraction in the paper's convention (001, Asplund+09).
Z_SUN = 0.0127

SeedLike = int | np.random.SeedSequence


def _streams(seed: SeedLike) -> tuple[np.random.SeedSequence, ...]:
    """Three independent, reproducible child streams of ``seed``."""
    if isinstance(seed, np.random.SeedSequence):
        root = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        root = np.random.SeedSequence(int(seed))
    else:
        raise ModelError(f"seed must be an int or a SeedSequence, got {seed!r}")
    return tuple(_child(root, k) for k in range(3))


def _child(ss: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    # Explicit spawn keys: unlike ss.spawn(), repeatable on the same object.
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, k))


def _split_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """``n`` particles split in proportion to ``weights`` (largest remainders)."""
    if len(weights) == 0:
        return np.zeros(0, dtype=int)
    share = n * np.asarray(weights, dtype=float) / np.sum(weights)
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: n - counts.sum()]] += 1
    return counts


def _broken_profile(
    x: np.ndarray, brk: float, inner: float, outer: float
) -> np.ndarray:
    """Piecewise-linear profile: slope ``inner`` below ``brk``, ``outer`` above."""
    return inner * np.minimum(x, brk) + outer * np.maximum(x - brk, 0.0)


def _draw_log_mu(
    rng: np.random.Generator,
    n: int,
    fractions: tuple[float, ...],
    edges: tuple[float, ...],
) -> np.ndarray:
    """log10 progenitor mass ratios: class by mass fraction, log-uniform within."""
    cls = rng.choice(len(fractions), size=n, p=np.asarray(fractions) / sum(fractions))
    hi, lo = np.asarray(edges[:-1]), np.asarray(edges[1:])
    return lo[cls] + (hi[cls] - lo[cls]) * rng.random(n)


def phase_space(
    model: FormationModel,
    ss: np.random.SeedSequence,
    struct: GalaxyStructure,
    info: dict[str, Any],
    history: AccretionHistory,
) -> tuple[np.ndarray, ...]:
    """Positions, velocities, cylindrical radii, ex-situ flags and event ids."""
    rng = np.random.default_rng(_child(ss, 1))
    n_ex, n_bulge, n_halo = info["n_exsitu"], info["n_bulge"], info["n_insitu_halo"]
    n_debris = info["n_debris"]
    n_disc = info["n_particles"] - n_ex - n_bulge - n_halo
    # Disc: inverse-CDF radii and heights, Gaussian (Schwarzschild) velocities.
    radius, z = struct.disc.sample(rng.random(n_disc), rng.random(n_disc))
    phi = rng.uniform(0.0, 2.0 * np.pi, n_disc)
    kin = disc_kinematics(
        struct.disc, struct.enclosed, radius, model.disc_sigma_z_over_r
    )
    v_r = kin["sigma_r"] * rng.standard_normal(n_disc)
    v_phi = kin["v_phi"] + kin["sigma_phi"] * rng.standard_normal(n_disc)
    v_z = kin["sigma_z"] * rng.standard_normal(n_disc)
    disc = cylindrical_to_cartesian(radius, phi, z, v_r, v_phi, v_z)
    bulge = sample_spheroid(rng, struct.bulge, struct.enclosed, n_bulge, spin=0.0)
    ihalo = sample_spheroid(rng, struct.spheroid, struct.enclosed, n_halo, 0.0)
    smooth = sample_spheroid(
        rng,
        struct.spheroid,
        struct.enclosed,
        n_ex - n_debris,
        spin=info["exsitu_spin"],
    )
    counts = _split_counts(n_debris, history.mass)
    d_pos, d_vel, d_event = spray_debris(
        np.random.default_rng(_child(ss, 3)),
        history,
        counts,
        struct.enclosed,
        info["r_e_insitu"],
        model.orbit_recipe(),
    )
    parts = (disc, bulge, ihalo, smooth, (d_pos, d_vel))
    pos = np.concatenate([q[0] for q in parts])
    vel = np.concatenate([q[1] for q in parts])
    is_ex = np.zeros(len(pos), dtype=bool)
    is_ex[n_disc + n_bulge + n_halo :] = True
    # Satellite of each particle (-1: not debris); -2 marks the in-situ halo.
    event = np.full(len(pos), -1)
    event[n_disc + n_bulge : n_disc + n_bulge + n_halo] = -2
    event[len(pos) - n_debris :] = d_event
    cyl_r = np.hypot(pos[:, 0], pos[:, 1])  # galaxy frame, before rotation
    # Uniform random rotation: a normalised Gaussian quaternion.
    rot = Rotation.from_quat(rng.standard_normal(4)).as_matrix()
    return pos @ rot.T, vel @ rot.T, cyl_r, is_ex, event


def populations(
    model: FormationModel,
    ss: np.random.SeedSequence,
    info: dict[str, Any],
    cyl_r: np.ndarray,
    is_ex: np.ndarray,
    pos: np.ndarray,
    event: np.ndarray,
    history: AccretionHistory,
) -> tuple[np.ndarray, np.ndarray]:
    """Ages (Gyr) and metallicities (Z) of every particle."""
    rng = np.random.default_rng(ss)
    n = len(is_ex)
    r_e_in, r_e_ex = info["r_e_insitu"], info["r_e_exsitu"]
    g_in = rng.uniform(*model.insitu_z_gradient_inner_range)
    g_out = rng.uniform(*model.insitu_z_gradient_outer_range)
    info.update(z_gradient_inner=float(g_in), z_gradient_outer=float(g_out))
    x_in = cyl_r / r_e_in
    # Heated / kicked-out stars keep the populations of their birth radius
    # in the inner disc, not those of where they now orbit.
    halo = event == -2
    x_in[halo] = rng.uniform(0.0, 1.5, int(halo.sum()))
    # In-situ: inside-out ages, broken-power metallicity profile around the MZR.
    age_c = model.insitu_age_pivot_gyr + model.insitu_age_slope * (
        info["log_mstar"] - 10.5
    )
    age = age_c + model.insitu_age_gradient * x_in
    # Anchored at R_e,in, where a disc's metallicity is its mean (the MZR).
    brk = model.insitu_z_break
    log_z = model.mzr(info["log_mstar"]) + _broken_profile(x_in, brk, g_in, g_out)
    log_z -= _broken_profile(np.float64(1.0), brk, g_in, g_out)
    # Smooth ex-situ: old, MZR of the progenitor (mass ratio mu per particle).
    smooth = is_ex & (event < 0)
    n_s = int(smooth.sum())
    age[smooth] = rng.uniform(*model.exsitu_age_range, n_s)
    log_mu = _draw_log_mu(
        rng, n_s, model.merger_class_fractions, model.merger_log_mu_edges
    )
    r_ex = np.sqrt(np.einsum("ij,ij->i", pos[smooth], pos[smooth])) / r_e_ex
    log_z[smooth] = (
        model.mzr(info["log_mstar"] + log_mu)
        + model.exsitu_z_offset_dex
        + model.exsitu_z_gradient * r_ex
    )
    # Debris: each satellite's own population, star formation truncated at
    # infall (ages from infall to the oldest ex-situ age), MZR at its mass.
    deb = event >= 0
    if deb.any():
        e = event[deb]
        t_inf = history.t_infall[e]
        hi = np.maximum(model.exsitu_age_range[1], t_inf + 0.5)
        age[deb] = t_inf + (hi - t_inf) * rng.random(len(e))
        log_z[deb] = model.mzr(np.log10(history.mass[e])) + model.exsitu_z_offset_dex
    age = age + model.age_offset_gyr + model.age_scatter_gyr * rng.standard_normal(n)
    age = np.clip(age, 0.1, model.age_max_gyr)
    log_z = log_z + model.z_scatter_dex * rng.standard_normal(n)
    return age, Z_SUN * 10.0**log_z
