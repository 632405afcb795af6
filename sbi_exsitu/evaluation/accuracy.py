"""Accuracy and probabilistic scores shared by every method's report (numpy only).

Every estimator of f_ex -- the sbi posterior, the paper's MDN-CNN, the bare
f_ex-M* relation -- is reported with the same numbers so they can be compared
side by side:

* point scores of a point estimate against the truth: ``bias`` (mean residual,
  prediction - truth), ``scatter`` (standard deviation of the residual, ``ddof=0``
  so that ``rmse**2 == bias**2 + scatter**2`` exactly), ``rmse``, and the median
  and 16th/84th percentiles of the residual (the median line and 68% band of
  Angeloudi et al. 2023, figs. 5 and 14);
* ``nlpd``, the mean negative log posterior density of the true value, a proper
  scoring rule that rewards calibrated and sharp posteriors alike;
* the same numbers per bin of f_ex and of log M* (the paper's figs. 6 and 14).

Outputs are plain dicts of Python floats and ints (``None`` for empty bins), so
they go straight into a metrics JSON.

References:
    | ERGO-ML: towards a robust machine learning model for inferring the fraction
      of accreted stars in galaxies from integral-field spectroscopic maps
      (Angeloudi et al., 2023, MNRAS), sec. 4 and fig. 14
    | Probabilistic forecasts, calibration and sharpness
      (Gneiting et al., 2007, JRSS B)

Example:
    >>> import numpy as np
    >>> pred, truth = np.array([0.2, 0.4, 0.9]), np.array([0.1, 0.5, 0.8])
    >>> m = point_metrics(pred, truth)
    >>> round(m["bias"], 4), round(m["rmse"], 4)
    (0.0333, 0.1)
    >>> report = evaluate(pred, truth, log_mstar=np.array([10.2, 10.8, 11.6]))
    >>> [b["n"] for b in report["by_log_mstar"]]
    [1, 1, 0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "FEX_EDGES",
    "MSTAR_EDGES",
    "point_metrics",
    "nlpd",
    "binned_metrics",
    "evaluate",
]

#: Default f_ex bins: five bins of width 0.2 over the prior range [0, 1].
FEX_EDGES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Default log10 M*/Msun bins: 0.5 dex over the mock prior's log M* range [10, 12].
MSTAR_EDGES: tuple[float, ...] = (10.0, 10.5, 11.0, 11.5, 12.0)

_POINT_KEYS = ("bias", "scatter", "rmse", "median", "p16", "p84")


def _as_1d(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")


def point_metrics(pred: Any, truth: Any) -> dict[str, Any]:
    """Bias, scatter, RMSE and residual percentiles of a point estimate.

    Args:
        pred: (n,) predictions.
        truth: (n,) true values.

    Returns:
        ``n`` and the residual (``pred - truth``) statistics ``bias`` (mean),
        ``scatter`` (standard deviation, ``ddof=0``), ``rmse``, ``median``,
        ``p16`` and ``p84``; the statistics are ``None`` when ``n == 0``.

    Example:
        >>> point_metrics([1.0, 3.0], [0.0, 0.0])["scatter"]
        1.0
    """
    pred, truth = _as_1d("pred", pred), _as_1d("truth", truth)
    _check_lengths(pred=pred, truth=truth)
    out: dict[str, Any] = {"n": int(len(pred))}
    if len(pred) == 0:
        return out | dict.fromkeys(_POINT_KEYS)
    residual = pred - truth
    p16, median, p84 = np.percentile(residual, [16, 50, 84])
    return out | {
        "bias": float(residual.mean()),
        "scatter": float(residual.std()),
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "median": float(median),
        "p16": float(p16),
        "p84": float(p84),
    }


def nlpd(log_prob_of_truth: Any) -> float:
    """Mean negative log posterior density of the true values.

    Lower is better. A truth outside a posterior's support has log density
    ``-inf`` and makes the score ``inf``: that is the honest answer, not a bug.

    Args:
        log_prob_of_truth: (n,) log p(theta_true | x) per observation.

    Example:
        >>> nlpd([-1.0, -2.0])
        1.5
    """
    log_prob = _as_1d("log_prob_of_truth", log_prob_of_truth)
    if len(log_prob) == 0:
        raise ValueError("nlpd of an empty set is undefined")
    return float(-np.mean(log_prob))


def binned_metrics(
    pred: Any,
    truth: Any,
    by: Any,
    edges: Sequence[float],
    log_prob: Any | None = None,
) -> list[dict[str, Any]]:
    """:func:`point_metrics` (and :func:`nlpd`) per bin of ``by``.

    Bins are half-open, ``[lo, hi)``, except the last, which includes its upper
    edge (so f_ex = 1 lands in the last f_ex bin). Samples outside the edges are
    left out of every bin; the counts show how many were kept.

    Args:
        pred: (n,) predictions.
        truth: (n,) true values.
        by: (n,) the binning variable (e.g. the true f_ex or log M*).
        edges: increasing bin edges, at least two.
        log_prob: (n,) log posterior density of the truth, if available.

    Returns:
        One dict per bin: ``lo``, ``hi``, the :func:`point_metrics` keys and, with
        ``log_prob``, ``nlpd`` (``None`` in an empty bin).

    Example:
        >>> bins = binned_metrics([0.25, 0.75], [0.0, 1.0], [0.0, 1.0], [0, 0.5, 1])
        >>> [(b["n"], b["bias"]) for b in bins]
        [(1, 0.25), (1, -0.25)]
    """
    pred, truth, by = _as_1d("pred", pred), _as_1d("truth", truth), _as_1d("by", by)
    arrays = {"pred": pred, "truth": truth, "by": by}
    if log_prob is not None:
        arrays["log_prob"] = log_prob = _as_1d("log_prob", log_prob)
    _check_lengths(**arrays)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be increasing with >= 2 values, got {edges}")
    out = []
    last = len(edges) - 2
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (by >= lo) & ((by <= hi) if k == last else (by < hi))
        row: dict[str, Any] = {"lo": float(lo), "hi": float(hi)}
        row |= point_metrics(pred[inside], truth[inside])
        if log_prob is not None:
            row["nlpd"] = nlpd(log_prob[inside]) if inside.any() else None
        out.append(row)
    return out


def evaluate(
    pred: Any,
    truth: Any,
    log_mstar: Any,
    log_prob: Any | None = None,
    fex_edges: Sequence[float] = FEX_EDGES,
    mstar_edges: Sequence[float] = MSTAR_EDGES,
) -> dict[str, Any]:
    """The full report of one method on one test set.

    Args:
        pred: (n,) point estimates of f_ex.
        truth: (n,) true f_ex.
        log_mstar: (n,) log10 M*/Msun of each observation (unstandardised).
        log_prob: (n,) log posterior density of the true f_ex, if the method
            gives a density.
        fex_edges: bins of the true f_ex.
        mstar_edges: bins of log M*.

    Returns:
        ``{"overall": {...}, "by_f_ex": [...], "by_log_mstar": [...]}``, where
        ``overall`` holds :func:`point_metrics` and (with ``log_prob``) ``nlpd``,
        and the lists come from :func:`binned_metrics`.

    Example:
        >>> r = evaluate([0.5, 0.5], [0.25, 0.75], [10.5, 11.5], log_prob=[0.0, -1.0])
        >>> r["overall"]["rmse"], r["overall"]["nlpd"]
        (0.25, 0.5)
    """
    truth = _as_1d("truth", truth)
    overall = point_metrics(pred, truth)
    if log_prob is not None:
        overall["nlpd"] = nlpd(log_prob)
    return {
        "overall": overall,
        "by_f_ex": binned_metrics(pred, truth, truth, fex_edges, log_prob),
        "by_log_mstar": binned_metrics(pred, truth, log_mstar, mstar_edges, log_prob),
    }
