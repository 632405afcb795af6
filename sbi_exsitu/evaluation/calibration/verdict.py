"""One-word calibration verdict from the metrics, with the rule spelled out.

Test sets hold several views (maps) of each galaxy; the views share the galaxy's
truth and most of its information, so every test here counts galaxies, not views
(``groups`` = galaxy ids; without them every view is its own galaxy and the rule
reduces to the classic one for independent observations).

The rule (also :data:`VERDICT_RULE`, stored in every report):

1. ``calibrated``: the HPD coverage curve (on all views) stays within the tolerance
   of the diagonal, every SBC KS p-value is at least ``0.01 / D`` (Bonferroni over
   the ``D`` parameters), and no parameter's mean PIT is off 0.5 by more than
   3 cluster-robust standard errors.
2. otherwise ``biased`` if some mean PIT is off by more than 3 standard errors: the
   posterior is shifted relative to the truth (a width error keeps the PIT
   symmetric).
3. otherwise, if the coverage error exceeds the tolerance, ``overconfident`` when the
   signed area ``∫ (coverage - α) dα`` is negative, else ``conservative``.
4. otherwise ``miscalibrated``: SBC rejects uniform ranks but coverage and location
   are fine; look at the rank histogram.

The tolerance is ``max(0.05, 1.63 / sqrt(n_views), q99)`` where ``q99`` is the 99%
quantile of ``max_α |coverage* - coverage|`` over a block bootstrap by galaxy
(:func:`~.metrics.bootstrap_coverage`): a calibrated posterior exceeds it in ~1% of
test sets however correlated the views are. For independent observations ``q99``
is the 99% Kolmogorov-Smirnov critical value 1.63/√n, used exactly then; 0.05 is
the gap we call practically irrelevant for large test sets. The SBC p-value of a
parameter is ``min(1, 2 × median)`` of the KS p-values over ``R`` random picks of
one view per galaxy (:func:`~.metrics.median_pvalue`, valid under any dependence
between picks).

Example:
    >>> coverage_tolerance(10_000), round(coverage_tolerance(500), 3)
    (0.05, 0.073)
    >>> verdict(-0.08, 0.2, sbc_pvalues=[1e-9], pit_bias=[0.1], n_obs=1000)
    'overconfident'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from sbi_exsitu.evaluation.calibration import metrics as M

__all__ = [
    "BIAS_Z",
    "COVERAGE_FLOOR",
    "SBC_ALPHA",
    "VERDICT_RULE",
    "VERDICTS",
    "Judgement",
    "coverage_tolerance",
    "judge",
    "verdict",
]

SBC_ALPHA = 0.01
BIAS_Z = 3.0
COVERAGE_FLOOR = 0.05
VERDICTS = ("calibrated", "biased", "overconfident", "conservative", "miscalibrated")
VERDICT_RULE = (
    "n counts galaxies, not views (views of one galaxy are correlated); "
    "tol = max(0.05, 1.63/sqrt(n_views), 99% quantile of max|coverage* - coverage| "
    "over a block bootstrap by galaxy) (= max(0.05, 1.63/sqrt(n)), the 99% KS "
    "critical value, when every view is its own galaxy); "
    "SBC KS p per parameter = min(1, 2 x median p) over random picks of one view "
    "per galaxy; "
    "calibrated if max|coverage - alpha| <= tol and min SBC KS p >= 0.01/D "
    "and all |mean PIT - 0.5| <= 3 SE (cluster-robust SE by galaxy); "
    "else biased if some |mean PIT - 0.5| > 3 SE; "
    "else if max|coverage - alpha| > tol: overconfident if "
    "coverage_area = integral(coverage - alpha) < 0 else conservative; "
    "else miscalibrated (SBC rejects uniform ranks)."
)


def coverage_tolerance(n_obs: int) -> float:
    """Tolerance for ``n_obs`` independent test cases: ``max(0.05, 1.63/√n)``."""
    return max(COVERAGE_FLOOR, 1.63 / float(np.sqrt(n_obs)))


def verdict(
    coverage_area: float,
    max_coverage_error: float,
    *,
    sbc_pvalues: Sequence[float],
    pit_bias: Sequence[float],
    tolerance: float | None = None,
    n_obs: int | None = None,
) -> str:
    """Apply :data:`VERDICT_RULE`.

    Args:
        coverage_area: signed area between coverage and diagonal.
        max_coverage_error: largest ``|coverage - alpha|``.
        sbc_pvalues: SBC KS p-value per parameter.
        pit_bias: mean-PIT z-score per parameter.
        tolerance: the coverage tolerance (from :func:`judge`); or give
        n_obs: the number of independent observations, for
            :func:`coverage_tolerance`.

    Returns:
        One of :data:`VERDICTS`.
    """
    if tolerance is None:
        if n_obs is None:
            raise ValueError("verdict needs tolerance= or n_obs=")
        tolerance = coverage_tolerance(n_obs)
    coverage_ok = max_coverage_error <= tolerance
    sbc_ok = min(sbc_pvalues) >= SBC_ALPHA / len(sbc_pvalues)
    biased = bool(np.any(np.abs(np.asarray(pit_bias)) > BIAS_Z))
    if coverage_ok and sbc_ok and not biased:
        return "calibrated"
    if biased:
        return "biased"
    if not coverage_ok:
        return "overconfident" if coverage_area < 0 else "conservative"
    return "miscalibrated"


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The galaxy-aware statistics the verdict reads, and the verdict.

    Attributes:
        verdict: one of :data:`VERDICTS`.
        n_views: test observations (maps).
        n_galaxies: distinct galaxies among them.
        tolerance: coverage tolerance used.
        tolerance_method: ``"ks"`` (independent views) or ``"block_bootstrap"``.
        coverage_band: ``(2, L)`` pointwise 95% scatter of a calibrated coverage
            curve around the diagonal (binomial with ``n_views`` for independent
            views, else from the block bootstrap).
        sbc_pvalues: ``(D,)`` SBC KS p-values the verdict uses.
        sbc_pick_median: ``(D,)`` median KS p-value over the picks (descriptive;
            not itself a p-value).
        pit_bias_z: ``(D,)`` cluster-robust mean-PIT z-scores.
        n_boot: bootstrap replicates (0 for independent views).
        n_picks: one-view-per-galaxy picks (1 for independent views).
        plot_views: ``(n_galaxies,)`` observation indices, one view per galaxy:
            the pick whose KS p-value (first parameter) is the median one, so
            that the SBC and PIT figures, drawn on it, show the data the
            verdict tested with bands for the right ``n``.
    """

    verdict: str
    n_views: int
    n_galaxies: int
    tolerance: float
    tolerance_method: str
    coverage_band: np.ndarray
    sbc_pvalues: np.ndarray
    sbc_pick_median: np.ndarray
    pit_bias_z: np.ndarray
    n_boot: int
    n_picks: int
    plot_views: np.ndarray

    def describe(self, param_names: Sequence[str]) -> dict[str, Any]:
        """Which ``n`` and method each statistic uses, for the JSON report."""
        gal = {"n": self.n_galaxies, "unit": "galaxies"}
        views = {"n": self.n_views, "unit": "views"}
        sbc = (
            "KS on one view per galaxy; p = min(1, 2 x median p) over picks"
            if self.n_picks > 1
            else "KS on all views (each its own galaxy)"
        )
        med = [round(float(p), 8) for p in self.sbc_pick_median]
        return {
            "coverage_curve": views,
            "coverage_tolerance": gal | {"method": self.tolerance_method,
                                         "n_boot": self.n_boot},
            "coverage_band_95": gal | {
                "method": self.tolerance_method,
                "lower": np.round(self.coverage_band[0], 6).tolist(),
                "upper": np.round(self.coverage_band[1], 6).tolist(),
            },
            "sbc_ks": gal | {"method": sbc, "n_picks": self.n_picks,
                             "median_pvalue": dict(zip(param_names, med, strict=True))},
            "pit_bias_z": gal | {"method": "mean PIT, cluster-robust SE by galaxy"},
            "tarp": views,
        }  # fmt: skip


