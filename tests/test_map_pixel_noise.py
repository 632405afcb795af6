"""Pixel-noise calibration: the sinh-arcsinh noise and its fit on validation maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sbi_exsitu.evaluation.map_coverage import pixel_coverage
from sbi_exsitu.posteriors.map.cvae import sample_censored_gaussian
from sbi_exsitu.posteriors.map.pixel_noise import (
    fit_pixel_noise,
    tail_noise,
    tail_noise_inverse,
)

RES, MU, SIGMA = 12, 0.5, 0.1
# About the values fitted on the 64 px validation maps (s 0.48, tau 1.40).
SCALE, TAIL = 0.5, 1.45


@dataclass
class _Data:
    """Maps whose truth is MU + SIGMA * tail_noise(N(0, 1), SCALE, TAIL)."""

    n: int = 60
    seed: int = 0
    labels: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        eps = tail_noise(rng.standard_normal((self.n, RES, RES)), SCALE, TAIL)
        self.y = np.clip(MU + SIGMA * eps, 0, 1).astype(np.float32)
        self.m = np.ones((self.n, RES, RES), bool)
        self.m[:, :2] = False
        # Three views per galaxy, as in the datasets.
        self.labels = {"galaxy_id": np.arange(self.n) // 3}

    def maps(self, idx):  # noqa: ANN001, ANN201
        return np.zeros((len(idx), 1, RES, RES), np.float32)

    def exsitu(self, idx):  # noqa: ANN001, ANN201
        return self.y[idx]

    def mask(self, idx):  # noqa: ANN001, ANN201
        return self.m[idx]


class _Post:
    """A decoder with a Gaussian of the right centre and too wide a core."""

    def pixel_likelihood(self, maps, num_samples, *, mask=None, seed=0):  # noqa: ANN001, ANN201
        shape = (len(maps), num_samples, RES, RES)
        return np.full(shape, MU, np.float32), np.full(shape, SIGMA, np.float32)


def test_tail_noise_identity_inverse_and_tails() -> None:
    e = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert tail_noise(e, 1.0, 1.0) is e
    x = tail_noise(e, 0.7, 1.3)
    torch.testing.assert_close(tail_noise_inverse(x, 0.7, 1.3), e, atol=1e-4, rtol=0)
    q = torch.quantile(x.abs(), torch.tensor([0.68, 0.95]))
    # Heavier tails than any Gaussian: a larger 95% / 68% quantile ratio.
    assert q[1] / q[0] > 1.1 * 1.96 / 0.994
    # The sampler applies it: the same quantiles from the censored draws.
    mu, sigma = torch.full((20000, 2, 2), MU), torch.full((20000, 2, 2), SIGMA)
    y = sample_censored_gaussian(
        mu, sigma, torch.Generator().manual_seed(1), 0.0, 0.7, 1.3
    )
    qy = torch.quantile(((y - MU) / SIGMA).abs().flatten(), torch.tensor([0.68, 0.95]))
    torch.testing.assert_close(qy, q, atol=0.03, rtol=0)


def test_fit_recovers_the_noise_and_calibrates_pixels() -> None:
    data = _Data()
    scale, tail, table = fit_pixel_noise(
        _Post(), data, np.arange(data.n), num_samples=20, seed=0
    )
    # (s, tau) trade off a little; the noise quantiles that set the coverage
    # are what must be recovered.
    e = np.array([0.674, 0.994, 1.96])
    np.testing.assert_allclose(
        tail_noise(e, scale, tail), tail_noise(e, SCALE, TAIL), rtol=0.05
    )
    assert table["n_views"] == 60 and table["n_galaxies"] == 20
    assert table["n_pixels"] == 60 * RES * (RES - 2)
    # The decoder's Gaussian over-covers at 68%; the fit removes it.
    assert table["gaussian"]["coverage_error_68"] > 0.05
    assert abs(table["fitted"]["coverage_error_68"]) < 0.015
    assert abs(table["fitted"]["coverage_error_95"]) < 0.015
    # On fresh maps, with draws from the sampler, the fitted noise is calibrated.
    fresh = _Data(seed=1)
    mu = torch.full((fresh.n * 200, RES, RES), MU)
    draws = sample_censored_gaussian(
        mu, torch.full_like(mu, SIGMA), torch.Generator().manual_seed(2), 0.0,
        scale, tail,
    ).view(fresh.n, 200, RES, RES).numpy()  # fmt: skip
    cov = pixel_coverage(draws, fresh.y, fresh.m, [0.68, 0.95])
    np.testing.assert_allclose(cov, [0.68, 0.95], atol=0.015)
