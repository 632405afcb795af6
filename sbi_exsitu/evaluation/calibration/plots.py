"""Calibration figures: coverage, SBC ranks, TARP and PIT.

Every function takes plain arrays and returns a matplotlib ``Figure``; titles say
what a good result looks like. :func:`save_figure` writes PNG and PDF.

References:
    Hermans et al. (2021), arXiv:2110.06581 (expected coverage).
    Talts et al. (2018), arXiv:1804.06788 (SBC rank histograms).
    Säilynoja, Bürkner & Vehtari (2022), "Graphical test for discrete uniformity and
    its applications in goodness-of-fit evaluation and multiple sample comparison",
    Statistics and Computing 32:32 (simultaneous ECDF bands).
    Lemos et al. (2023), arXiv:2302.03026 (TARP).

Example:
    >>> import numpy as np
    >>> levels = np.linspace(0, 1, 11)
    >>> fig = plot_coverage(levels, levels**1.2, n_obs=500)
    >>> fig.axes[0].get_xlabel()
    'credible level α'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
from matplotlib.figure import Figure

from sbi_exsitu.evaluation.calibration.metrics import coverage_band

__all__ = ["plot_coverage", "plot_pit", "plot_sbc", "plot_tarp", "save_figure"]


def plot_coverage(
    levels: np.ndarray,
    coverage: np.ndarray,
    *,
    member_coverage: np.ndarray | None = None,
    n_obs: int | None = None,
    label: str = "posterior",
    note: str | None = None,
    band: np.ndarray | None = None,
    n_galaxies: int | None = None,
    tolerance: float | None = None,
) -> Figure:
    """Expected HPD coverage against credible level (like paper 001 fig. 11).

    Args:
        levels: ``(L,)`` credible levels.
        coverage: ``(L,)`` empirical coverage of the posterior (or ensemble).
        member_coverage: ``(K, L)`` per-member curves; ``K > 1`` draws their median
            and middle-68% band.
        n_obs: number of test observations (views); without ``band``, draws the
            95% pointwise binomial scatter expected of a calibrated posterior
            with that many independent observations.
        label: legend label of ``coverage``.
        note: text for the lower-right corner, e.g. the verdict.
        band: ``(2, L)`` the 95% pointwise scatter of a calibrated curve, e.g.
            the galaxy block bootstrap of :func:`~.verdict.judge`; drawn instead
            of the binomial one and labelled with ``n_galaxies``.
        n_galaxies: how many galaxies the ``band`` counts.
        tolerance: the verdict's tolerance; drawn as dotted lines ``α ± tol``.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], ls="--", c="k", lw=1, label="perfect calibration")
    if band is None and n_obs:
        half = 1.96 * np.sqrt(levels * (1 - levels) / n_obs)
        band = np.stack([levels - half, levels + half])
    if band is not None:
        # Views of one galaxy are correlated: say which n the band counts.
        if n_galaxies is not None and n_galaxies != n_obs:
            what = f"by galaxy, {n_galaxies} galaxies / {n_obs} views"
        else:
            what = f"n={n_obs or n_galaxies}"
        ax.fill_between(
            levels, band[0], band[1], color="0.85",
            label=f"95% scatter if calibrated ({what})",
        )  # fmt: skip
    if tolerance is not None:
        for sign in (-1, 1):
            ax.plot(levels, np.clip(levels + sign * tolerance, 0, 1), c="0.5",
                    ls=":", lw=1, label=f"verdict tolerance ±{tolerance:.3f}"
                    if sign > 0 else None)  # fmt: skip
    if member_coverage is not None and len(member_coverage) > 1:
        lo, med, hi = coverage_band(member_coverage)
        k = len(member_coverage)
        ax.fill_between(
            levels, lo, hi, color="C0", alpha=0.25, label=f"members 16–84% (K={k})"
        )
        ax.plot(levels, med, c="C0", ls=":", lw=1.5, label="members median")
    ax.plot(levels, coverage, c="C0", lw=2, label=label)
    ax.set(
        xlim=(0, 1), ylim=(0, 1), aspect="equal",
        xlabel="credible level α", ylabel="empirical coverage",
        title="Expected coverage (HPD regions)\ndiagonal = calibrated; "
        "below = overconfident,\nabove = conservative",
    )  # fmt: skip
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    if note:
        ax.text(0.97, 0.03, note, ha="right", va="bottom", fontsize=9,
                transform=ax.transAxes)  # fmt: skip
    fig.tight_layout()
    return fig


