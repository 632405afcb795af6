"""Novelty statistics of the misspecification detector: conformal p-values, ROC AUC,
sbi's set-level MMD test, and the per-observation result type.

Re-exported by :mod:`sbi_exsitu.evaluation.misspecification`.

Which calibration set, and how exact (issue #17): an observation is one view of
one galaxy, while training sets hold 4-20 correlated views per galaxy, more for
high f_ex (``views = "balanced"``); weighting calibration maps ``1 / n_views``
(:func:`group_weights`) makes the reference the galaxy population. Conformal
validity holds on average over calibration sets; the false-alarm rate of one
fitted detector is itself random, roughly Beta-distributed around alpha with a
standard deviation ~``sqrt(alpha (1 - alpha) / n)`` for ``n`` independent
calibration galaxies (Vovk, 2012, ACML, "Conditional validity of inductive
conformal predictors"): 0.025 for the ~75 validation galaxies of a 500-galaxy
training set. A rate within +-0.01 of alpha = 0.05 (95 % of fitted detectors)
needs ~1,800 independent calibration galaxies (several views of each, weighted
per galaxy, do a little better: ``benchmarks/false_alarm_default.py``): a run
simulates them with ``[misspecification] calibration_galaxies``
(:mod:`~sbi_exsitu.evaluation.detector_run`), or pass them to
``MisspecificationDetector.calibrate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MisspecificationScores",
    "conformal_pvalues",
    "group_weights",
    "roc_auc",
    "set_mmd_test",
]


@dataclass(frozen=True)
class MisspecificationScores:
    """Per-observation results; unpacks as ``score, p_value, flag = ...``.

    Attributes:
        score: ``(n,)`` novelty score (higher = less like the training set).
        p_value: ``(n,)`` conformal p-value against in-distribution maps.
        flag: ``(n,)`` ``p_value < alpha``.
        neighbour_f_ex: ``(n,)`` mean true f_ex of the nearest training maps
            (``MisspecificationDetector.neighbour_targets``), or None.
    """

    score: np.ndarray
    p_value: np.ndarray
    flag: np.ndarray
    neighbour_f_ex: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.score, self.p_value, self.flag))

    def to_columns(
        self, prefix: str = "misspec_", median: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Flat ``{column: (n,) array}`` for prediction tables; with the neighbours'
        f_ex also ``nn_f_ex`` and (given the posterior ``median`` of f_ex)
        ``shift = median - nn_f_ex``."""
        cols = {
            f"{prefix}score": self.score,
            f"{prefix}pvalue": self.p_value,
            f"{prefix}flag": self.flag.astype(np.int8),
        }
        if self.neighbour_f_ex is not None:
            cols[f"{prefix}nn_f_ex"] = self.neighbour_f_ex
            if median is not None:
                cols[f"{prefix}shift"] = np.asarray(median) - self.neighbour_f_ex
        return cols


