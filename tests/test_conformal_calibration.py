"""Per-galaxy calibration of the misspecification detector's conformal p-values
(issue #17): weighted p-values, galaxy weights, recalibration, storage."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.evaluation.misspecification import (
    MisspecificationDetector,
    conformal_pvalues,
)
from sbi_exsitu.evaluation.novelty import group_weights


def test_weighted_pvalues_reduce_to_ranks_and_count_groups() -> None:
    rng = np.random.default_rng(0)
    cal, s = rng.normal(size=50), rng.normal(size=20)
    np.testing.assert_allclose(
        conformal_pvalues(s, cal, np.full(50, 3.0)), conformal_pvalues(s, cal)
    )
    # One galaxy of 1 view (score 1) and one of 3 views (score 0): each weighs
    # half of the 4 calibration maps, so a score of 0.5 is exceeded by "2 maps".
    w = group_weights(np.array([1, 2, 2, 2]), 4)
    np.testing.assert_allclose(w, [1, 1 / 3, 1 / 3, 1 / 3])
    p = conformal_pvalues(np.array([0.5, 2.0, -1.0]), np.array([1.0, 0, 0, 0]), w)
    np.testing.assert_allclose(p, [3 / 5, 1 / 5, 1.0])
    with pytest.raises(ValueError, match="weights"):
        conformal_pvalues(s, cal, np.ones(3))
    with pytest.raises(ValueError, match="validation_groups"):
        group_weights(np.arange(3), 4)


def _views(rng, n_gal: int, n_views: int, spread: float) -> np.ndarray:
    """``(n_gal, n_views, 4)``: galaxy means of scale ``spread`` plus view noise."""
    mean = rng.normal(0.0, spread, size=(n_gal, 1, 4))
    return mean + rng.normal(0.0, 0.3, size=(n_gal, n_views, 4))


def _population(rng, n_gal: int, views_a: int = 20, views_b: int = 4):
    """Half compact galaxies with many views, half broad ones with few (as
    ``views = "balanced"`` gives high-f_ex galaxies more views)."""
    a = _views(rng, n_gal // 2, views_a, 1.0)
    b = _views(rng, n_gal // 2, views_b, 2.0)
    z = np.r_[a.reshape(-1, 4), b.reshape(-1, 4)]
    gid = np.r_[np.repeat(np.arange(n_gal // 2), views_a),
                np.repeat(np.arange(n_gal // 2, n_gal), views_b)]  # fmt: skip
    return z, gid


def test_galaxy_weights_give_alpha_per_galaxy_where_view_ranks_do_not() -> None:
    rng = np.random.default_rng(1)
    ref, _ = _population(rng, 200)
    val, groups = _population(rng, 800)
    # The observations: one view of each of many fresh galaxies.
    test = np.r_[_views(rng, 4000, 1, 1.0)[:, 0], _views(rng, 4000, 1, 2.0)[:, 0]]
    kw = {"method": "knn", "alpha": 0.05}
    per_view = MisspecificationDetector.from_embeddings(ref, val, **kw)
    per_galaxy = MisspecificationDetector.from_embeddings(
        ref, val, validation_groups=groups, **kw
    )
    assert per_view.calibration_weights is None
    far_view = per_view.score_embeddings(test).flag.mean()
    far_galaxy = per_galaxy.score_embeddings(test).flag.mean()
    # View ranks calibrate for the many-view galaxies: too many false alarms.
    assert far_view > 0.08
    assert abs(far_galaxy - 0.05) < 0.015
    # Recalibrating on the same maps gives the same detector's p-values.
    again = per_view.calibrate(val, groups)
    np.testing.assert_allclose(
        again.score_embeddings(test).p_value, per_galaxy.score_embeddings(test).p_value
    )
    assert again.meta["n_validation"] == len(val) and again.meta["recalibrated"]


def test_weights_survive_save_load_and_method_switch(tmp_path) -> None:
    rng = np.random.default_rng(2)
    ref, _ = _population(rng, 40)
    val, groups = _population(rng, 20)
    det = MisspecificationDetector.from_embeddings(
        ref, val, validation_groups=groups, method="knn"
    )
    det.save(tmp_path)
    back = MisspecificationDetector.load(tmp_path)
    np.testing.assert_array_equal(back.calibration_weights, det.calibration_weights)
    np.testing.assert_array_equal(
        back.score_embeddings(val[:7]).p_value, det.score_embeddings(val[:7]).p_value
    )
    flow = det.with_method("flow")
    np.testing.assert_array_equal(flow.calibration_weights, det.calibration_weights)
