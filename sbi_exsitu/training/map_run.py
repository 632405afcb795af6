r"""What every map model's fit shares: the arrays, the batches, the last steps.

Used by the cVAE trainer (:mod:`sbi_exsitu.training.map`) and the flow-matching
trainer (:mod:`sbi_exsitu.training.map_fm`), so that both read the splits the
same way, augment the same way, and finish a run directory the same way:
:func:`finish_map_run` trains the outside-mask head
(:mod:`sbi_exsitu.posteriors.map.outside`, ``[map] outside_head``), evaluates
the test split, writes ``history.json`` and ``metrics.json`` and saves the
posterior (``model.json`` last).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.data.exsitu_fraction import fit_mass_scale
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.result import FitResult

__all__ = [
    "Batch",
    "MapArrays",
    "embedding_config",
    "ensure_dataset",
    "finish_map_run",
    "fit_run_mass_scale",
    "read_arrays",
    "train_batches",
    "train_outside_head",
    "validation_batches",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]


@dataclass
class MapArrays:
    """One split held in memory as tensors."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def read(cls, dataset: MapDataset, idx: np.ndarray) -> MapArrays:
        return cls(
            torch.from_numpy(dataset.maps(idx)),
            torch.from_numpy(dataset.exsitu(idx)),
            torch.from_numpy(dataset.mask(idx)),
        )

    def __len__(self) -> int:
        return len(self.x)

    def batches(
        self,
        batch_size: int,
        order: np.ndarray | None = None,
        augment: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            i = torch.from_numpy(order[start : start + batch_size])
            x, y, m = self.x[i], self.y[i], self.mask[i]
            if augment is not None:
                from sbi_exsitu.embeddings import random_d4

                # One group element per galaxy for maps, truth and mask alike.
                stack = torch.cat([x, y[:, None], m[:, None].float()], dim=1)
                stack = random_d4(stack, augment)
                x, y, m = stack[:, :-2], stack[:, -2], stack[:, -1] > 0.5
            yield x, y, m


def train_batches(
    data: MapArrays, batch_size: int, seed: int, augment: bool
) -> Callable[[int], Iterator[Batch]]:
    """``epoch -> batches``: order and augmentation seeded by ``(seed, epoch)``."""

    def batches(epoch: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        order = np.random.default_rng(derive_seed(seed, "order", epoch))
        perm = order.permutation(len(data))
        for x, y, m in data.batches(batch_size, perm, gen if augment else None):
            yield x, y, m, gen

    return batches


def validation_batches(data: MapArrays, seed: int) -> Callable[[], Iterator[Batch]]:
    """The validation batches, with the same noise every epoch (comparable)."""

    def batches() -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "validation"))
        for x, y, m in data.batches(256):
            yield x, y, m, gen

    return batches


def ensure_dataset(cfg: ExperimentConfig) -> None:
    """Simulate a missing training set (convenience for the quickstart configs)."""
    if cfg.train_path.exists() or not cfg.simulate:
        return
    from sbi_exsitu.data.simulate import simulate

    simulate(cfg.simulation_config(), cfg.train_path, workers=1, progress=False)


def read_arrays(
    dataset: MapDataset, train_idx: np.ndarray, val_idx: np.ndarray
) -> tuple[MapArrays, MapArrays]:
    """The training and validation splits in memory, checked for NaN truth."""
    train, val = MapArrays.read(dataset, train_idx), MapArrays.read(dataset, val_idx)
    if not (torch.isfinite(train.y).all() and torch.isfinite(val.y).all()):
        raise DatasetError(
            f"{dataset.path}: ex-situ maps contain NaN (data without "
            "ex-situ flags cannot train the map posterior)"
        )
    return train, val


def fit_run_mass_scale(
    dataset: MapDataset, train: MapArrays, train_idx: np.ndarray
) -> float | None:
    """The f_ex mass scale of :mod:`sbi_exsitu.data.exsitu_fraction` fitted on
    the training maps, or None for a dataset without f_ex labels."""
    if not dataset.has_labels:
        return None
    return fit_mass_scale(
        train.y.numpy(),
        train.x.numpy(),
        train.mask.numpy(),
        dataset.labels["f_ex"][train_idx],
        dataset.render_config,
    )


