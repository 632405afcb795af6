"""Figures of the cross-simulator study (001 figs. 7-11), from ``crosstest`` results.

Every function takes the per-test results of
:func:`sbi_exsitu.studies.crosstest.study.crosstest`
(``results``: one JSON-like dict per (cell, test model)) and the per-observation
tables (``scores``: ``(cell, test model) -> {column: (n,) array}``), returns a
matplotlib figure, and knows nothing about training.

* :func:`plot_errors_vs_fex` -- prediction error vs true f_ex, median and 68% band
  per training set, one panel per (channels, test model) (001 figs. 7/8);
* :func:`plot_error_boxes` -- error distributions over the whole grid (fig. 9);
* :func:`plot_fex_mstar` -- the f_ex-M* relation recovered vs true (fig. 10);
* :func:`plot_coverage_grid` -- HPD coverage, fixed vs cross (fig. 11);
* :func:`plot_misspecification_roc` -- ROC of the per-galaxy misspecification flag.

Example:
    >>> import numpy as np
    >>> x, y = np.linspace(0, 1, 200), np.zeros(200)
    >>> centres, med, lo, hi = binned_band(x, y, np.linspace(0, 1, 6))
    >>> centres.round(2).tolist(), med.tolist()
    ([0.1, 0.3, 0.5, 0.7, 0.9], [0.0, 0.0, 0.0, 0.0, 0.0])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from sbi_exsitu.figures import save_figure
from sbi_exsitu.studies.crosstest.grid import aperture_label, relation

__all__ = [
    "binned_band",
    "plot_errors_vs_fex",
    "plot_error_boxes",
    "plot_fex_mstar",
    "plot_coverage_grid",
    "plot_misspecification_roc",
    "plot_all",
]

# Fixed (same model) blue, cross green, union grey: the paper's fig. 9 colours.
_COLORS = {"fixed": "tab:blue", "cross": "tab:green", "union": "0.45"}
_Results = list[dict[str, Any]]
_Scores = dict[tuple[str, str], dict[str, np.ndarray]]


def binned_band(
    x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_n: int = 5
) -> tuple[np.ndarray, ...]:
    """Median and 16/84th percentiles of ``y`` in bins of ``x`` (NaN if < min_n).

    Returns:
        ``(centres, median, p16, p84)``.
    """
    edges = np.asarray(edges, float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    out = np.full((3, len(centres)), np.nan)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(centres) - 1)
    for b in range(len(centres)):
        sel = (which == b) & (x >= edges[0]) & (x <= edges[-1])
        if sel.sum() >= min_n:
            out[:, b] = np.percentile(y[sel], [50, 16, 84])
    return centres, out[0], out[1], out[2]


def _band(
    ax: Any, x: np.ndarray, y: np.ndarray, edges: np.ndarray, color: str, label: str
) -> None:
    c, med, lo, hi = binned_band(x, y, edges)
    ax.plot(c, med, color=color, lw=2, label=label)
    ax.fill_between(c, lo, hi, color=color, alpha=0.2, lw=0)


def _select(results: _Results, **kw: Any) -> list[dict[str, Any]]:
    return [r for r in results if all(r[k] == v for k, v in kw.items())]


def plot_errors_vs_fex(
    results: _Results,
    scores: _Scores,
    aperture: float | None,
    channels: list[str],
    models: list[str],
) -> plt.Figure:
    """Error (median - truth) vs true f_ex at one aperture (001 figs. 7/8)."""
    edges = np.linspace(0, 1, 11)
    fig, axes = plt.subplots(
        len(channels),
        len(models),
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(4 * len(models), 2.6 * len(channels)),
    )
    for i, cname in enumerate(channels):
        for j, test in enumerate(models):
            ax = axes[i, j]
            for r in _select(results, channels=cname, aperture=aperture, test=test):
                s = scores[(r["cell"], test)]
                rel = relation(r["train"], test)
                _band(
                    ax,
                    s["f_ex_true"],
                    s["f_ex_median"] - s["f_ex_true"],
                    edges,
                    _COLORS[rel],
                    f"train {r['train']} ({rel})",
                )
            ax.axhline(0, color="k", lw=0.7, ls=":")
            ax.set_title(f"test {test} · {cname}", fontsize=9)
            if j == 0:
                ax.set_ylabel("predicted − true f_ex")
            if i == len(channels) - 1:
                ax.set_xlabel("true f_ex")
    # One legend per column: which training set is "fixed" or "cross" depends
    # on the test set of the column.
    for ax in axes[0]:
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"error vs true f_ex, aperture {aperture_label(aperture)} r_e "
        "(median, 68% band)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_error_boxes(
    results: _Results,
    scores: _Scores,
    channels: list[str],
    apertures: list[float | None],
    models: list[str],
    train_sets: list[str],
) -> plt.Figure:
    """Error distributions of every cell on every test set (001 fig. 9)."""
    groups = [(c, a) for c in channels for a in apertures]
    fig, axes = plt.subplots(
        len(models),
        1,
        squeeze=False,
        sharey=True,
        figsize=(max(6.0, 1.1 * len(groups) * len(train_sets) / 2), 3.2 * len(models)),
    )
    width = 0.8 / len(train_sets)
    for j, test in enumerate(models):
        ax = axes[j, 0]
        for g, (cname, a) in enumerate(groups):
            for t, train in enumerate(train_sets):
                sel = _select(
                    results, channels=cname, aperture=a, test=test, train=train
                )
                if not sel:
                    continue
                s = scores[(sel[0]["cell"], test)]
                err = s["f_ex_median"] - s["f_ex_true"]
                rel = relation(train, test)
                bp = ax.boxplot(
                    [err],
                    positions=[g + (t - (len(train_sets) - 1) / 2) * width],
                    widths=width * 0.9,
                    patch_artist=True,
                    showfliers=False,
                    whis=(0, 100),
                )
                for patch in bp["boxes"]:
                    patch.set_facecolor(_COLORS[rel])
                    patch.set_alpha(0.6)
        ax.axhline(0, color="k", lw=0.7, ls=":")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{c}\n{aperture_label(a)} r_e" for c, a in groups], fontsize=7
        )
        ax.set_ylabel(f"error on {test}")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.6) for c in _COLORS.values()
    ]
    axes[0, 0].legend(handles, list(_COLORS), fontsize=7, ncol=3)
    fig.suptitle(
        "prediction errors across the grid (box: quartiles, whiskers: extremes)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_fex_mstar(
    results: _Results,
    scores: _Scores,
    highlight: list[tuple[str, float | None]],
    models: list[str],
) -> plt.Figure:
    """Recovered vs true f_ex-M* relation per train/test pair (001 fig. 10)."""
    fig, axes = plt.subplots(
        len(highlight),
        len(models),
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(4 * len(models), 3 * len(highlight)),
    )
    for i, (cname, a) in enumerate(highlight):
        for j, test in enumerate(models):
            ax = axes[i, j]
            sel = _select(results, channels=cname, aperture=a, test=test)
            if not sel:
                continue
            s0 = scores[(sel[0]["cell"], test)]
            lm = s0["log_mstar"]
            edges = np.linspace(
                np.floor(lm.min() * 4) / 4, np.ceil(lm.max() * 4) / 4, 9
            )
            c, med, _, _ = binned_band(lm, s0["f_ex_true"], edges)
            ax.plot(c, med, color="0.3", ls="--", lw=2, label="true (median)")
            for k, r in enumerate(sel):
                s = scores[(r["cell"], test)]
                _band(
                    ax,
                    s["log_mstar"],
                    s["f_ex_median"],
                    edges,
                    f"C{k}",
                    f"train {r['train']}",
                )
            ax.set_title(f"test {test} · {cname} · {aperture_label(a)} r_e", fontsize=9)
            if j == 0:
                ax.set_ylabel("f_ex")
            if i == len(highlight) - 1:
                ax.set_xlabel("log10 M*/Msun")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("f_ex–M* relation: recovered (median, 68%) vs true", fontsize=10)
    fig.tight_layout()
    return fig


def plot_coverage_grid(
    results: _Results, highlight: list[tuple[str, float | None]], train_sets: list[str]
) -> plt.Figure:
    """HPD coverage per training set, one curve per test model (001 fig. 11)."""
    fig, axes = plt.subplots(
        len(highlight),
        len(train_sets),
        squeeze=False,
        figsize=(3.3 * len(train_sets), 3.2 * len(highlight)),
    )
    for i, (cname, a) in enumerate(highlight):
        for j, train in enumerate(train_sets):
            ax = axes[i, j]
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            for k, r in enumerate(
                _select(results, channels=cname, aperture=a, train=train)
            ):
                cc = r["calibration"]["coverage_curve"]
                rel = relation(train, r["test"])
                ax.plot(
                    cc["levels"],
                    cc["empirical"],
                    color=f"C{k}",
                    lw=2,
                    ls="-" if rel != "cross" else "-.",
                    label=f"test {r['test']} ({rel}, {r['calibration']['verdict']})",
                )
            ax.set_title(
                f"train {train} · {cname} · {aperture_label(a)} r_e", fontsize=9
            )
            ax.set_xlabel("credible level")
            if j == 0:
                ax.set_ylabel("empirical coverage")
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("coverage: below the diagonal = overconfident", fontsize=10)
    fig.tight_layout()
    return fig


def plot_misspecification_roc(
    results: _Results,
    scores: _Scores,
    highlight: list[tuple[str, float | None]],
    models: list[str],
) -> plt.Figure:
    """ROC of the misspecification score: in-model (negative) vs other model."""
    from sbi_exsitu.evaluation.misspecification import roc_auc

    fig, axes = plt.subplots(
        1, len(highlight), squeeze=False, figsize=(3.6 * len(highlight), 3.4)
    )
    for i, (cname, a) in enumerate(highlight):
        ax = axes[0, i]
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for k, train in enumerate(models):
            cell = _select(results, channels=cname, aperture=a, train=train)
            if not cell:
                continue
            neg = scores[(cell[0]["cell"], train)]["misspec_score"]
            for test in models:
                if test == train:
                    continue
                pos = scores[(cell[0]["cell"], test)]["misspec_score"]
                thr = np.sort(np.r_[neg, pos])[::-1]
                fpr = [(neg >= t).mean() for t in thr]
                tpr = [(pos >= t).mean() for t in thr]
                ax.plot(
                    np.r_[0, fpr],
                    np.r_[0, tpr],
                    color=f"C{k}",
                    label=f"{train}→{test} AUC {roc_auc(neg, pos):.2f}",
                )
        ax.set_title(f"{cname} · {aperture_label(a)} r_e", fontsize=9)
        ax.set_xlabel("false-alarm rate")
        ax.set_ylabel("detection rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_all(
    results: _Results, scores: _Scores, section: Any, out_dir: Path
) -> list[Path]:
    """Every figure of the study into ``out_dir``; returns the PNG paths."""
    out_dir = Path(out_dir)
    models, channels = list(section.models), list(section.channels)
    apertures, train_sets = list(section.apertures), section.train_sets
    highlight = section.highlighted()
    paths = []
    for a in apertures:
        paths += save_figure(
            plot_errors_vs_fex(results, scores, a, channels, models),
            out_dir / f"errors_vs_fex_ap{aperture_label(a)}.png",
        )
    paths += save_figure(
        plot_error_boxes(results, scores, channels, apertures, models, train_sets),
        out_dir / "error_boxes.png",
    )
    paths += save_figure(
        plot_fex_mstar(results, scores, highlight, models), out_dir / "fex_mstar.png"
    )
    paths += save_figure(
        plot_coverage_grid(results, highlight, train_sets), out_dir / "coverage.png"
    )
    if len(models) > 1:
        paths += save_figure(
            plot_misspecification_roc(results, scores, highlight, models),
            out_dir / "misspecification_roc.png",
        )
    return paths
