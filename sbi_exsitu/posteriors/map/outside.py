r"""The stars outside the mask: from the in-mask f_ex of a map to the galaxy's.

A map posterior gives the ex-situ map *inside* the galaxy mask, and its implied
f_ex is the mass-weighted ex-situ fraction :math:`f_{in}` there. The f_ex label
counts every star of the galaxy,

.. math:: f_{ex} = (1 - w_{out})\, f_{in} + w_{out}\, f_{out}
                 = f_{in} + \delta, \qquad
          \delta = w_{out} (f_{out} - f_{in}),

with :math:`w_{out}` the stellar-mass share outside the mask and :math:`f_{out}`
the ex-situ fraction there. Even the *true* map misses :math:`\delta`: its
:math:`f_{in}` scatters by 0.060-0.064 against the labels of the
``map-quickstart`` galaxies (docs/map-posterior.md), 2.4x the scalar
posterior's error. The datasets store neither :math:`w_{out}` nor
:math:`f_{out}`, but they do store :math:`\delta` implicitly: the f_ex label
minus :math:`f_{in}` of the true map with the posterior's own mass weights.
:class:`OutsideMaskHead` is a Gaussian :math:`p(\delta \mid x)` on an
:mod:`embeddings` summary of the observations (trained by
:func:`sbi_exsitu.training.map_outside.fit_outside_head`), and
:func:`galaxy_fex` turns map draws into draws of the whole galaxy's f_ex,
:math:`\mathrm{clip}(f_{in} + \delta, 0, 1)` with one :math:`\delta` per draw.

Example:
    >>> import torch
    >>> head = OutsideMaskHead(torch.nn.Flatten(), 4)
    >>> mean, std = head(torch.randn(3, 1, 2, 2))
    >>> mean.shape, bool((std > 0).all())
    (torch.Size([3]), True)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sbi_exsitu.data.exsitu_fraction import implied_fex
from sbi_exsitu.runs import RunDirectory

__all__ = [
    "OutsideMaskHead",
    "build_outside_head",
    "galaxy_fex",
    "load_outside_head",
    "save_outside_head",
]

#: Weights file of the head in a run directory (``weights/outside.pt``).
WEIGHTS_NAME = "outside"


class OutsideMaskHead(nn.Module):
    r"""p(delta | x) = N(mean(x), std(x)^2) for the outside-mask term delta.

    The target is standardised by ``delta_loc`` and ``delta_scale`` (set by
    the trainer from the training split), so the MLP works at unit scale.

    Args:
        embedding: (B, C, H, W) -> (B, E) net from :mod:`embeddings`.
        features: E.
        hidden: units of the two hidden layers.
    """

    def __init__(self, embedding: nn.Module, features: int, hidden: int = 64):
        super().__init__()
        self.embedding = embedding
        self.mlp = nn.Sequential(
            nn.Linear(features, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2),
        )
        self.register_buffer("delta_loc", torch.zeros(()))
        self.register_buffer("delta_scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) mean and std of delta given observation maps x."""
        mean, s = self.mlp(self.embedding(x)).unbind(dim=-1)
        std = F.softplus(s) + 1e-3
        return (
            self.delta_loc + self.delta_scale * mean,
            self.delta_scale * std,
        )

    def nll(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) Gaussian negative log-likelihood of delta, standardised units."""
        mean, std = self(x)
        z = (delta - mean) / std
        return 0.5 * z * z + torch.log(std / self.delta_scale)


@torch.inference_mode()
def galaxy_fex(
    post: Any,
    head: OutsideMaskHead,
    maps: np.ndarray,
    mask: np.ndarray,
    samples: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """(n, S) draws of the whole galaxy's f_ex from (n, S, H, W) map draws.

    Args:
        post: the map posterior the draws come from (its mass weights).
        head: a trained :class:`OutsideMaskHead`.
        maps: (n, C, H, W) observation maps.
        mask: (n, H, W) their masks.
        samples: (n, S, H, W) map draws of ``post``.
        seed: seeds the delta draws.
        batch_size: observations per call of the head.
    """
    weights, _ = post.mass_weights(maps, mask)
    f_in = implied_fex(samples, weights)
    head = head.eval()
    x = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    mean, std = (
        torch.cat(t).numpy()
        for t in zip(
            *(head(x[i : i + batch_size]) for i in range(0, len(x), batch_size)),
            strict=True,
        )
    )
    eps = np.random.default_rng(seed).standard_normal(f_in.shape)
    return np.clip(f_in + mean[:, None] + std[:, None] * eps, 0.0, 1.0)


def build_outside_head(
    embedding_config: dict[str, Any], hidden: int = 64
) -> OutsideMaskHead:
    """A fresh head on ``embeddings.build_embedding(**embedding_config)``."""
    from sbi_exsitu.embeddings import build_embedding

    emb = build_embedding(**embedding_config)
    head = OutsideMaskHead(emb, int(embedding_config["out_features"]), hidden)
    # What save_outside_head stores in model.json to rebuild it.
    head.config = {"embedding": dict(embedding_config), "hidden": int(hidden)}
    return head


def save_outside_head(
    run: RunDirectory, head: OutsideMaskHead | None
) -> dict[str, Any] | None:
    """Write ``weights/outside.pt``; the ``model.json`` entry (None: no head).

    The head must come from :func:`build_outside_head` (its ``config``).
    """
    if head is None:
        return None
    run.save_weights(WEIGHTS_NAME, head.state_dict())
    return dict(head.config)


def load_outside_head(
    run: RunDirectory, meta: dict[str, Any]
) -> OutsideMaskHead | None:
    """The head of a run from its ``model.json`` entry, or None.

    A run saved before the head existed has no ``outside_head`` key: it loads
    without the head, with a warning that its f_ex is the in-mask one only.
    """
    if "outside_head" not in meta:
        warnings.warn(
            f"{run.model_file}: this map run predates the outside-mask head; "
            "its implied f_ex is the in-mask f_ex only (no whole-galaxy f_ex "
            "columns). Re-run `sbi-exsitu fit` to train the head",
            stacklevel=3,
        )
        return None
    entry = meta["outside_head"]
    if entry is None:  # trained with [map] outside_head = false, or no labels
        return None
    head = build_outside_head(entry["embedding"], entry["hidden"])
    run.load_into(head, WEIGHTS_NAME, "cpu")  # sampled on CPU, like its inputs
    return head.eval()
