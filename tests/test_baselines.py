"""Tests of sbi_exsitu.baselines.run: MDN-CNN ensemble and the bare f_ex-M* relation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sbi_exsitu.baselines.run import (
    BaselineConfig,
    GaussianMixture,
    MassRelationBaseline,
    MDNEnsemble,
    _validation_loss,
    fit_mdn_cnn,
    random_flips,
    run_baselines,
)
from sbi_exsitu.data.dataset import DatasetWriter, MapDataset
from sbi_exsitu.data.render import RenderConfig, RenderedViews
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.torchdata import MapBatches, target_array

SIZE = 32


def _sigmoid_relation(log_mstar: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-3 * (log_mstar - 11)))


def _write_toy(path: Path, n_galaxies: int = 150, views: int = 2) -> MapDataset:
    """1x32x32 maps whose profile scale radius grows with f_ex (seeded)."""
    rng = np.random.default_rng(0)
    cfg = RenderConfig(resolution=SIZE, channels=("mass",), min_pixels=1)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(xx - (SIZE - 1) / 2, yy - (SIZE - 1) / 2) / (SIZE / 2)
    with DatasetWriter(path, cfg) as writer:
        for g in range(n_galaxies):
            log_mstar = rng.uniform(10, 12)
            f_ex = _sigmoid_relation(log_mstar) + rng.normal(0, 0.1)
            f_ex = float(np.clip(f_ex, 0, 1))
            noise = rng.normal(0, 0.05, (views, 1, SIZE, SIZE))
            maps = np.exp(-r / (0.1 + 0.4 * f_ex)) + noise
            maps = (maps - maps.mean((2, 3), keepdims=True)) / maps.std(
                (2, 3), keepdims=True
            )
            views_ = RenderedViews(
                maps=maps.astype(np.float32),
                exsitu=np.zeros((views, SIZE, SIZE), np.float32),
                mask=np.ones((views, SIZE, SIZE), bool),
                directions=np.eye(3)[:views],
            )
            writer.add_galaxy(
                views_,
                galaxy_id=g,
                f_ex=f_ex,
                log_mstar=log_mstar,
                half_mass_radius=3.0,
                model="toy",
            )
    return MapDataset(path)


def _one_thread() -> None:
    # 32-px nets gain little from a 2nd thread and lose a lot on busy shared cores
    # (measured 3.5x slower per batch at load 6); conftest restores it per test.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> MapDataset:
    ds = _write_toy(tmp_path_factory.mktemp("toy") / "toy.h5")
    yield ds
    ds.close()


@pytest.fixture(scope="module")
def tiny_ensemble(toy: MapDataset) -> MDNEnsemble:
    """Two members, a few epochs on a few maps: cheap, for API tests."""
    _one_thread()
    splits = toy.splits(0)
    return fit_mdn_cnn(
        toy,
        splits["train"][:48],
        splits["validation"],
        ensemble_size=2,
        max_epochs=3,
        patience=1,
        batch_size=16,
        hidden_features=64,
        seed=3,
        progress=False,
    )


# ------------------------------------------------------------------ mixture


def test_mixture_moments_match_samples() -> None:
    mix = GaussianMixture(np.array([[0.0, 1.0, 3.0]]), np.array([[0.5, 1.0, 0.2]]))
    draws = mix.sample(200_000, seed=1)[0, :, 0]
    assert draws.mean() == pytest.approx(mix.mean[0], abs=0.01)
    assert draws.std() == pytest.approx(mix.std[0], abs=0.01)


def test_mixture_log_prob_and_cdf() -> None:
    loc, scale = np.array([[0.2, 0.6], [0.5, 0.5]]), np.array([[0.1, 0.3], [0.2, 0.2]])
    mix = GaussianMixture(loc, scale)
    theta = np.array([0.3, 0.9])
    expected = np.log(0.5 * stats.norm.pdf(theta[:, None], loc, scale).sum(1))
    np.testing.assert_allclose(mix.log_prob(theta), expected)
    np.testing.assert_allclose(mix.log_prob(theta[:, None]), expected)
    grid = np.stack([theta, theta, np.array([0.0, 0.0])], axis=1)  # (n, S)
    assert mix.log_prob(grid).shape == (2, 3)
    assert mix.log_prob(grid[..., None]).shape == (2, 3)
    np.testing.assert_allclose(mix.log_prob(grid)[:, 0], expected)
    # the density integrates to the CDF difference
    xs = np.linspace(-2, 3, 20_001)
    dens = np.exp(mix.log_prob(np.tile(xs, (2, 1))))
    np.testing.assert_allclose(np.trapezoid(dens, xs, axis=1), 1.0, atol=1e-6)
    inside = mix.cdf(np.ones(2)) - mix.cdf(np.zeros(2))
    sel = (xs >= 0) & (xs <= 1)
    np.testing.assert_allclose(
        np.trapezoid(dens[:, sel], xs[sel], axis=1), inside, atol=1e-4
    )
    with pytest.raises(ValueError, match="theta"):
        mix.log_prob(np.zeros(3))


def test_mixture_mode() -> None:
    # one Normal: the mode is its mean; two well separated: the higher peak
    single = GaussianMixture(np.array([[0.37]]), np.array([[0.1]]))
    assert single.mode()[0] == pytest.approx(0.37, abs=1e-9)
    two = GaussianMixture(np.array([[0.2, 0.8]]), np.array([[0.05, 0.2]]))
    assert two.mode()[0] == pytest.approx(0.2, abs=0.01)
    # identical members: the mode is the shared mean
    same = GaussianMixture(np.array([[0.6, 0.6]]), np.array([[0.1, 0.3]]))
    assert same.mode()[0] == pytest.approx(0.6, abs=1e-9)


def test_mixture_validation() -> None:
    with pytest.raises(ValueError, match="scale"):
        GaussianMixture(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        GaussianMixture(np.zeros(2), np.ones(2))


def test_mixture_sampling_is_seeded() -> None:
    mix = GaussianMixture(np.array([[0.0, 1.0]]), np.array([[0.1, 0.1]]))
    np.testing.assert_array_equal(mix.sample(50, seed=4), mix.sample(50, seed=4))
    assert not np.array_equal(mix.sample(50, seed=4), mix.sample(50, seed=5))


# ------------------------------------------------------------------ flips


def test_random_flips_are_seeded_flips() -> None:
    x = torch.randn(64, 2, 5, 5)
    a = random_flips(x, torch.Generator().manual_seed(0))
    b = random_flips(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    seen = set()
    for i in range(len(x)):
        options = [x[i], x[i].flip(-2), x[i].flip(-1), x[i].flip(-2).flip(-1)]
        matches = [k for k, o in enumerate(options) if torch.equal(a[i], o)]
        assert matches, "every output is a flip of its input"
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}  # each map tosses its own coins


# ------------------------------------------------------------------ MDN-CNN


def test_mdn_cnn_beats_the_training_mean(toy: MapDataset) -> None:
    _one_thread()
    splits = toy.splits(0)
    ensemble = fit_mdn_cnn(
        toy,
        splits["train"],
        splits["validation"],
        ensemble_size=1,
        max_epochs=10,
        patience=3,
        batch_size=16,
        lr=3e-3,
        hidden_features=64,
        seed=0,
        progress=False,
    )
    mix = ensemble.mixture_dataset(toy, splits["test"])
    truth = toy.labels["f_ex"][splits["test"]]
    rmse = np.sqrt(np.mean((mix.mean - truth) ** 2))
    baseline = np.sqrt(
        np.mean((toy.labels["f_ex"][splits["train"]].mean() - truth) ** 2)
    )
    # rmse / baseline over seeds 0-11: 0.25-0.74 with 10 epochs at lr 3e-3. With
    # 3 epochs at the default 1e-3 it was 0.78-1.58 over seeds 0-3, and seed 0
    # read 0.98 on some CPUs (numerics differ): this test failed there.
    assert rmse < 0.9 * baseline
    assert np.all(mix.std > 0)


def test_early_stopping_restores_best_weights(
    toy: MapDataset, tiny_ensemble: MDNEnsemble
) -> None:
    splits = toy.splits(0)
    val = MapBatches(
        toy,
        splits["validation"],
        target_array(toy, ["f_ex"], splits["validation"]),
        batch_size=256,
    )
    for net, history in zip(
        tiny_ensemble.members, tiny_ensemble.config["history"], strict=True
    ):
        assert history["best_val"] == pytest.approx(min(history["val"]))
        assert len(history["val"]) <= history["best_epoch"] + 2  # patience 1
        assert _validation_loss(net, val, torch.device("cpu")) == pytest.approx(
            history["best_val"], rel=1e-5
        )
    expected = [derive_seed(3, "member", k) for k in range(2)]
    assert [h["seed"] for h in tiny_ensemble.config["history"]] == expected


def test_ensemble_api_shapes(toy: MapDataset, tiny_ensemble: MDNEnsemble) -> None:
    maps = toy.maps(np.arange(5))
    mean, std = tiny_ensemble.predict(maps)
    assert mean.shape == std.shape == (5,)
    assert tiny_ensemble.sample(maps, 7, seed=0).shape == (5, 7, 1)
    assert tiny_ensemble.log_prob(np.full(5, 0.5), maps).shape == (5,)
    mix = tiny_ensemble.mixture(torch.as_tensor(maps))
    assert mix.loc.shape == (5, 2)
    # the members differ (different seeds)
    assert not np.allclose(mix.loc[:, 0], mix.loc[:, 1])
    np.testing.assert_allclose(
        tiny_ensemble.mixture_dataset(toy, np.arange(5), batch_size=2).loc,
        mix.loc,
        rtol=1e-6,
        atol=1e-6,  # float32 convolutions differ by ~1e-8 between batch sizes
    )


def test_save_load_round_trip(
    toy: MapDataset, tiny_ensemble: MDNEnsemble, tmp_path: Path
) -> None:
    tiny_ensemble.save(tmp_path / "mdn")
    meta = json.loads((tmp_path / "mdn" / "mdn_ensemble.json").read_text())
    assert meta["ensemble_size"] == 2 and meta["in_channels"] == 1
    loaded = MDNEnsemble.load(tmp_path / "mdn")
    maps = toy.maps(np.arange(10))
    for a, b in zip(tiny_ensemble.predict(maps), loaded.predict(maps), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        tiny_ensemble.sample(maps, 20, seed=1), loaded.sample(maps, 20, seed=1)
    )
    assert loaded.render_config == toy.render_config
    with pytest.raises(FileNotFoundError):
        MDNEnsemble.load(tmp_path / "nothing")


def test_mixture_dataset_checks_render_config(
    tiny_ensemble: MDNEnsemble, tmp_path: Path
) -> None:
    from sbi_exsitu.data.dataset import DatasetError

    other = MDNEnsemble(
        tiny_ensemble.members,
        tiny_ensemble.config
        | {"render_config": RenderConfig(resolution=SIZE, channels=("age",)).to_json()},
    )
    with MapDataset(_write_toy(tmp_path / "t.h5", n_galaxies=2).path) as ds:
        with pytest.raises(DatasetError, match="different config"):
            other.mixture_dataset(ds, np.arange(2))


# ------------------------------------------------------------------ f_ex-M*


def test_mass_relation_recovers_a_monotone_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 12, 2000)
    y = _sigmoid_relation(x) + rng.normal(0, 0.05, 2000)
    relation = MassRelationBaseline(n_bins=12).fit(x, y)
    grid = np.linspace(10.2, 11.8, 50)
    mean, std = relation.predict(grid)
    np.testing.assert_allclose(mean, _sigmoid_relation(grid), atol=0.03)
    assert np.all(np.diff(mean) > 0)
    np.testing.assert_allclose(std, 0.05, rtol=0.25)
    # outside the training range: constant and inside [0, 1]
    far, _ = relation.predict(np.array([8.0, 9.0, 14.0, 15.0]))
    assert far[0] == far[1] and far[2] == far[3]
    assert np.all((far >= 0) & (far <= 1))


def test_mass_relation_log_prob_is_the_normal_density() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(10, 12, 300)
    relation = MassRelationBaseline(n_bins=5).fit(
        x, _sigmoid_relation(x) + rng.normal(0, 0.1, 300)
    )
    q = np.array([10.3, 11.0, 11.9])
    f = np.array([0.1, 0.5, 0.8])
    mean, std = relation.predict(q)
    np.testing.assert_allclose(relation.log_prob(f, q), stats.norm.logpdf(f, mean, std))
    # the density over f_ex integrates to one
    fs = np.linspace(-2, 3, 5001)
    dens = np.exp(relation.log_prob(fs, np.full_like(fs, 11.0)))
    assert np.trapezoid(dens, fs) == pytest.approx(1.0, abs=1e-6)
    draws = relation.sample(q, 20_000, seed=0)
    assert draws.shape == (3, 20_000, 1)
    np.testing.assert_allclose(draws[:, :, 0].std(1), std, rtol=0.05)


def test_mass_relation_weights_galaxies_not_views() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(10, 12, 200)
    y = np.clip(_sigmoid_relation(x) + rng.normal(0, 0.1, 200), 0, 1)
    base = MassRelationBaseline(n_bins=8).fit(x, y, groups=np.arange(200))
    # galaxies with high f_ex seen from 5 views, the rest from 1
    repeat = np.where(y > 0.5, 5, 1)
    ids = np.repeat(np.arange(200), repeat)
    grouped = MassRelationBaseline(n_bins=8).fit(x[ids], y[ids], groups=ids)
    naive = MassRelationBaseline(n_bins=8).fit(x[ids], y[ids])
    for key in ("knots", "values", "scatter"):
        np.testing.assert_allclose(getattr(grouped, key), getattr(base, key))
    assert not np.allclose(naive.values, base.values, atol=0.02)


def test_mass_relation_round_trip_and_errors() -> None:
    x = np.linspace(10, 12, 100)
    relation = MassRelationBaseline(n_bins=4).fit(x, (x - 10) / 2)
    copy = MassRelationBaseline.from_dict(json.loads(json.dumps(relation.to_dict())))
    np.testing.assert_array_equal(copy.predict(x)[0], relation.predict(x)[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        MassRelationBaseline().predict(x)
    with pytest.raises(ValueError, match="galaxies"):
        MassRelationBaseline().fit(x[:15], x[:15])
    with pytest.raises(ValueError, match="finite"):
        MassRelationBaseline().fit(np.r_[x, np.nan], np.r_[x, 0.0])


# ------------------------------------------------------------------ benchmark


def test_run_baselines(toy: MapDataset, tmp_path: Path) -> None:
    _one_thread()
    splits = toy.splits(0)
    splits = splits | {"train": splits["train"][:64]}
    config = BaselineConfig(ensemble_size=1, max_epochs=1, batch_size=32, mass_bins=4)
    out = run_baselines(toy, splits, config=config, save_dir=tmp_path, progress=False)
    assert set(out) == {"mdn_cnn", "mass_relation"}
    json.dumps(out, allow_nan=False)
    for method in out.values():
        assert method["n_test"] == len(splits["test"])
        assert method["train_s"] > 0
        assert np.isfinite(method["overall"]["nlpd"])
        assert sum(b["n"] for b in method["by_f_ex"]) == len(splits["test"])
    assert 0 <= out["mdn_cnn"]["mass_outside_prior"] <= 1
    # the toy relation is strong: the spline beats predicting the training mean
    truth = toy.labels["f_ex"][splits["test"]]
    mean_rmse = np.sqrt(
        np.mean((truth - toy.labels["f_ex"][splits["train"]].mean()) ** 2)
    )
    assert out["mass_relation"]["overall"]["rmse"] < mean_rmse
    assert (tmp_path / "mdn_cnn" / "mdn_ensemble.json").is_file()
    assert (tmp_path / "mass_relation.json").is_file()
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baselines(toy, splits, config=BaselineConfig(methods=("knn",)))