def judge(
    ranks: np.ndarray,
    num_samples: int,
    credibility: np.ndarray,
    levels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    n_picks: int = 25,
    seed: int = 0,
) -> Judgement:
    """Galaxy-aware SBC, PIT-location and coverage tests, and the verdict.

    Args:
        ranks: ``(n_obs, D)`` SBC ranks.
        num_samples: ``S``, posterior draws behind the ranks.
        credibility: ``(n_obs,)`` HPD credibility of each truth.
        levels: ``(L,)`` credible levels of the coverage curve.
        groups: ``(n_obs,)`` galaxy ids; ``None`` = every view its own galaxy.
        n_boot: block-bootstrap replicates for the coverage tolerance and band.
        n_picks: random one-view-per-galaxy picks for the SBC KS test.
        seed: seeds the bootstrap and the picks.

    Returns:
        The :class:`Judgement`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> u = np.repeat(rng.random(300), 5)  # 5 identical views per galaxy
        >>> ranks = np.round(u * 100).astype(int)[:, None]
        >>> j = judge(ranks, 100, u, np.linspace(0, 1, 101), np.repeat(range(300), 5))
        >>> j.verdict, j.n_galaxies, round(j.tolerance, 2)
        ('calibrated', 300, 0.09)
    """
    ranks = np.asarray(ranks)
    n_views = ranks.shape[0]
    levels = np.asarray(levels, dtype=float)
    codes = M.group_codes(groups, n_views)
    n_gal = int(codes.max()) + 1
    _, cov = M.expected_coverage(credibility, levels)
    area, err = M.coverage_area(levels, cov), M.max_coverage_error(levels, cov)
    boot_seed, pick_seed = np.random.SeedSequence(seed).generate_state(2)
    pit = ranks / num_samples
    if n_gal == n_views:  # independent views: the classic, exact tests
        tol, method, n_boot, n_picks = coverage_tolerance(n_views), "ks", 0, 1
        half = 1.96 * np.sqrt(levels * (1 - levels) / n_views)
        band = np.stack([levels - half, levels + half])
        picks_p = M.sbc_pvalues(ranks, num_samples)[None]
        sbc = picks_p[0]
        plot_views = np.arange(n_views)
    else:
        boot = M.bootstrap_coverage(
            credibility, codes, levels, n_boot=n_boot, seed=int(boot_seed)
        )
        q99 = float(np.quantile(np.abs(boot - cov).max(axis=1), 0.99))
        tol, method = max(coverage_tolerance(n_views), q99), "block_bootstrap"
        band = levels + np.quantile(boot - cov, [0.025, 0.975], axis=0)
        picks = M.one_view_per_group(codes, n_picks, seed=int(pick_seed))
        picks_p = np.stack([M.sbc_pvalues(ranks[p], num_samples) for p in picks])
        sbc = M.median_pvalue(picks_p, axis=0)
        # The representative pick: its p-value is the median one (parameter 0).
        order = np.argsort(picks_p[:, 0], kind="stable")
        plot_views = picks[order[len(order) // 2]]
    bias = M.pit_bias_zscores(pit, codes)
    return Judgement(
        verdict=verdict(area, err, sbc_pvalues=sbc, pit_bias=bias, tolerance=tol),
        n_views=n_views,
        n_galaxies=n_gal,
        tolerance=tol,
        tolerance_method=method,
        coverage_band=band,
        sbc_pvalues=sbc,
        sbc_pick_median=np.median(picks_p, axis=0),
        pit_bias_z=bias,
        n_boot=n_boot,
        n_picks=n_picks,
        plot_views=plot_views,
    )
