"""``sbi-exsitu fit``: train the scalar posterior and write a run directory.

A run directory holds everything needed to use and audit the posterior::

    config.json            the resolved experiment (all defaults filled in)
    render_config.json     how the training maps were rendered
    splits.json            train/validation/test sample indices (by galaxy)
    model.json             architecture (written last: its presence = finished)
    weights/member_k.pt    state_dict of each ensemble member
    history.json           losses per epoch; training_curves.png
    metrics.json           test-set bias, scatter, RMSE, NLPD (overall, per bin)
    predictions_test.csv   per-observation summaries on the test split
    predictions.png        predicted vs true f_ex with residuals (001 fig. 5)
    misspecification/      the misspecification detector, fitted here when
                           [misspecification] asks for fresh calibration galaxies

Training resumes: finished members are loaded from ``weights/``, an interrupted
member continues from its last epoch checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.device import configure_threads, resolve_device
from sbi_exsitu.errors import ConfigError
from sbi_exsitu.figures import save_figure
from sbi_exsitu.posteriors.estimator import (
    EstimatorSpec,
    build_estimator,
    clamp_to_support,
)
from sbi_exsitu.posteriors.scalar import ExSituPosterior
from sbi_exsitu.runs import RunDirectory, RunExistsError
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.align import EmbeddingAlignment
from sbi_exsitu.training.loop import discard_checkpoint, train_member
from sbi_exsitu.training.plots import plot_predictions, plot_training_curves
from sbi_exsitu.training.pseudo_labels import PseudoLabels, pseudo_labels
from sbi_exsitu.training.result import FitResult, prepare_run
from sbi_exsitu.training.torchdata import MapBatches, target_array

__all__ = ["FitResult", "fit", "evaluate_posterior", "RunExistsError"]


def spec_from_config(
    cfg: ExperimentConfig, x_shape: tuple[int, int, int]
) -> EstimatorSpec:
    return EstimatorSpec.from_section(cfg.posterior, x_shape)


def _augmentation(kind: str) -> Any:
    if kind == "none":
        return None
    from sbi_exsitu.embeddings import random_d4

    return random_d4


def fit(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    num_eval_samples: int | None = None,
) -> FitResult:
    """Train an ensemble posterior on ``cfg.data.train``; evaluate on the test split.

    Args:
        cfg: the experiment.
        overwrite: discard an existing run of another configuration.
        progress: per-epoch progress bars.
        evaluate: compute test metrics and plots (map runs too).
        num_eval_samples: posterior draws per test observation (default 1000;
            for map runs ``[map] eval_samples``).

    Returns:
        :class:`FitResult` with the run directory, posterior and metrics.

    Raises:
        TrainingDivergedError: a loss became NaN or infinite.
    """
    if cfg.posterior.kind != "scalar":
        if cfg.training.pseudo_label_data:
            raise ConfigError(
                f"{cfg.source} [training]: pseudo-labels train scalar posteriors; "
                "remove 'pseudo_label_data' and 'pseudo_label_teacher' for a map run"
            )
        from sbi_exsitu.config.map import MapSettings
        from sbi_exsitu.training.map import fit_map_posterior
        from sbi_exsitu.training.map_fm import fit_flow_matching_map

        flow_matching = MapSettings.from_config(cfg).model == "flow_matching"
        fit_map = fit_flow_matching_map if flow_matching else fit_map_posterior
        return fit_map(
            cfg,
            overwrite=overwrite,
            progress=progress,
            evaluate=evaluate,
            num_eval_samples=num_eval_samples,
        )
    configure_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    run, dataset, splits = prepare_run(cfg, overwrite)
    spec = spec_from_config(cfg, dataset.shape)
    t0 = time.perf_counter()
    pseudo = pseudo_labels(cfg, dataset, run, progress)
    estimators, histories = _train_members(
        cfg, run, dataset, splits, spec, device, progress, pseudo
    )
    # Training time of the members as recorded when they trained, so a resumed
    # run reports the real cost, not the seconds spent loading finished members.
    train_seconds = float(sum(h.get("seconds", 0.0) for h in histories))
    wall_seconds = time.perf_counter() - t0
    run.write_history(histories)
    save_figure(plot_training_curves(histories), run / "training_curves.png")

    posterior = ExSituPosterior(
        estimators,
        spec,
        dataset.render_config,
        device=device,
        metadata={
            "train_dataset": str(dataset.path),
            "train_seconds": train_seconds,
            "n_train": len(splits["train"]),
        },
    )
    posterior.save(run.path)
    metrics: dict[str, Any] = {
        "targets": list(cfg.posterior.targets),
        "n_train": len(splits["train"]),
        "n_validation": len(splits["validation"]),
        "n_test": len(splits["test"]),
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "members": [
            {
                "epochs": len(h["train_loss"]),
                "best_epoch": h["best_epoch"],
                "best_val_loss": h["best_val"],
            }
            for h in histories
        ],
    }
    if pseudo is not None:
        metrics["pseudo_labels"] = pseudo.summary
    if evaluate:
        metrics["test"] = evaluate_posterior(
            posterior,
            dataset,
            splits["test"],
            run.path,
            num_samples=num_eval_samples or 1000,
            seed=cfg.run.seed,
            progress=progress,
        )
    if cfg.misspecification.active:
        # Calibrating the flag on fresh galaxies costs minutes: at fit time,
        # not at the first `predict` (the default fits it there, in seconds).
        from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

        t1 = time.perf_counter()
        MisspecificationDetector.for_run(posterior, run_dir=run.path, progress=progress)
        metrics["misspecification_seconds"] = time.perf_counter() - t1
    run.write_metrics(metrics)
    return FitResult(run_dir=run.path, posterior=posterior, metrics=metrics)


def _train_members(
    cfg: ExperimentConfig,
    run: RunDirectory,
    dataset: MapDataset,
    splits: dict[str, np.ndarray],
    spec: EstimatorSpec,
    device: torch.device,
    progress: bool,
    pseudo: PseudoLabels | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Train (or load finished) ensemble members: (estimators, histories).

    ``pseudo``: pseudo-labelled target maps, shuffled into the training and
    validation batches (the test split stays the dataset's own).
    """
    targets = list(cfg.posterior.targets)
    theta_train = target_array(dataset, targets, splits["train"])
    theta_val = target_array(dataset, targets, splits["validation"])
    bs, limit = cfg.training.batch_size, cfg.data.memory_limit_gb
    train = MapBatches(
        dataset,
        splits["train"],
        theta_train,
        batch_size=bs,
        shuffle=True,
        memory_limit_gb=limit,
        extra=None if pseudo is None else pseudo.train,
    )
    val = MapBatches(
        dataset,
        splits["validation"],
        theta_val,
        batch_size=bs,
        memory_limit_gb=limit,
        extra=None if pseudo is None else pseudo.validation,
    )
    n_init = min(512, len(splits["train"]))
    x_init = torch.from_numpy(dataset.maps(splits["train"][:n_init]))
    th_init = torch.from_numpy(theta_train[:n_init])
    estimators, histories = [], []
    n = cfg.posterior.ensemble_size
    target = _alignment_maps(cfg, dataset)
    for k in range(n):
        name = f"member_{k}"
        member_seed = derive_seed(cfg.run.seed, "member", k)
        align = None
        if target is not None:
            align = EmbeddingAlignment(
                target,
                cfg.training.align_weight,
                theta_train,
                prior=cfg.training.align_prior,
                method=cfg.training.align_method,
                ramp_epochs=cfg.training.align_ramp_epochs,
                seed=derive_seed(member_seed, "align"),
            )
        hist_file = run.checkpoint(name).with_suffix(".history.json")
        torch.manual_seed(member_seed)
        est = build_estimator(spec, th_init, x_init)
        if run.weights(name).exists() and hist_file.exists():
            run.load_into(est, name)
            estimators.append(est.eval())
            histories.append(json.loads(hist_file.read_text()))
            continue
        train.seed = member_seed
        history = train_member(
            est,
            train,
            val,
            cfg.training,
            device=device,
            checkpoint=run.checkpoint(name),
            prepare=lambda t: clamp_to_support(t, spec),
            augment=_augmentation(cfg.training.augment),
            seed=member_seed,
            name=f"member {k + 1}/{n}",
            progress=progress,
            align=align,
        )
        history.require_trained(f"{run.path}: ensemble member {k}")
        run.save_weights(name, est.state_dict())
        atomic_write_json(hist_file, history.to_dict())
        discard_checkpoint(run.checkpoint(name))
        estimators.append(est.eval())
        histories.append(history.to_dict())
    return estimators, histories


