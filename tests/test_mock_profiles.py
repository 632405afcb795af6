"""Tests for sbi_exsitu.data.mock.profiles: profiles, sampling, Jeans, asymmetric
drift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from sbi_exsitu.data.mock.profiles import (
    NFW,
    RHO_CRIT,
    ExponentialDisc,
    G,
    Sersic,
    disc_kinematics,
    jeans_dispersion,
    total_enclosed,
)


@pytest.mark.parametrize("n", [1.0, 2.0, 4.0])
def test_sersic_density_integrates_to_enclosed_mass(n: float) -> None:
    s = Sersic(mass=3e10, r_e=4.0, n=n)
    for r in (0.5, 4.0, 20.0):
        m, _ = integrate.quad(
            lambda x: 4 * np.pi * x**2 * np.exp(s.log_density(x)), 0, r, limit=200
        )
        assert m == pytest.approx(float(s.enclosed(r)), rel=1e-4)
    assert float(s.enclosed(1e6)) == pytest.approx(3e10, rel=1e-6)


@pytest.mark.parametrize("n", [1.5, 4.0])
def test_sersic_sampled_radii_follow_enclosed_mass(n: float) -> None:
    s = Sersic(mass=1.0, r_e=2.0, n=n)
    r = s.sample_radius(np.random.default_rng(1).random(20_000))
    assert stats.kstest(r, lambda x: s.enclosed(x)).pvalue > 0.01


def test_disc_sampling_matches_radial_and_vertical_profiles() -> None:
    d = ExponentialDisc(mass=1.0, r_d=3.0, z0=0.4)
    rng = np.random.default_rng(2)
    radius, z = d.sample(rng.random(20_000), rng.random(20_000))
    assert stats.kstest(radius, lambda x: d.enclosed(x)).pvalue > 0.01
    assert stats.kstest(z, lambda x: 0.5 * (1 + np.tanh(x / 0.4))).pvalue > 0.01


def test_nfw_r200_encloses_200_times_critical_density() -> None:
    h = NFW(m200=1e12, c=8.0)
    mean_density = h.m200 / (4 / 3 * np.pi * h.r200**3)
    assert mean_density == pytest.approx(200 * RHO_CRIT, rel=1e-10)
    assert float(h.enclosed(h.r200)) == pytest.approx(1e12, rel=1e-10)


def test_jeans_dispersion_matches_direct_quadrature() -> None:
    tracer = Sersic(mass=5e10, r_e=8.0, n=4.0)
    potential = total_enclosed([tracer, Sersic(2e10, 3.0, 1.0), NFW(1e12, 9.0)])
    radii = np.array([0.5, 3.0, 10.0, 40.0])
    got = jeans_dispersion(tracer, potential, radii)
    for r, sigma in zip(radii, got, strict=True):
        integral, _ = integrate.quad(
            lambda x: np.exp(tracer.log_density(x)) * G * potential(x) / x**2,
            r,
            np.inf,
            limit=400,
        )
        want = np.sqrt(integral / np.exp(tracer.log_density(r)))
        assert sigma == pytest.approx(want, rel=5e-3)


def test_disc_kinematics_in_a_flat_rotation_curve() -> None:
    # M(<r) ∝ r gives V_c = const: kappa^2 / 4 Omega^2 = 1/2 exactly.
    disc = ExponentialDisc(mass=1e10, r_d=3.0, z0=0.3)
    v0 = 200.0
    kin = disc_kinematics(
        disc,
        lambda r: v0**2 * np.asarray(r) / G,
        np.array([1.0, 3.0, 9.0]),
        sigma_z_over_r=0.6,
    )
    np.testing.assert_allclose(kin["v_circ"], v0, rtol=1e-6)
    np.testing.assert_allclose(kin["sigma_phi"], kin["sigma_r"] / np.sqrt(2), rtol=1e-3)
    np.testing.assert_allclose(kin["sigma_z"], 0.6 * kin["sigma_r"], rtol=1e-12)
    # Asymmetric drift: v_phi below V_c by sigma_R^2 (2R/R_d - 1/2).
    drift = kin["sigma_r"] ** 2 * (2 * np.array([1.0, 3.0, 9.0]) / 3.0 - 0.5)
    np.testing.assert_allclose(kin["v_phi"] ** 2, v0**2 - drift, rtol=1e-3)
    assert np.all(kin["v_phi"] < v0)
