"""The one place that decides where torch runs and with how many threads."""

from __future__ import annotations

import os

import torch

from sbi_exsitu.errors import DeviceError

__all__ = ["resolve_device", "configure_threads"]


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` into a checked device.

    Raises:
        ValueError: a CUDA device was asked for but none is available.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device '{name}' requested but torch sees no CUDA device; use --device cpu"
        )
    return device


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: ``n`` or all cores this process may use.

    More threads than cores only adds contention on small CPU nets, so the
    default is the affinity-mask core count.
    """
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()
