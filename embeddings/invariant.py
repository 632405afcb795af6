r"""Invariance to the dihedral group D4 (90-degree rotations and flips of a square).

A galaxy has no preferred orientation on the sky, so a summary of its maps should
not change when the maps are rotated by a multiple of 90 degrees or mirrored.
:class:`D4Invariant` makes any embedding net exactly invariant by averaging its
output over the 8 transformed copies of the input (group averaging), computed
as a single batched forward pass. It replaces the paper's random flip
augmentation. All channels transform the same way: a rotation or mirror only
moves pixels, it changes no pixel value (the line-of-sight velocity keeps its
sign, as the line of sight is perpendicular to the image plane).

:func:`random_d4` is the cheap alternative for training: one random group element
per sample (8x cheaper than :class:`D4Invariant`). A net trained with it can be
wrapped in :class:`D4Invariant` afterwards for exactly invariant inference.

Note:
    In training mode, BatchNorm layers inside the wrapped net see a batch 8 times
    larger made of the transformed copies; this is harmless (their statistics
    are those of the augmented batch).

References:
    | Group Equivariant Convolutional Networks (Cohen & Welling, 2016)
    | https://arxiv.org/abs/1602.07576
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["D4Invariant", "d4_transform", "random_d4"]

# The order of D4 is 8: 4 rotations, each with and without a mirror.
D4_ORDER = 8


def _check_square(x: Tensor) -> None:
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            "D4 transforms need square maps (..., H, W) with H == W, "
            f"got shape {tuple(x.shape)}"
        )


def d4_transform(x: Tensor, k: int) -> Tensor:
    r"""Applies the :math:`k`-th element of D4 to the last two axes of `x`.

    Elements :math:`k = 0, \dots, 3` rotate by :math:`k \times 90` degrees;
    :math:`k = 4, \dots, 7` mirror left-right first, then rotate by
    :math:`(k - 4) \times 90` degrees. :math:`k = 0` is the identity.

    Arguments:
        x: Square maps, with shape :math:`(*, H, H)`.
        k: Group element, an integer in :math:`[0, 8)`.

    Example:
        >>> x = torch.arange(4.0).reshape(2, 2)
        >>> d4_transform(x, 1)
        tensor([[1., 3.],
                [0., 2.]])
    """

    _check_square(x)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < D4_ORDER:
        raise ValueError(f"k must be an integer in [0, 8), got {k!r}")
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_d4(x: Tensor, seed: int | torch.Generator) -> Tensor:
    r"""Applies an independent random D4 element to each sample of a batch.

    This is the training-time augmentation alternative to :class:`D4Invariant`.

    Arguments:
        x: Batch of square maps, with shape :math:`(B, *, H, H)`.
        seed: Seed or generator for the choice of group elements.

    Returns:
        The transformed batch, same shape as `x`.

    Example:
        >>> x = torch.randn(16, 5, 32, 32)
        >>> random_d4(x, seed=0).shape
        torch.Size([16, 5, 32, 32])
    """

    _check_square(x)
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator().manual_seed(int(seed))
    ks = torch.randint(D4_ORDER, (len(x),), generator=generator)
    out = torch.empty_like(x)
    for k in range(D4_ORDER):
        idx = (ks == k).nonzero().squeeze(-1)
        if len(idx):
            out[idx] = d4_transform(x[idx], k)
    return out


class D4Invariant(nn.Module):
    r"""Makes an embedding net invariant to D4 by group averaging.

    .. math:: f_{inv}(x) = \frac{1}{8} \sum_{g \in D_4} f(g \cdot x)

    The 8 transformed copies are stacked along the batch axis and embedded in one
    forward pass, so the cost is that of the bare net on an 8 times larger batch.
    In evaluation mode the output is invariant up to floating-point round-off.

    Arguments:
        net: Embedding net mapping :math:`(B, C, H, H)` to :math:`(B, D)`.

    Example:
        >>> net = D4Invariant(nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 3)))
        >>> x = torch.randn(4, 2, 8, 8)
        >>> torch.allclose(net(x), net(x.flip(-1)), atol=1e-6)
        True
    """

    def __init__(self, net: nn.Module):
        super().__init__()

        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net

        size = getattr(net, "image_size", None)
        if isinstance(size, tuple) and len(size) == 2 and size[0] != size[1]:
            raise ValueError(f"D4 invariance needs square maps, net has {size}")

        # Mirror the wrapped net's description, so callers need not unwrap.
        for attr in ("in_channels", "image_size", "out_features"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: Square maps, with shape :math:`(B, C, H, H)`.

        Returns:
            The invariant summaries, with shape :math:`(B, D)`.
        """

        _check_square(x)
        batch = len(x)
        xs = torch.cat([d4_transform(x, k) for k in range(D4_ORDER)])
        y = self.net(xs)
        return y.reshape(D4_ORDER, batch, *y.shape[1:]).mean(0)
