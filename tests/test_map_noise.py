"""Shared pixel noise: marginals, correlation, CRPS and the fit of rho."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbi_exsitu.data.exsitu_fraction import mass_weights
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.posteriors.map.cvae import sample_censored_gaussian
from sbi_exsitu.posteriors.map.noise import (
    crps_ensemble,
    fit_shared_noise,
    shared_normal,
)

RES = 8


@pytest.mark.parametrize("rho", [0.0, 0.05, 0.4])
def test_shared_normal_has_unit_marginals_and_correlation_rho(rho: float) -> None:
    eps = shared_normal((20000, RES, RES), rho, torch.Generator().manual_seed(1))
    flat = eps.reshape(len(eps), -1).double()
    assert flat.mean().abs() < 0.02
    assert torch.allclose(flat.std(dim=0), torch.ones(RES * RES).double(), atol=0.03)
    corr = torch.corrcoef(flat.T)
    off = corr[~torch.eye(RES * RES, dtype=torch.bool)]
    assert abs(off.mean().item() - rho) < 0.01


def test_shared_normal_rejects_bad_rho_and_is_reproducible() -> None:
    with pytest.raises(ValueError, match="rho"):
        shared_normal((2, 3, 3), 1.0)
    a = shared_normal((4, 3, 3), 0.2, torch.Generator().manual_seed(0))
    b = shared_normal((4, 3, 3), 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_shared_noise_keeps_the_pixel_marginals() -> None:
    mu, sigma = torch.full((20000, 2, 2), 0.3), torch.full((20000, 2, 2), 0.4)
    y0 = sample_censored_gaussian(mu, sigma, torch.Generator().manual_seed(0))
    y1 = sample_censored_gaussian(mu, sigma, torch.Generator().manual_seed(0), 0.5)
    for q in (0.0, 0.2, 0.5, 0.8):  # same quantiles of a pixel, incl. the atom
        assert abs((y0 <= q).double().mean() - (y1 <= q).double().mean()) < 0.015


def test_crps_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    draws, truth = rng.normal(size=(5, 40)), rng.normal(size=5)
    pair = np.abs(draws[:, :, None] - draws[:, None, :]).mean(axis=(1, 2))
    brute = np.abs(draws - truth[:, None]).mean(axis=1) - 0.5 * pair
    assert np.allclose(crps_ensemble(draws, truth), brute)
    # Proper: the right spread scores better than too narrow or too wide.
    truth = rng.normal(size=4000)
    right = crps_ensemble(rng.normal(size=(4000, 50)), truth).mean()
    for scale in (0.3, 3.0):
        assert right < crps_ensemble(scale * rng.normal(size=(4000, 50)), truth).mean()


class _KnownNoise:
    """Fixed (mu, sigma) per map, the truth drawn with ``rho_true``; the maps
    and the posterior in one object (its single channel holds the map index)."""

    def __init__(self, n: int, rho_true: float, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.cfg = RenderConfig(resolution=RES, channels=("velocity",), min_pixels=1)
        self.mu = rng.uniform(0.2, 0.8, size=(n, RES, RES)).astype(np.float32)
        self.sigma = np.full((n, RES, RES), 0.15, np.float32)
        eps = shared_normal((n, RES, RES), rho_true, torch.Generator().manual_seed(9))
        self.truth = np.clip(self.mu + self.sigma * eps.numpy(), 0, 1)
        self.x = np.broadcast_to(
            np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, RES, RES)
        )

    def maps(self, idx: np.ndarray) -> np.ndarray:
        return self.x[idx]

    def exsitu(self, idx: np.ndarray) -> np.ndarray:
        return self.truth[idx]

    def mask(self, idx: np.ndarray) -> np.ndarray:
        return np.ones((len(idx), RES, RES), bool)

    def pixel_likelihood(self, x, num_samples, *, mask=None, seed=0):
        idx = x[:, 0, 0, 0].astype(int)
        return tuple(
            np.repeat(a[idx][:, None], num_samples, axis=1)
            for a in (self.mu, self.sigma)
        )

    def mass_weights(self, maps, mask, mass=None):
        return mass_weights(maps, mask, self.cfg, mass=mass)


@pytest.mark.parametrize("rho_true", [0.0, 0.1, 0.4])
def test_fit_shared_noise_recovers_rho(rho_true: float) -> None:
    known = _KnownNoise(600, rho_true)
    rho, table = fit_shared_noise(known, known, np.arange(600), num_samples=200)
    assert len(table["crps"]) == len(table["grid"]) == len(table["coverage_68"])
    if rho_true == 0.0:
        assert rho < 0.02
    else:
        assert rho_true / 2.5 < rho < rho_true * 2.5
    best = int(np.argmin(table["crps"]))
    assert abs(table["coverage_68"][best] - 0.68) < 0.08
