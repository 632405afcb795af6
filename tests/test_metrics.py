"""Tests of sbi_exsitu.evaluation.accuracy against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sbi_exsitu.evaluation.accuracy import binned_metrics, evaluate, nlpd, point_metrics


def test_point_metrics_by_hand() -> None:
    # residuals: 0.5, -0.5, 1.0, 0.0 -> mean 0.25, mean square 0.375
    m = point_metrics([1.0, 0.0, 3.0, 4.0], [0.5, 0.5, 2.0, 4.0])
    assert m["n"] == 4
    assert m["bias"] == pytest.approx(0.25)
    assert m["scatter"] == pytest.approx(math.sqrt(0.375 - 0.25**2))
    assert m["rmse"] == pytest.approx(math.sqrt(0.375))
    assert m["median"] == pytest.approx(0.25)  # mean of 0.0 and 0.5
    assert m["p16"] < m["median"] < m["p84"]


def test_rmse_decomposes_into_bias_and_scatter() -> None:
    rng = np.random.default_rng(1)
    pred, truth = rng.normal(size=50), rng.normal(size=50)
    m = point_metrics(pred, truth)
    assert m["rmse"] ** 2 == pytest.approx(m["bias"] ** 2 + m["scatter"] ** 2)


def test_point_metrics_sign_is_pred_minus_truth() -> None:
    assert point_metrics([0.6], [0.4])["bias"] == pytest.approx(0.2)


def test_point_metrics_empty_and_mismatched() -> None:
    empty = point_metrics([], [])
    assert empty["n"] == 0 and empty["bias"] is None and empty["rmse"] is None
    with pytest.raises(ValueError, match="same length"):
        point_metrics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="1-D"):
        point_metrics(np.zeros((2, 2)), np.zeros((2, 2)))


def test_nlpd() -> None:
    assert nlpd([-0.5, -1.5, 1.0]) == pytest.approx(1.0 / 3.0)
    assert nlpd([0.0, -np.inf]) == np.inf
    with pytest.raises(ValueError, match="empty"):
        nlpd([])


def test_binned_metrics_edges_and_counts() -> None:
    pred = np.array([0.1, 0.3, 0.5, 0.9, 1.0, 2.0])
    truth = np.array([0.0, 0.2, 0.5, 1.0, 1.0, 1.5])
    by = np.array([0.0, 0.49, 0.5, 1.0, 1.0, 7.0])  # 7.0 lies outside every bin
    log_prob = np.array([-1.0, -3.0, -2.0, -4.0, 0.0, -9.0])
    bins = binned_metrics(pred, truth, by, [0.0, 0.5, 1.0], log_prob)
    assert [(b["lo"], b["hi"], b["n"]) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 3)]
    # bin [0, 0.5): residuals 0.1, 0.1; bin [0.5, 1]: 0.0, -0.1, 0.0
    assert bins[0]["bias"] == pytest.approx(0.1)
    assert bins[0]["scatter"] == pytest.approx(0.0, abs=1e-12)
    assert bins[1]["bias"] == pytest.approx(-0.1 / 3)
    assert bins[1]["rmse"] == pytest.approx(math.sqrt(0.01 / 3))
    assert bins[0]["nlpd"] == pytest.approx(2.0)
    assert bins[1]["nlpd"] == pytest.approx(2.0)


def test_binned_metrics_empty_bin_and_bad_edges() -> None:
    bins = binned_metrics([0.1], [0.1], [0.1], [0.0, 0.5, 1.0], log_prob=[-1.0])
    assert bins[1]["n"] == 0 and bins[1]["bias"] is None and bins[1]["nlpd"] is None
    with pytest.raises(ValueError, match="increasing"):
        binned_metrics([0.1], [0.1], [0.1], [0.5, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        binned_metrics([0.1], [0.1], [0.1], [0.5])


def test_evaluate_report_is_json_and_consistent() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 1, 40)
    pred = truth + rng.normal(0, 0.1, 40)
    log_mstar = rng.uniform(10, 12, 40)
    log_prob = rng.normal(-1, 0.3, 40)
    report = evaluate(pred, truth, log_mstar, log_prob)
    json.dumps(report, allow_nan=False)  # JSON-serialisable, no NaN
    assert report["overall"] == point_metrics(pred, truth) | {"nlpd": nlpd(log_prob)}
    assert sum(b["n"] for b in report["by_f_ex"]) == 40
    assert sum(b["n"] for b in report["by_log_mstar"]) == 40
    # the f_ex bins are bins of the truth, not of the prediction
    first = report["by_f_ex"][0]
    inside = truth < 0.2
    assert first["n"] == inside.sum()
    assert first["bias"] == pytest.approx(np.mean(pred[inside] - truth[inside]))


def test_evaluate_without_log_prob() -> None:
    report = evaluate([0.5], [0.5], [11.0], fex_edges=[0, 1], mstar_edges=[10, 12])
    assert "nlpd" not in report["overall"]
    assert report["by_f_ex"][0]["rmse"] == 0.0
