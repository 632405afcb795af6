r"""The latent flow of the map posterior: q(z | x) over the cVAE latent.

A zuko neural spline flow (Durkan et al. 2019) over the latent :math:`z` of
:mod:`sbi_exsitu.posteriors.map.cvae`, conditioned on an :mod:`embeddings` summary of
the
observation maps; used at inference instead of the N(0, I) prior (Angeloudi et
al. 2024, arXiv:2410.24069).

Example:
    >>> import torch
    >>> flow = LatentFlow(torch.nn.Flatten(), 2, context=4, transforms=1)
    >>> flow(torch.randn(3, 1, 2, 2)).sample((5,)).shape
    torch.Size([5, 3, 2])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import zuko

from sbi_exsitu.config.map import MapSettings

__all__ = ["LatentFlow", "build_latent_flow"]


class LatentFlow(nn.Module):
    """q(z | x): a zuko NSF over the latent conditioned on an embedding of x.

    The flow models the standardised latent ``(z - z_loc) / z_scale``, as sbi
    z-scores theta: with a weak KL weight the encoder's latents spread over
    several units and sit off centre, beyond the [-5, 5] domain of zuko's
    splines, and the flow then barely learns its conditioning (seen on the
    toy of ``tests/test_map_posterior.py``). :meth:`standardize` sets the
    shift and scale from the training latents before the flow is trained.

    Args:
        embedding: (B, C, H, W) -> (B, E) net from :mod:`embeddings`.
        latent_dim: size of z.
        context: E.
        transforms, hidden, bins: flow size.
    """

    def __init__(
        self,
        embedding: nn.Module,
        latent_dim: int,
        context: int,
        transforms: int = 3,
        hidden: int = 64,
        bins: int = 8,
    ):
        super().__init__()
        self.embedding = embedding
        self.flow = zuko.flows.NSF(
            features=latent_dim,
            context=context,
            transforms=transforms,
            bins=bins,
            hidden_features=(hidden, hidden),
            passes=2,  # coupling: one pass to sample (SBI_NOTES: ~10x faster)
        )
        self.register_buffer("z_loc", torch.zeros(latent_dim))
        self.register_buffer("z_scale", torch.ones(latent_dim))

    @torch.no_grad()
    def standardize(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the latent shift and scale from encoder means and stds (N, D).

        The scale is that of the aggregate posterior: the spread of the means
        plus the mean encoder variance.
        """
        self.z_loc.copy_(mean.mean(0))
        self.z_scale.copy_((mean.var(0) + std.pow(2).mean(0)).sqrt().clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.distributions.Distribution:
        affine = torch.distributions.AffineTransform(
            self.z_loc, self.z_scale, event_dim=1
        )
        return torch.distributions.TransformedDistribution(
            self.flow(self.embedding(x)), [affine]
        )

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self(x).log_prob(z)


def build_latent_flow(
    embedding_config: dict[str, Any], settings: MapSettings
) -> LatentFlow:
    """A fresh :class:`LatentFlow` on ``embeddings.build_embedding(**config)``."""
    from sbi_exsitu.embeddings import build_embedding

    return LatentFlow(
        build_embedding(**embedding_config),
        settings.latent_dim,
        embedding_config["out_features"],
        transforms=settings.flow_transforms,
        hidden=settings.flow_hidden,
        bins=settings.flow_bins,
    )