def _alignment_maps(cfg: ExperimentConfig, dataset: MapDataset) -> np.ndarray | None:
    """The unlabelled target maps of ``[training] align_data`` (None: no alignment).

    At most 4096 maps (a seeded subsample) are held in memory: the MMD only needs
    a batch per step, and 4096 32-px five-channel maps take 80 MB.
    """
    if not cfg.training.align_weight:
        return None
    with MapDataset(cfg.training.align_data) as tgt:
        # Rendered unlike the training maps, the two domains differ trivially.
        tgt.check_config(dataset.render_config)
        idx = np.arange(len(tgt))
        if len(idx) > 4096:
            rng = np.random.default_rng(derive_seed(cfg.run.seed, "align-data"))
            idx = np.sort(rng.choice(idx, 4096, replace=False))
        return tgt.maps(idx)


def evaluate_posterior(
    posterior: ExSituPosterior,
    dataset: MapDataset,
    indices: np.ndarray,
    out_dir: Path,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
    prefix: str = "",
) -> dict[str, Any]:
    """Test-set metrics, a prediction table and the prediction-vs-truth figure."""
    from sbi_exsitu.evaluation.accuracy import evaluate
    from sbi_exsitu.tables import write_table

    posterior.check_render_config(dataset.render_config, where=str(dataset.path))
    maps = dataset.maps(indices)
    truth = target_array(dataset, posterior.param_names, indices)
    samples = posterior.sample(maps, num_samples, seed=seed, progress=progress)
    summary = posterior.summarize(maps, samples=samples, misspecification=False)
    log_prob = posterior.log_prob(truth, maps)
    log_mstar = dataset.labels["log_mstar"][indices]
    result: dict[str, Any] = {"nlpd_joint": float(-np.mean(log_prob))}
    columns = {
        "index": indices,
        "galaxy_id": dataset.labels["galaxy_id"][indices],
        "view_id": dataset.labels["view_id"][indices],
    }
    for d, name in enumerate(posterior.param_names):
        lp = log_prob if len(posterior.param_names) == 1 else None
        result[name] = evaluate(
            summary.median[:, d], truth[:, d], log_mstar, log_prob=lp
        )
        columns[f"{name}_true"] = truth[:, d]
        fig = plot_predictions(
            truth[:, d],
            summary.median[:, d],
            summary.hdi68[:, d, 0],
            summary.hdi68[:, d, 1],
            label=name,
        )
        save_figure(fig, out_dir / f"{prefix}predictions{'' if d == 0 else '_' + name}")
    columns |= summary.to_columns()
    columns["log_prob_truth"] = log_prob
    write_table(columns, out_dir / f"{prefix}predictions_test.csv")
    return result
