"""Pseudo-labelled target maps in training (issue #17)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from sbi_exsitu.config.experiment import ExperimentConfig, TrainingSection
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.errors import ConfigError, RunDataChangedError
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.training.fit import fit
from sbi_exsitu.training.pseudo_labels import PSEUDO_LABEL_FILE, pseudo_labels
from sbi_exsitu.training.torchdata import MapBatches
from tests.conftest import toy_experiment, write_toy_dataset


def test_batches_mix_in_the_extra_pairs_once_per_epoch(tmp_path) -> None:
    data = write_toy_dataset(tmp_path / "d.h5", n_galaxies=10, seed=0)
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    index = np.array([0, 0, 1, 1, 2, 2])
    theta = np.arange(100, 106, dtype=np.float32)[:, None]
    with MapDataset(data) as ds:
        idx = np.arange(len(ds))
        own = np.asarray(ds.labels["f_ex"], np.float32)[:, None]
        batches = {
            limit: list(
                MapBatches(
                    ds,
                    idx,
                    own,
                    batch_size=7,
                    shuffle=True,
                    seed=3,
                    memory_limit_gb=limit,
                    extra=(maps, index, theta),
                )
            )
            for limit in (0.0, 1.0)  # streamed from disk / held in memory
        }
        x = np.concatenate([b[0].numpy() for b in batches[1.0]])
        y = np.concatenate([b[1].numpy() for b in batches[1.0]])[:, 0]
        assert len(y) == len(ds) + len(index)
        np.testing.assert_array_equal(np.sort(y[y >= 100]), theta[:, 0])
        for value, k in zip(theta[:, 0], index, strict=True):  # the right map
            np.testing.assert_array_equal(x[y == value][0], maps[k])
        np.testing.assert_allclose(np.sort(y[y < 100]), np.sort(own[:, 0]))
        for (xs, ys), (xm, ym) in zip(batches[0.0], batches[1.0], strict=True):
            np.testing.assert_array_equal(xs.numpy(), xm.numpy())
            np.testing.assert_array_equal(ys.numpy(), ym.numpy())


def test_training_section_wants_data_and_teacher_together() -> None:
    with pytest.raises(ValueError, match="go together"):
        TrainingSection(pseudo_label_data="t.h5")
    doc = {"pseudo_label_data": "t", "pseudo_label_teacher": "r"}
    with pytest.raises(ConfigError, match="pseudo_label_draws"):
        ExperimentConfig.from_dict(
            {
                "data": {"train": "x.h5"},
                "training": doc | {"pseudo_label_draws": 0},
            }
        )


def _student(tmp_path, teacher_dir, target, draws=2, **training):
    data = write_toy_dataset(tmp_path / "labelled.h5", n_galaxies=60, seed=5)
    cfg = toy_experiment(tmp_path, data)
    keys = {
        "max_epochs": 2,
        "min_epochs": 1,
        "pseudo_label_data": str(target),
        "pseudo_label_teacher": str(teacher_dir),
        "pseudo_label_draws": draws,
    }
    training = dataclasses.asdict(cfg.training) | keys | training
    return cfg.replace(training=TrainingSection(**training))


def test_fit_trains_on_teacher_labels_and_resumes_on_the_same(tmp_path, toy_run):
    _, _, teacher = toy_run
    target = write_toy_dataset(tmp_path / "target.h5", n_galaxies=40, seed=9)
    cfg = _student(tmp_path, teacher.run_dir, target)
    result = fit(cfg, progress=False, num_eval_samples=20)
    stored = json.loads((result.run_dir / PSEUDO_LABEL_FILE).read_text())
    labels = np.asarray(stored["labels"])
    with MapDataset(target) as tgt:
        truth = np.asarray(tgt.labels["f_ex"])
        n_maps = len(tgt)
    assert labels.shape == (n_maps, 2, 1)
    # Teacher draws (posterior std 0.04 on the toy): near the truth, not it.
    err = labels[:, :, 0] - truth[:, None]
    assert np.abs(err).mean() < 0.08 and np.abs(err).min() > 0
    summary = result.metrics["pseudo_labels"]
    assert summary["n_train_maps"] + summary["n_validation_maps"] == n_maps
    assert summary["n_validation_maps"] == 0  # default: all target maps train
    # The test split stays the labelled dataset's own.
    with MapDataset(cfg.train_path) as labelled:
        n_test = len(labelled.splits(seed=cfg.data.split_seed)["test"])
    rows = (result.run_dir / "predictions_test.csv").read_text().splitlines()
    assert result.metrics["n_test"] == n_test == len(rows) - 1

    # An interrupted run resumes on the stored labels, not on new draws.
    (result.run_dir / "model.json").unlink()
    stored["labels"] = (labels * 0 + 0.5).tolist()
    (result.run_dir / PSEUDO_LABEL_FILE).write_text(json.dumps(stored))
    again = fit(cfg, progress=False, num_eval_samples=20)
    assert again.metrics["pseudo_labels"]["mean_label"]["f_ex"] == pytest.approx(0.5)

    # Another target file under the same name is refused, naming the file.
    target.unlink()
    write_toy_dataset(target, n_galaxies=41, seed=10)
    (result.run_dir / "model.json").unlink()
    with pytest.raises(RunDataChangedError, match="pseudo-labels"):
        fit(cfg, progress=False, num_eval_samples=20)


def test_teacher_must_see_a_subset_of_the_channels(tmp_path, toy_run) -> None:
    _, _, teacher = toy_run
    # The same teacher, as if trained on another channel.
    shutil.copytree(teacher.run_dir, tmp_path / "teacher")
    model = tmp_path / "teacher" / "model.json"
    meta = json.loads(model.read_text())
    meta["render_config"]["channels"] = ["velocity"]
    model.write_text(json.dumps(meta))
    target = write_toy_dataset(tmp_path / "target.h5", n_galaxies=10, seed=9)
    cfg = _student(tmp_path, tmp_path / "teacher", target)
    with pytest.raises(ConfigError, match=r"\['velocity'\] are not in the training"):
        fit(cfg, progress=False)


def test_map_runs_refuse_pseudo_labels(tmp_path, toy_run) -> None:
    _, _, teacher = toy_run
    target = write_toy_dataset(tmp_path / "target.h5", n_galaxies=10, seed=9)
    cfg = _student(tmp_path, teacher.run_dir, target)
    cfg = cfg.replace(posterior=dataclasses.replace(cfg.posterior, kind="map"))
    with pytest.raises(ConfigError, match="pseudo-labels train scalar"):
        fit(cfg, progress=False)


@pytest.mark.parametrize("validation", [True, False])
def test_target_maps_split_by_galaxy_into_training_and_validation(
    tmp_path, toy_run, validation
) -> None:
    _, _, teacher = toy_run
    target = write_toy_dataset(tmp_path / "target.h5", n_galaxies=40, seed=9)
    cfg = _student(
        tmp_path, teacher.run_dir, target, draws=3, pseudo_label_validation=validation
    )
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    with MapDataset(cfg.train_path) as ds, MapDataset(target) as tgt:
        pseudo = pseudo_labels(cfg, ds, run)
        galaxies = np.asarray(tgt.labels["galaxy_id"])
        val = tgt.splits(seed=cfg.data.split_seed)["validation"]
    n_train, n_val = len(pseudo.train_maps), len(pseudo.val_maps)
    assert n_train + n_val == len(galaxies)
    assert len(pseudo.train_index) == 3 * n_train  # one pair per draw
    if validation:
        assert n_val == len(val) > 0 and pseudo.validation is not None
        # No galaxy on both sides.
        train_ids = set(np.delete(galaxies, val))
        assert not train_ids & set(galaxies[val])
    else:
        assert n_val == 0 and pseudo.validation is None
