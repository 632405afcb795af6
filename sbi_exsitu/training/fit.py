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

from sbi_exsitu.atomic import atomic_write_json, atomic_write_text
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.device import configure_threads, resolve_device
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.figures import save_figure
from sbi_exsitu.posteriors.estimator import (
    EstimatorSpec,
    build_estimator,
    clamp_to_support,
)
from sbi_exsitu.posteriors.scalar import ExSituPosterior
from sbi_exsitu.runs import RunDirectory, RunExistsError
from sbi_exsitu.training.loop import train_member
from sbi_exsitu.training.plots import plot_predictions, plot_training_curves
from sbi_exsitu.training.result import FitResult
from sbi_exsitu.training.torchdata import MapBatches, target_array

__all__ = ["FitResult", "fit", "evaluate_posterior", "RunExistsError"]


def spec_from_config(
    cfg: ExperimentConfig, x_shape: tuple[int, int, int]
) -> EstimatorSpec:
    return EstimatorSpec.from_section(cfg.posterior, x_shape)


def _augmentation(kind: str, seed: int) -> Any:
    if kind == "none":
        return None
    from sbi_exsitu.embeddings import random_d4

    generator = torch.Generator().manual_seed(seed)
    return lambda x: random_d4(x, generator)


def fit(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    num_eval_samples: int = 1000,
) -> FitResult:
    """Train an ensemble posterior on ``cfg.data.train``; evaluate on the test split.

    Args:
        cfg: the experiment.
        overwrite: discard an existing run of another configuration.
        progress: per-epoch progress bars.
        evaluate: compute test metrics and plots.
        num_eval_samples: posterior draws per test observation.

    Returns:
        :class:`FitResult` with the run directory, posterior and metrics.
    """
    if cfg.posterior.kind != "scalar":
        from sbi_exsitu.training.map import fit_map_posterior

        return fit_map_posterior(cfg, overwrite=overwrite, progress=progress)
    configure_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    dataset = MapDataset(cfg.train_path)
    run_dir = RunDirectory(cfg.run_dir).prepare(cfg.to_dict(), overwrite)
    atomic_write_text(run_dir / "render_config.json", dataset.render_config.to_json())
    splits = dataset.splits(seed=cfg.data.split_seed)
    if min(len(v) for v in splits.values()) == 0:
        raise DatasetError(
            f"{dataset.path}: {len(np.unique(dataset.labels['galaxy_id']))} galaxies "
            "are too few for a train/validation/test split by galaxy"
        )
    atomic_write_json(
        run_dir / "splits.json",
        {k: v.tolist() for k, v in splits.items()}
        | {"dataset": str(dataset.path), "seed": cfg.data.split_seed},
    )
    targets = list(cfg.posterior.targets)
    theta_train = target_array(dataset, targets, splits["train"])
    theta_val = target_array(dataset, targets, splits["validation"])
    spec = spec_from_config(cfg, dataset.shape)
    bs = cfg.training.batch_size
    train = MapBatches(
        dataset,
        splits["train"],
        theta_train,
        batch_size=bs,
        shuffle=True,
        seed=cfg.run.seed,
        memory_limit_gb=cfg.data.memory_limit_gb,
    )
    val = MapBatches(
        dataset,
        splits["validation"],
        theta_val,
        batch_size=bs,
        memory_limit_gb=cfg.data.memory_limit_gb,
    )
    n_init = min(512, len(splits["train"]))
    x_init = torch.from_numpy(dataset.maps(splits["train"][:n_init]))
    th_init = torch.from_numpy(theta_train[:n_init])

    estimators, histories = [], []
    t0 = time.perf_counter()
    for k in range(cfg.posterior.ensemble_size):
        weights = run_dir / "weights" / f"member_{k}.pt"
        hist_file = run_dir / "checkpoints" / f"member_{k}.history.json"
        torch.manual_seed(cfg.run.seed * 1000 + k)
        est = build_estimator(spec, th_init, x_init)
        if weights.exists() and hist_file.exists():
            est.load_state_dict(torch.load(weights, weights_only=True))
            estimators.append(est.eval())
            histories.append(json.loads(hist_file.read_text()))
            continue
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.training.max_epochs,
                desc=f"member {k + 1}/{cfg.posterior.ensemble_size}",
                unit="epoch",
            )

        def on_epoch(epoch: int, h: Any, bar: Any = bar) -> None:
            if bar is not None:
                bar.n = epoch + 1
                bar.set_postfix(
                    train=f"{h.train_loss[-1]:.3f}",
                    val=f"{h.val_loss[-1]:.3f}",
                    best=h.best_epoch,
                )
                bar.refresh()

        history = train_member(
            est,
            train,
            val,
            cfg.training,
            device=device,
            checkpoint=run_dir / "checkpoints" / f"member_{k}",
            prepare=lambda t: clamp_to_support(t, spec),
            augment=_augmentation(cfg.training.augment, cfg.run.seed * 1000 + k),
            seed=cfg.run.seed * 1000 + k,
            on_epoch=on_epoch,
        )
        if bar is not None:
            bar.close()
        state = {key: v.detach().cpu() for key, v in est.state_dict().items()}
        from sbi_exsitu.atomic import atomic_save

        atomic_save(weights, lambda p, s=state: torch.save(s, p))
        atomic_write_json(hist_file, history.to_dict())
        for suffix in (".pt", ".json"):
            (run_dir / "checkpoints" / f"member_{k}{suffix}").unlink(missing_ok=True)
        estimators.append(est.eval())
        histories.append(history.to_dict())
    # Training time of the members as recorded when they trained, so a resumed
    # run reports the real cost, not the seconds spent loading finished members.
    train_seconds = float(sum(h.get("seconds", 0.0) for h in histories))
    wall_seconds = time.perf_counter() - t0
    atomic_write_json(run_dir / "history.json", histories)
    save_figure(plot_training_curves(histories), run_dir / "training_curves.png")

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
    posterior.save(run_dir)
    metrics: dict[str, Any] = {
        "targets": targets,
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
    if evaluate:
        metrics["test"] = evaluate_posterior(
            posterior,
            dataset,
            splits["test"],
            run_dir,
            num_samples=num_eval_samples,
            seed=cfg.run.seed,
            progress=progress,
        )
    atomic_write_json(run_dir / "metrics.json", metrics)
    return FitResult(run_dir=run_dir, posterior=posterior, metrics=metrics)


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
    summary = posterior.summarize(maps, samples=samples)
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
