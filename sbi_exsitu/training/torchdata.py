"""Feed HDF5 map datasets to torch in batches, in memory or streamed from disk.

Reading one sample at a time from HDF5 is slow (one chunk lookup per item), so
the loader asks the dataset for a whole batch of indices at once. When the
selected maps fit in ``memory_limit_gb`` they are read once into RAM; otherwise
every batch is read from disk, which bounds peak memory by the batch size (the
paper's 24,000 maps of 5x128x128 are 7.9 GB as float32).

Example:
    >>> # loader = MapBatches(dataset, indices, targets, batch_size=128, seed=0)
    >>> # for x, theta in loader: ...
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.seeding import derive_seed

__all__ = ["MapBatches", "target_array"]


def target_array(
    dataset: MapDataset, names: list[str], indices: np.ndarray
) -> np.ndarray:
    """(n, D) float32 array of the label columns ``names`` for ``indices``.

    Raises:
        ValueError: a label is unknown or missing (NaN) for a selected sample.
    """
    cols = []
    for name in names:
        if name not in dataset.labels:
            raise ValueError(
                f"{dataset.path}: no label '{name}'; known: {sorted(dataset.labels)}"
            )
        col = np.asarray(dataset.labels[name][indices], dtype=np.float64)
        if not np.all(np.isfinite(col)):
            raise ValueError(
                f"{dataset.path}: label '{name}' is missing (NaN) for "
                f"{int((~np.isfinite(col)).sum())} samples; training and calibration "
                "need labelled data (e.g. TNG cutouts rendered with --flags)"
            )
        cols.append(col)
    return np.stack(cols, axis=1).astype(np.float32)


class MapBatches:
    """Iterable over ``(maps, targets)`` torch batches of a dataset subset.

    Args:
        dataset: the source.
        indices: which samples.
        targets: (len(indices), D) array aligned with ``indices``, or None.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch).
        seed: shuffle seed.
        memory_limit_gb: read everything into RAM if it fits in this budget.
        drop_last: drop the last partial batch.
        extra: ``(maps, index, targets)`` pairs held in memory beside the
            dataset's (pseudo-labelled target maps): pair ``j`` is
            ``(maps[index[j]], targets[j])``; shuffled in with the others.
    """

    def __init__(
        self,
        dataset: MapDataset,
        indices: np.ndarray,
        targets: np.ndarray | None = None,
        *,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        memory_limit_gb: float = 4.0,
        drop_last: bool = False,
        extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        c, h, w = dataset.shape
        nbytes = len(self.indices) * c * h * w * 4
        self._cache: torch.Tensor | None = None
        if nbytes <= memory_limit_gb * 2**30:
            self._cache = torch.from_numpy(self._read(self.indices))
        self._extra = None
        if extra is not None:
            maps, index, theta = extra
            self._extra = (
                torch.from_numpy(np.ascontiguousarray(maps, np.float32)),
                torch.as_tensor(np.asarray(index, np.int64)),
                torch.as_tensor(np.asarray(theta, np.float32)),
            )

    def _read(self, idx: np.ndarray) -> np.ndarray:
        # Sorted reads are far faster in HDF5; restore the order afterwards.
        return self.dataset.maps(idx)

    @property
    def in_memory(self) -> bool:
        return self._cache is not None

    def _n(self) -> int:
        return len(self.indices) + (0 if self._extra is None else len(self._extra[1]))

    def __len__(self) -> int:
        n = self._n()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n = self._n()
        order = np.arange(n)
        if self.shuffle:
            order = np.random.default_rng(
                derive_seed(self.seed, "shuffle", self.epoch)
            ).permutation(n)
            self.epoch += 1
        for start in range(0, n, self.batch_size):
            pos = order[start : start + self.batch_size]
            if self.drop_last and len(pos) < self.batch_size:
                break
            # Dataset pairs come first in the numbering, then the extra ones.
            mine = pos < len(self.indices)
            own = pos[mine]
            if self._cache is not None:
                x = self._cache[torch.from_numpy(own)]
            else:
                x = torch.from_numpy(self._read(self.indices[own]))
            y = None if self.targets is None else self.targets[torch.from_numpy(own)]
            if len(own) < len(pos):
                x, y = self._with_extra(pos, mine, x, y)
            yield x, y

    def _with_extra(
        self,
        pos: np.ndarray,
        mine: np.ndarray,
        x_own: torch.Tensor,
        y_own: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``pos``: the dataset's pairs ``(x_own, y_own)`` where
        ``mine`` and the ``extra`` ones elsewhere, in the order of ``pos``."""
        maps, index, theta = self._extra
        keep = torch.from_numpy(mine)
        theirs = torch.from_numpy(pos[~mine] - len(self.indices))
        x = torch.empty((len(pos), *maps.shape[1:]), dtype=maps.dtype)
        y = torch.empty((len(pos), theta.shape[1]), dtype=theta.dtype)
        x[keep], x[~keep] = x_own, maps[index[theirs]]
        y[keep], y[~keep] = y_own, theta[theirs]
        return x, y
