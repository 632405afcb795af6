"""Build sbi neural posterior estimators from a JSON-serialisable spec.

The spec is all a run directory needs to rebuild the network without unpickling
anything: :func:`build_estimator` makes the same architecture from it, and the
weights (including the z-score buffers) come back with ``load_state_dict``.
Everything here goes through sbi's public API (``posterior_nn``,
``DirectPosterior``, ``BoxUniform``).

Example:
    >>> spec = EstimatorSpec(targets=("f_ex",), x_shape=(2, 16, 16),
    ...                      embedding="paper_cnn", embedding_features=8,
    ...                      hidden_features=16, num_transforms=1)
    >>> est = build_estimator(spec)
    >>> est.loss(torch.full((4, 1), 0.5), condition=torch.zeros(4, 2, 16, 16)).shape
    torch.Size([4])
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from sbi_exsitu.config.experiment import TARGET_BOUNDS, PosteriorSection

__all__ = [
    "ZScore",
    "EstimatorSpec",
    "build_prior",
    "build_estimator",
    "clamp_to_support",
]


@dataclass(frozen=True)
class EstimatorSpec:
    """Architecture of one posterior estimator (one ensemble member)."""

    targets: tuple[str, ...]
    x_shape: tuple[int, int, int]
    estimator: str = "zuko_nsf"
    hidden_features: int = 64
    num_transforms: int = 3
    num_bins: int = 8
    embedding: str = "default"
    embedding_features: int = 32
    invariant: bool = False
    embedding_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["targets"] = list(self.targets)
        out["x_shape"] = list(self.x_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EstimatorSpec:
        data = dict(data)
        data["targets"] = tuple(data["targets"])
        data["x_shape"] = tuple(data["x_shape"])
        return cls(**data)

    @classmethod
    def from_section(
        cls, section: PosteriorSection, x_shape: tuple[int, int, int]
    ) -> EstimatorSpec:
        """The spec of the ``[posterior]`` table, for maps of shape ``x_shape``.

        The architecture fields are the table's fields of the same name (the
        table is their one schema; ``tests/test_estimator.py`` checks they agree).
        """
        names = [f.name for f in dataclasses.fields(cls) if f.name != "x_shape"]
        values = {n: getattr(section, n) for n in names}
        values["embedding_kwargs"] = dict(values["embedding_kwargs"])
        return cls(x_shape=tuple(x_shape), **values)

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tensor([TARGET_BOUNDS[t][0] for t in self.targets])
        high = torch.tensor([TARGET_BOUNDS[t][1] for t in self.targets])
        return low, high


class ZScore(torch.nn.Module):
    """Standardise maps with one mean and std over all pixels of a batch.

    sbi 0.27's ``z_score_x="structured"`` takes the per-sample std over dim 1,
    which is NaN for single-channel images, so we z-score here and pass
    ``z_score_x="none"``. The statistics are buffers: they travel in the
    ``state_dict`` with the weights.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    @classmethod
    def from_batch(cls, x: torch.Tensor) -> ZScore:
        x = x[torch.isfinite(x).flatten(1).all(dim=1)]
        std = float(x.std()) if x.numel() > 1 else 1.0
        return cls(float(x.mean()) if x.numel() else 0.0, max(std, 1e-7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_prior(spec: EstimatorSpec) -> Any:
    """A ``BoxUniform`` over the targets' supports (see ``TARGET_BOUNDS``)."""
    from sbi.utils import BoxUniform

    low, high = spec.bounds
    return BoxUniform(low=low, high=high)


def clamp_to_support(
    theta: torch.Tensor, spec: EstimatorSpec, eps: float = 1e-4
) -> torch.Tensor:
    """Pull labels a hair inside the prior box.

    The flow lives in the unbounded space of a sigmoid bijection, where a label
    exactly on the boundary (f_ex = 0 for a galaxy without accreted stars) maps to
    infinity; a relative margin of ``eps`` keeps its loss finite.
    """
    low, high = spec.bounds
    margin = eps * (high - low)
    return torch.clamp(theta, low + margin, high - margin)


def build_estimator(
    spec: EstimatorSpec,
    theta: torch.Tensor | None = None,
    x: torch.Tensor | None = None,
) -> torch.nn.Module:
    """Build an sbi conditional density estimator (flow + embedding net).

    Args:
        spec: the architecture.
        theta, x: a batch of training data; sbi derives the z-scoring of x from
            it. Omit both when the weights (which hold those statistics as
            buffers) will be loaded right after.

    Returns:
        An sbi ``ConditionalDensityEstimator``.
    """
    from sbi.neural_nets import posterior_nn

    from sbi_exsitu.embeddings import build_embedding

    net = build_embedding(
        spec.embedding,
        in_channels=spec.x_shape[0],
        image_size=spec.x_shape[1],
        out_features=spec.embedding_features,
        invariant=spec.invariant,
        **spec.embedding_kwargs,
    )
    if theta is None or x is None:
        # Placeholder statistics; load_state_dict overwrites these buffers.
        gen = torch.Generator().manual_seed(0)
        theta = build_prior(spec).sample((8,))
        x = torch.randn((8, *spec.x_shape), generator=gen)
    net = torch.nn.Sequential(ZScore.from_batch(x), net)
    prior = build_prior(spec)
    kwargs: dict[str, Any] = {}
    if spec.estimator == "zuko_nsf":
        kwargs["num_bins"] = spec.num_bins
    builder = posterior_nn(
        model=spec.estimator,
        embedding_net=net,
        z_score_x="none",
        z_score_theta="transform_to_unconstrained",
        x_dist=prior,
        hidden_features=spec.hidden_features,
        num_transforms=spec.num_transforms,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return builder(clamp_to_support(theta, spec), x)
