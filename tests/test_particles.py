"""Tests for :mod:`sbi_exsitu.data.particles`."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.data.particles import Particles, ParticlesError, half_mass_radius


def fields(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pos": rng.normal(size=(n, 3)),
        "vel": rng.normal(0, 100, (n, 3)),
        "mass": rng.uniform(1e5, 1e6, n),
        "age": rng.uniform(0, 13, n),
        "metallicity": rng.uniform(0, 0.04, n),
        "ex_situ": rng.random(n) < 0.3,
    }


def test_valid_particles_are_read_only_float64():
    p = Particles(**fields())
    assert len(p) == 50
    assert p.pos.dtype == np.float64 and p.ex_situ.dtype == bool
    with pytest.raises(ValueError):
        p.mass[0] = 1.0


@pytest.mark.parametrize(
    "key, value",
    [
        ("pos", np.zeros((50, 2))),
        ("pos", np.zeros(50)),
        ("vel", np.zeros((50, 3, 1))),
        ("mass", np.ones((50, 1))),
        ("age", np.ones((50, 3))),
        ("centre", np.zeros(2)),
        ("systemic_velocity", np.zeros((1, 3))),
    ],
)
def test_wrong_shape_names_the_field(key, value):
    with pytest.raises(ParticlesError, match=f"'{key}' has shape"):
        Particles(**{**fields(), key: value})


@pytest.mark.parametrize("key", ["pos", "vel", "mass", "age", "metallicity"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_field(key, bad):
    f = fields()
    arr = f[key].copy()
    arr.flat[3] = bad
    with pytest.raises(ParticlesError, match=f"'{key}' has 1 NaN or infinite"):
        Particles(**{**f, key: arr})


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_masses(bad):
    f = fields()
    f["mass"][[2, 7]] = bad
    with pytest.raises(ParticlesError, match="'mass' has 2 zero or negative"):
        Particles(**f)


@pytest.mark.parametrize("key", ["vel", "mass", "age", "metallicity", "ex_situ"])
def test_length_mismatch_names_the_field(key):
    f = fields()
    with pytest.raises(ParticlesError, match=f"'{key}'"):
        Particles(**{**f, key: f[key][:-1]})


@pytest.mark.parametrize("key", ["age", "metallicity"])
def test_negative_age_or_metallicity(key):
    f = fields()
    f[key][0] = -0.1
    with pytest.raises(ParticlesError, match=f"'{key}' has negative"):
        Particles(**f)


@pytest.mark.parametrize("flags", [np.full(50, 0.5), np.full(50, 2), np.full(50, "x")])
def test_bad_ex_situ_flags(flags):
    with pytest.raises(ParticlesError, match="'ex_situ'"):
        Particles(**{**fields(), "ex_situ": flags})


def test_integer_flags_become_bool():
    f = fields()
    p = Particles(**{**f, "ex_situ": f["ex_situ"].astype(int)})
    assert p.ex_situ.dtype == bool
    np.testing.assert_array_equal(p.ex_situ, f["ex_situ"])


def test_non_numeric_and_empty_and_bad_radius():
    with pytest.raises(ParticlesError, match="'mass' is not numeric"):
        Particles(**{**fields(), "mass": ["a"] * 50})
    empty = {k: v[:0] for k, v in fields().items()}
    with pytest.raises(ParticlesError, match="no particles"):
        Particles(**empty)
    with pytest.raises(ParticlesError, match="'half_mass_radius'"):
        Particles(**fields(), half_mass_radius=-1.0)


def test_error_names_the_galaxy():
    with pytest.raises(ParticlesError, match="^subhalo 42: "):
        Particles(**{**fields(), "mass": -fields()["mass"]}, name="subhalo 42")


def test_f_ex_and_log_mstar():
    f = fields(1000, seed=3)
    p = Particles(**f)
    expected = f["mass"][f["ex_situ"]].sum() / f["mass"].sum()
    assert p.f_ex == pytest.approx(expected, rel=1e-12)
    assert p.log_mstar == pytest.approx(np.log10(f["mass"].sum()), rel=1e-12)
    assert p.total_mass == pytest.approx(f["mass"].sum(), rel=1e-12)
    unflagged = Particles(**{**f, "ex_situ": None})
    assert np.isnan(unflagged.f_ex)


def test_half_mass_radius_of_a_plummer_sphere():
    # Plummer: M(<r)/M = r^3 / (r^2 + a^2)^{3/2}; r_half = a / sqrt(2^{2/3} - 1).
    rng = np.random.default_rng(1)
    n, a = 200_000, 2.0
    r = a / np.sqrt(rng.uniform(0, 1, n) ** (-2 / 3) - 1)
    u = rng.normal(size=(n, 3))
    pos = r[:, None] * u / np.linalg.norm(u, axis=1, keepdims=True)
    expected = a / np.sqrt(2 ** (2 / 3) - 1)
    assert half_mass_radius(pos, np.ones(n)) == pytest.approx(expected, rel=0.01)
    p = Particles(
        pos=pos,
        vel=np.zeros((n, 3)),
        mass=np.ones(n),
        age=np.ones(n),
        metallicity=np.ones(n),
    )
    assert p.half_mass_radius == pytest.approx(expected, rel=0.01)


def test_half_mass_radius_is_mass_weighted():
    pos = np.array([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [4.0, 0, 0]])
    # Half of the mass (5) sits in the innermost particle.
    assert half_mass_radius(pos, np.array([5.0, 1, 1, 3])) == pytest.approx(1.0)
    assert half_mass_radius(pos, np.array([1.0, 1, 1, 1])) == pytest.approx(2.0)


def test_rotated_keeps_radius_and_rotates_vectors():
    p = Particles(**fields())
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    q = p.rotated(rot)
    np.testing.assert_allclose(q.pos[:, 0], -p.pos[:, 1])
    np.testing.assert_allclose(q.vel[:, 1], p.vel[:, 0])
    assert q.half_mass_radius == p.half_mass_radius
    assert q.f_ex == p.f_ex