def plot_sbc(
    ranks: np.ndarray,
    num_samples: int,
    *,
    param_names: Sequence[str],
    pvalues: Sequence[float] | None = None,
    seed: int = 0,
    per_galaxy: bool = False,
) -> Figure:
    """SBC rank histograms (sbi) over rank-ECDF differences (arviz), per parameter.

    The bands assume independent ranks: pass one view per galaxy.

    Args:
        ranks: ``(n_obs, D)`` SBC ranks, independent observations.
        num_samples: ``S``, posterior draws per observation.
        param_names: the ``D`` parameter names.
        pvalues: KS p-values to print in each panel.
        seed: seeds arviz's simulated simultaneous bands.
        per_galaxy: the ranks are one view per galaxy (said in the titles).

    Returns:
        The figure, 2 rows by ``D`` columns.
    """
    import arviz as az  # slow imports, only needed for this figure
    from sbi.analysis import sbc_rank_plot

    ranks = np.asarray(ranks)
    n_obs, d = ranks.shape
    fig, axes = plt.subplots(2, d, figsize=(4.6 * d, 7.5), squeeze=False)
    sbc_rank_plot(
        ranks, num_samples, num_bins=max(n_obs // 20, 5), plot_type="hist",
        parameter_labels=list(param_names), ranks_labels=[None], fig=fig,
        ax=axes[0], show_ylabel=True,
    )  # fmt: skip
    u = scipy.stats.uniform(0, 1)
    pit = (ranks + 0.5) / (num_samples + 1)  # ranks on (0, 1), centred in their bins
    for j, name in enumerate(param_names):
        top, bottom = axes[0, j], axes[1, j]
        p = f" (KS p = {pvalues[j]:.2g})" if pvalues is not None else ""
        n = f"one view per galaxy, n = {n_obs}" if per_galaxy else f"n = {n_obs}"
        top.set_title(f"{name}: SBC ranks{p}\n{n}; flat, inside the grey band = good",
                      fontsize=10)  # fmt: skip
        top.set_ylabel("count")
        az.plot_ecdf(
            pit[:, j], cdf=u.cdf, rvs=u.rvs, eval_points=np.linspace(0, 1, 101),
            difference=True, confidence_bands="simulated", ci_prob=0.95,
            # A Generator, not an int: arviz 0.23 passes random_state to every
            # one of its 500 trials, so an int seed simulates the same sample
            # 500 times and the "95%" band comes out about half as wide.
            random_state=np.random.default_rng(seed), ax=bottom,
        )  # fmt: skip
        bottom.axhline(0, c="k", lw=0.8, ls="--")
        bottom.set(
            xlabel=f"normalised rank of {name}", ylabel="ECDF − uniform",
            title="rank ECDF − uniform, 95% simultaneous band\n"
            "inside = good; +/− too narrow, −/+ too wide,\none hump = biased",
        )  # fmt: skip
        bottom.title.set_fontsize(10)
    fig.tight_layout()
    return fig


def plot_tarp(
    levels: np.ndarray, ecp: np.ndarray, *, atc: float, ks_pvalue: float
) -> Figure:
    """TARP expected coverage probability against credibility (sbi's ``plot_tarp``).

    Args:
        levels: credibility levels.
        ecp: expected coverage probability.
        atc: sbi's area to curve (``< 0`` overconfident).
        ks_pvalue: sbi's KS p-value.

    Returns:
        The figure.
    """
    import torch
    from sbi.analysis import plot_tarp as sbi_plot_tarp

    fig, ax = sbi_plot_tarp(
        torch.as_tensor(np.asarray(ecp)), torch.as_tensor(np.asarray(levels)),
        title=f"TARP coverage (ATC = {atc:+.3f}, KS p = {ks_pvalue:.2g})\n"
        "diagonal = calibrated; misses some biases, trust SBC first",
    )  # fmt: skip
    ax.title.set_fontsize(10)
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("expected coverage probability")
    fig.tight_layout()
    return fig


def plot_pit(
    pit: np.ndarray,
    *,
    param_names: Sequence[str],
    bins: int = 20,
    per_galaxy: bool = False,
) -> Figure:
    """PIT histograms with the 99% band of a uniform histogram, per parameter.

    The band assumes independent values: pass one view per galaxy.

    Args:
        pit: ``(n_obs, D)`` PIT values, independent observations.
        param_names: the ``D`` parameter names.
        bins: histogram bins.
        per_galaxy: the values are one view per galaxy (said in the titles).

    Returns:
        The figure.
    """
    pit = np.asarray(pit)
    n_obs, d = pit.shape
    fig, axes = plt.subplots(1, d, figsize=(4.6 * d, 3.8), squeeze=False)
    # Counts per bin are Binomial(n, 1/bins) under uniformity.
    lo, hi = scipy.stats.binom(n_obs, 1 / bins).ppf([0.005, 0.995])
    edges = np.linspace(0, 1, bins + 1)
    n = f"one view per galaxy, n = {n_obs}" if per_galaxy else f"n = {n_obs}"
    for j, (ax, name) in enumerate(zip(axes[0], param_names, strict=True)):
        ax.axhspan(lo, hi, color="0.85", label="99% band if uniform")
        ax.axhline(n_obs / bins, c="k", lw=0.8, ls="--")
        ax.hist(pit[:, j], bins=edges, histtype="step", lw=1.5, color="C3")
        ax.set(
            xlim=(0, 1), xlabel=f"PIT of {name} (fraction of draws below truth)",
            ylabel="count",
            title=f"{name}: PIT histogram ({n}), flat = good\n∪ overconfident, "
            "∩ conservative, tilted = biased",
        )  # fmt: skip
        ax.title.set_fontsize(10)
        ax.legend(loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def save_figure(
    fig: Figure,
    out_dir: str | Path,
    stem: str,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.{png,pdf}`` atomically and return the paths."""
    from sbi_exsitu.figures import save_figure as _save

    return _save(fig, Path(out_dir) / stem, formats, dpi=dpi)
