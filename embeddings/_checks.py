r"""Shared argument and input checks for the embedding nets.

Every net validates its constructor arguments and its input shape with the same
wording, so that a wrong map size or channel count fails with one clear message
instead of a shape error deep inside a convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["as_size", "check_input", "check_positive_int", "check_probability"]


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    r"""Returns `value` if it is an integer :math:`\geq` `minimum`, else raises.

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        minimum: Smallest accepted value.

    Example:
        >>> check_positive_int("in_channels", 5)
        5
    """

    # bool is an int subclass; True as a channel count is always a bug.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    r"""Returns `value` as a float if it lies in :math:`[0, 1)`, else raises.

    Example:
        >>> check_probability("dropout", 0.2)
        0.2
    """

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def as_size(image_size: int | Sequence[int], minimum: int) -> tuple[int, int]:
    r"""Normalises an image size to an `(H, W)` pair and checks its minimum.

    Args:
        image_size: Side length of square maps, or an `(H, W)` pair.
        minimum: Smallest accepted side length (set by the pooling depth).

    Example:
        >>> as_size(64, minimum=8)
        (64, 64)
    """

    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")

    if min(size) < minimum:
        raise ValueError(
            f"image_size must be >= {minimum} pixels per side for this net's "
            f"pooling depth, got {image_size!r}"
        )
    return size


def check_input(x: torch.Tensor, channels: int, size: tuple[int, int]) -> None:
    r"""Raises if `x` is not a float batch of shape `(B, channels, H, W)`.

    Example:
        >>> check_input(torch.zeros(2, 5, 32, 32), 5, (32, 32))
    """

    expected = (channels, *size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"expected maps of shape (B, {channels}, {size[0]}, {size[1]}), "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected floating-point maps, got dtype {x.dtype}")
