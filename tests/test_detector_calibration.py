"""Calibrating the misspecification flag on fresh in-model galaxies (issue #17):
the ``[misspecification]`` section, the seed that keeps the calibration galaxies
apart from the training ones, caching in the run directory and the checks on a
given calibration dataset."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sbi_exsitu.config.experiment import ExperimentConfig, MisspecificationSection
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate
from sbi_exsitu.errors import ConfigError, DatasetError, DetectorUnavailableError
from sbi_exsitu.evaluation.detector_run import calibration_seed
from sbi_exsitu.evaluation.misspecification import (
    DETECTOR_DIR,
    MisspecificationDetector,
)
from sbi_exsitu.runs import CALIBRATION_DATA, RunDirectory


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # other jobs share the cores


def _sim(path, n=60, seed=5, model="tng-like", resolution=16):
    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"model": model, "n_galaxies": n, "seed": seed, "views": 4},
            "model": {"max_particles": 3000, "min_particles": 3000},
            "render": {"resolution": resolution, "channels": ["mass", "age"]},
        }
    )
    return simulate(cfg, path, progress=False)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    return _sim(tmp_path_factory.mktemp("cal") / "train.h5")


def _run(tmp, data, misspec=None, seed=0):
    """A run directory with config.json and splits.json, and a stand-in posterior
    (the default detector reads the maps' profiles, not the posterior)."""
    doc = {
        "run": {"name": "r", "out_dir": str(tmp / "runs"), "seed": seed},
        "data": {"train": str(data)},
    }
    if misspec is not None:
        doc["misspecification"] = misspec
    cfg = ExperimentConfig.from_dict(doc)
    run = RunDirectory(cfg.run_dir)
    with MapDataset(data) as ds:
        run.prepare(cfg.to_dict(), False, dataset=ds, splits=ds.splits(seed=0))
        post = SimpleNamespace(render_config=ds.render_config, run_dir=run.path)
    return run, post


def _rewrite_section(run, misspec):
    doc = json.loads(run.config_file.read_text())
    doc.pop("misspecification", None)
    if misspec:
        doc["misspecification"] = misspec
    run.config_file.write_text(json.dumps(doc))


def test_the_section_is_checked_and_left_out_when_off() -> None:
    base = {"run": {"name": "a"}, "data": {"train": "d.h5"}}
    cfg = ExperimentConfig.from_dict(base)
    assert not cfg.misspecification.active
    assert "misspecification" not in cfg.to_dict()  # old config.json still match
    cfg = ExperimentConfig.from_dict(
        base | {"misspecification": {"calibration_galaxies": 1500}}
    )
    assert cfg.to_dict()["misspecification"]["calibration_galaxies"] == 1500
    with pytest.raises(ConfigError, match="calibration_galaxies"):
        ExperimentConfig.from_dict(
            base | {"misspecification": {"calibration_galaxie": 10}}
        )
    with pytest.raises(ConfigError, match="give one"):
        ExperimentConfig.from_dict(
            base
            | {
                "misspecification": {
                    "calibration_galaxies": 10,
                    "calibration_data": "x.h5",
                }
            }
        )
    with pytest.raises(ValueError, match="give one"):
        MisspecificationSection(calibration_galaxies=3, calibration_data="x.h5")


def test_calibration_seed_never_reuses_the_training_galaxies() -> None:
    seeds = {calibration_seed(r, t) for r in range(20) for t in range(20)}
    assert len(seeds) == 400  # one stream per (run, training) seed pair
    assert all(calibration_seed(r, t) != t for r in range(20) for t in range(20))
    assert calibration_seed(3, 1) == calibration_seed(3, 1)


def test_for_run_calibrates_on_fresh_galaxies_and_caches(tmp_path, train_set):
    run, post = _run(tmp_path, train_set, {"calibration_galaxies": 25})
    det = MisspecificationDetector.for_run(post)
    cal = det.meta["calibration"]
    assert cal["source"] == "simulated" and cal["n_galaxies"] == 25
    assert cal["n_maps"] == len(det.calibration_scores) == 100  # 4 views each
    np.testing.assert_allclose(det.calibration_weights, 1 / 4)
    assert cal["seed"] == calibration_seed(0, 5)
    # The maps are deleted once the detector is saved; the features are kept.
    assert not (run.path / CALIBRATION_DATA).exists()
    assert (run.path / DETECTOR_DIR / "validation.npy").is_file()
    # Fresh galaxies: none of their masses is a training galaxy's (the same
    # seed would reproduce them exactly).
    with MapDataset(train_set) as ds:
        train_m = set(np.round(ds.labels["log_mstar"], 6))
        val = ds.splits(seed=0)["validation"]
    fresh = _sim(tmp_path / "again.h5", n=25, seed=cal["seed"])
    with MapDataset(fresh) as fr:
        assert not train_m & set(np.round(fr.labels["log_mstar"], 6))
    # Cached: loaded back, nothing simulated again.
    again = MisspecificationDetector.for_run(post)
    np.testing.assert_array_equal(again.calibration_scores, det.calibration_scores)
    assert not (run.path / CALIBRATION_DATA).exists()
    # Back to the validation split: recalibrated, the flow is kept.
    _rewrite_section(run, None)
    back = MisspecificationDetector.for_run(post)
    assert back.meta["calibration"]["source"] == "validation"
    assert len(back.calibration_scores) == len(val)
    z = np.random.default_rng(0).normal(size=(3, det.reference.shape[1]))
    np.testing.assert_allclose(
        back.density.typicality(z), det.density.typicality(z), rtol=1e-6
    )


def test_a_given_calibration_dataset_is_checked(tmp_path, train_set) -> None:
    other = _sim(tmp_path / "other.h5", n=20, seed=77)
    run, post = _run(tmp_path, train_set, {"calibration_data": str(other)})
    det = MisspecificationDetector.for_run(post)
    assert det.meta["calibration"]["source"] == "data"
    assert det.meta["calibration"]["n_galaxies"] == 20
    assert other.is_file()  # a given dataset is never deleted
    for data, match in (
        (_sim(tmp_path / "px.h5", n=5, seed=78, resolution=8), "resolution"),
        (_sim(tmp_path / "eagle.h5", n=5, seed=79, model="eagle-like"), "eagle"),
        (train_set, "training galaxies"),
    ):
        _rewrite_section(run, {"calibration_data": str(data)})
        with pytest.raises(DatasetError, match=match):
            MisspecificationDetector.for_run(post)


def test_a_training_set_not_simulated_here_cannot_be_extended(tmp_path) -> None:
    from tests.conftest import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy.h5", n_galaxies=40, seed=0)
    _, post = _run(tmp_path, data, {"calibration_galaxies": 10})
    with pytest.raises(DetectorUnavailableError, match="calibration_data"):
        MisspecificationDetector.for_run(post)


def test_changing_only_the_section_keeps_a_trained_run(tmp_path, train_set) -> None:
    run, _ = _run(tmp_path, train_set)
    (run.path / "model.json").write_text("{}")  # trained state to protect
    cfg = ExperimentConfig.from_dict(
        json.loads(run.config_file.read_text())
        | {"misspecification": {"calibration_galaxies": 7}}
    )
    with MapDataset(train_set) as ds:
        run.prepare(cfg.to_dict(), False, dataset=ds, splits=ds.splits(seed=0))
    stored = json.loads(run.config_file.read_text())
    assert stored["misspecification"]["calibration_galaxies"] == 7
    other = cfg.to_dict() | {"run": cfg.to_dict()["run"] | {"seed": 3}}
    from sbi_exsitu.runs import RunExistsError

    with MapDataset(train_set) as ds, pytest.raises(RunExistsError):
        run.prepare(other, False, dataset=ds, splits=ds.splits(seed=0))
