"""Training of the flow-matching map posterior (``[map] model = "flow_matching"``).

One phase on the galaxy-grouped splits: Adam on the conditional flow-matching
loss (:mod:`sbi_exsitu.posteriors.map.flow_matching`) with early stopping on the
validation split (fixed noise and times per epoch, so epochs compare) and D4
augmentation applied jointly to observations, ex-situ maps and masks; then the
f_ex mass scale (:mod:`sbi_exsitu.data.exsitu_fraction`), the outside-mask
head and the test-split evaluation shared with the cVAE
(:mod:`sbi_exsitu.training.map_run`). The trained model is
:class:`sbi_exsitu.posteriors.map.fm_posterior.FlowMatchingMapPosterior`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.dataset import subsample
from sbi_exsitu.device import configure_threads
from sbi_exsitu.posteriors.map.flow_matching import FlowMatchingConfig, MapFlowMatching
from sbi_exsitu.posteriors.map.fm_posterior import FlowMatchingMapPosterior
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.loop import discard_checkpoint, train_loop
from sbi_exsitu.training.map_run import (
    Batch,
    MapArrays,
    ensure_dataset,
    finish_map_run,
    fit_run_mass_scale,
    read_arrays,
    train_batches,
    validation_batches,
)
from sbi_exsitu.training.result import FitResult, prepare_run

__all__ = ["fit_flow_matching_map"]


def _train(
    model: MapFlowMatching,
    train: MapArrays,
    val: MapArrays,
    cfg: ExperimentConfig,
    run: RunDirectory,
    progress: bool,
) -> dict[str, Any]:
    def loss(m: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, mask, g = batch
        return m.loss(y, x, mask, generator=g)

    tr = cfg.training
    seed = derive_seed(cfg.run.seed, "flow_matching")
    history = train_loop(
        model,
        loss,
        train_batches(train, tr.batch_size, seed, tr.augment == "d4"),
        validation_batches(val, seed),
        tr,
        checkpoint=run.checkpoint("flow_matching"),
        seed=seed,
        name="flow matching",
        progress=progress,
    )
    run.save_weights("flow_matching", model.state_dict())
    discard_checkpoint(run.checkpoint("flow_matching"))
    return history.to_dict()


def fit_flow_matching_map(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    num_eval_samples: int | None = None,
) -> FitResult:
    """Train the flow-matching map posterior of ``cfg`` and write its run directory.

    The run directory holds the files of a cVAE map run (see
    :func:`sbi_exsitu.training.map.fit_map_posterior`) with
    ``weights/flow_matching.pt`` for the weights.

    Args:
        cfg: the experiment (``[posterior] kind = "map"``, ``[map] model =
            "flow_matching"``).
        overwrite: discard an existing run of another configuration.
        progress: progress bars.
        evaluate: residuals, figures and calibration on the test split.
        num_eval_samples: draws per test map (default ``[map] eval_samples``).

    Returns:
        :class:`sbi_exsitu.training.result.FitResult`.
    """
    settings = MapSettings.from_config(cfg)
    configure_threads(cfg.run.threads)
    ensure_dataset(cfg)
    run, dataset, splits = prepare_run(cfg, overwrite)
    train_idx = subsample(splits["train"], settings.max_train, cfg.run.seed)
    train, val = read_arrays(dataset, train_idx, splits["validation"])
    c, h, _ = dataset.shape
    torch.manual_seed(cfg.run.seed)
    model = MapFlowMatching(
        FlowMatchingConfig(
            in_channels=c,
            image_size=h,
            width=settings.fm_width,
            levels=settings.fm_levels,
            steps=settings.fm_steps,
            global_context=settings.fm_global,
        )
    )
    t0 = time.perf_counter()
    hist = _train(model, train, val, cfg, run, progress)
    train_seconds = time.perf_counter() - t0
    mass_scale = fit_run_mass_scale(dataset, train, train_idx)
    posterior = FlowMatchingMapPosterior(
        model,
        dataset.render_config,
        settings,
        mass_scale=mass_scale,
        metadata={
            "train_dataset": str(dataset.path),
            "train_seconds": train_seconds,
            "n_train": len(train_idx),
        },
    )
    metrics: dict[str, Any] = {
        "kind": "map",
        "model": "flow_matching",
        "n_train": len(train_idx),
        "n_validation": len(splits["validation"]),
        "n_test": len(splits["test"]),
        "train_seconds": train_seconds,
        "epochs": len(hist["train_loss"]),
        "mass_scale": mass_scale,
        "noise_rho": 0.0,
    }
    return finish_map_run(
        posterior, dataset, splits, run, cfg, settings, metrics,
        {"flow_matching": hist}, train_idx=train_idx,
        evaluate=evaluate, num_eval_samples=num_eval_samples, progress=progress,
    )  # fmt: skip
