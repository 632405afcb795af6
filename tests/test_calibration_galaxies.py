"""Galaxy-aware calibration tests on views that are correlated by construction.

The toy (benchmarks/calibration_toy.py): G galaxies x V views whose exact
posteriors are nearly identical. An exact posterior must be judged calibrated at
about the nominal rate when views are grouped by galaxy, while counting views as
independent observations (the previous rule, = no groups) misfires.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from conftest import load_benchmark

from sbi_exsitu.evaluation.calibration import metrics as M
from sbi_exsitu.evaluation.calibration.verdict import coverage_tolerance, judge


@pytest.fixture(scope="module")
def toy():
    return load_benchmark("calibration_toy")


def test_false_verdict_rate_new_rule_nominal_old_rule_misfires(toy):
    n_rep = 40  # 40 repeats of 60 galaxies x 5 views (300 maps), 100 draws each
    res = toy.run(repeats=n_rep, galaxies=60, views=5, num_samples=100, seed=1)
    new, old = res["new_rule"], res["old_rule"]
    assert new["n_counted"] == 60 and old["n_counted"] == 300
    # 99.9% binomial upper bound of the count at the rule's nominal rate (~2.3%).
    hi = scipy.stats.binom(n_rep, toy.NOMINAL_RATE).ppf(0.999) / n_rep
    assert new["false_verdict_rate"] <= hi, res
    assert old["false_verdict_rate"] >= 3 * hi, res


def test_bootstrap_tolerance_matches_ks_for_independent_views():
    rng = np.random.default_rng(0)
    cred = rng.random(2000)
    levels = np.linspace(0, 1, 101)
    _, cov = M.expected_coverage(cred, levels)
    boot = M.bootstrap_coverage(cred, None, levels, n_boot=2000, seed=0)
    q99 = np.quantile(np.abs(boot - cov).max(axis=1), 0.99)
    assert q99 == pytest.approx(1.63 / np.sqrt(2000), rel=0.15)


def test_identical_views_count_once():
    rng = np.random.default_rng(3)
    u = rng.random(200)
    levels = np.linspace(0, 1, 101)
    single = judge(np.round(u * 100).astype(int)[:, None], 100, u, levels)
    v = 8  # the same galaxies, each seen 8 times identically
    rep = judge(
        np.repeat(np.round(u * 100).astype(int), v)[:, None], 100, np.repeat(u, v),
        levels, np.repeat(np.arange(200), v), seed=1,
    )  # fmt: skip
    assert rep.n_views == 1600 and rep.n_galaxies == 200
    assert rep.tolerance_method == "block_bootstrap" and single.tolerance_method == "ks"
    # Tolerance and z-score as for 200 galaxies, not 1600 views.
    assert rep.tolerance > 1.5 * coverage_tolerance(1600)
    assert rep.tolerance == pytest.approx(single.tolerance, rel=0.25)
    np.testing.assert_allclose(rep.pit_bias_z, single.pit_bias_z, rtol=0.02)
    # Every pick of one view per galaxy is the same set of ranks here.
    np.testing.assert_allclose(rep.sbc_pick_median, single.sbc_pvalues, rtol=1e-9)
    half = (rep.coverage_band[1] - rep.coverage_band[0])[50] / 2
    assert half == pytest.approx(1.96 * np.sqrt(0.25 / 200), rel=0.2)


def test_one_view_per_group_and_median_pvalue():
    groups = np.array([5, 5, 5, 2, 9, 9])
    picks = M.one_view_per_group(groups, 200, seed=0)
    assert picks.shape == (200, 3)
    assert np.all(groups[picks] == np.array([2, 5, 9]))  # one per galaxy, sorted
    assert set(picks[:, 1]) == {0, 1, 2}  # every view of galaxy 5 gets picked
    assert M.median_pvalue(np.array([0.2, 0.6, 0.9])) == pytest.approx(1.0)
    assert M.median_pvalue(np.array([0.001, 0.002, 0.5])) == pytest.approx(0.004)
    with pytest.raises(ValueError, match="one galaxy id per observation"):
        M.pit_bias_zscores(np.zeros((4, 1)), np.arange(3))


def test_figures_are_drawn_on_one_view_per_galaxy():
    rng = np.random.default_rng(5)
    g, v = 150, 6
    u = np.repeat(rng.random(g), v)  # identical views: the bands must count 150
    ranks = np.round(u * 100).astype(int)[:, None]
    groups = np.repeat(rng.permutation(1000)[:g], v)
    j = judge(ranks, 100, u, np.linspace(0, 1, 101), groups, n_picks=9, seed=2)
    assert j.plot_views.shape == (g,)
    assert np.unique(groups[j.plot_views]).size == g  # every galaxy once
    # The representative pick has the median KS p-value of the picks.
    p = M.sbc_pvalues(ranks[j.plot_views], 100)
    assert p[0] == pytest.approx(j.sbc_pick_median[0])
    independent = judge(ranks[:g], 100, u[:g], np.linspace(0, 1, 101))
    assert np.array_equal(independent.plot_views, np.arange(g))
