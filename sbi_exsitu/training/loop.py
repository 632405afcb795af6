"""The one training loop: Adam, LR schedule, early stopping, checkpoints, divergence.

Every trainer of the package (the scalar posterior's ensemble members, the map
posterior's cVAE and latent flow, the MDN-CNN baseline) runs :func:`train_loop`
with its own loss function ``loss_fn(model, batch) -> losses``. The loop owns
what they share, on the estimators' public ``loss`` (sbi 0.27's own ``train``
cannot stream from HDF5 or augment): Adam (with
``weight_decay``), gradient clipping, an optional learning-rate schedule
(``lr_schedule``: ``"constant"``, ``"plateau"`` or ``"cosine"``), early stopping
on the validation loss after ``min_epochs`` with the best weights restored, a
per-epoch checkpoint (model, optimiser *and* scheduler) that a restarted job
resumes from, an optional progress bar, and a refusal to
go on once a loss is NaN or infinite (:class:`TrainingDivergedError`).

``"plateau"`` is :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` on the
validation loss (``lr_factor``, ``lr_patience``) with a stopping rule: training
ends when the validation loss plateaus once more after ``max_lr_reductions``
reductions, i.e. when the optimum at the smallest learning rate is reached, not
when an epoch cap is hit. ``"cosine"`` anneals the rate to 0 over ``max_epochs``.
Settings objects without these fields train at a constant rate.

Randomness is a function of ``(seed, epoch)`` alone: the global torch generator
is reseeded at the start of every epoch and the batches of an epoch come from
``train(epoch)``, so a run resumed from a checkpoint ends with the same weights
as an uninterrupted one.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> net = torch.nn.Linear(1, 1)
    >>> data = [(torch.ones(8, 1), torch.full((8, 1), 2.0))]
    >>> settings = SimpleNamespace(learning_rate=0.1, max_epochs=5, patience=2,
    ...     min_epochs=0, weight_decay=0.0, clip_grad_norm=5.0)
    >>> hist = train_loop(net, lambda m, b: ((m(b[0]) - b[1]) ** 2).sum(1),
    ...                   lambda epoch: data, data, settings)
    >>> len(hist.train_loss), hist.best_epoch >= 0
    (5, True)
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.errors import SbiExsituError, TrainingDivergedError
from sbi_exsitu.runs import load_state_dict, save_state_dict
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "discard_checkpoint",
    "EpochSchedule",
    "LR_SCHEDULES",
    "LoopSettings",
    "TrainingDivergedError",
    "TrainingHistory",
    "train_loop",
    "train_member",
]

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


class LoopSettings(Protocol):
    """The fields of :class:`sbi_exsitu.config.experiment.TrainingSection` used."""

    learning_rate: float
    weight_decay: float
    max_epochs: int
    patience: int
    min_epochs: int
    clip_grad_norm: float | None
    # Optional (read with getattr; absent = constant rate): lr_schedule,
    # lr_factor, lr_patience, max_lr_reductions.


LR_SCHEDULES = ("constant", "plateau", "cosine")


class EpochSchedule(Protocol):
    """Per-epoch changes of the objective (e.g. a KL warm-up)."""

    def train(self, epoch: int) -> None:
        """Called before the training pass of ``epoch``."""

    def validate(self) -> None:
        """Called before every validation pass (the full, comparable objective)."""


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
    lr: list[float] = field(default_factory=list)
    lr_reductions: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        return cls(**data)

    def require_trained(self, name: str) -> None:
        """Refuse weights that never had a best validation epoch.

        Raises:
            TrainingDivergedError: ``best_epoch`` is -1.
        """
        if self.best_epoch < 0:
            raise TrainingDivergedError(
                f"{name}: no epoch reached a finite validation loss "
                f"(val_loss {self.val_loss[:3]}); refusing to save untrained "
                "weights; lower [training] learning_rate"
            )


def _check_finite(value: float, name: str, epoch: int, which: str) -> None:
    if not math.isfinite(value):
        raise TrainingDivergedError(
            f"{name}: the {which} loss is {value} at epoch {epoch}: training "
            "diverged; lower [training] learning_rate (or check the data for NaN)"
        )


def _summed(losses: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """(mean to minimise, sum as float, count) of per-sample or scalar losses."""
    flat = losses.reshape(-1)
    return flat.mean(), float(flat.detach().sum()), flat.numel()


def _validate(model: torch.nn.Module, loss_fn: LossFn, batches: Iterable[Any]) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            _, s, n = _summed(loss_fn(model, batch))
            total, count = total + s, count + n
    return total / max(count, 1)


class _Checkpoint:
    """``<stem>.pt`` (model, optimiser, best weights) and ``<stem>.json`` (history)."""

    def __init__(self, stem: Path | None) -> None:
        self.pt = None if stem is None else stem.with_suffix(".pt")
        self.json = None if stem is None else stem.with_suffix(".json")

    def load(
        self, model: Any, optimiser: Any, scheduler: Any
    ) -> tuple[TrainingHistory, Any] | None:
        if self.pt is None or self.json is None:
            return None
        if not (self.pt.is_file() and self.json.is_file()):
            return None
        device = next(model.parameters()).device
        # A checkpoint only caches unfinished work: a damaged one is dropped and
        # training restarts from the untouched initial state.
        initial = copy.deepcopy(
            (
                model.state_dict(),
                optimiser.state_dict(),
                None if scheduler is None else scheduler.state_dict(),
            )
        )
        try:
            state = load_state_dict(self.pt, map_location=device, what="checkpoint")
            history = TrainingHistory.from_dict(json.loads(self.json.read_text()))
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            return history, state["best"]
        # RuntimeError: torch refusing another architecture's state.
        except (SbiExsituError, OSError, ValueError, KeyError, RuntimeError) as err:
            model.load_state_dict(initial[0])
            optimiser.load_state_dict(initial[1])
            if scheduler is not None:
                scheduler.load_state_dict(initial[2])
            problem = f"{type(err).__name__}: {str(err)[:200]}"
        warnings.warn(
            f"{self.pt}: damaged checkpoint ({problem}); it is discarded and "
            "this member restarts from scratch",
            stacklevel=3,
        )
        self.remove()
        return None

    def save(
        self, model: Any, optimiser: Any, scheduler: Any, best: Any, history: Any
    ) -> None:
        if self.pt is None or self.json is None:
            return
        payload = {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "best": best,
        }
        save_state_dict(self.pt, payload)
        atomic_write_json(self.json, history.to_dict())

    def remove(self) -> None:
        for path in (self.pt, self.json):
            if path is not None:
                path.unlink(missing_ok=True)


def _scheduler(optimiser: torch.optim.Optimizer, settings: Any) -> Any:
    """The LR scheduler of ``settings.lr_schedule`` (None: constant rate)."""
    kind = getattr(settings, "lr_schedule", "constant")
    if kind not in LR_SCHEDULES:
        raise ValueError(
            f"lr_schedule is {kind!r}, expected one of {', '.join(LR_SCHEDULES)}"
        )
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser,
            mode="min",
            factor=settings.lr_factor,
            patience=settings.lr_patience,
        )
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=settings.max_epochs
        )
    return None


def _step_scheduler(
    scheduler: Any, optimiser: torch.optim.Optimizer, val: float, history: Any
) -> None:
    """Advance the schedule after an epoch; count plateau reductions."""
    if scheduler is None:
        return
    before = optimiser.param_groups[0]["lr"]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val)
    else:
        scheduler.step()
    if optimiser.param_groups[0]["lr"] < before and isinstance(
        scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
    ):
        history.lr_reductions += 1


def _should_stop(history: TrainingHistory, settings: Any, epoch: int) -> bool:
    if epoch < settings.min_epochs:
        return False
    if history.epochs_since_best >= settings.patience:
        return True
    # Plateau rule: one more plateau after the last allowed reduction.
    limit = getattr(settings, "max_lr_reductions", None)
    return (
        getattr(settings, "lr_schedule", "constant") == "plateau"
        and limit is not None
        and history.lr_reductions > limit
    )


def _epoch(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    optimiser: torch.optim.Optimizer,
    clip: float | None,
    name: str,
    epoch: int,
) -> float:
    """One training pass; the mean loss per sample."""
    model.train()
    params = [p for g in optimiser.param_groups for p in g["params"]]
    total, count = 0.0, 0
    for batch in batches:
        mean, s, n = _summed(loss_fn(model, batch))
        _check_finite(s, name, epoch, "training")
        optimiser.zero_grad(set_to_none=True)
        mean.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimiser.step()
        total, count = total + s, count + n
    return total / max(count, 1)


def train_loop(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train: Callable[[int], Iterable[Any]],
    validation: Callable[[], Iterable[Any]] | Iterable[Any],
    settings: LoopSettings,
    *,
    checkpoint: Path | None = None,
    seed: int = 0,
    name: str = "model",
    schedule: EpochSchedule | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, TrainingHistory], None] | None = None,
) -> TrainingHistory:
    """Minimise ``loss_fn`` over ``model``'s parameters with early stopping.

    Args:
        model: trained in place; on return it holds the weights of the epoch with
            the lowest validation loss and is in eval mode.
        loss_fn: ``(model, batch) -> losses``, per sample ``(B,)`` (preferred:
            epoch means are then means per sample) or one scalar per batch.
        train: ``epoch -> batches`` of that epoch (shuffling and augmentation
            seeded by the epoch, so that a resumed run repeats them).
        validation: the validation batches, or a callable returning them.
        settings: ``learning_rate``, ``weight_decay``, ``max_epochs``,
            ``patience``, ``min_epochs``, ``clip_grad_norm`` (0/None: no
            clipping); optionally ``lr_schedule``, ``lr_factor``,
            ``lr_patience``, ``max_lr_reductions`` (see the module docstring).
        checkpoint: file stem of the per-epoch checkpoint (``.pt`` + ``.json``);
            an existing one is resumed. The caller deletes it
            (:func:`discard_checkpoint`) once the final weights are saved.
        seed: seeds torch at the start of every epoch (dropout masks).
        name: what is trained, for messages and the progress bar.
        schedule: per-epoch changes of the objective (:class:`EpochSchedule`).
        progress: show a tqdm progress bar.
        on_epoch: called after every epoch with the epoch and the history.

    Returns:
        The :class:`TrainingHistory`.

    Raises:
        TrainingDivergedError: a training or validation loss is NaN or infinite.
    """
    optimiser = torch.optim.Adam(
        model.parameters(),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    scheduler = _scheduler(optimiser, settings)
    ckpt = _Checkpoint(checkpoint)
    resumed = ckpt.load(model, optimiser, scheduler)
    history, best_state = resumed or (
        TrainingHistory(),
        copy.deepcopy(model.state_dict()),
    )
    start = len(history.train_loss)
    bar = _progress_bar(progress, settings.max_epochs, start, name)
    t0 = time.perf_counter() - history.seconds
    for epoch in range(start, settings.max_epochs):
        if _should_stop(history, settings, epoch):
            history.stopped_early = True
            break
        torch.manual_seed(derive_seed(seed, "epoch", epoch))
        if schedule is not None:
            schedule.train(epoch)
        loss = _epoch(
            model,
            loss_fn,
            train(epoch),
            optimiser,
            settings.clip_grad_norm,
            name,
            epoch,
        )
        if schedule is not None:
            schedule.validate()
        val = _validate(
            model, loss_fn, validation() if callable(validation) else validation
        )
        _check_finite(val, name, epoch, "validation")
        history.train_loss.append(loss)
        history.val_loss.append(val)
        history.lr.append(optimiser.param_groups[0]["lr"])
        if val < history.best_val:
            history.best_val, history.best_epoch = val, epoch
            history.epochs_since_best = 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            history.epochs_since_best += 1
        _step_scheduler(scheduler, optimiser, val, history)
        history.seconds = time.perf_counter() - t0
        ckpt.save(model, optimiser, scheduler, best_state, history)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                train=f"{loss:.3g}", val=f"{val:.3g}", best=history.best_epoch
            )
        if on_epoch is not None:
            on_epoch(epoch, history)
    if bar is not None:
        bar.close()
    history.require_trained(name)
    model.load_state_dict(best_state)
    model.eval()
    return history


def discard_checkpoint(checkpoint: Path) -> None:
    """Delete the checkpoint files of ``checkpoint`` (a :func:`train_loop` stem)."""
    _Checkpoint(checkpoint).remove()


def _progress_bar(show: bool, total: int, initial: int, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False)


def train_member(
    estimator: torch.nn.Module,
    train: Any,
    validation: Iterable[Any],
    config: LoopSettings,
    *,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    name: str = "member",
    progress: bool = False,
    on_epoch: Callable[[int, TrainingHistory], None] | None = None,
    align: Any = None,
) -> TrainingHistory:
    """:func:`train_loop` for an sbi density estimator on ``(maps, theta)`` batches.

    The loss is ``estimator.loss`` (the negative log posterior per sample), plus,
    in training passes only, ``align.loss`` (an
    :class:`~sbi_exsitu.training.align.EmbeddingAlignment`): early stopping
    follows the source posterior's validation loss alone. What the alignment
    trains besides the estimator (DANN's domain classifier, ``align.attach``)
    is optimised and checkpointed with it; the estimator alone is returned.

    Args:
        estimator: an sbi density estimator (trained in place).
        train: a :class:`~sbi_exsitu.training.torchdata.MapBatches` (its
            ``epoch`` is set before every pass: the shuffle follows the epoch).
        validation: batches of ``(maps, theta)``.
        config: :class:`LoopSettings` (a ``TrainingSection``).
        checkpoint, seed, name, progress, on_epoch: as for :func:`train_loop`.
        device: where to train.
        prepare: applied to every theta batch (e.g. clamping into the support).
        augment: ``(maps, generator) -> maps``, applied to training batches
            only; the generator is seeded by ``(seed, epoch)``.
        align: an ``EmbeddingAlignment`` or None.
    """
    device = torch.device(device)
    estimator.to(device)
    critic = None if align is None else align.attach(estimator)
    # One module for the loop's optimiser and checkpoint; the estimator's own
    # state (what is saved as the posterior) stays as without alignment.
    trained: torch.nn.Module = (
        estimator
        if critic is None
        else torch.nn.ModuleDict({"estimator": estimator, "critic": critic})
    )

    def batches(epoch: int) -> Iterable[Any]:
        train.epoch = epoch
        if align is not None:
            align.start_epoch(estimator, epoch)
        gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        for x, theta in train:
            yield (x if augment is None else augment(x, gen)), theta

    def loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        # ``model`` is ``trained``; its train/eval mode is the estimator's.
        x, theta = batch
        theta, x = prepare(theta).to(device), x.to(device)
        loss = estimator.loss(theta, condition=x)
        if align is not None and model.training:
            loss = loss + align.loss(estimator, x, theta)
        return loss

    return train_loop(
        trained,
        loss_fn,
        batches,
        validation,
        config,
        checkpoint=checkpoint,
        seed=seed,
        name=name,
        progress=progress,
        on_epoch=on_epoch,
    )
