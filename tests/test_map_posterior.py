"""The map posterior end to end on a toy problem: fit, sample, save/load, summarize.

Toy (conftest): the ex-situ map is the constant f_ex ~ U(0, 1) and every
observation pixel is f_ex + N(0, 0.64^2), so the map is pinned down to ~0.04
by the observations while a latent drawn from the prior knows nothing of it.
The encoder sees only the truth, so the latent holds the map level; the flow
must read it off the observations (the seed's finding: flow beats prior).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import RES, write_toy_dataset

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.posteriors.map.posterior import MapPosterior, MapSettings


def _config(tmp: Path, data: Path) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "run": {
                "name": "maptoy",
                "out_dir": str(tmp / "runs"),
                "seed": 0,
                "threads": 1,
            },
            "data": {"train": str(data)},
            "posterior": {
                "kind": "map",
                "embedding": "default",
                "embedding_features": 8,
            },
            "training": {
                "batch_size": 16,
                "learning_rate": 2e-3,
                "max_epochs": 20,
                "patience": 20,
            },
            "map": {
                "latent_dim": 2,
                "width": 8,
                "beta": 0.1,
                "encoder_sees_obs": False,
                # A long warm-up (decoder blind to the observations) makes the
                # latent carry the level; 100 flow epochs let the flow learn it
                # on every seed tried (0-7; 40 epochs failed on 2 of 8).
                "kl_warmup": 10,
                "flow_transforms": 2,
                "flow_hidden": 32,
                "flow_epochs": 100,
                "flow_patience": 100,
                "eval_samples": 20,
                "eval_max_obs": 30,
                "n_panels": 2,
            },
        }
    )


@pytest.fixture(scope="module")
def map_run(tmp_path_factory: pytest.TempPathFactory):
    from sbi_exsitu.training.fit import fit

    tmp = tmp_path_factory.mktemp("maptoy")
    data = write_toy_dataset(tmp / "toy.h5", n_galaxies=120, seed=3)
    result = fit(_config(tmp, data), progress=False)
    return data, result


def test_run_directory_and_metrics(map_run) -> None:
    _, result = map_run
    run = result.run_dir
    for name in (
        "model.json",
        "weights/cvae.pt",
        "weights/flow.pt",
        "splits.json",
        "metrics.json",
        "map_panels.png",
        "map_residuals.png",
        "map_residual_vs_truth.png",
        "map_coverage.png",
        "map_calibration.json",
        "training_curves.png",
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert meta["kind"] == "map"
    test = result.metrics["test"]
    # The latent carries the map level: reconstruction is best, the flow (which
    # reads it off the observations) beats the prior (which guesses it).
    flow, prior = test["flow"]["mean_abs_residual"], test["prior"]["mean_abs_residual"]
    assert test["reconstruction"]["mean_abs_residual"] < 0.12
    assert flow < 0.15
    assert flow < 0.7 * prior
    assert {"pixel_coverage", "fex_coverage"} <= set(result.metrics["calibration"])
    # The shared pixel noise is fitted on the validation split and saved.
    fit = result.metrics["shared_noise_fit"]
    assert (
        meta["noise_rho"] == result.metrics["noise_rho"] == result.posterior.noise_rho
    )
    assert meta["noise_rho"] == fit["grid"][int(np.argmin(fit["crps"]))]


def test_sample_shape_range_mask_and_reproducibility(map_run) -> None:
    from sbi_exsitu.posteriors import load_posterior

    data, result = map_run
    post = load_posterior(result.run_dir)
    assert isinstance(post, MapPosterior)
    assert post.noise_rho == result.posterior.noise_rho
    ds = MapDataset(data)
    x = ds.maps([0, 1, 2])
    mask = np.ones((3, RES, RES), bool)
    mask[:, :3] = False
    s = post.sample(x, 25, seed=4, mask=mask)
    assert s.shape == (3, 25, RES, RES)
    assert s.min() >= 0 and s.max() <= 1
    assert np.all(s[:, :, :3] == 0)
    # Loaded weights reproduce the trained posterior exactly, seed for seed.
    assert np.array_equal(s, result.posterior.sample(x, 25, seed=4, mask=mask))
    assert not np.array_equal(s, post.sample(x, 25, seed=5, mask=mask))
    assert post.sample(x[0], 3, seed=0).shape == (1, 3, RES, RES)


def test_summarize(map_run) -> None:
    data, result = map_run
    ds = MapDataset(data)
    idx = np.arange(6)
    post = result.posterior
    summ = post.summarize(ds.maps(idx), 60, mass=np.ones((6, RES, RES)))
    assert summ.mean.shape == summ.std.shape == (6, RES, RES)
    assert summ.f_ex_hdi68.shape == summ.f_ex_hdi95.shape == (6, 2)
    assert summ.weighting == "mass"
    assert np.all(summ.f_ex_hdi95[:, 0] <= summ.f_ex_median)
    assert np.all(summ.f_ex_median <= summ.f_ex_hdi95[:, 1])
    # Uniform weights on a constant map: the implied f_ex is the level, ~ f_ex.
    assert np.abs(summ.f_ex_median - ds.labels["f_ex"][idx]).mean() < 0.15
    assert set(summ.to_columns()) >= {"f_ex_median", "f_ex_hdi68_low"}


def test_render_config_checked(map_run) -> None:
    from sbi_exsitu.posteriors.scalar import RenderConfigMismatch

    _, result = map_run
    with pytest.raises(RenderConfigMismatch, match="shape"):
        result.posterior.sample(np.zeros((1, 2, RES, RES), np.float32), 2)
    other = RenderConfig(resolution=RES, channels=("mass",), min_pixels=2)
    with pytest.raises(RenderConfigMismatch, match="min_pixels"):
        result.posterior.sample(
            np.zeros((1, 1, RES, RES), np.float32), 2, render_config=other
        )
    with pytest.raises(NotImplementedError):
        result.posterior.log_prob(np.zeros(1), np.zeros((1, 1, RES, RES)))


def test_settings_refuse_unknown_keys(tmp_path: Path) -> None:
    from sbi_exsitu.schema import ConfigError

    doc = {
        "run": {"name": "x"},
        "data": {"train": "d.h5"},
        "posterior": {"kind": "map"},
        "map": {"latent_dimm": 3},
    }
    with pytest.raises((ConfigError, ValueError), match="latent_dim"):
        MapSettings.from_config(ExperimentConfig.from_dict(doc))


def test_predict_on_a_map_run(map_run, tmp_path: Path) -> None:
    import csv

    import h5py
    from typer.testing import CliRunner

    from sbi_exsitu.cli import app
    from sbi_exsitu.studies.predict import predict

    _, result = map_run
    obs = write_toy_dataset(tmp_path / "obs.h5", 3, seed=21)
    out = predict(result.run_dir, obs, tmp_path / "p.h5", progress=False)
    with h5py.File(out, "r") as h5:
        t = h5["table"]
        assert len(t["f_ex_median"]) == 6
        assert np.all(t["f_ex_hdi95_low"][:] <= t["f_ex_median"][:])
        assert np.abs(t["f_ex_median"][:] - t["f_ex_true"][:]).mean() < 0.2
        assert h5["maps/mean"].shape == h5["maps/std"].shape == (6, RES, RES)
        # Constant toy maps: the mean map's level is the implied f_ex.
        level = h5["maps/mean"][:].mean(axis=(1, 2))
        np.testing.assert_allclose(level, t["f_ex_mean"][:], atol=0.05)
    res = CliRunner().invoke(
        app,
        ["predict", str(result.run_dir), str(obs), "-o", str(tmp_path / "p.csv")],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 6 and "f_ex_true" in rows[0]
    # The whole galaxy's f_ex of the outside-mask head, next to the in-mask one.
    assert "f_ex_galaxy_median" in rows[0] and "f_ex_median" in rows[0]


def test_outside_head_trained_saved_and_reloaded(map_run, tmp_path: Path) -> None:
    """`fit` trains the outside-mask head; the run stores and reloads it."""
    import torch

    data, result = map_run
    run = result.run_dir
    meta = json.loads((run / "model.json").read_text())
    assert (run / "weights/outside.pt").is_file()
    assert meta["outside_head"]["embedding"]["name"] == "default"
    assert result.metrics["outside_head"]["epochs"] >= 1
    assert "outside" in json.loads((run / "history.json").read_text())
    fex = result.metrics["test"]["f_ex"]
    # Toy maps are constant at the label: the galaxy f_ex is near the label.
    assert fex["galaxy_vs_label"]["rmse"] < 0.15
    cal = result.metrics["calibration"]
    assert "fex_galaxy_label_coverage_error_68" in cal
    post = MapPosterior.load(run)
    assert post.outside_head is not None
    x = torch.from_numpy(MapDataset(data).maps(np.arange(4)))
    with torch.inference_mode():
        a = result.posterior.outside_head(x)
        b = post.outside_head(x)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)
    with MapDataset(data) as ds:
        maps, mask = ds.maps(np.arange(6)), ds.mask(np.arange(6))
        labels = ds.labels["f_ex"][:6]
    s = post.summarize(maps, 30, mask=mask, seed=1)
    cols = s.to_columns()
    assert {"f_ex_galaxy_median", "f_ex_galaxy_hdi68_low"} <= set(cols)
    assert np.all(cols["f_ex_galaxy_hdi95_low"] <= cols["f_ex_galaxy_median"])
    assert np.abs(cols["f_ex_galaxy_median"] - labels).mean() < 0.2


def test_run_without_outside_head_loads_and_says_so(map_run, tmp_path: Path) -> None:
    """A run saved before the head (no key, no weights) loads, warns, has none."""
    import shutil

    _, result = map_run
    old = tmp_path / "old-run"
    shutil.copytree(result.run_dir, old)
    meta = json.loads((old / "model.json").read_text())
    for key in ("outside_head", "pixel_noise"):
        meta.pop(key)
    (old / "model.json").write_text(json.dumps(meta))
    (old / "weights/outside.pt").unlink()
    with pytest.warns(UserWarning, match="predates the outside-mask head"):
        post = MapPosterior.load(old)
    assert post.outside_head is None
    assert (post.noise_scale, post.noise_tail) == (1.0, 1.0)
    maps = np.asarray(post.sample(np.zeros((1, *post.x_shape), np.float32) + 0.5, 2))
    assert maps.shape == (1, 2, RES, RES)
    s = post.summarize(np.zeros((2, *post.x_shape), np.float32) + 0.5, 10)
    assert s.galaxy is None
    assert not any(k.startswith("f_ex_galaxy") for k in s.to_columns())
    # Trained without the head on purpose: no key value, no warning.
    meta["outside_head"] = None
    (old / "model.json").write_text(json.dumps(meta))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MapPosterior.load(old).outside_head is None
