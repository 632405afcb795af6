"""Train one sbi posterior estimator on an HDF5 dataset, resumably.

sbi's ``NPE.train`` keeps all simulations in memory as a ``TensorDataset``; the
paper-size dataset (24,000 maps of 5x128x128, 7.9 GB) wants streaming, so this
module runs the loop itself on the estimator's public ``loss`` method, as
shared/SBI_NOTES.md describes: Adam, gradient clipping, early stopping on the
galaxy-grouped validation split with the best weights restored.

After every epoch a checkpoint (weights, optimiser, best weights, history) is
written atomically; :func:`train_member` picks it up and continues when the job
is restarted. Dropout randomness after a resume differs from an uninterrupted
run; the data order does not (it is seeded by ``seed + epoch``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sbi_exsitu.atomic import atomic_save, atomic_write_json
from sbi_exsitu.config.experiment import TrainingSection
from sbi_exsitu.training.torchdata import MapBatches

__all__ = ["TrainingHistory", "train_member"]


@dataclass
class TrainingHistory:
    """Per-epoch mean losses and the early-stopping bookkeeping."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = math.inf
    epochs_since_best: int = 0
    seconds: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        return cls(**data)


def _mean_loss(
    estimator: torch.nn.Module,
    loader: MapBatches,
    device: torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor],
) -> float:
    estimator.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, theta in loader:
            loss = estimator.loss(prepare(theta).to(device), condition=x.to(device))
            total += float(loss.sum())
            count += len(loss)
    return total / max(count, 1)


def train_member(
    estimator: torch.nn.Module,
    train: MapBatches,
    validation: MapBatches,
    config: TrainingSection,
    *,
    checkpoint: Path | None = None,
    device: torch.device = torch.device("cpu"),
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, TrainingHistory], None] | None = None,
) -> TrainingHistory:
    """Fit ``estimator`` by minimising ``estimator.loss`` (the negative log posterior).

    Args:
        estimator: an sbi density estimator (trained in place; the best weights by
            validation loss are loaded at the end).
        train, validation: batches of ``(maps, theta)``.
        config: optimisation and early-stopping settings.
        checkpoint: file prefix for resumable checkpoints (``.pt`` + ``.json``).
        device: where to train.
        prepare: applied to every theta batch (e.g. clamping into the support).
        augment: applied to every training map batch (not to validation).
        seed: seeds torch before the first epoch (initial dropout masks).
        on_epoch: called after each epoch (e.g. to update a progress bar).

    Returns:
        The :class:`TrainingHistory`.
    """
    estimator.to(device)
    optimiser = torch.optim.Adam(
        estimator.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    history = TrainingHistory()
    best_state = copy.deepcopy(estimator.state_dict())
    start_epoch = 0
    ckpt_pt = ckpt_json = None
    if checkpoint is not None:
        ckpt_pt = checkpoint.with_suffix(".pt")
        ckpt_json = checkpoint.with_suffix(".json")
        if ckpt_pt.exists() and ckpt_json.exists():
            state = torch.load(ckpt_pt, map_location=device, weights_only=True)
            estimator.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            best_state = state["best"]
            history = TrainingHistory.from_dict(json.loads(ckpt_json.read_text()))
            start_epoch = len(history.train_loss)
    torch.manual_seed(seed + start_epoch)
    train.epoch = start_epoch
    t0 = time.perf_counter() - history.seconds
    for epoch in range(start_epoch, config.max_epochs):
        if history.epochs_since_best >= config.patience and epoch >= config.min_epochs:
            history.stopped_early = True
            break
        estimator.train()
        total, count = 0.0, 0
        for x, theta in train:
            if augment is not None:
                x = augment(x)
            optimiser.zero_grad(set_to_none=True)
            loss = estimator.loss(prepare(theta).to(device), condition=x.to(device))
            loss.mean().backward()
            if config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(
                    estimator.parameters(), config.clip_grad_norm
                )
            optimiser.step()
            total += float(loss.detach().sum())
            count += len(loss)
        history.train_loss.append(total / max(count, 1))
        val = _mean_loss(estimator, validation, device, prepare)
        history.val_loss.append(val)
        if val < history.best_val:
            history.best_val, history.best_epoch = val, epoch
            history.epochs_since_best = 0
            best_state = copy.deepcopy(estimator.state_dict())
        else:
            history.epochs_since_best += 1
        history.seconds = time.perf_counter() - t0
        if ckpt_pt is not None and ckpt_json is not None:
            payload = {
                "model": estimator.state_dict(),
                "optimiser": optimiser.state_dict(),
                "best": best_state,
            }
            atomic_save(ckpt_pt, lambda p, s=payload: torch.save(s, p))
            atomic_write_json(ckpt_json, history.to_dict())
        if on_epoch is not None:
            on_epoch(epoch, history)
    estimator.load_state_dict(best_state)
    estimator.eval()
    return history
