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
    """(run directory, dataset, splits); writes config, data identity and splits.

    Shared by the scalar and the map posterior.

    Raises:
        RunExistsError: the directory holds a run of another configuration.
        RunDataChangedError: the run was trained on other data.
        DatasetError: too few galaxies for a split by galaxy.
    """
    dataset = MapDataset(cfg.train_path)
    splits = dataset.splits(seed=cfg.data.split_seed)
    if min(len(v) for v in splits.values()) == 0:
        raise DatasetError(
            f"{dataset.path}: {len(np.unique(dataset.labels['galaxy_id']))} galaxies "
            "are too few for a train/validation/test split by galaxy"
        )
    run = RunDirectory(cfg.run_dir)
    run.prepare(
        cfg.to_dict(),
        overwrite,
        dataset=dataset,
        splits=splits,
        split_seed=cfg.data.split_seed,
    )
    # A resumed run keeps the splits it was trained with (never recomputed).
    stored = run.read_splits()
    splits = {k: np.asarray(stored[k], np.int64) for k in splits}
    return run, dataset, splits
