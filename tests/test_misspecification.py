"""The per-observation misspecification detector (embedding-space novelty + conformal
p-values), sbi's set-level MMD test, and the flags in ``predict`` tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from sbi_exsitu.evaluation.map_features import DEFAULT_COMPONENTS
from sbi_exsitu.evaluation.misspecification import (
    DETECTOR_DIR,
    MisspecificationDetector,
    conformal_pvalues,
    embed,
    roc_auc,
)

RNG = np.random.default_rng


@pytest.fixture(autouse=True)
def _one_thread():
    # Other jobs share the cores; more threads only add contention here.
    torch.set_num_threads(1)


def _gauss(n: int, d: int = 6, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return RNG(seed).normal(shift, 1.0, size=(n, d))


@pytest.mark.parametrize("method", ["knn", "mmd"])
def test_false_alarms_at_alpha_and_shifts_are_flagged(method: str) -> None:
    det = MisspecificationDetector.from_embeddings(
        _gauss(800, seed=1), _gauss(400, seed=2), method=method, alpha=0.1
    )
    same = det.score_embeddings(_gauss(3000, seed=3))
    # Conformal p-values are uniform in distribution: false alarms at rate alpha.
    assert 0.07 < same.flag.mean() < 0.13
    assert 0.45 < same.p_value.mean() < 0.55
    shifted = det.score_embeddings(_gauss(500, shift=1.5, seed=4))
    assert shifted.flag.mean() > 0.6
    assert roc_auc(same.score, shifted.score) > 0.9


def test_conformal_pvalues_and_auc_edge_cases() -> None:
    np.testing.assert_allclose(
        conformal_pvalues(np.array([-1.0, 3.0, 99.0]), np.arange(4.0)), [1.0, 0.4, 0.2]
    )
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    assert np.isnan(roc_auc(np.array([]), np.array([1.0])))


def test_save_load_roundtrip_and_method_switch(tmp_path) -> None:
    det = MisspecificationDetector.from_embeddings(
        _gauss(200), _gauss(50, seed=5), meta={"note": "x"}
    )
    z = _gauss(20, shift=0.5, seed=6)
    out = det.save(tmp_path)
    assert out == tmp_path / DETECTOR_DIR and (out / "reference.npy").is_file()
    back = MisspecificationDetector.load(tmp_path)
    a, b = det.score_embeddings(z), back.score_embeddings(z)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.flag, b.flag)
    assert back.meta == {"note": "x"} and back.method == "flow"
    assert (out / "flow.pt").is_file()
    mmd = det.with_method("mmd")
    assert mmd.method == "mmd" and mmd.bandwidth > 0
    np.testing.assert_allclose(mmd.reference, det.reference)
    with pytest.raises(ValueError, match="method"):
        det.with_method("kde")


def test_format_1_detectors_still_load(tmp_path) -> None:
    """A detector saved before issue #17 (embedding k-NN, no flow) is read."""
    import json

    det = MisspecificationDetector.from_embeddings(
        _gauss(100), _gauss(40), method="knn"
    )
    out = det.save(tmp_path)
    info = json.loads((out / "detector.json").read_text())
    old = {k: info[k] for k in info if k not in ("features", "map_features", "density")}
    (out / "detector.json").write_text(json.dumps(old | {"format": 1}))
    back = MisspecificationDetector.load(tmp_path)
    assert back.features == "embedding" and back.map_features is None
    z = _gauss(10, seed=3)
    np.testing.assert_array_equal(
        back.score_embeddings(z).score, det.score_embeddings(z).score
    )
    (out / "detector.json").write_text(json.dumps(old | {"format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        MisspecificationDetector.load(tmp_path)


def test_neighbour_targets_and_shift_columns() -> None:
    ref = _gauss(300, d=2)
    targets = 0.5 + 0.1 * ref[:, 0]  # f_ex varies along the first feature
    det = MisspecificationDetector.from_embeddings(
        ref, _gauss(50, d=2, seed=1), method="knn", k=3, reference_targets=targets
    )
    z = np.array([[2.0, 0.0], [-2.0, 0.0]])
    nn = det.neighbour_targets(z)
    assert nn[0] > 0.65 and nn[1] < 0.35  # neighbours' f_ex, not the global mean
    res = det.score_embeddings(z)
    np.testing.assert_allclose(res.neighbour_f_ex, nn)
    score, p_value, flag = res  # still unpacks as before
    cols = res.to_columns(median=np.array([0.7, 0.7]))
    np.testing.assert_allclose(cols["misspec_shift"], 0.7 - nn)
    np.testing.assert_allclose(cols["misspec_nn_f_ex"], nn)
    assert {"misspec_score", "misspec_pvalue", "misspec_flag"} <= set(cols)
    bare = MisspecificationDetector.from_embeddings(ref, ref[:20], method="knn")
    assert "misspec_nn_f_ex" not in bare.score_embeddings(z).to_columns()
    with pytest.raises(ValueError, match="no reference f_ex"):
        bare.neighbour_targets(z)


def test_set_test_runs_sbi_mmd_on_embeddings() -> None:
    det = MisspecificationDetector.from_embeddings(_gauss(300), _gauss(300, seed=7))
    same = det.set_test(_gauss(100, seed=8), n_shuffle=200, seed=0)
    shifted = det.set_test(_gauss(100, shift=0.7, seed=9), n_shuffle=200, seed=0)
    assert same["p_value"] > 0.01 and shifted["p_value"] < 0.01
    assert shifted["n_obs"] == 100 and shifted["n_reference"] == 300
    # Seeded: the permutation null is reproducible.
    assert det.set_test(_gauss(100, seed=8), n_shuffle=200, seed=0) == same


# -- on mock galaxies with a trained posterior -----------------------------------------
def _simulate(path, **model):
    from sbi_exsitu.data.simulate import SimulationConfig, simulate

    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"model": "tng-like", "n_galaxies": 150, "seed": 5, "views": 4},
            "model": {"max_particles": 4000, "min_particles": 4000, **model},
            "render": {"resolution": 16, "channels": ["metallicity"]},
        }
    )
    return simulate(cfg, path, progress=False)


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    """A tiny posterior on tng-like metallicity maps, and the same galaxies with the
    in-situ gradients flipped from steeply negative to positive.

    Metallicity only: an embedding trained for f_ex in a few epochs barely looks at
    metallicity when mass and kinematics are there (AUC ~0.6 with the mass map
    too), and a shift the posterior ignores is not what this test is about.
    """
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.training.fit import fit

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("misspec")
    base = _simulate(tmp / "tng.h5")
    shifted = _simulate(
        tmp / "shifted.h5",
        insitu_z_gradient_inner_range=[0.8, 1.0],
        insitu_z_gradient_outer_range=[0.8, 1.0],
    )
    cfg = ExperimentConfig.from_dict(
        {
            "run": {"name": "r", "out_dir": str(tmp / "runs"), "seed": 0, "threads": 1},
            "data": {"train": str(base)},
            "posterior": {
                "ensemble_size": 1,
                "embedding_features": 8,
                "hidden_features": 16,
                "num_transforms": 1,
            },
            "training": {
                "max_epochs": 8,
                "patience": 8,
                "min_epochs": 1,
                "batch_size": 32,
            },
        }
    )
    return tmp, base, shifted, fit(cfg, progress=False, evaluate=False)


