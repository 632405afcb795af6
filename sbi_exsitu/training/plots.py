"""Figures of a fitted run: training curves and test-set predictions vs truth."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_training_curves", "plot_predictions"]


def plot_training_curves(histories: Sequence[dict]) -> plt.Figure:
    """Train and validation loss per epoch for every ensemble member."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, h in enumerate(histories):
        color = f"C{k}"
        ax.plot(
            h["train_loss"], color=color, lw=1, alpha=0.6, label=f"member {k} train"
        )
        ax.plot(h["val_loss"], color=color, lw=2, label=f"member {k} validation")
        if h.get("best_epoch", -1) >= 0:
            ax.axvline(h["best_epoch"], color=color, ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean negative log posterior")
    ax.set_title("Training curves (dotted: best validation epoch, weights kept)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_predictions(
    truth: np.ndarray,
    median: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    label: str = "f_ex",
    title: str = "",
    bins: int = 10,
) -> plt.Figure:
    """Posterior median with 68% intervals vs truth, and the residual panel.

    As Angeloudi et al. (2023) fig. 5: the bottom panel shows prediction - truth
    with the running median and 16-84% band of the residual.
    """
    fig, (ax, axr) = plt.subplots(
        2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    yerr = np.vstack([median - low, high - median])
    ax.errorbar(
        truth,
        median,
        yerr=yerr,
        fmt="o",
        ms=2.5,
        lw=0.6,
        alpha=0.6,
        color="C0",
        ecolor="C0",
        label="posterior median ± 68% HDI",
    )
    lo, hi = float(min(truth.min(), low.min())), float(max(truth.max(), high.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="truth")
    ax.set_ylabel(f"predicted {label}")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"Test set: predicted vs true {label}")
    resid = median - truth
    axr.scatter(truth, resid, s=4, alpha=0.5, color="C0")
    edges = np.linspace(lo, hi, bins + 1)
    centres, med, q16, q84 = [], [], [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (truth >= a) & (truth < b)
        if sel.sum() >= 5:
            centres.append(0.5 * (a + b))
            med.append(np.median(resid[sel]))
            q16.append(np.percentile(resid[sel], 16))
            q84.append(np.percentile(resid[sel], 84))
    if centres:
        axr.plot(centres, med, color="C3", lw=2, label="median")
        axr.fill_between(centres, q16, q84, color="C3", alpha=0.2, label="16-84%")
        axr.legend(fontsize=7, loc="lower left")
    axr.axhline(0, color="k", ls="--", lw=1)
    axr.set_xlabel(f"true {label}")
    axr.set_ylabel("pred − true")
    fig.tight_layout()
    return fig
