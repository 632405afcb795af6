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
    cfg = TrainingSection(max_epochs=3)
    with pytest.raises(
        TrainingDivergedError, match=r"lower \[training\] learning_rate"
    ):
        train_member(est, train, val, cfg, prepare=lambda t: t * float("nan"))


def test_a_diverging_fit_fails_and_writes_no_model(tmp_path, monkeypatch) -> None:
    from conftest import toy_experiment

    import sbi_exsitu.training.fit as fit_module
    from sbi_exsitu.runs import RunDirectory

    # A NaN loss, as a much too large learning rate gives on the real problem.
    monkeypatch.setattr(fit_module, "clamp_to_support", lambda t, s: t * float("nan"))
    data = write_toy_dataset(tmp_path / "d.h5", 60, seed=2)
    cfg = toy_experiment(tmp_path, data)
    with pytest.raises(TrainingDivergedError, match="member 1/1.*epoch 0"):
        fit_module.fit(cfg, progress=False, evaluate=False)
    run = RunDirectory(cfg.run_dir)
    assert not run.is_finished and not run.weights("member_0").exists()


def test_map_fit_without_evaluation_writes_no_test_metrics(tmp_path) -> None:
    import dataclasses

    from test_map_posterior import _config

    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.fit import fit

    data = write_toy_dataset(tmp_path / "toy.h5", n_galaxies=30, seed=3)
    cfg = _config(tmp_path, data)
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, max_epochs=2, min_epochs=0),
        extra={"map": {**cfg.extra["map"], "flow_epochs": 2, "shared_noise": False}},
    )
    result = fit(cfg, progress=False, evaluate=False)
    assert "test" not in result.metrics and "calibration" not in result.metrics
    run = RunDirectory(result.run_dir)
    assert run.is_finished and not (run / "map_panels.png").exists()
    history = run.read_json("history.json")
    assert len(history["cvae"]["train_loss"]) == len(history["flow"]["val_loss"]) == 2
    # The finished cVAE stage left no checkpoint behind.
    assert not run.checkpoint("cvae").with_suffix(".pt").exists()


def test_kl_warmup_schedule() -> None:
    from types import SimpleNamespace

    from sbi_exsitu.training.map import KLWarmup

    cvae = SimpleNamespace(condition_scale=1.0)
    warm = KLWarmup(cvae, 3)  # type: ignore[arg-type]
    seen = []
    for epoch in range(5):
        warm.train(epoch)
        seen.append((warm.kl_scale, cvae.condition_scale))
        warm.validate()
        assert (warm.kl_scale, cvae.condition_scale) == (1.0, 1.0)
    assert [s[0] for s in seen] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [s[1] for s in seen] == [0.0, 0.0, 0.0, 1.0, 1.0]
