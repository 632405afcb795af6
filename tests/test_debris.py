"""Tests for accreted debris from a merger history (sbi_exsitu.data.mock.debris)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.data.mock import get_model
from sbi_exsitu.data.mock.debris import (
    ASSEMBLY_LABELS,
    NO_MAJOR_MERGER_GYR,
    AccretionHistory,
    OrbitRecipe,
    _leapfrog,
    assembly_summaries,
    draw_history,
    spray_debris,
)
from sbi_exsitu.data.mock.profiles import NFW, G

SMALL = {"max_particles": 6000, "min_particles": 6000}


def test_history_masses_sum_to_exsitu_mass_within_class_edges() -> None:
    rng = np.random.default_rng(1)
    for f_ex in (0.02, 0.3, 0.9):
        h = draw_history(rng, m_exsitu=f_ex * 1e11, m_star=1e11)
        assert h.mass.sum() == pytest.approx(f_ex * 1e11, rel=1e-12)
        assert np.all(h.mu <= 1.0) and np.all(h.t_infall <= 12.5)
        assert 1 <= h.n_events <= 40


def test_summaries_of_a_known_history() -> None:
    h = AccretionHistory(
        mass=np.array([3e10, 1e10, 1e9]),
        mu=np.array([0.3, 0.1, 0.01]),
        t_infall=np.array([9.0, 2.0, 1.0]),
    )
    s = assembly_summaries(h)
    assert set(s) == set(ASSEMBLY_LABELS)
    assert s["last_major_lookback"] == 9.0 and s["last_major_mu"] == 0.3
    w = h.mass / h.mass.sum()
    assert s["mean_merger_lookback"] == pytest.approx(w @ h.t_infall)
    assert s["mean_merger_mu"] == pytest.approx(w @ h.mu)
    assert s["n_accretion_events"] == 3
    minor_only = AccretionHistory(h.mass[1:], h.mu[1:], h.t_infall[1:])
    s = assembly_summaries(minor_only)
    assert s["last_major_lookback"] == NO_MAJOR_MERGER_GYR
    assert s["last_major_mu"] == 0.0


def test_leapfrog_conserves_energy_in_an_nfw_halo() -> None:
    halo = NFW(1e12, 10.0)
    rng = np.random.default_rng(0)
    pos = rng.normal(scale=30.0, size=(200, 3))
    v_c = np.sqrt(G * halo.enclosed(np.linalg.norm(pos, axis=1)) / 30.0)
    vel = rng.normal(size=(200, 3)) * 0.5 * v_c[:, None]

    def phi(x: np.ndarray) -> np.ndarray:
        r = np.linalg.norm(x, axis=1)
        rs = halo.r200 / halo.c
        norm = np.log1p(halo.c) - halo.c / (1 + halo.c)
        return -G * halo.m200 / norm * np.log1p(r / rs) / r

    e0 = 0.5 * np.sum(vel**2, axis=1) + phi(pos)
    snaps, drift = _leapfrog(pos, vel, np.full(200, 5.0), 2000, 10, halo.enclosed, 10.0)
    e1 = 0.5 * np.sum(snaps[-1, :, 3:] ** 2, axis=1) + phi(snaps[-1, :, :3])
    assert np.median(np.abs(e1 / e0 - 1)) < 0.01
    # The integrator's own energy check agrees with the analytic potential.
    np.testing.assert_allclose(drift, np.abs(e1 / e0 - 1), atol=0.01)


def _angular_spread(pos: np.ndarray) -> float:
    """1 - |mean unit vector|: 0 for one direction, ~1 for an isotropic cloud."""
    u = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    return 1.0 - float(np.linalg.norm(u.mean(axis=0)))


def test_recent_events_stay_coherent_old_ones_phase_mix() -> None:
    halo = NFW(1e12, 10.0)
    recipe = OrbitRecipe(disc_plane_fraction=0.0)
    spreads = {}
    for t_inf in (0.3, 11.0):
        h = AccretionHistory(np.array([1e9]), np.array([0.01]), np.array([t_inf]))
        pos, _, event = spray_debris(
            np.random.default_rng(3), h, np.array([2000]), halo.enclosed, 4.0, recipe
        )
        assert np.all(event == 0) and pos.shape == (2000, 3)
        spreads[t_inf] = _angular_spread(pos)
    assert spreads[0.3] < 0.2 < spreads[11.0]


def test_disc_plane_events_stay_near_the_disc_plane() -> None:
    halo = NFW(1e12, 10.0)
    h = AccretionHistory(np.array([1e9]), np.array([0.01]), np.array([6.0]))
    pos, vel, _ = spray_debris(
        np.random.default_rng(0),
        h,
        np.array([3000]),
        halo.enclosed,
        4.0,
        OrbitRecipe(disc_plane_fraction=1.0, kappa_range=(0.5, 0.6)),
    )
    lz = np.cross(pos, vel)[:, 2]
    assert np.mean(lz > 0) > 0.9  # prograde
    assert np.median(np.abs(pos[:, 2]) / np.linalg.norm(pos, axis=1)) < 0.35


def test_galaxy_carries_assembly_labels_and_debris_populations() -> None:
    m = get_model("tng-like", **SMALL)
    p, info = m.draw(4, log_mstar=11.5, f_ex=0.5)
    for key in ASSEMBLY_LABELS:
        assert np.isfinite(info[key]), key
    assert info["n_debris"] == info["n_exsitu"]  # debris_fraction = 1
    assert abs(p.f_ex - 0.5) <= 1 / len(p)
    # Ages of accreted stars never undercut the infall time of the oldest event
    # by more than the age scatter allows: no debris star younger than ~0.
    assert np.all(p.age > 0)
    # The smooth world is one parameter away and draws no debris.
    _, smooth = get_model("tng-like", debris_fraction=0.0, **SMALL).draw(4)
    assert smooth["n_debris"] == 0


def test_debris_costs_little_time() -> None:
    import time

    m = get_model("tng-like", max_particles=30_000, min_particles=30_000)
    start = time.perf_counter()
    m.draw(0, log_mstar=12.0, f_ex=0.9)
    assert time.perf_counter() - start < 1.5  # 0.07 s on a quiet core


def test_streams_stay_coherent_longer_than_phase_mixed_debris() -> None:
    # Scheme 2 strips tracers along the satellite's orbit and reads them now, so
    # a 2 Gyr old minor event is still a stream; scheme 1 (the pre-stream worlds)
    # spreads it along its whole orbit at once. Median over 5 seeds each.
    halo = NFW(1e12, 10.0)
    h = AccretionHistory(np.array([1e9]), np.array([0.01]), np.array([2.0]))
    spread = {}
    for scheme in (1, 2):
        recipe = OrbitRecipe(disc_plane_fraction=0.0, scheme=scheme)
        spread[scheme] = np.median(
            [
                _angular_spread(
                    spray_debris(
                        np.random.default_rng(seed),
                        h,
                        np.array([2000]),
                        halo.enclosed,
                        4.0,
                        recipe,
                    )[0]
                )
                for seed in range(5)
            ]
        )
    assert spread[2] < spread[1] - 0.3


def test_scheme_1_redraws_the_pre_stream_world_bit_for_bit() -> None:
    # sha256 prefixes of (pos, vel, age) of galaxies 0-3 of each model at 8,000
    # particles, computed with the code before debris_scheme existed (ea37781).
    import hashlib

    expected = [
        "5e1205c47416ffb2", "42d73eecd4ad810c", "6d3959bef70555ae",
        "5af51df6d7e69565", "7939e4f24c508296", "f3ad4d9173c2828b",
        "fb60e1a79c2c38fe", "bb1b362baa9cabd4",
    ]  # fmt: skip
    got = []
    for name in ("tng-like", "eagle-like"):
        model = get_model(name, max_particles=8000, debris_scheme=1, debris_tracers=512)
        for i in range(4):
            p, _ = model.draw(i)
            raw = np.ascontiguousarray(p.pos).tobytes() + p.vel.tobytes()
            got.append(hashlib.sha256(raw + p.age.tobytes()).hexdigest()[:16])
    assert got == expected
