"""One-word calibration verdict from the metrics, with the rule spelled out.

The rule (also :data:`VERDICT_RULE`, stored in every report):

1. ``calibrated``: the HPD coverage curve stays within the tolerance of the
   diagonal, every SBC KS p-value is at least ``0.01 / D`` (Bonferroni over the
   ``D`` parameters), and no parameter's mean PIT is off 0.5 by more than
   3 standard errors.
2. otherwise ``biased`` if some mean PIT is off by more than 3 standard errors: the
   posterior is shifted relative to the truth (a width error keeps the PIT
   symmetric).
3. otherwise, if the coverage error exceeds the tolerance, ``overconfident`` when the
   signed area ``∫ (coverage - α) dα`` is negative, else ``conservative``.
4. otherwise ``miscalibrated``: SBC rejects uniform ranks but coverage and location
   are fine; look at the rank histogram.

The tolerance is ``max(0.05, 1.63 / sqrt(n_obs))``: 1.63/√n is the 99%
Kolmogorov-Smirnov critical value, so a calibrated posterior exceeds it in ~1% of
test sets; 0.05 is the gap we call practically irrelevant when ``n_obs`` is large.

Example:
    >>> coverage_tolerance(10_000), round(coverage_tolerance(500), 3)
    (0.05, 0.073)
    >>> verdict(-0.08, 0.2, sbc_pvalues=[1e-9], pit_bias=[0.1], n_obs=1000)
    'overconfident'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "BIAS_Z",
    "SBC_ALPHA",
    "VERDICT_RULE",
    "VERDICTS",
    "coverage_tolerance",
    "verdict",
]

SBC_ALPHA = 0.01
BIAS_Z = 3.0
VERDICTS = ("calibrated", "biased", "overconfident", "conservative", "miscalibrated")
VERDICT_RULE = (
    "tol = max(0.05, 1.63/sqrt(n_obs)) (99% KS critical value); "
    "calibrated if max|coverage - alpha| <= tol and min SBC KS p >= 0.01/D "
    "and all |mean PIT - 0.5| <= 3 SE; "
    "else biased if some |mean PIT - 0.5| > 3 SE; "
    "else if max|coverage - alpha| > tol: overconfident if "
    "coverage_area = integral(coverage - alpha) < 0 else conservative; "
    "else miscalibrated (SBC rejects uniform ranks)."
)


def coverage_tolerance(n_obs: int) -> float:
    """Largest coverage error still judged calibrated for ``n_obs`` test cases."""
    return max(0.05, 1.63 / float(np.sqrt(n_obs)))


def verdict(
    coverage_area: float,
    max_coverage_error: float,
    *,
    sbc_pvalues: Sequence[float],
    pit_bias: Sequence[float],
    n_obs: int,
) -> str:
    """Apply :data:`VERDICT_RULE`.

    Args:
        coverage_area: signed area between coverage and diagonal.
        max_coverage_error: largest ``|coverage - alpha|``.
        sbc_pvalues: SBC KS p-value per parameter.
        pit_bias: mean-PIT z-score per parameter.
        n_obs: number of test observations.

    Returns:
        One of :data:`VERDICTS`.
    """
    coverage_ok = max_coverage_error <= coverage_tolerance(n_obs)
    sbc_ok = min(sbc_pvalues) >= SBC_ALPHA / len(sbc_pvalues)
    biased = bool(np.any(np.abs(np.asarray(pit_bias)) > BIAS_Z))
    if coverage_ok and sbc_ok and not biased:
        return "calibrated"
    if biased:
        return "biased"
    if not coverage_ok:
        return "overconfident" if coverage_area < 0 else "conservative"
    return "miscalibrated"
