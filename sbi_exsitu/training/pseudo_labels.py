"""Pseudo-labels: unlabelled target maps labelled by a teacher posterior's draws.

Training that resists a simulator shift (issue #17) when some channels transfer
and others do not. On the mock streams world the tng-like -> eagle-like shift
sits in the metallicity maps, while a posterior on the mass + kinematics maps
cannot tell the two models apart (domain ROC AUC 0.53) and transfers (eagle-like
bias +0.004, coverage error 0.04) at 66 % more in-model RMSE
(``benchmarks/alignment.py --channels mass_kinematics``, docs/crosstest.md). So

1. a **teacher**, a finished scalar run on a channel subset that transfers,
2. draws ``pseudo_label_draws`` f_ex values per unlabelled target map from its
   posterior on those channels (an NPE training pair each, as a simulated one:
   the student learns the teacher's posterior there, not a point estimate),
3. and the **student** (this run, every channel) trains on its labelled maps
   plus the pseudo-labelled target maps.

This is self-training with a teacher that sees an invariant view of the data
(co-training, Blum & Mitchell 1998; for domain adaptation e.g. Chen, Weinberger &
Blitzer 2011, "Co-training for domain adaptation", NeurIPS); no library ships it
for NPE, hence by hand. The labelled data keep their own train/validation/test
split (the test metrics are the source's alone); the target maps all train:
none is a test set (their labels are the teacher's, not the truth), and by
default none is a validation map either. With
``pseudo_label_validation = true`` their validation split by galaxy joins early
stopping; on the tng -> eagle cell that stopped where the labelled maps fit
worse (in-model RMSE 1.15x against 1.13x, eagle-like coverage error 0.047
against 0.039; ``benchmarks/pseudo_label_transfer.py``, seeds 0-2).

The labels are written to ``pseudo_labels.json`` in the run directory with the
teacher and the target data's identity, and read back on resume, so an
interrupted run continues on the same labels and a changed target file is
refused.

Example:
    >>> # [training]
    >>> # pseudo_label_data = "data/eagle-like-unlabelled.h5"
    >>> # pseudo_label_teacher = "runs/tng-like-mass-kinematics"
    >>> # pseudo_label_draws = 1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.errors import ConfigError, RunDataChangedError
from sbi_exsitu.runs import RunDirectory, dataset_identity
from sbi_exsitu.seeding import derive_seed

__all__ = ["PSEUDO_LABEL_FILE", "PseudoLabels", "pseudo_labels"]

PSEUDO_LABEL_FILE = "pseudo_labels.json"


@dataclass
class PseudoLabels:
    """Pseudo-labelled target maps, split by galaxy into training and validation.

    Attributes:
        train_maps, val_maps: (n, C, H, W) float32 maps (each map once).
        train_index, val_index: which map each pseudo-labelled pair uses, into
            ``train_maps`` / ``val_maps`` (a map repeats once per draw).
        train_theta, val_theta: (len(index), D) float32 pseudo-labels.
        summary: what ``metrics.json`` records (counts, teacher, mean label).
    """

    train_maps: np.ndarray
    train_index: np.ndarray
    train_theta: np.ndarray
    val_maps: np.ndarray
    val_index: np.ndarray
    val_theta: np.ndarray
    summary: dict[str, Any]

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``MapBatches(extra=...)`` of the training pairs."""
        return self.train_maps, self.train_index, self.train_theta

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``MapBatches(extra=...)`` of the validation pairs (None: none)."""
        if not len(self.val_index):
            return None
        return self.val_maps, self.val_index, self.val_theta


def pseudo_labels(
    cfg: ExperimentConfig,
    dataset: MapDataset,
    run: RunDirectory,
    progress: bool = False,
) -> PseudoLabels | None:
    """The pseudo-labelled maps of ``[training] pseudo_label_data`` (None: off).

    Args:
        cfg: the experiment (its ``[training] pseudo_label_*`` keys).
        dataset: the labelled training dataset (the target maps must be
            rendered like it).
        run: the run directory (``pseudo_labels.json`` is stored there).
        progress: a progress bar while the teacher samples.

    Raises:
        ConfigError: the teacher is not a scalar run on the same targets, or
            was trained on maps rendered otherwise than these (but channels).
        DatasetError: the target maps are rendered unlike the training maps.
        RunDataChangedError: a resumed run's target file changed.
    """
    tr = cfg.training
    if not tr.pseudo_label_data:
        return None
    where = f"[training] pseudo_label_data = {tr.pseudo_label_data!r}"
    with MapDataset(tr.pseudo_label_data) as tgt:
        tgt.check_config(dataset.render_config)
        identity = dataset_identity(tgt)
        all_maps = tgt.maps(slice(None))  # read once: for the teacher and training
        file = run / PSEUDO_LABEL_FILE
        if file.exists():
            stored = run.read_json(PSEUDO_LABEL_FILE)
            if stored["data"]["sha256"] != identity["sha256"]:
                raise RunDataChangedError(
                    f"{file}: the run drew its pseudo-labels on other maps than "
                    f"{tgt.path} ({where} changed since); use another [run] name "
                    "or delete the run directory to start again"
                )
            theta = np.asarray(stored["labels"], np.float32)
        else:
            theta = _draw(cfg, dataset, all_maps, progress)
            atomic_write_json(
                file,
                {
                    "teacher": str(Path(tr.pseudo_label_teacher).resolve()),
                    "draws": tr.pseudo_label_draws,
                    "targets": list(cfg.posterior.targets),
                    "data": identity,
                    "labels": theta.tolist(),
                },
            )
        # No pseudo-labelled map is ever a test map; with pseudo_label_validation
        # the target's own validation split (by galaxy) joins early stopping.
        splits = tgt.splits(seed=cfg.data.split_seed)
        val = splits["validation"] if tr.pseudo_label_validation else []
        parts = {
            "train": np.setdiff1d(np.arange(len(tgt)), val),
            "val": np.sort(np.asarray(val, np.int64)),
        }
    maps = {k: all_maps[idx] for k, idx in parts.items()}
    draws = tr.pseudo_label_draws
    index = {k: np.repeat(np.arange(len(idx)), draws) for k, idx in parts.items()}
    labels = {k: theta[idx].reshape(-1, theta.shape[-1]) for k, idx in parts.items()}
    summary = {
        "data": str(identity["path"]),
        "teacher": str(tr.pseudo_label_teacher),
        "draws_per_map": draws,
        "n_train_maps": len(parts["train"]),
        "n_validation_maps": len(parts["val"]),
        "mean_label": {
            t: float(theta[..., j].mean()) for j, t in enumerate(cfg.posterior.targets)
        },
    }
    return PseudoLabels(
        maps["train"],
        index["train"],
        labels["train"],
        maps["val"],
        index["val"],
        labels["val"],
        summary,
    )


def _draw(
    cfg: ExperimentConfig, dataset: MapDataset, maps: np.ndarray, progress: bool
) -> np.ndarray:
    """(n_maps, draws, D) teacher draws on the teacher's channels of ``maps``."""
    from sbi_exsitu.posteriors import load_posterior

    tr = cfg.training
    teacher = load_posterior(tr.pseudo_label_teacher)
    where = f"[training] pseudo_label_teacher = {tr.pseudo_label_teacher!r}"
    if teacher.kind != "scalar" or list(teacher.param_names) != list(
        cfg.posterior.targets
    ):
        raise ConfigError(
            f"{where}: the teacher is a {teacher.kind} posterior of "
            f"{teacher.param_names}; pseudo-labels need a scalar run on this "
            f"run's targets {list(cfg.posterior.targets)}"
        )
    ours, theirs = dataset.render_config, teacher.render_config
    missing = [c for c in theirs.channels if c not in ours.channels]
    sliced = dataclasses.replace(ours, channels=theirs.channels)
    if missing or sliced != theirs:
        why = (
            f"channels {missing} are not in the training maps"
            if missing
            else "; ".join(sliced.diff(theirs))
        )
        raise ConfigError(
            f"{where}: the teacher was trained on maps rendered otherwise than "
            f"{dataset.path} (but for the channel subset): {why}. Train the "
            "teacher on channels sliced from the same renders"
        )
    # Channels are rendered independently, so slicing them is exact.
    keep = [list(ours.channels).index(c) for c in theirs.channels]
    return teacher.sample(
        maps[:, keep],
        tr.pseudo_label_draws,
        seed=derive_seed(cfg.run.seed, "pseudo-labels"),
        progress=progress,
    ).astype(np.float32)
