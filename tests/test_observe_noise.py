"""Correlated noise: unit variance, the configured correlation length, Law+2016."""

import numpy as np
import pytest

from sbi_exsitu.data.observe.noise import correlated_noise, covariance_factor


def _correlation(z: np.ndarray, lag: int) -> float:
    a, b = z[..., :, :-lag], z[..., :, lag:]
    return float((a * b).mean() / z.var())


@pytest.mark.parametrize("sigma", [1.0, 1.92, 3.0])
def test_correlation_length_matches_the_configured_sigma(sigma):
    # 4 maps of 256^2 spaxels: ~65k / (4 pi sigma^2) ~ 1.4k independent
    # patches per map at sigma = 1.92, so the correlation at a lag has a
    # standard error of ~0.015 and sigma (from lags 1-3) one of ~0.05: a 10%
    # tolerance is > 3 standard errors.
    z = correlated_noise(np.random.default_rng(0), (4, 256, 256), sigma)
    assert z.std() == pytest.approx(1.0, abs=0.03)
    est = [lag / np.sqrt(-2 * np.log(_correlation(z, lag))) for lag in (1, 2, 3)]
    assert np.mean(est) == pytest.approx(sigma, rel=0.1)


def test_white_noise_when_sigma_is_zero():
    z = correlated_noise(np.random.default_rng(0), (256, 256), 0.0)
    assert abs(_correlation(z, 1)) < 0.02


def test_sums_follow_the_law_et_al_covariance_correction():
    # Square bins of N spaxels: the noise of the sum over sqrt(N) matches
    # 1 + 1.62 log10 N within 10% (Law et al. 2016 fitted it to MaNGA cubes;
    # a Gaussian correlation of 1.92 spaxels reproduces it).
    z = correlated_noise(np.random.default_rng(1), (4, 240, 240), 1.92)
    for side in (2, 3, 5, 10):
        n = side * side
        sums = z.reshape(4, 240 // side, side, 240 // side, side).sum(axis=(2, 4))
        assert sums.std() / np.sqrt(n) == pytest.approx(covariance_factor(n), rel=0.1)


def test_covariance_factor_is_continuous_and_flat_above_100():
    f = covariance_factor(np.array([1, 100, 101, 5000]))
    assert f[0] == 1.0 and f[1] == pytest.approx(f[2], rel=1e-3) and f[2] == f[3]
