"""Pure calibration metrics on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from sbi_exsitu.evaluation.calibration import metrics as M


def gaussian_case(n=1000, s=500, scale=1.0, shift=0.0, d=1, seed=0):
    """Truths ~ N(0, 1) around posterior N(0, scale^2) shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    truths = rng.standard_normal((n, d))
    samples = shift + scale * rng.standard_normal((n, s, d))
    return samples, truths


def test_ranks_and_pit_count_draws_below_truth():
    samples = np.array([[[0.0], [1.0], [2.0], [3.0]]])  # (1, 4, 1)
    truths = np.array([[2.5]])
    assert M.sbc_ranks(samples, truths).tolist() == [[3]]
    assert M.pit_values(samples, truths).tolist() == [[0.75]]
    with pytest.raises(ValueError, match="expected samples"):
        M.sbc_ranks(samples[0], truths)
    with pytest.raises(ValueError, match="do not match"):
        M.sbc_ranks(samples, np.zeros((2, 1)))


def test_sbc_pvalues_accept_uniform_and_reject_skewed_ranks():
    rng = np.random.default_rng(1)
    uniform = rng.integers(0, 101, size=(2000, 2))
    skewed = np.minimum(uniform, rng.integers(0, 101, size=(2000, 2)))
    assert M.sbc_pvalues(uniform, 100).min() > 0.01
    assert M.sbc_pvalues(skewed, 100).max() < 1e-6


def test_sbc_pvalues_agree_with_sbis_continuous_ks():
    # sbi's check_sbc runs KS against uniform(0, S); with S = 1000 the discrete
    # and continuous nulls give nearly the same p-value.
    ranks = M.sbc_ranks(*gaussian_case(scale=0.9, s=1000))
    ours = M.sbc_pvalues(ranks, 1000)[0]
    sbi_like = scipy.stats.kstest(ranks[:, 0], scipy.stats.uniform(0, 1000).cdf).pvalue
    assert ours == pytest.approx(sbi_like, rel=0.3)


def test_hpd_credibility_is_fraction_of_more_probable_draws():
    lp = np.array([[0.0, -1.0, -2.0, -3.0]])
    assert M.hpd_credibility(lp, np.array([-1.5])).tolist() == [0.5]
    assert M.hpd_credibility(lp, np.array([1.0])).tolist() == [0.0]
    with pytest.raises(ValueError):
        M.hpd_credibility(lp, np.array([0.0, 1.0]))


def test_expected_coverage_is_the_credibility_ecdf():
    levels, cov = M.expected_coverage(np.array([0.1, 0.5, 0.5, 0.9]), levels=5)
    np.testing.assert_allclose(levels, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(cov, [0, 0.25, 0.75, 0.75, 1])


@pytest.mark.parametrize(("scale", "sign"), [(0.5, -1), (2.0, 1)])
def test_coverage_area_sign_follows_width(scale, sign):
    samples, truths = gaussian_case(scale=scale)
    cred = M.hpd_credibility(-0.5 * samples[..., 0] ** 2, -0.5 * truths[:, 0] ** 2)
    levels, cov = M.expected_coverage(cred)
    assert np.sign(M.coverage_area(levels, cov)) == sign
    assert M.max_coverage_error(levels, cov) > 0.1


def test_coverage_errors_on_exact_curves():
    levels = np.linspace(0, 1, 101)
    assert M.coverage_area(levels, levels) == pytest.approx(0)
    assert M.coverage_area(levels, levels**2) == pytest.approx(1 / 3 - 1 / 2, abs=1e-4)
    assert M.max_coverage_error(levels, levels**2) == pytest.approx(0.25)


def test_pit_bias_separates_shift_from_width():
    narrow = M.pit_values(*gaussian_case(scale=0.5))
    shifted = M.pit_values(*gaussian_case(shift=0.3))
    assert abs(M.pit_bias_zscores(narrow)[0]) < 3
    assert M.pit_bias_zscores(shifted)[0] < -3


def test_coverage_band_quantiles():
    curves = np.array([[0.0, 0.4, 1.0], [0.0, 0.5, 1.0], [0.0, 0.6, 1.0]])
    lo, med, hi = M.coverage_band(curves)
    assert med.tolist() == [0.0, 0.5, 1.0]
    assert lo[1] < 0.5 < hi[1]


def test_tarp_via_sbi_detects_width_and_is_seeded():
    exact = M.tarp(*gaussian_case(s=300), seed=0)
    narrow = M.tarp(*gaussian_case(s=300, scale=0.5), seed=0)
    assert exact.levels.shape == exact.ecp.shape == (101,)  # n_obs // 10 bins + 1
    assert abs(exact.atc) < 0.05 and exact.ks_pvalue > 0.05
    assert narrow.atc < -0.05
    assert M.tarp(*gaussian_case(s=300), seed=0).atc == exact.atc


@pytest.mark.slow
def test_sbc_c2st_runs_sbis_check_sbc():
    samples, truths = gaussian_case(n=200, s=100)
    ranks = M.sbc_ranks(samples, truths)
    out = M.sbc_c2st(ranks, truths, samples[:, 0], 100, seed=0)
    assert set(out) == {"ks_pvals", "c2st_ranks", "c2st_dap"}
    assert 0.3 < out["c2st_dap"][0] < 0.7