def test_flag_fires_more_on_shifted_metallicity_gradients(shifted_run) -> None:
    from sbi_exsitu.data.dataset import MapDataset

    _, base, shifted, result = shifted_run
    post = result.posterior
    with MapDataset(base) as ds, MapDataset(shifted) as sh:
        sp = ds.splits(seed=0)
        det = MisspecificationDetector.fit(post, ds, sp["train"], sp["validation"])
        same = det.score(post, ds, sp["test"])
        other = det.score(post, sh, sp["test"])  # the same galaxies, other gradients
    assert len(same.score) == len(other.score) > 50
    assert other.flag.mean() > same.flag.mean()
    assert roc_auc(same.score, other.score) > 0.65
    # Issue #17: the maps' radial profiles see the shift better than the
    # embedding, which is trained to keep only what predicts f_ex.
    with MapDataset(base) as ds, MapDataset(shifted) as sh:
        old = MisspecificationDetector.fit(
            post, ds, sp["train"], sp["validation"], features="embedding", method="knn"
        )
        auc_old = roc_auc(old.score(post, ds, sp["test"]).score,
                          old.score(post, sh, sp["test"]).score)  # fmt: skip
    assert roc_auc(same.score, other.score) > max(auc_old, 0.9)


def test_embed_matches_the_members_embedding_net(shifted_run) -> None:
    from sbi_exsitu.data.dataset import MapDataset

    _, base, _, result = shifted_run
    with MapDataset(base) as ds:
        maps = ds.maps(np.arange(7))
        z_ds = embed(result.posterior, ds, np.arange(7), batch_size=3)
    z = embed(result.posterior, maps)
    np.testing.assert_allclose(z, z_ds, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ref = result.posterior.estimators[0].embedding_net(torch.from_numpy(maps))
    np.testing.assert_allclose(z, ref.double().numpy(), rtol=1e-5, atol=1e-6)


def test_predict_reports_flags_and_stores_the_detector(shifted_run) -> None:
    from sbi_exsitu.studies.predict import predict

    tmp, _, shifted, result = shifted_run
    out = predict(
        result.run_dir, shifted, tmp / "p.csv", num_samples=50, progress=False
    )
    rows = list(csv.DictReader(out.open()))
    assert {"misspec_score", "misspec_pvalue", "misspec_flag"} <= set(rows[0])
    assert "misspec_nn_f_ex" in rows[0]  # the default stores the reference f_ex
    assert {r["misspec_flag"] for r in rows} <= {"0", "1"}
    assert (result.run_dir / DETECTOR_DIR / "detector.json").is_file()
    det = MisspecificationDetector.for_run(result.posterior, run_dir=result.run_dir)
    assert det.meta["n_validation"] > 0  # loaded back, not refitted
    # The default scores the maps' own features with a flow, stored without pickle.
    assert (det.features, det.method) == ("profile", "flow")
    assert det.reference_targets is not None
    # Calibrated per galaxy (#17): the validation maps weigh 1 / n_views.
    assert det.calibration_weights is not None
    # 1 / n_views; 4 views of every galaxy here (unequal: test_conformal_*).
    np.testing.assert_allclose(det.calibration_weights, 1 / 4)
    files = ("features_components.npy", "flow.pt", "reference_targets.npy")
    for name in (*files, "calibration_weights.npy"):
        assert (result.run_dir / DETECTOR_DIR / name).is_file()
    # A detector cached before the per-galaxy weights is refitted, not reused.
    (result.run_dir / DETECTOR_DIR / "calibration_weights.npy").unlink()
    assert MisspecificationDetector.load(result.run_dir).calibration_weights is None
    det = MisspecificationDetector.for_run(result.posterior, run_dir=result.run_dir)
    assert det.calibration_weights is not None
    assert (result.run_dir / DETECTOR_DIR / "calibration_weights.npy").is_file()
    # A cached detector of another space/score is refitted, not silently reused.
    old = MisspecificationDetector.for_run(
        result.posterior, run_dir=result.run_dir, features="embedding", method="knn"
    )
    assert (old.features, old.method) == ("embedding", "knn")
    assert MisspecificationDetector.load(result.run_dir).features == "embedding"
    new = MisspecificationDetector.for_run(result.posterior, run_dir=result.run_dir)
    assert new.space == ("profile", "flow", DEFAULT_COMPONENTS)
    # One of another component count (or saved before it was recorded) too.
    other = MisspecificationDetector.for_run(
        result.posterior, run_dir=result.run_dir, n_components=4
    )
    assert other.space[2] == 4 and len(other.map_features.components) == 4
    new = MisspecificationDetector.for_run(result.posterior, run_dir=result.run_dir)
    assert len(new.map_features.components) == DEFAULT_COMPONENTS
    out2 = predict(
        result.run_dir,
        shifted,
        tmp / "q.csv",
        num_samples=50,
        progress=False,
        misspecification=False,
    )
    assert "misspec_flag" not in next(csv.DictReader(out2.open()))


def test_fit_calibrates_on_fresh_galaxies_when_asked(shifted_run) -> None:
    """[misspecification] calibration_galaxies: a finished run re-fitted with only
    that section changed resumes (no retraining) and calibrates at fit time."""
    import json

    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.training.fit import fit

    _, _, _, result = shifted_run
    doc = json.loads((result.run_dir / "config.json").read_text())
    doc["misspecification"] = {"calibration_galaxies": 12}
    again = fit(ExperimentConfig.from_dict(doc), progress=False, evaluate=False)
    # Not retrained: the training time is the one recorded when it trained.
    assert again.metrics["train_seconds"] == result.metrics["train_seconds"]
    assert again.metrics["misspecification_seconds"] > 0
    det = MisspecificationDetector.load(result.run_dir)
    assert det.meta["calibration"]["source"] == "simulated"
    assert det.meta["calibration"]["n_galaxies"] == 12
    assert len(det.calibration_scores) == 12 * 4
