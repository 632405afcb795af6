"""The sampling-time decoder is the trained decoder, rewritten (issue #19).

:class:`FastDecoder` must give the plain decoder's (mu, sigma) to float32
rounding, and :meth:`MapPosterior.sample` the same draws for the same seed on
both paths (the speed-up may not change the distribution).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig, _upsample2x
from sbi_exsitu.posteriors.map.fast_decoder import FastDecoder, transposed_weight
from sbi_exsitu.posteriors.map.latent_flow import build_latent_flow
from sbi_exsitu.posteriors.map.posterior import MapPosterior


def _trained_like(cvae: ConditionalVAE, seed: int) -> ConditionalVAE:
    # Random, non-default weights everywhere (norm affines, biases included),
    # so that a term the rewrite dropped would show.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cvae.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return cvae.eval()


@pytest.mark.parametrize("size,width", [(16, 4), (24, 4), (32, 6)])
def test_fast_decoder_equals_plain(size: int, width: int) -> None:
    cfg = CVAEConfig(in_channels=3, image_size=size, latent_dim=5, width=width)
    cvae = _trained_like(ConditionalVAE(cfg), seed=size)
    x = torch.randn(3, 3, size, size)
    mask = torch.rand(3, size, size) > 0.3
    z = torch.randn(4, 3, 5)  # 4 draws for each of 3 observations
    with torch.no_grad():
        feats = cvae.condition(x, mask)
        ref_mu, ref_sigma = cvae.decoder(
            z.flatten(0, 1), [f.repeat(4, 1, 1, 1) for f in feats]
        )
        fast = FastDecoder(cvae.decoder)
        mu, sigma = fast(z, fast.precompute(feats))
    assert mu.shape == (4, 3, size, size)
    scale = ref_mu.abs().max().item()
    assert scale > 0.1  # a non-trivial output, or the comparison means nothing
    assert torch.allclose(mu.flatten(0, 1), ref_mu, atol=1e-5 * scale)
    assert torch.allclose(sigma.flatten(0, 1), ref_sigma, rtol=1e-4, atol=1e-6)


def test_transposed_weight_is_upsample_then_conv() -> None:
    w = torch.randn(4, 3, 3, 3)
    h = torch.randn(2, 3, 5, 7)  # not square: rows and columns not swapped
    ref = F.conv2d(_upsample2x(h), w, padding=1)
    out = F.conv_transpose2d(h, transposed_weight(w), stride=2, padding=1)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.fixture(scope="module")
def posterior() -> MapPosterior:
    rc = RenderConfig(resolution=16)
    settings = MapSettings(latent_dim=4, width=4, flow_transforms=1, flow_hidden=16)
    cvae = ConditionalVAE(
        CVAEConfig(in_channels=rc.n_channels, image_size=16, latent_dim=4, width=4)
    )
    emb = {
        "name": "default",
        "in_channels": rc.n_channels,
        "image_size": 16,
        "out_features": 8,
        "invariant": False,
    }
    torch.manual_seed(0)
    flow = build_latent_flow(emb, settings).eval()
    return MapPosterior(
        _trained_like(cvae, seed=1), flow, rc, emb, settings, noise_rho=0.2
    )


@pytest.mark.parametrize("method", ["flow", "prior"])
@pytest.mark.parametrize("noise", [True, False])
def test_sample_same_draws_on_both_paths(
    posterior: MapPosterior, method: str, noise: bool
) -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, *posterior.x_shape)).astype(np.float32)
    mask = rng.random((5, 16, 16)) > 0.2
    kw = dict(seed=3, mask=mask, method=method, noise=noise, batch_size=2)
    try:
        posterior.fast_decoder = False
        plain = posterior.sample(maps, 37, **kw)
    finally:
        posterior.fast_decoder = True
    fast = posterior.sample(maps, 37, **kw)
    assert fast.shape == (5, 37, 16, 16)
    assert np.all(fast[:, :, ~mask[0]][0] == 0)
    # A spread of values, not all clipped: the equality below is informative.
    inside = fast[:, :, mask[0]]
    assert 0.05 < np.mean((inside > 0) & (inside < 1))
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_pixel_likelihood_same_on_both_paths(posterior: MapPosterior) -> None:
    maps = np.random.default_rng(1).normal(size=(3, *posterior.x_shape))
    maps = maps.astype(np.float32)
    fast = posterior.pixel_likelihood(maps, 6, seed=2)
    try:
        posterior.fast_decoder = False
        plain = posterior.pixel_likelihood(maps, 6, seed=2)
    finally:
        posterior.fast_decoder = True
    for a, b in zip(fast, plain, strict=True):
        assert a.shape == (3, 6, 16, 16)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_held_back_condition_uses_plain_decoder(posterior: MapPosterior) -> None:
    # The trainer's KL warm-up scales the condition to 0; the rewrite bakes in 1.
    posterior.cvae.condition_scale = 0.0
    try:
        assert posterior._decoder() is None
    finally:
        posterior.cvae.condition_scale = 1.0
    assert isinstance(posterior._decoder(), FastDecoder)
