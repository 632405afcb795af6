"""A training run's start and end: its prepared directory and its result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.posteriors.base import Posterior
from sbi_exsitu.runs import RunDirectory

__all__ = ["FitResult", "prepare_run"]


@dataclass
class FitResult:
    """What :func:`sbi_exsitu.training.fit.fit` produced."""

    run_dir: Path
    posterior: Posterior
    metrics: dict[str, Any]


def prepare_run(
    cfg: ExperimentConfig, overwrite: bool
) -> tuple[RunDirectory, MapDataset, dict[str, np.ndarray]]:
    """(run directory, dataset, splits); writes config, render config and splits.

    Shared by the scalar and the map posterior.

    Raises:
        RunExistsError: the directory holds a run of another configuration.
        DatasetError: too few galaxies for a split by galaxy.
    """
    dataset = MapDataset(cfg.train_path)
    run = RunDirectory(cfg.run_dir)
    run.prepare(cfg.to_dict(), overwrite)
    run.write_render_config(dataset.render_config.to_json())
    splits = dataset.splits(seed=cfg.data.split_seed)
    if min(len(v) for v in splits.values()) == 0:
        raise DatasetError(
            f"{dataset.path}: {len(np.unique(dataset.labels['galaxy_id']))} galaxies "
            "are too few for a train/validation/test split by galaxy"
        )
    run.write_splits(splits, dataset.path, cfg.data.split_seed)
    return run, dataset, splits
