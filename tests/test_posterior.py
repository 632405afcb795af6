"""The scalar posterior end to end on a toy problem with a known posterior.

Toy simulator: f_ex ~ U(0, 1); the map is a 1x16x16 image whose every pixel is
f_ex + N(0, sigma^2). The exact posterior is N(mean(x), sigma^2 / 256) truncated
to [0, 1], so the fitted posterior's mean and width can be checked directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import RES, SIGMA, toy_experiment

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig


def test_fitted_posterior_matches_the_analytic_one(toy_run) -> None:
    tmp, _, result = toy_run
    rng = np.random.default_rng(7)
    truth = rng.uniform(0.2, 0.8, size=40)
    maps = (
        truth[:, None, None, None] + SIGMA * rng.normal(size=(40, 1, RES, RES))
    ).astype(np.float32)
    exact_mean = maps.reshape(40, -1).mean(axis=1)
    exact_std = SIGMA / RES
    draws = result.posterior.sample(maps, 2000, seed=0)[..., 0]
    assert draws.shape == (40, 2000)
    assert np.all((draws > 0) & (draws < 1))
    # Mean error below the posterior width; width within 35%.
    assert np.abs(draws.mean(axis=1) - exact_mean).mean() < 0.75 * exact_std
    ratio = draws.std(axis=1).mean() / exact_std
    assert 0.65 < ratio < 1.35, ratio


def test_run_directory_is_complete(toy_run) -> None:
    _, _, result = toy_run
    run = result.run_dir
    for name in (
        "config.json",
        "render_config.json",
        "splits.json",
        "model.json",
        "weights/member_0.pt",
        "history.json",
        "training_curves.png",
        "metrics.json",
        "predictions_test.csv",
        "predictions.png",
    ):
        assert (run / name).exists(), name
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    overall = metrics["test"]["f_ex"]["overall"]
    assert overall["scatter"] < 0.1
    assert set(overall) >= {"bias", "scatter", "rmse", "nlpd"}


def test_save_load_sample_identical(toy_run) -> None:
    from sbi_exsitu.posteriors import load_posterior

    _, data, result = toy_run
    loaded = load_posterior(result.run_dir)
    with MapDataset(data) as ds:
        x = ds.maps(np.arange(5))
    a = result.posterior.sample(x, 100, seed=3)
    b = loaded.sample(x, 100, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        result.posterior.log_prob(a, x), loaded.log_prob(a, x), rtol=1e-6
    )


def test_log_prob_is_a_normalised_density(toy_run) -> None:
    _, data, result = toy_run
    with MapDataset(data) as ds:
        x = ds.maps(np.arange(3))
    grid = np.linspace(0.0005, 0.9995, 2000)
    theta = np.broadcast_to(grid[None, :, None], (3, len(grid), 1))
    density = np.exp(result.posterior.log_prob(theta, x))
    integral = density.sum(axis=1) * (grid[1] - grid[0])
    np.testing.assert_allclose(integral, 1.0, atol=0.03)
    outside = result.posterior.log_prob(np.full((3, 1, 1), 1.5), x)
    assert np.all(np.isneginf(outside))


def test_summaries_have_ordered_intervals(toy_run) -> None:
    _, data, result = toy_run
    with MapDataset(data) as ds:
        x = ds.maps(np.arange(10))
    s = result.posterior.summarize(x, 500)
    assert s.median.shape == (10, 1) and s.hdi95.shape == (10, 1, 2)
    assert np.all(s.hdi95[..., 0] <= s.hdi68[..., 0])
    assert np.all(s.hdi68[..., 0] <= s.median)
    assert np.all(s.median <= s.hdi68[..., 1])
    assert np.all(s.hdi68[..., 1] <= s.hdi95[..., 1])


def test_maps_of_another_render_config_are_refused(toy_run, tmp_path) -> None:
    from sbi_exsitu.posteriors.scalar import RenderConfigMismatch

    _, _, result = toy_run
    other = RenderConfig(
        resolution=RES, channels=("mass",), min_pixels=1, smooth_sigma=0.0
    )
    x = np.zeros((2, 1, RES, RES), np.float32)
    with pytest.raises(RenderConfigMismatch, match="smooth_sigma"):
        result.posterior.sample(x, 10, render_config=other)
    with pytest.raises(RenderConfigMismatch, match="shape"):
        result.posterior.sample(np.zeros((2, 2, RES, RES), np.float32), 10)


def test_fit_resumes_finished_members_without_retraining(toy_run) -> None:
    from sbi_exsitu.training.fit import fit

    tmp, data, result = toy_run
    cfg = toy_experiment(tmp, data)
    history = result.run_dir / "history.json"
    before = history.read_text()
    again = fit(cfg, progress=False, evaluate=False)
    # A retrained member would have new losses and timings in its history.
    assert history.read_text() == before
    x = np.zeros((1, 1, RES, RES), np.float32)
    np.testing.assert_array_equal(
        again.posterior.sample(x, 50, seed=1), result.posterior.sample(x, 50, seed=1)
    )


def test_a_changed_config_refuses_the_existing_run(toy_run) -> None:
    from sbi_exsitu.training.fit import RunExistsError, fit

    tmp, data, _ = toy_run
    cfg = toy_experiment(tmp, data, hidden_features=16)
    with pytest.raises(RunExistsError, match="different configuration"):
        fit(cfg, progress=False)
