"""Issue #14, the run directory: identity, re-runs, damaged files, portability.

Each test reproduces a failure of the code before the fix. Read-only run
directories are simulated by making the detector's writes raise
``PermissionError`` (monkeypatch): the tests run as root here, and root ignores
permission bits; a read-only bind mount would need root and a mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_experiment, write_toy_dataset

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.errors import (
    RunDataChangedError,
    RunError,
    RunExistsError,
    StateFileError,
    WeightsMismatchError,
)
from sbi_exsitu.posteriors import load_posterior
from sbi_exsitu.runs import RunDirectory

from .conftest import no_hang, write_maps


def _tiny(tmp: Path, data: Path, epochs: int = 2, **training) -> ExperimentConfig:
    d = toy_experiment(tmp, data).to_dict()
    d["training"].update(max_epochs=epochs, patience=epochs, **training)
    return ExperimentConfig.from_dict(d)


def _fit(cfg: ExperimentConfig, **kw):
    from sbi_exsitu.training.fit import fit

    return fit(cfg, progress=False, evaluate=False, **kw)


# -- 1. a run is tied to the data it saw --------------------------------------------
def test_fit_refuses_a_run_whose_training_data_grew(tmp_path) -> None:
    data = write_toy_dataset(tmp_path / "train.h5", n_galaxies=20, seed=1)
    cfg = _tiny(tmp_path, data)
    run = _fit(cfg).run_dir
    splits = (run / "splits.json").read_bytes()
    _fit(cfg)  # unchanged data: resumes (the finished member is reused)
    data.unlink()
    write_toy_dataset(data, n_galaxies=30, seed=1)  # the file grew: 20 -> 30
    with pytest.raises(RunDataChangedError) as err:
        _fit(cfg)  # reused the old weights and rewrote splits.json
    msg = str(err.value)
    assert "30 galaxies / 60 samples" in msg and "20 / 40" in msg
    assert "--overwrite" in msg and "[data] train" in msg
    assert isinstance(err.value, RunExistsError)
    assert (run / "splits.json").read_bytes() == splits
    assert json.loads((run / "data.json").read_text())["n_samples"] == 40
    _fit(cfg, overwrite=True)
    assert json.loads((run / "data.json").read_text())["n_samples"] == 60


# -- 2. a failed command does not block its corrected re-run ------------------------
def test_a_failed_fit_does_not_block_its_corrected_rerun(tmp_path, monkeypatch):
    import sbi_exsitu.training.fit as fit_module

    data = write_toy_dataset(tmp_path / "train.h5", n_galaxies=20, seed=1)
    real = fit_module.train_member

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # a failure found late, before any epoch

    monkeypatch.setattr(fit_module, "train_member", fail)
    with pytest.raises(KeyboardInterrupt):
        _fit(_tiny(tmp_path, data, epochs=3))
    monkeypatch.setattr(fit_module, "train_member", real)
    fixed = _tiny(tmp_path, data, epochs=2)  # the corrected config
    result = _fit(fixed)  # was "a run with a different configuration"
    assert RunDirectory(result.run_dir).has_config(fixed.to_dict())


def test_overwrite_never_deletes_what_is_not_one_run(tmp_path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(RunError, match="does not look like a run directory"):
        RunDirectory(folder).prepare({"a": 1}, overwrite=True)
    assert (folder / "thesis.tex").is_file()
    parent = RunDirectory(tmp_path / "study")
    parent.prepare({"a": 1}, overwrite=False)
    RunDirectory(parent.path / "cell").prepare({"b": 1}, overwrite=False)
    with pytest.raises(RunError, match="holds other runs"):
        parent.prepare({"a": 2}, overwrite=True)
    assert (parent.path / "cell" / "config.json").is_file()


# -- 3. damaged run files are named, with a fix -------------------------------------
@pytest.mark.parametrize("content", ["", '{"kind": "sca', "[1, 2]"])
def test_a_damaged_model_json_is_named(scalar_post, tmp_path, content) -> None:
    run = scalar_post.save(tmp_path / "run")
    (run / "model.json").write_text(content)
    with pytest.raises(RunError) as err:
        load_posterior(run)  # was a raw JSONDecodeError
    assert "model.json" in str(err.value) and "sbi-exsitu fit CONFIG" in str(err.value)


def test_weights_of_another_architecture_are_named(scalar_post, tmp_path) -> None:
    from sbi_exsitu.posteriors.estimator import build_estimator

    run = scalar_post.save(tmp_path / "run")
    other = type(scalar_post.spec)(
        **{**scalar_post.spec.to_dict(), "num_transforms": 2}
    )
    RunDirectory(run).save_weights("member_0", build_estimator(other).state_dict())
    with pytest.raises(WeightsMismatchError) as err:
        load_posterior(run)  # was RuntimeError "Error(s) in loading state_dict"
    msg = str(err.value)
    assert "member_0.pt does not match the architecture in model.json" in msg
    assert "unexpected" in msg and "--overwrite" in msg
    assert isinstance(err.value, StateFileError)


def test_map_weights_of_another_architecture_are_named(map_post, tmp_path) -> None:
    from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig

    run = map_post.save(tmp_path / "run")
    wide = ConditionalVAE(
        CVAEConfig(in_channels=1, image_size=16, latent_dim=2, width=8)
    )
    RunDirectory(run).save_weights("cvae", wide.state_dict())
    with pytest.raises(WeightsMismatchError, match="cvae.pt does not match"):
        load_posterior(run)


def test_a_corrupt_checkpoint_restarts_the_member(tmp_path) -> None:
    data = write_toy_dataset(tmp_path / "train.h5", n_galaxies=20, seed=1)
    cfg = _tiny(tmp_path, data)
    run = RunDirectory(_fit(cfg).run_dir)
    reference = run.load_weights("member_0")
    for f in [run.model_file, run.weights("member_0"), *run.checkpoints_dir.iterdir()]:
        f.unlink()
    run.checkpoint("member_0").with_suffix(".pt").write_bytes(b"\x80garbage")
    run.checkpoint("member_0").with_suffix(".json").write_text("{")
    with pytest.warns(UserWarning, match="checkpoint.*restarts from scratch"):
        _fit(cfg)  # was StateFileError: a cache of unfinished work crashed the run
    again = run.load_weights("member_0")
    assert all(torch.equal(reference[k], again[k]) for k in reference)


def _copy_run(toy_run, dest: Path) -> Path:
    _, _, result = toy_run
    return Path(
        shutil.copytree(
            result.run_dir, dest, ignore=shutil.ignore_patterns("misspecification")
        )
    )


def test_a_damaged_detector_is_refitted(toy_run, tmp_path) -> None:
    run = _copy_run(toy_run, tmp_path / "run")
    load_posterior(run).misspecification_detector()  # fitted and saved
    (run / "misspecification" / "detector.json").write_text("{trunc")
    with pytest.warns(UserWarning, match="detector.json.*refitting"):
        det = load_posterior(run).misspecification_detector()  # JSONDecodeError
    assert len(det.reference) > 0
    (run / "misspecification" / "reference.npy").write_bytes(b"")
    with pytest.warns(UserWarning, match="refitting"):
        load_posterior(run).misspecification_detector()


# -- 4. a run is usable where it is -------------------------------------------------
def test_a_moved_run_finds_its_relative_dataset(toy_run, tmp_path, monkeypatch):
    _, data, _ = toy_run
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(data, project / "data" / "toy.h5")
    run = _copy_run(toy_run, project / "runs" / "toy")
    splits = json.loads((run / "splits.json").read_text())
    splits["dataset"] = "data/toy.h5"  # an old run: the path as given, relative
    (run / "splits.json").write_text(json.dumps(splits))
    monkeypatch.chdir(tmp_path)  # elsewhere: "data/toy.h5" is not here
    ds, test = load_posterior(run).test_split()
    assert Path(ds.path).resolve() == (project / "data" / "toy.h5").resolve()
    assert len(test) == len(splits["test"])
    (project / "data" / "toy.h5").unlink()
    with pytest.raises(RunError) as err:
        load_posterior(run).test_split()
    msg = str(err.value)
    assert str(tmp_path / "data" / "toy.h5") in msg and str(project) in msg


def _run_with_gone_data(post, tmp_path: Path) -> Path:
    train = write_maps(tmp_path / "train.h5", np.zeros((6, 1, 16, 16), np.float32))
    run = post.save(tmp_path / "run")
    splits = {"train": [0, 1, 2], "validation": [3], "test": [4, 5]}
    RunDirectory(run).write_splits(splits, train, seed=0)
    return run


def test_predict_without_the_training_data_warns_and_writes(
    scalar_post, maps, tmp_path
) -> None:
    from sbi_exsitu.studies.predict import predict

    run = _run_with_gone_data(scalar_post, tmp_path)
    (tmp_path / "train.h5").unlink()  # the training data moved away
    obs = write_maps(tmp_path / "obs.h5", maps)
    with no_hang(60), pytest.warns(UserWarning, match="flags are unavailable"):
        out = predict(run, obs, tmp_path / "p.csv", num_samples=10, progress=False)
    assert out.is_file()  # was DatasetError: train.h5 file not found
    assert "misspec_flag" not in out.read_text().splitlines()[0]


def test_predict_on_a_read_only_run(scalar_post, maps, tmp_path, monkeypatch):
    import sbi_exsitu.evaluation.detector_io as detector_io
    from sbi_exsitu.studies.predict import predict

    run = _run_with_gone_data(scalar_post, tmp_path)  # the data stays here
    real_mkdir = Path.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(run)):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    monkeypatch.setattr(detector_io, "atomic_save", lambda p, f: read_only(p))
    obs = write_maps(tmp_path / "obs.h5", maps)
    with no_hang(60), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict(run, obs, tmp_path / "p.csv", num_samples=10, progress=False)
    cached = [w for w in caught if "cannot be cached" in str(w.message)]
    assert len(cached) == 1 and os.fspath(run) in str(cached[0].message)
    assert "misspec_flag" in out.read_text().splitlines()[0]  # flags still there
    assert not (run / "misspecification").exists()
