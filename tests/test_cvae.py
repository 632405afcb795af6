"""The conditional VAE: pixel likelihood, shapes, masking, output range."""

from __future__ import annotations

import math

import pytest
import torch

from sbi_exsitu.posteriors.map.cvae import (
    ConditionalVAE,
    CVAEConfig,
    censored_gaussian_mean,
    censored_gaussian_nll,
    sample_censored_gaussian,
)


def test_censored_nll_atoms_and_density() -> None:
    mu, sigma = torch.tensor([0.2, 0.2, 0.2]), torch.tensor([0.3, 0.3, 0.3])
    y = torch.tensor([0.0, 0.5, 1.0])
    nll = censored_gaussian_nll(y, mu, sigma)
    normal = torch.distributions.Normal(0.2, 0.3)
    assert nll[0].item() == pytest.approx(-math.log(normal.cdf(torch.tensor(0.0))))
    assert nll[1].item() == pytest.approx(-normal.log_prob(torch.tensor(0.5)).item())
    assert nll[2].item() == pytest.approx(
        -math.log(1 - normal.cdf(torch.tensor(1.0))), rel=1e-5
    )


def test_censored_mean_matches_clipped_draws() -> None:
    mu = torch.tensor([-0.3, 0.1, 0.5, 0.95, 1.4]).repeat(20_000, 1)
    sigma = torch.tensor([0.4, 0.2, 0.05, 0.3, 0.6]).repeat(20_000, 1)
    draws = sample_censored_gaussian(mu, sigma, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 1
    exact = censored_gaussian_mean(mu[0], sigma[0])
    assert torch.allclose(draws.mean(0), exact, atol=5e-3)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_shapes_and_range(size: int) -> None:
    vae = ConditionalVAE(
        CVAEConfig(in_channels=3, image_size=size, latent_dim=4, width=8)
    )
    x = torch.randn(5, 3, size, size)
    mask = torch.rand(5, size, size) > 0.3
    y = torch.rand(5, size, size)
    assert vae.loss(y, x, mask).shape == (5,)
    maps = vae.sample_maps(torch.randn(5, 4), x, mask)
    assert maps.shape == (5, size, size)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.all(maps[~mask] == 0)
    means = vae.sample_maps(torch.randn(5, 4), x, mask, noise=False)
    assert torch.all((means >= 0) & (means <= 1))


def test_masked_pixels_do_not_enter_the_loss() -> None:
    vae = ConditionalVAE(
        CVAEConfig(in_channels=2, image_size=16, latent_dim=4, width=8)
    )
    x = torch.randn(3, 2, 16, 16)
    mask = torch.zeros(3, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    y = torch.rand(3, 16, 16)
    y2 = torch.where(mask, y, torch.rand(3, 16, 16))  # change only masked pixels
    a = vae.loss(y, x, mask, generator=torch.Generator().manual_seed(1))
    b = vae.loss(y2, x, mask, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b)
    y3 = y.clone()
    y3[:, 8, 8] = 1 - y3[:, 8, 8]  # an unmasked pixel does matter
    c = vae.loss(y3, x, mask, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


def test_config_round_trip_and_validation() -> None:
    cfg = CVAEConfig(in_channels=5, image_size=64, latent_dim=8)
    assert CVAEConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.levels == 4
    with pytest.raises(ValueError, match="image_size"):
        CVAEConfig(in_channels=5, image_size=4)


def test_upsample_matches_nearest_interpolation() -> None:
    import torch.nn.functional as F

    from sbi_exsitu.posteriors.map.cvae import _upsample2x

    h = torch.randn(3, 4, 5, 6, requires_grad=True)
    out = _upsample2x(h)
    assert torch.equal(out, F.interpolate(h, scale_factor=2.0, mode="nearest"))
    out.sum().backward()
    assert torch.equal(h.grad, torch.full_like(h, 4.0))  # each value used 4 times
