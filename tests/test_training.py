"""Training loop: early stopping, best weights, checkpoint resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import RES, write_toy_dataset

from sbi_exsitu.config.experiment import TrainingSection
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.posteriors.estimator import (
    EstimatorSpec,
    build_estimator,
    clamp_to_support,
)
from sbi_exsitu.training.loop import TrainingDivergedError, train_member
from sbi_exsitu.training.torchdata import MapBatches, target_array


def _setup(tmp_path):
    ds = MapDataset(write_toy_dataset(tmp_path / "d.h5", 120, seed=3))
    splits = ds.splits()
    spec = EstimatorSpec(
        targets=("f_ex",),
        x_shape=(1, RES, RES),
        embedding="paper_cnn",
        embedding_features=4,
        hidden_features=8,
        num_transforms=1,
        embedding_kwargs={"hidden_features": 16},
    )
    th = {k: target_array(ds, ["f_ex"], v) for k, v in splits.items()}
    train = MapBatches(ds, splits["train"], th["train"], batch_size=32, shuffle=True)
    val = MapBatches(ds, splits["validation"], th["validation"], batch_size=32)
    torch.manual_seed(0)
    est = build_estimator(
        spec, torch.from_numpy(th["train"]), torch.from_numpy(ds.maps(splits["train"]))
    )
    return ds, spec, est, train, val


def test_best_weights_are_restored_and_patience_stops(tmp_path) -> None:
    _, spec, est, train, val = _setup(tmp_path)
    cfg = TrainingSection(max_epochs=30, patience=2, min_epochs=1, learning_rate=5e-3)
    h = train_member(est, train, val, cfg, prepare=lambda t: clamp_to_support(t, spec))
    assert len(h.train_loss) == len(h.val_loss) <= 30
    assert h.best_val == min(h.val_loss)
    if h.stopped_early:
        assert len(h.val_loss) - 1 - h.best_epoch >= cfg.patience
    # The estimator now holds the best weights: re-evaluating gives best_val.
    est.eval()
    total = n = 0
    with torch.no_grad():
        for x, th in val:
            loss = est.loss(clamp_to_support(th, spec), condition=x)
            total += float(loss.sum())
            n += len(loss)
    np.testing.assert_allclose(total / n, h.best_val, rtol=1e-4)


def test_an_interrupted_member_resumes_from_its_checkpoint(tmp_path) -> None:
    _, spec, est, train, val = _setup(tmp_path)
    ckpt = tmp_path / "ckpt" / "member_0"
    first = train_member(
        est, train, val, TrainingSection(max_epochs=2, patience=50), checkpoint=ckpt
    )
    assert ckpt.with_suffix(".pt").exists()
    stored = json.loads(ckpt.with_suffix(".json").read_text())
    assert len(stored["train_loss"]) == 2
    # "Restart the job": a fresh estimator continues from epoch 2, not from 0.
    _, _, fresh, train2, val2 = _setup(tmp_path / "again")
    resumed = train_member(
        fresh, train2, val2, TrainingSection(max_epochs=4, patience=50), checkpoint=ckpt
    )
    assert len(resumed.train_loss) == 4
    assert resumed.train_loss[:2] == first.train_loss


def test_augmentation_is_applied_to_training_batches_only(tmp_path) -> None:
    _, spec, est, train, val = _setup(tmp_path)
    seen = []

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seen.append(len(x))
        return torch.flip(x, dims=(-1,))

    train_member(est, train, val, TrainingSection(max_epochs=1), augment=augment)
    assert sum(seen) == len(train.indices)


def test_a_diverging_member_raises_instead_of_saving_untrained_weights(
    tmp_path,
) -> None:
    _, spec, est, train, val = _setup(tmp_path)
    cfg = TrainingSection(max_epochs=3, learning_rate=1e4, clip_grad_norm=0.0)
    with pytest.raises(
        TrainingDivergedError, match="lower \\[training\\] learning_rate"
    ):
        train_member(est, train, val, cfg, prepare=lambda t: clamp_to_support(t, spec))
