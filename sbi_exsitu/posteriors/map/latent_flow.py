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

__all__ = ["ContextNorm", "LatentFlow", "build_latent_flow"]


class ContextNorm(nn.BatchNorm1d):
    """z-scores (B, E) contexts: batch statistics in training, running ones in eval.

    A ``BatchNorm1d`` without affine parameters (the flow's conditioner scales
    its inputs itself) that also accepts a training batch of one (it then
    uses the running statistics, as in evaluation).
    """

    def __init__(self, features: int):
        super().__init__(features, affine=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.training and len(c) < 2:
            return nn.functional.batch_norm(
                c, self.running_mean, self.running_var, training=False, eps=self.eps
            )
        return super().forward(c)


class LatentFlow(nn.Module):
    """q(z | x): a zuko NSF over the latent conditioned on an embedding of x.

    The flow models the standardised latent ``(z - z_loc) / z_scale``, as sbi
    z-scores theta: with a weak KL weight the encoder's latents spread over
    several units and sit off centre, beyond the [-5, 5] domain of zuko's
    splines, and the flow then barely learns its conditioning (seen on the
    toy of ``tests/test_map_posterior.py``). :meth:`standardize` sets the
    shift and scale from the training latents before the flow is trained.

    The context -- the embedding of x -- is z-scored too, over the batch in
    training and with running statistics in evaluation (a BatchNorm without
    affine; see :class:`ContextNorm`). Without it the flow's first epochs,
    which fit the marginal shape of the latents, shrink the embedding's
    spread across galaxies (0.05 at initialisation to 0.01 on the toy, seed
    0) because random context variation only adds noise to the density; the
    conditioner then sees a near-constant context and the flow stays near
    the marginal for the rest of training on some seeds and CPUs. With the
    context at unit scale the embedding cannot fade out that way.

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
            passes=2,  # coupling: one pass to sample, ~10x faster (measured)
        )
        self.context_norm = ContextNorm(context)
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Weights saved before the context was z-scored load as an identity norm.
        key = prefix + "context_norm."
        if prefix + "z_loc" in state_dict and key + "running_mean" not in state_dict:
            n, eps = self.context_norm.num_features, self.context_norm.eps
            state_dict[key + "running_mean"] = torch.zeros(n)
            state_dict[key + "running_var"] = torch.full((n,), 1.0 - eps)
            state_dict[key + "num_batches_tracked"] = torch.tensor(0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.distributions.Distribution:
        affine = torch.distributions.AffineTransform(
            self.z_loc, self.z_scale, event_dim=1
        )
        return torch.distributions.TransformedDistribution(
            self.flow(self.context_norm(self.embedding(x))), [affine]
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
