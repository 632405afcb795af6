r"""Embedding nets: (B, C, H, W) observation maps to (B, D) summaries.

Torch-only (this package never imports sbi). The nets plug into sbi as
`posterior_nn(model="zuko_nsf", embedding_net=net, z_score_x="structured")`.

Registry (:func:`build_embedding`):

* `"paper_cnn"` -- :class:`PaperCNN`, the reference CNN of Angeloudi et al. (2023).
* `"resnet"` -- :class:`ResNetEmbedding`, the compact residual CNN with ring
  pooling; `"default"` is an alias for it.

Any of them can be wrapped in :class:`D4Invariant` with `invariant=True`.

Decision: the default embedding is the bare :class:`ResNetEmbedding`, *without*
the invariance wrapper. Measured cost (ms per training sample: forward + backward
+ Adam step, batch 64, 2 threads, 5 channels, `benchmarks/embeddings.py` on an
otherwise idle 2-core machine; inference ms per sample in brackets):

==============  ============  ============  =============
net             32 px         64 px         128 px
==============  ============  ============  =============
paper_cnn       1.23 (0.42)   5.64 (2.22)   25.1 (8.94)
default         0.27 (0.07)   0.48 (0.14)   1.48 (0.42)
default + D4    1.49 (0.42)   4.55 (1.87)   20.0 (8.19)
==============  ============  ============  =============

The default trains 11.8x (64 px) and 17x (128 px) faster than the paper's CNN.
The wrapper costs 9.5x (64 px) to 13.5x (128 px) the bare net -- more than 8x,
as the 8x larger batch falls out of cache -- which makes it barely cheaper than
the paper's CNN. Orientation invariance is instead obtained at 1x cost by
training with :func:`random_d4` (one random rotation/flip per sample); a net so
trained can be wrapped in :class:`D4Invariant` for inference only (the same
`state_dict` under a `net.` prefix), where 8x is cheap. On a small mock check
(1,500 galaxies x 4 views at 32 px, f_ex by MSE, 20 epochs, one seed, wall
times on a busy shared machine) the test
RMSE was 0.039 for paper_cnn with flips (436 s), 0.037 for the default (28 s),
0.032 for the default with :func:`random_d4` (26 s) and 0.028 for the default
wrapped in :class:`D4Invariant` (122 s): the wrapper stays the most accurate
option when training time allows (`invariant=True`).

Example:
    >>> net = build_embedding("default", in_channels=5, image_size=64, out_features=16)
    >>> net(torch.randn(2, 5, 64, 64)).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch  # noqa: F401  (used by the docstring example)
import torch.nn as nn

from .invariant import D4Invariant, d4_transform, random_d4
from .paper_cnn import PaperCNN
from .resnet import ResNetEmbedding

__all__ = [
    "D4Invariant",
    "DEFAULT_EMBEDDING",
    "EMBEDDINGS",
    "PaperCNN",
    "ResNetEmbedding",
    "available_embeddings",
    "build_embedding",
    "d4_transform",
    "random_d4",
]

#: Registered embedding nets, by name. Each takes `in_channels`, `image_size`
#: and `out_features` keyword arguments.
EMBEDDINGS: dict[str, Callable[..., nn.Module]] = {
    "default": ResNetEmbedding,
    "paper_cnn": PaperCNN,
    "resnet": ResNetEmbedding,
}

#: The net that "default" names.
DEFAULT_EMBEDDING = "resnet"


def available_embeddings() -> list[str]:
    r"""Returns the names accepted by :func:`build_embedding`.

    Example:
        >>> available_embeddings()
        ['default', 'paper_cnn', 'resnet']
    """

    return sorted(EMBEDDINGS)


def build_embedding(
    name: str,
    *,
    in_channels: int,
    image_size: int | Sequence[int],
    out_features: int,
    invariant: bool = False,
    **kwargs: Any,
) -> nn.Module:
    r"""Builds a registered embedding net from JSON-serialisable arguments.

    A run directory can store these arguments as its config and rebuild the net
    with `build_embedding(**config)` before loading the `state_dict`.

    Arguments:
        name: A registered name (see :func:`available_embeddings`).
        in_channels: Number of input maps C.
        image_size: Side length of square maps (or `[H, W]`).
        out_features: Size D of the output summary.
        invariant: Whether to wrap the net in :class:`D4Invariant`.
        kwargs: Further constructor arguments of the chosen net.

    Example:
        >>> config = {"name": "paper_cnn", "in_channels": 3, "image_size": 32,
        ...           "out_features": 4, "invariant": True, "dropout": 0.1}
        >>> build_embedding(**config)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 4])
    """

    if not isinstance(name, str) or name not in EMBEDDINGS:
        raise ValueError(
            f"unknown embedding {name!r}; known names: "
            + ", ".join(available_embeddings())
        )
    cls = EMBEDDINGS[name]

    accepted = [
        p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"unknown argument(s) {unknown} for embedding {name!r}; "
            f"accepted: {accepted}"
        )
    if not isinstance(invariant, bool):
        raise TypeError(f"invariant must be a bool, got {invariant!r}")

    arguments = dict(
        in_channels=in_channels,
        image_size=image_size,
        out_features=out_features,
        **kwargs,
    )
    try:
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"embedding arguments must be JSON-serialisable so a run can be "
            f"rebuilt from its config: {error}"
        ) from None

    net = cls(**arguments)
    return D4Invariant(net) if invariant else net
