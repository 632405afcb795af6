"""Tests of sbi_exsitu.data.readers.cosmology against closed forms and direct
quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from sbi_exsitu.data.readers.cosmology import HUBBLE_TIME_GYR, Cosmology


def test_hubble_time_constant() -> None:
    # 1/H0 = 9.778/h Gyr (H0 = 100 h km/s/Mpc; Hogg 1999).
    assert HUBBLE_TIME_GYR == pytest.approx(9.778, abs=1e-3)


@pytest.mark.parametrize(
    "h, om, ol", [(0.6774, 0.3089, 0.6911), (0.6777, 0.307, 0.693)]
)
def test_flat_matches_closed_form(h: float, om: float, ol: float) -> None:
    c = Cosmology(h, om, ol)
    a = np.linspace(0.01, 1.0, 501)
    want = (
        2
        / (3 * math.sqrt(ol))
        * c.hubble_time
        * np.arcsinh(math.sqrt(ol / om) * a**1.5)
    )
    np.testing.assert_allclose(c.cosmic_time(a), want, rtol=1e-9)


def test_einstein_de_sitter() -> None:
    c = Cosmology(0.7, 1.0, 0.0)
    a = np.array([0.1, 0.5, 1.0])
    np.testing.assert_allclose(
        c.cosmic_time(a), 2 / 3 * c.hubble_time * a**1.5, rtol=1e-10
    )


def test_open_universe_matches_direct_quadrature() -> None:
    c = Cosmology(0.7, 0.3, 0.0)
    a = np.array([0.2, 0.6, 1.0])

    def direct(x: float) -> float:
        return quad(lambda s: 1 / (s * math.sqrt(0.3 / s**3 + 0.7 / s**2)), 0, x)[0]

    want = [direct(x) * c.hubble_time for x in a]
    np.testing.assert_allclose(c.cosmic_time(a), want, rtol=1e-7)


def test_age_and_inverse() -> None:
    c = Cosmology(0.6774, 0.3089, 0.6911)
    a_form = np.array([[0.1, 0.5], [0.9, 1.0]])
    age = c.age(a_form, 1.0)
    assert age.shape == (2, 2) and age[1, 1] == 0.0
    np.testing.assert_allclose(age, c.cosmic_time(1.0) - c.cosmic_time(a_form))
    np.testing.assert_allclose(
        c.scale_factor(c.cosmic_time(a_form)), a_form, rtol=1e-10
    )


def test_bad_inputs() -> None:
    c = Cosmology(0.7, 0.3, 0.7)
    with pytest.raises(ValueError, match="scale factors must be finite and > 0"):
        c.cosmic_time([0.5, 0.0])
    with pytest.raises(ValueError, match="cosmic times must be in"):
        c.scale_factor(100.0)
    with pytest.raises(ValueError, match="'omega_m'"):
        Cosmology(0.7, 0.0, 0.7)
    with pytest.raises(ValueError, match="recollapses"):
        Cosmology(0.7, 3.0, 0.0).cosmic_time(2.0)  # H^2 < 0 at a > 1.5
