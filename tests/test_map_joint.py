"""Joint map calibration: TARP over whole maps and SBC on the implied f_ex."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.evaluation.map_joint import joint_map_calibration, tarp_atc_band


def _field(rng, n, s, size, scale):
    """Maps whose pixels share one per-map offset: strongly dependent pixels."""
    base = rng.random((n, 1, 1, 1)) * 0.6 + 0.2
    common = rng.normal(0, 0.1, (n, s, 1, 1))
    return np.clip(base + common + rng.normal(0, scale, (n, s, size, size)), 0, 1)


@pytest.mark.parametrize("width", [1.0, 0.3])
def test_joint_calibration_passes_a_calibrated_and_fails_a_narrow_posterior(width):
    rng = np.random.default_rng(3)
    n_gal, views, s, size = 120, 2, 60, 8
    maps = _field(rng, n_gal, s + 1, size, 0.05)
    truth = np.repeat(maps[:, 0], views, axis=0)
    draws = np.repeat(maps[:, 1:], views, axis=0)
    # Shrink the draws towards their mean: right mean, too little spread.
    mean = draws.mean(axis=1, keepdims=True)
    draws = mean + width * (draws - mean)
    mask = np.ones(truth.shape, bool)
    f_draws, f_true = draws.mean(axis=(2, 3)), truth.mean(axis=(1, 2))
    groups = np.repeat(np.arange(n_gal), views)
    out = joint_map_calibration(
        draws, truth, mask, f_draws, f_true, groups, seed=0, n_picks=5
    )
    assert out["n_galaxies"] == n_gal
    tarp = out["tarp"]["posterior"]
    if width == 1.0:
        assert tarp["within_band"]
        assert out["fex_sbc"]["pvalue"] > 0.01
    else:
        assert not tarp["within_band"] and tarp["atc_median"] < tarp["atc_band_95"][0]
        assert out["fex_sbc"]["pvalue"] < 0.01


def test_atc_band_shrinks_with_more_observations():
    lo1, hi1 = tarp_atc_band(50, 100, n_sim=300, seed=1)
    lo2, hi2 = tarp_atc_band(500, 100, n_sim=300, seed=1)
    assert hi2 - lo2 < hi1 - lo1
