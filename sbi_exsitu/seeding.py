"""Independent random seeds for the parts of one run (members, epochs, stages).

Seed arithmetic such as ``seed * 1000 + k`` or ``seed + epoch`` makes the
streams of different runs overlap: run ``seed=0`` at epoch 1 draws exactly what
run ``seed=1`` draws at epoch 0, and ``seed * 1000 + k`` collides as soon as an
ensemble has more than 1000 members. :func:`derive_seed` hashes the base seed
and the keys with :class:`numpy.random.SeedSequence`, so every (seed, keys)
pair gets its own well-mixed stream.

Dataset generation draws each galaxy from ``SeedSequence(seed, spawn_key=(i,))``
(``sbi_exsitu.data.simulate.galaxy_seed``, kept so the same seed keeps giving
bit-identical datasets); its per-view draws (observation noise, particle
subsets) use :func:`derive_seed`.

Example:
    >>> derive_seed(0, "member", 1) == derive_seed(0, "member", 1)
    True
    >>> derive_seed(0, "epoch", 1) != derive_seed(1, "epoch", 0)
    True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive_seed"]


def _key_entropy(key: int | str) -> int:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"seed keys are ints or strings, got {key!r}")
    if isinstance(key, str):
        # crc32 is stable across processes (unlike hash()), enough to separate names.
        return zlib.crc32(key.encode())
    if key < 0:
        raise ValueError(f"seed keys must be >= 0, got {key}")
    return key


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` of the run seeded ``seed``.

    Args:
        seed: the run's seed (``>= 0``).
        *keys: names of the sub-stream, e.g. ``"member", 3`` or ``"epoch", 12``.

    Returns:
        An int in ``[0, 2**63)``, usable by ``torch.manual_seed`` and numpy.

    Raises:
        ValueError: a negative seed or key.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(derive_seed(7, "member", 0))
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    entropy = [int(seed), *(_key_entropy(k) for k in keys)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
