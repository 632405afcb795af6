"""The latent flow of the map posterior."""

from __future__ import annotations

import torch

from sbi_exsitu.posteriors.map.latent_flow import LatentFlow


def test_latent_flow_standardization() -> None:
    """The flow models (z - loc) / scale: samples and densities follow the affine."""
    flow = LatentFlow(torch.nn.Flatten(), 2, context=4, transforms=1, hidden=8)
    x = torch.randn(3, 1, 2, 2)
    z = torch.randn(5, 3, 2)
    torch.manual_seed(0)
    base_draws = flow(x).sample((4,))
    base_lp = flow.log_prob(z, x)
    mean = torch.tensor([[3.0, -10.0], [5.0, -10.0]])  # loc (4, -10)
    std = torch.full((2, 2), 2.0)  # var of means (2, 0) + 4 -> scale (sqrt6, 2)
    flow.standardize(mean, std)
    loc, scale = torch.tensor([4.0, -10.0]), torch.tensor([6**0.5, 2.0])
    assert torch.allclose(flow.z_loc, loc) and torch.allclose(flow.z_scale, scale)
    torch.manual_seed(0)
    assert torch.allclose(flow(x).sample((4,)), loc + scale * base_draws, atol=1e-5)
    expected = base_lp - scale.log().sum()
    assert torch.allclose(flow.log_prob(loc + scale * z, x), expected, atol=1e-4)
    # Saved with the weights, so a loaded posterior samples the same latents.
    assert {"z_loc", "z_scale"} <= set(flow.state_dict())


def test_gradients_reach_flow_and_embedding() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4))
    flow = LatentFlow(net, 3, context=4, transforms=1, hidden=8)
    flow.log_prob(torch.randn(6, 3), torch.randn(6, 1, 2, 2)).sum().backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in flow.flow.parameters())


def test_context_is_standardized_and_old_weights_load() -> None:
    """The embedding's output is z-scored; weights without the norm load as identity."""
    flow = LatentFlow(torch.nn.Flatten(), 2, context=4, transforms=1, hidden=8)
    c = 0.1 * torch.randn(32, 4) + 5.0  # a faint, off-centre context
    out = flow.context_norm(c)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(4), atol=1e-2)
    flow.context_norm(c[:1])  # a training batch of one is accepted
    state = {
        k: v for k, v in flow.state_dict().items() if not k.startswith("context_norm")
    }
    old = LatentFlow(torch.nn.Flatten(), 2, context=4, transforms=1, hidden=8)
    old.load_state_dict(state)
    old.eval()
    assert torch.allclose(old.context_norm(c), c, rtol=1e-6)