def embedding_config(
    cfg: ExperimentConfig, shape: tuple[int, int, int]
) -> dict[str, Any]:
    """The ``embeddings.build_embedding`` arguments of ``[posterior]``."""
    p = cfg.posterior
    return {
        "name": p.embedding,
        "in_channels": shape[0],
        "image_size": shape[1],
        "out_features": p.embedding_features,
        "invariant": p.invariant,
        **p.embedding_kwargs,
    }


def train_outside_head(
    posterior: Any,
    dataset: MapDataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: ExperimentConfig,
    settings: MapSettings,
    *,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Train the outside-mask head into ``posterior.outside_head``; its history.

    None (and no head) when ``[map] outside_head = false`` or the dataset has
    no f_ex labels to learn the outside-mask term from.
    """
    from sbi_exsitu.posteriors.map.outside import build_outside_head
    from sbi_exsitu.training.map_outside import fit_outside_head

    if not settings.outside_head:
        return None
    if not dataset.has_labels:
        warnings.warn(
            f"{dataset.path}: no f_ex labels, so no outside-mask head; the map "
            "posterior reports the in-mask f_ex only",
            stacklevel=2,
        )
        return None
    seed = derive_seed(cfg.run.seed, "outside")
    torch.manual_seed(seed)
    head = build_outside_head(embedding_config(cfg, dataset.shape))
    t0 = time.perf_counter()
    history = fit_outside_head(
        posterior,
        dataset,
        train_idx,
        val_idx,
        head,
        dataclasses.replace(
            cfg.training,
            max_epochs=settings.outside_epochs,
            patience=min(cfg.training.patience, settings.outside_epochs),
        ),
        seed=seed,
        augment=cfg.training.augment == "d4",
        progress=progress,
    )
    posterior.outside_head = head.eval()
    return history | {"train_seconds": time.perf_counter() - t0}


def _evaluate(
    posterior: Any,
    dataset: MapDataset,
    test: np.ndarray,
    out_dir: Path,
    *,
    num_samples: int,
    seed: int,
    n_panels: int,
) -> dict[str, Any]:
    """Residuals, figures and the implied-f_ex calibration on the test maps."""
    from sbi_exsitu.evaluation.map_coverage import map_calibration
    from sbi_exsitu.evaluation.map_evaluation import evaluate_map_posterior

    ev = evaluate_map_posterior(
        posterior,
        dataset,
        test,
        out_dir,
        num_samples=num_samples,
        seed=seed,
        n_panels=n_panels,
    )
    metrics = {"test": ev["metrics"] | {"indices": test.tolist()}}
    metrics["calibration"] = map_calibration(
        posterior,
        dataset,
        test,
        num_samples=num_samples,
        seed=seed,
        out_dir=out_dir,
        samples=ev["samples"]["flow"],
    )
    return metrics


def finish_map_run(
    posterior: Any,
    dataset: MapDataset,
    splits: dict[str, np.ndarray],
    run: RunDirectory,
    cfg: ExperimentConfig,
    settings: MapSettings,
    metrics: dict[str, Any],
    history: dict[str, Any],
    *,
    train_idx: np.ndarray,
    evaluate: bool,
    num_eval_samples: int | None,
    progress: bool = False,
) -> FitResult:
    """The last steps of every map model's fit: head, evaluation, metrics, save.

    The outside-mask head is trained here, after the map posterior and its
    post-hoc fits (its target depends on the posterior's mass weights only),
    so a finished run looks the same whichever model made it; ``model.json``
    is written last.
    """
    head_history = train_outside_head(
        posterior,
        dataset,
        train_idx,
        splits["validation"],
        cfg,
        settings,
        progress=progress,
    )
    if head_history is not None:
        history = history | {"outside": head_history}
        metrics["outside_head"] = {
            "epochs": len(head_history["train_loss"]),
            "train_seconds": head_history["train_seconds"],
        }
    run.write_history(history)
    if evaluate:
        test = subsample(splits["test"], settings.eval_max_obs, cfg.run.seed)
        metrics |= _evaluate(
            posterior,
            dataset,
            test,
            run.path,
            num_samples=num_eval_samples or settings.eval_samples,
            seed=cfg.run.seed,
            n_panels=settings.n_panels,
        )
    run.write_metrics(metrics)
    posterior.save(run.path)  # model.json last: its presence marks a finished run
    return FitResult(run_dir=run.path, posterior=posterior, metrics=metrics)
