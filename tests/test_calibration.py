"""Calibration report on toy posteriors whose calibration is known by construction.

theta ~ N(0, I), x = theta + N(0, sigma^2 I); the exact posterior is
N(x / (1 + sigma^2), sigma^2 / (1 + sigma^2)). Scaling its width or shifting its
mean gives posteriors that are overconfident, conservative or biased.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp

from sbi_exsitu.evaluation.calibration import (
    VERDICT_RULE,
    CalibrationReport,
    PosteriorLike,
    calibrate,
    calibrate_dataset,
)

N_OBS, N_DRAWS = 800, 600


class GaussianToy:
    """Exact Gaussian posterior with optional width scale and mean shift."""

    def __init__(self, d: int = 1, sigma: float = 1.0, scale=1.0, shift=0.0):
        self.sigma, self.scale, self.shift = sigma, scale, shift
        self.param_names = ["f_ex"] if d == 1 else ["f_ex", "log_mstar"][:d]
        self.members = [self]

    def _moments(self, x):
        s2 = self.sigma**2
        return x / (1 + s2) + self.shift, self.scale * np.sqrt(s2 / (1 + s2))

    def sample(self, maps, num_samples, *, seed=None, batch_size=512, progress=False):
        mu, sd = self._moments(maps)
        z = np.random.default_rng(seed).standard_normal(
            (len(maps), num_samples, maps.shape[1])
        )
        return mu[:, None] + sd * z

    def log_prob(self, theta, maps):
        mu, sd = self._moments(maps)
        z = (theta - mu[:, None]) / sd
        return (-0.5 * z**2 - np.log(sd * np.sqrt(2 * np.pi))).sum(-1)


class Ensemble:
    """Equal-weight mixture of toy members, as an ensemble posterior would be."""

    def __init__(self, members):
        self.members = list(members)
        self.param_names = self.members[0].param_names

    def sample(self, maps, num_samples, *, seed=None, batch_size=512, progress=False):
        rng = np.random.default_rng(seed)
        draws = np.stack(
            [
                m.sample(maps, num_samples, seed=rng.integers(2**32))
                for m in self.members
            ]
        )  # (K, n, S, D)
        pick = rng.integers(len(self.members), size=(1, len(maps), num_samples, 1))
        return np.take_along_axis(draws, pick, axis=0)[0]

    def log_prob(self, theta, maps):
        lp = np.stack([m.log_prob(theta, maps) for m in self.members])
        return logsumexp(lp, axis=0) - np.log(len(self.members))


def simulate(n=N_OBS, d=1, sigma=1.0, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, d))
    return theta, theta + sigma * rng.standard_normal((n, d))


@pytest.fixture(scope="module")
def toy_data():
    return simulate()


@pytest.fixture(scope="module")
def exact_report(toy_data):
    theta, x = toy_data
    return calibrate(GaussianToy(), x, theta, num_samples=N_DRAWS, progress=False)


def test_toy_implements_protocol():
    assert isinstance(GaussianToy(), PosteriorLike)
    assert isinstance(Ensemble([GaussianToy()]), PosteriorLike)


def test_exact_posterior_is_calibrated(exact_report):
    r = exact_report
    assert r.verdict == "calibrated", r.note
    assert r.max_abs_coverage_error <= r.coverage_tolerance
    assert r.sbc_ks_pvalues.min() >= 0.01


@pytest.mark.parametrize(
    ("kwargs", "expected", "area_sign"),
    [
        ({"scale": 0.5}, "overconfident", -1),
        ({"scale": 2.0}, "conservative", +1),
    ],
)
def test_wrong_width_is_detected(toy_data, kwargs, expected, area_sign):
    theta, x = toy_data
    r = calibrate(GaussianToy(**kwargs), x, theta, num_samples=N_DRAWS, progress=False)
    assert r.verdict == expected, r.note
    assert np.sign(r.coverage_area) == area_sign
    assert r.max_abs_coverage_error > r.coverage_tolerance
    assert r.sbc_ks_pvalues.min() < 0.01


def test_shifted_posterior_fails_sbc_and_is_biased(toy_data):
    theta, x = toy_data
    # Shift of ~0.42 posterior sd: small enough that HPD coverage barely moves.
    r = calibrate(GaussianToy(shift=0.3), x, theta, num_samples=N_DRAWS, progress=False)
    assert r.sbc_ks_pvalues.min() < 0.01
    assert r.verdict == "biased", r.note
    assert r.pit.mean() < 0.5  # posterior too high -> truths sit low in it


def test_report_is_reproducible(toy_data, exact_report):
    theta, x = toy_data
    again = calibrate(GaussianToy(), x, theta, num_samples=N_DRAWS, progress=False)
    np.testing.assert_array_equal(again.coverage, exact_report.coverage)
    assert again.tarp.atc == exact_report.tarp.atc
    other = calibrate(
        GaussianToy(), x, theta, num_samples=N_DRAWS, seed=1, progress=False
    )
    assert not np.array_equal(other.ranks, exact_report.ranks)


def test_two_parameter_shapes():
    theta, x = simulate(n=300, d=2)
    post = GaussianToy(d=2)
    r = calibrate(post, x, theta, num_samples=200, levels=21, progress=False)
    assert r.param_names == ["f_ex", "log_mstar"]
    assert r.ranks.shape == r.pit.shape == (300, 2)
    assert r.sbc_ks_pvalues.shape == r.pit_bias_z.shape == (2,)
    assert r.levels.shape == r.coverage.shape == (21,)
    assert r.member_coverage.shape == (1, 21)
    assert r.credibility.shape == (300,)
    d = r.to_dict()
    assert set(d["sbc_ks_pvalues"]) == {"f_ex", "log_mstar"}
    assert r.verdict == "calibrated", r.note


def test_ensemble_members_give_a_band():
    theta, x = simulate(n=400)
    members = [GaussianToy(scale=s) for s in (0.6, 1.0, 1.6)]
    r = calibrate(Ensemble(members), x, theta, num_samples=300, progress=False)
    assert r.member_coverage.shape == (3, r.levels.size)
    # Each member is judged on its own: narrow below, wide above the diagonal.
    areas = [np.trapezoid(c - r.levels, r.levels) for c in r.member_coverage]
    assert areas[0] < -0.05 and abs(areas[1]) < 0.03 and areas[2] > 0.05
    band = r.to_dict()["member_coverage"]
    assert band["n_members"] == 3
    assert np.all(np.array(band["q16"]) <= np.array(band["q84"]))
    assert "members" in r.timings
    no_members = calibrate(
        Ensemble(members), x, theta, num_samples=300, members=False, progress=False
    )
    assert no_members.member_coverage.shape == (1, r.levels.size)


def test_hpd_draws_and_small_log_prob_chunks(toy_data, exact_report):
    theta, x = toy_data
    calls = []

    class Counting(GaussianToy):
        def log_prob(self, theta, maps):
            calls.append(theta.shape)
            return super().log_prob(theta, maps)

    r = calibrate(
        Counting(), x, theta, num_samples=N_DRAWS, hpd_draws=100,
        log_prob_chunk=101 * 50, progress=False,
    )  # fmt: skip
    assert r.n_hpd_draws == 100 and r.n_posterior_draws == N_DRAWS
    assert calls[0] == (50, 101, 1) and len(calls) == N_OBS // 50
    np.testing.assert_array_equal(r.ranks, exact_report.ranks)  # SBC: all draws
    assert r.verdict == "calibrated", r.note
    assert r.to_dict()["n_hpd_draws"] == 100


def test_json_has_every_key_and_is_written_atomically(exact_report, tmp_path):
    path = exact_report.save(tmp_path)
    assert path == tmp_path / "calibration.json"
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]  # no temp
    d = json.loads(path.read_text())
    for key in (
        "max_abs_coverage_error", "coverage_area", "coverage_curve",
        "sbc_ks_pvalues", "tarp_atc", "tarp_ks_pvalue", "n_observations",
        "n_posterior_draws", "verdict", "verdict_rule", "param_names",
        "member_coverage",
    ):  # fmt: skip
        assert key in d, key
    assert d["verdict_rule"] == VERDICT_RULE
    assert d["n_observations"] == N_OBS and d["n_posterior_draws"] == N_DRAWS
    curve = d["coverage_curve"]
    assert len(curve["levels"]) == len(curve["empirical"]) == 101
    assert d["max_abs_coverage_error"] == pytest.approx(
        exact_report.max_abs_coverage_error, abs=1e-6
    )


def test_plots_are_written(exact_report, tmp_path):
    paths = exact_report.plot(tmp_path)
    names = {p.name for p in paths}
    for stem in ("coverage", "sbc", "tarp", "pit"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert paths[0].name == "coverage.png"
    assert all(p.stat().st_size > 5_000 for p in paths)


def test_shape_errors_are_clear(toy_data):
    theta, x = toy_data
    with pytest.raises(ValueError, match="truths"):
        calibrate(GaussianToy(), x[:10], theta, progress=False)

    class Broken(GaussianToy):
        def sample(self, maps, num_samples, **kw):
            return super().sample(maps, num_samples, **kw)[:, :, 0]

    with pytest.raises(ValueError, match="sample returned"):
        calibrate(Broken(), x, theta, num_samples=10, progress=False)


class FakeDataset:
    """The slice of MapDataset that calibrate_dataset uses."""

    def __init__(self, theta, x):
        self.labels = {"f_ex": theta[:, 0], "galaxy_id": np.arange(len(x))}
        self._x = x

    def __len__(self):
        return len(self._x)

    def maps(self, indices):
        return self._x[np.asarray(indices)]


def test_calibrate_dataset_reads_labels_by_param_name(toy_data, exact_report):
    theta, x = toy_data
    ds = FakeDataset(theta, x)
    r = calibrate_dataset(GaussianToy(), ds, num_samples=N_DRAWS, progress=False)
    np.testing.assert_array_equal(r.ranks, exact_report.ranks)
    sub = calibrate_dataset(
        GaussianToy(), ds, indices=np.arange(0, N_OBS, 2), num_samples=50,
        progress=False,
    )  # fmt: skip
    assert sub.n_observations == N_OBS // 2
    with pytest.raises(KeyError, match="log_mstar"):
        calibrate_dataset(GaussianToy(d=2), ds, progress=False)


def test_from_arrays_matches_calibrate(toy_data, exact_report):
    theta, x = toy_data
    post = GaussianToy()
    s = post.sample(x, 100, seed=3)
    lp = post.log_prob(np.concatenate([theta[:, None], s], axis=1), x)
    r = CalibrationReport.from_arrays(
        s, theta, lp[:, 1:], lp[:, 0], param_names=["f_ex"]
    )
    assert r.n_posterior_draws == 100 and r.verdict == "calibrated", r.note
    with pytest.raises(ValueError, match="NaN"):
        CalibrationReport.from_arrays(
            s, theta, np.full_like(lp[:, 1:], np.nan), lp[:, 0], param_names=["f_ex"]
        )