def conformal_pvalues(
    scores: np.ndarray,
    calibration: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``(1 + #{c >= s}) / (n_cal + 1)`` for each score ``s``.

    Valid (super-uniform) when the score and the calibration scores are
    exchangeable, i.e. the observation comes from the calibration distribution.

    With ``weights`` (one per calibration score, relative: rescaled to mean 1)
    the counts are weighted, ``(1 + sum w_i [c_i >= s]) / (n_cal + 1)``: the
    weighted conformal p-value of Tibshirani et al. (2019, NeurIPS, "Conformal
    prediction under covariate shift") with the test point given the mean
    weight. Weights ``1 / n_views`` of each calibration map's galaxy make every
    calibration galaxy count equally, the reference for one observation per
    galaxy when the calibration set holds more views of some galaxies than of
    others (``views = "balanced"``: 4 to 20 by f_ex). Keeping the mean weight
    at 1 keeps the smallest p-value at ``1 / (n_cal + 1)``.

    Example:
        >>> conformal_pvalues(np.array([0.5, 10.0]), np.arange(9.0)).tolist()
        [0.9, 0.1]
        >>> # Two galaxies: one view scoring 1, three views scoring 0.
        >>> conformal_pvalues(np.array([0.5]), np.array([1.0, 0, 0, 0]),
        ...                   np.array([1.0, 1 / 3, 1 / 3, 1 / 3])).round(4).tolist()
        [0.6]
    """
    cal = np.asarray(calibration, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(cal)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != cal.shape or np.any(w < 0) or (len(w) and w.sum() <= 0):
        raise ValueError(
            f"'weights' has shape {w.shape} (min {w.min(initial=0.0)}), expected "
            f"{cal.shape} non-negative weights, one per calibration score, not all 0"
        )
    if len(w):
        w = w * (len(w) / w.sum())
    order = np.argsort(cal, kind="stable")
    cal, w = cal[order], w[order]
    # Weight of the calibration scores >= s: the tail sum from the first c >= s.
    tail = np.r_[np.cumsum(w[::-1])[::-1], 0.0]
    return (1.0 + tail[np.searchsorted(cal, s, side="left")]) / (1.0 + len(cal))


def group_weights(groups: np.ndarray | None, n: int) -> np.ndarray | None:
    """``1 / (maps of the group)`` per map, so every group (galaxy) weighs 1.

    Example:
        >>> group_weights(np.array([7, 7, 3]), 3).tolist()
        [0.5, 0.5, 1.0]
    """
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(
            f"'validation_groups' has shape {groups.shape}, expected ({n},): one "
            "galaxy id per validation map"
        )
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of a score separating positives from negatives.

    The Mann-Whitney form ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``; 0.5 is
    chance, 1 perfect separation. NaN when either set is empty.

    Example:
        >>> roc_auc(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
        1.0
    """
    from scipy.stats import rankdata

    neg, pos = np.asarray(negatives, float), np.asarray(positives, float)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    ranks = rankdata(np.r_[neg, pos])
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(neg) * len(pos)))


def set_mmd_test(
    observed: np.ndarray,
    reference: np.ndarray,
    *,
    n_shuffle: int = 1000,
    max_samples: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """sbi's ``calc_misspecification_mmd`` (a permutation test of the set MMD).

    sbi's ``mode="embedding"`` needs the trainer object, which a loaded run no
    longer has; we embed ourselves and call it in ``mode="x_space"`` on the
    features, which is the same test. The reference should be held-out
    (validation) maps, not training maps: the net has fitted its training maps,
    so their embeddings are slightly unlike any new map's and a training
    reference rejects even in-distribution test sets.

    Args:
        observed: ``(n, F)`` standardised features of the observed set.
        reference: ``(n_ref, F)`` standardised in-distribution features.
        n_shuffle: permutations of the null distribution.
        max_samples: pooled size per permutation (default: all of the reference).
        seed: seeds the subsample and sbi's permutations.

    Returns:
        ``{"p_value", "mmd", "n_obs", "n_reference"}``.
    """
    import torch
    from sbi.diagnostics import calc_misspecification_mmd

    # sbi draws both halves of each permutation from the reference, so the
    # observed set must be smaller than it; subsample to half (seeded).
    n_obs = min(len(observed), len(reference) // 2)
    rng = np.random.default_rng(seed)
    z_obs = observed[np.sort(rng.choice(len(observed), n_obs, replace=False))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        p, (_, mmd) = calc_misspecification_mmd(
            torch.from_numpy(np.ascontiguousarray(z_obs)).float(),
            torch.from_numpy(np.ascontiguousarray(reference)).float(),
            mode="x_space",
            n_shuffle=n_shuffle,
            max_samples=max_samples or len(reference),
        )
    return {
        "p_value": float(p),
        "mmd": float(mmd),
        "n_obs": int(n_obs),
        "n_reference": int(len(reference)),
    }
