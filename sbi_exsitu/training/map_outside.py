r"""Training of the outside-mask head of a map posterior (issue #19, goal iv).

:func:`fit_outside_head` fits
:class:`~sbi_exsitu.posteriors.map.outside.OutsideMaskHead` on top of a trained
map posterior: the target of a view is
:math:`\delta = f_{ex}^{label} - f_{in}(\text{true map})`, with the posterior's
own mass weights, so that :func:`~sbi_exsitu.posteriors.map.outside.galaxy_fex`
of the posterior's draws estimates the whole galaxy's f_ex. Adam with early
stopping on the validation split (:func:`sbi_exsitu.training.loop.train_loop`),
D4 augmentation of the maps (delta is a property of the galaxy, unchanged by
flips and quarter turns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.exsitu_fraction import implied_fex
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.posteriors.map.outside import OutsideMaskHead
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.loop import train_loop

__all__ = ["fit_outside_head", "outside_delta"]


def outside_delta(
    post: Any, dataset: MapDataset, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(maps, delta) of views ``idx``: the label minus the true map's f_ex.

    Raises:
        DatasetError: the dataset has no ``f_ex`` label or no ex-situ maps.
    """
    if "f_ex" not in dataset.labels:
        raise DatasetError(
            f"{dataset.path}: no 'f_ex' label; the outside-mask head is trained "
            "on the whole galaxy's f_ex (simulate the dataset with labels)"
        )
    x, y, m = dataset.maps(idx), dataset.exsitu(idx), dataset.mask(idx)
    w, _ = post.mass_weights(x, m)
    f_in = implied_fex(y[:, None], w)[:, 0]
    delta = np.asarray(dataset.labels["f_ex"], dtype=np.float64)[idx] - f_in
    if not np.isfinite(delta).all():
        raise DatasetError(
            f"{dataset.path}: NaN in the ex-situ maps or f_ex labels of the "
            "training views; the outside-mask head needs both"
        )
    return x, delta.astype(np.float32)


def _batches(
    x: torch.Tensor, d: torch.Tensor, size: int, seed: int, augment: bool
) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    from sbi_exsitu.embeddings import random_d4

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        perm = np.random.default_rng(derive_seed(seed, "order", epoch))
        order = torch.from_numpy(perm.permutation(len(x)))
        for start in range(0, len(x), size):
            i = order[start : start + size]
            xb = random_d4(x[i], gen) if augment else x[i]
            yield xb, d[i]

    return batches


def fit_outside_head(
    post: Any,
    dataset: MapDataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    head: OutsideMaskHead,
    settings: Any,
    *,
    seed: int = 0,
    augment: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``head`` in place on delta of the training views; its history.

    Args:
        post: the trained map posterior (its mass weights define delta).
        dataset: labelled maps with ex-situ maps.
        train_idx, val_idx: views of the training and validation splits.
        head: a fresh :class:`OutsideMaskHead`.
        settings: a ``[training]`` section (``learning_rate``, ``max_epochs``,
            ``patience``, ``batch_size``, ...; :class:`LoopSettings`).
        seed: seeds order, augmentation and initialisation-independent noise.
        augment: D4 augmentation of the training maps.
        progress: progress bar.
    """
    x_tr, d_tr = outside_delta(post, dataset, train_idx)
    x_va, d_va = outside_delta(post, dataset, val_idx)
    with torch.no_grad():
        head.delta_loc.fill_(float(d_tr.mean()))
        head.delta_scale.fill_(float(max(d_tr.std(), 1e-3)))
    xt, dt = torch.from_numpy(x_tr), torch.from_numpy(d_tr)
    xv, dv = torch.from_numpy(x_va), torch.from_numpy(d_va)
    val = [(xv[i : i + 256], dv[i : i + 256]) for i in range(0, len(xv), 256)]

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        xb, db = batch
        return model.nll(db, xb)

    history = train_loop(
        head,
        loss,
        _batches(xt, dt, settings.batch_size, seed, augment),
        val,
        settings,
        seed=seed,
        name="outside-mask head",
        progress=progress,
    )
    return history.to_dict()
