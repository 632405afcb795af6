"""The verdict rule, case by case."""

from __future__ import annotations

import pytest

from sbi_exsitu.evaluation.calibration.verdict import (
    VERDICT_RULE,
    VERDICTS,
    coverage_tolerance,
    verdict,
)


def test_tolerance_grows_for_small_test_sets():
    assert coverage_tolerance(100_000) == 0.05
    assert coverage_tolerance(100) == pytest.approx(0.163)
    assert coverage_tolerance(100) > coverage_tolerance(1000)


@pytest.mark.parametrize(
    ("area", "err", "pvals", "bias", "expected"),
    [
        (0.01, 0.03, [0.4], [0.5], "calibrated"),
        (0.01, 0.03, [0.4, 0.006], [0.5, 0.1], "calibrated"),  # Bonferroni 0.005
        (-0.02, 0.04, [1e-9], [-8.0], "biased"),
        (-0.2, 0.3, [1e-9], [4.0], "biased"),
        (-0.2, 0.3, [1e-9], [0.1], "overconfident"),
        (0.2, 0.3, [1e-9], [0.1], "conservative"),
        (0.2, 0.3, [0.5], [0.1], "conservative"),  # coverage alone suffices
        (0.01, 0.03, [0.001], [0.1], "miscalibrated"),
    ],
)
def test_rule(area, err, pvals, bias, expected):
    out = verdict(area, err, sbc_pvalues=pvals, pit_bias=bias, n_obs=1000)
    assert out == expected
    assert out in VERDICTS


def test_rule_text_names_its_thresholds():
    for token in ("0.05", "1.63", "0.01/D", "3 SE", "overconfident"):
        assert token in VERDICT_RULE
