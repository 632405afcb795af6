"""Novelty statistics of the misspecification detector: conformal p-values, ROC AUC.

Re-exported by :mod:`sbi_exsitu.evaluation.misspecification`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conformal_pvalues", "roc_auc"]


def conformal_pvalues(scores: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """``(1 + #{c >= s}) / (n_cal + 1)`` for each score ``s``.

    Valid (super-uniform) when the score and the calibration scores are
    exchangeable, i.e. the observation comes from the calibration distribution.

    Example:
        >>> conformal_pvalues(np.array([0.5, 10.0]), np.arange(9.0)).tolist()
        [0.9, 0.1]
    """
    cal = np.sort(np.asarray(calibration, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    n_ge = len(cal) - np.searchsorted(cal, s, side="left")
    return (1.0 + n_ge) / (len(cal) + 1.0)


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
