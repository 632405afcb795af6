r"""A compact residual CNN with ring pooling, the project's default embedding net.

Design, for galaxy maps that are centred, smooth (Gaussian seeing) and carry their
information in radial gradients rather than fine texture:

* a normalised radius channel :math:`r / R` (:math:`R` = half the field of view)
  is appended to the input, so that filters know where they are in the galaxy;
* a narrow stride-2 stem and three stride-2 stages bring the maps down to
  :math:`H / 8` before the first residual block and to :math:`H / 16` (never
  below 4 pixels) at the end, so no full-resolution layer is ever computed --
  the paper's CNN spends most of its time at full and half resolution;
* the last feature map is averaged over concentric rings of the field of view,
  so the summary is a coarse radial profile of features. The default edges at
  :math:`R / 4`, :math:`R / 2` and :math:`R` are, for the renderer's default
  field of view of 4 :math:`r_e` (full width), the paper's apertures of 1, 2
  and 4 :math:`r_e` diameter, plus the corners. The ring masks are
  area-weighted at the feature resolution, so this works at any input size
  (on the 4x4 grid of 32-64 px maps the inner rings share the central pixels
  with different weights).

Cost, measured on this project's machine (2 threads, batch 64, forward + backward +
Adam step, 5 channels; `benchmarks/embeddings.py`): see the table in the
package docstring of :mod:`embeddings`.

References:
    | Deep Residual Learning for Image Recognition (He et al., 2016)
    | https://arxiv.org/abs/1512.03385
    | An Intriguing Failing of Convolutional Neural Networks and the CoordConv
      Solution (Liu et al., 2018)
    | https://arxiv.org/abs/1807.03247
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._checks import as_size, check_input, check_positive_int, check_probability

__all__ = ["ResNetEmbedding", "radius_map", "ring_weights"]

# The final feature map is never smaller than this many pixels per side.
_MIN_FEATURE_SIZE = 4


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    # GroupNorm with groups of 4 channels: batch-independent, so training and
    # evaluation compute the same function and a batch of one is fine.
    return nn.GroupNorm(max(1, channels // 4), channels)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.branch(x))


def radius_map(height: int, width: int) -> Tensor:
    r"""Returns the distance of each pixel centre from the map centre, in units of
    half the shorter side, with shape :math:`(H, W)`.

    Example:
        >>> round(radius_map(4, 4)[0, 0].item(), 4)  # corner: sqrt(2) * 1.5 / 2
        1.0607
    """

    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    half = min(height, width) / 2
    return torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2) / half


def ring_weights(
    image_size: tuple[int, int],
    feature_size: tuple[int, int],
    edges: Sequence[float],
) -> Tensor:
    r"""Area weights of concentric rings on a coarse feature grid.

    Ring :math:`k` holds the input pixels with :math:`e_{k-1} \leq r / R < e_k`
    (with :math:`e_{-1} = 0` and a last ring out to the corners). Its indicator is
    drawn at input resolution and area-averaged onto the feature grid, then
    normalised to sum to one, so `(features * weights).sum((-2, -1))` is the mean
    feature over the ring.

    Arguments:
        image_size: Input map size :math:`(H, W)`.
        feature_size: Feature map size :math:`(h, w)`.
        edges: Increasing inner ring edges, in units of :math:`R`.

    Returns:
        The weights, with shape :math:`(n, h, w)` where :math:`n` = `len(edges) + 1`.

    Example:
        >>> w = ring_weights((64, 64), (4, 4), [0.5, 1.0])
        >>> w.shape, torch.allclose(w.sum((-2, -1)), torch.ones(3))
        (torch.Size([3, 4, 4]), True)
    """

    r = radius_map(*image_size)
    bounds = [0.0, *edges, float("inf")]
    masks = torch.stack(
        [(r >= lo) & (r < hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    ).float()
    weights = F.adaptive_avg_pool2d(masks, feature_size)
    return weights / weights.sum((-2, -1), keepdim=True)


class ResNetEmbedding(nn.Module):
    r"""Creates a compact residual CNN embedding with ring pooling.

    Layout (for the default widths): radius channel, stem conv 3x3 stride 2 to 8
    channels, then stages of (conv 3x3 stride 2, `blocks[i]` residual blocks) at
    24, 32 and 64 channels, ring pooling and an MLP head. The stem is narrow
    because at :math:`H / 2` it dominates the cost (16 channels cost +25%). A
    stride-2 step is skipped when it would make the maps smaller than 4 pixels,
    so the final grid is :math:`\max(4, H / 16)` pixels.

    Arguments:
        in_channels: Number of input maps C.
        image_size: Side length of square maps, or `(H, W)`; at least 16.
        out_features: Size D of the output summary.
        widths: Channels of the stem and of each stage.
        blocks: Residual blocks per stage (one entry per stage after the stem).
        ring_edges: Inner ring edges in units of half the field of view; an empty
            list gives plain global average pooling.
        hidden_features: Width of the head's hidden layer.
        norm: "group" (GroupNorm, batch-independent) or "batch" (BatchNorm).
        dropout: Dropout rate before the head's last layer.
        radius_channel: Whether to append the normalised radius map as an input.

    Example:
        >>> net = ResNetEmbedding(in_channels=5, image_size=64, out_features=16)
        >>> net(torch.randn(4, 5, 64, 64)).shape
        torch.Size([4, 16])
    """

    def __init__(
        self,
        in_channels: int = 5,
        image_size: int | Sequence[int] = 64,
        out_features: int = 32,
        widths: Sequence[int] = (8, 24, 32, 64),
        blocks: Sequence[int] = (0, 1, 1),
        ring_edges: Sequence[float] = (0.25, 0.5, 1.0),
        hidden_features: int = 128,
        norm: str = "group",
        dropout: float = 0.0,
        radius_channel: bool = True,
    ):
        super().__init__()

        self.in_channels = check_positive_int("in_channels", in_channels)
        self.image_size = as_size(image_size, minimum=16)
        self.out_features = check_positive_int("out_features", out_features)
        check_positive_int("hidden_features", hidden_features)
        dropout = check_probability("dropout", dropout)
        widths = [check_positive_int("widths[i]", w) for w in widths]
        blocks = [check_positive_int("blocks[i]", b, minimum=0) for b in blocks]
        if len(widths) != len(blocks) + 1:
            raise ValueError(
                "widths must have one entry more than blocks (stem + stages), "
                f"got widths={list(widths)} and blocks={list(blocks)}"
            )
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
        edges = [float(e) for e in ring_edges]
        if any(e <= 0 for e in edges) or edges != sorted(set(edges)):
            raise ValueError(
                f"ring_edges must be positive and strictly increasing, got {edges}"
            )

        self.radius_channel = bool(radius_channel)
        if self.radius_channel:
            self.register_buffer(
                "radius", radius_map(*self.image_size), persistent=False
            )

        size = min(self.image_size)
        layers: list[nn.Module] = []
        c_in = in_channels + int(self.radius_channel)
        for i, c_out in enumerate(widths):
            # Skip the stride when it would drop below the minimum feature size.
            stride = 2 if size // 2 >= _MIN_FEATURE_SIZE else 1
            size = size // stride
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                _norm(norm, c_out),
                nn.ReLU(),
            ]
            if i > 0:
                layers += [_ResidualBlock(c_out, norm) for _ in range(blocks[i - 1])]
            c_in = c_out
        self.features = nn.Sequential(*layers)

        # Feature grid size, found by a dry run so it matches conv arithmetic.
        with torch.no_grad():
            probe = torch.zeros(
                1, in_channels + int(self.radius_channel), *self.image_size
            )
            feature_size = tuple(self.features(probe).shape[-2:])
        self.register_buffer(
            "rings",
            ring_weights(self.image_size, feature_size, edges),
            persistent=False,
        )

        self.head = nn.Sequential(
            nn.Linear(c_in * len(self.rings), hidden_features),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: Maps, with shape :math:`(B, C, H, W)`.

        Returns:
            The summaries, with shape :math:`(B, D)`.
        """

        check_input(x, self.in_channels, self.image_size)
        if self.radius_channel:
            x = torch.cat([x, self.radius.to(x.dtype).expand(len(x), 1, -1, -1)], 1)
        h = self.features(x)  # (B, c, h, w)
        # (B, c, h, w) x (n, h, w) -> (B, c, n): mean feature in each ring
        pooled = torch.einsum("bchw,nhw->bcn", h, self.rings.to(h.dtype))
        return self.head(pooled.flatten(1))

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, "
            f"out_features={self.out_features}"
        )
