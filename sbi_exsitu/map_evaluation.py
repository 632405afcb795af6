r"""Evaluation and calibration of the map-valued posterior.

:func:`evaluate_map_posterior` reproduces figs. 2 and 3 of Angeloudi et al.
(2024, arXiv:2410.24069): for test galaxies the mean of ``num_samples`` maps
drawn three ways -- *reconstruction* (latent from the encoder given the truth,
a lower bound on the error), *prior* (latent from N(0, I): the plain cVAE) and
*flow* (latent from the conditional flow: the posterior) -- the distribution
of per-pixel residuals (mean map - truth) with their means, the residual
against the true pixel ex-situ fraction, and panels of observation maps, true
map, posterior mean, posterior std and residual. Only unmasked pixels count.

:func:`map_calibration` measures per-pixel coverage: the fraction of unmasked
pixels whose true value lies in the central x% interval of the posterior
draws, as a curve over x; and the coverage of the implied scalar f_ex (both
against the f_ex implied by the *true* map with the same weights, which tests
the map posterior itself, and against the f_ex label, which also carries the
error of the mass weights; :mod:`sbi_exsitu.map_posterior`). Pixels whose true
value is exactly 0 or 1 sit on atoms of the posterior, where a central
interval that touches the atom covers the truth: that curve then errs on the
conservative side even for a calibrated posterior. So two more curves are
reported: the coverage over pixels with 0 < truth < 1 only, and the coverage
implied by the randomised PIT (Czado, Gneiting & Held 2009), which is exact for
distributions with atoms and is the calibration test to judge by.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(size=(20, 8, 8))
    >>> draws = rng.uniform(size=(20, 200, 8, 8))  # the right posterior: U(0, 1)
    >>> mask = np.ones((20, 8, 8), bool)
    >>> cov = pixel_coverage(draws, truth, mask, [0.68, 0.95])
    >>> bool(abs(cov[0] - 0.68) < 0.05 and abs(cov[1] - 0.95) < 0.03)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sbi_exsitu.atomic import atomic_write_json  # noqa: E402
from sbi_exsitu.dataset import MapDataset  # noqa: E402
from sbi_exsitu.fit_plots import save_figure  # noqa: E402

__all__ = [
    "COVERAGE_LEVELS",
    "central_coverage",
    "evaluate_map_posterior",
    "map_calibration",
    "pit_coverage",
    "pixel_coverage",
    "plot_map_coverage",
    "randomized_pit",
    "plot_map_panels",
    "plot_map_training",
    "plot_residual_distribution",
    "plot_residual_vs_truth",
]

METHODS = ("reconstruction", "prior", "flow")
_COLORS = {"reconstruction": "C2", "prior": "C1", "flow": "C0"}
COVERAGE_LEVELS = np.unique(np.r_[np.linspace(0.0, 1.0, 21), 0.68, 0.95].round(4))


def pixel_coverage(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[float] = COVERAGE_LEVELS,
) -> np.ndarray:
    """Fraction of unmasked pixels whose truth lies in each central interval.

    Args:
        samples: (n, S, H, W) posterior draws.
        truth: (n, H, W) true maps.
        mask: (n, H, W) pixels that count.
        levels: central interval probabilities x in [0, 1].

    Returns:
        (L,) coverage per level.
    """
    hits = _pixel_hits(samples, truth, mask, levels)
    return hits / max(int(mask.sum()), 1)


def randomized_pit(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Randomised PIT of every unmasked pixel: uniform iff calibrated, atoms or not.

    ``u = F(y-) + V (F(y) - F(y-))`` with ``V ~ U(0, 1)`` and ``F`` the empirical
    CDF of the draws (Czado, Gneiting & Held 2009, Biometrics 65:1254). For a
    pixel whose truth sits on an atom of the posterior (exactly 0 or 1) the plain
    PIT is not uniform; the randomised one is.

    Returns:
        (P,) values in [0, 1], one per unmasked pixel.
    """
    sel = mask.astype(bool)
    draws = samples.transpose(0, 2, 3, 1)[sel]
    t = truth[sel][:, None]
    below, at_or_below = (draws < t).mean(axis=1), (draws <= t).mean(axis=1)
    v = np.random.default_rng(seed).uniform(size=below.shape)
    return below + v * (at_or_below - below)


def pit_coverage(pit: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Coverage of central intervals implied by PIT values: P(|u - 1/2| <= x/2)."""
    dist = np.abs(np.asarray(pit) - 0.5)[:, None]
    return (dist <= np.asarray(levels, dtype=float)[None] / 2 + 1e-12).mean(axis=0)


def _pixel_hits(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    levels = np.asarray(levels, dtype=float)
    sel = mask.astype(bool)
    draws = np.sort(samples.transpose(0, 2, 3, 1)[sel], axis=-1)  # (P, S)
    t = truth[sel][:, None]
    lo = np.quantile(draws, (1 - levels) / 2, axis=-1).T  # (P, L)
    hi = np.quantile(draws, (1 + levels) / 2, axis=-1).T
    return ((t >= lo) & (t <= hi)).sum(axis=0).astype(float)


def central_coverage(
    samples: np.ndarray, truth: np.ndarray, levels: Sequence[float] = COVERAGE_LEVELS
) -> np.ndarray:
    """Coverage of central intervals of scalar draws (n, S) for truths (n,)."""
    levels = np.asarray(levels, dtype=float)
    lo = np.quantile(samples, (1 - levels) / 2, axis=1).T  # (n, L)
    hi = np.quantile(samples, (1 + levels) / 2, axis=1).T
    t = np.asarray(truth)[:, None]
    return ((t >= lo) & (t <= hi)).mean(axis=0)


def _at(levels: np.ndarray, values: np.ndarray, level: float) -> float:
    return float(values[int(np.argmin(np.abs(levels - level)))])


def map_calibration(
    post: Any,
    dataset: MapDataset,
    indices: np.ndarray,
    *,
    num_samples: int = 100,
    seed: int = 0,
    levels: Sequence[float] = COVERAGE_LEVELS,
    out_dir: str | Path | None = None,
    samples: np.ndarray | None = None,
    mass: np.ndarray | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Per-pixel and implied-f_ex coverage of a map posterior on labelled maps.

    Args:
        post: a :class:`~sbi_exsitu.map_posterior.MapPosterior`.
        dataset: maps with true ex-situ maps (and f_ex labels).
        indices: which observations.
        num_samples: draws per observation.
        seed: sampling seed.
        levels: central interval probabilities.
        out_dir: if given, write ``map_coverage.png`` and
            ``map_calibration.json`` there.
        samples: (len(indices), S, H, W) flow draws already made.
        mass: (len(indices), H, W) linear mass per pixel for the f_ex weights.
        batch_size: observations sampled at once (bounds memory).

    Returns:
        JSON-ready dict: ``levels``, ``pixel_coverage``,
        ``pixel_coverage_error_68``/``_95`` (coverage - nominal),
        ``pixel_max_coverage_error``, ``pixel_rpit_coverage`` (randomised PIT)
        and ``pixel_interior_coverage`` (0 < truth < 1) with their errors,
        ``fex_coverage`` (vs the true map's f_ex),
        ``fex_label_coverage``, their ``_error_68``/``_95``, ``n_obs``,
        ``n_pixels``, ``weighting``.
    """
    from sbi_exsitu.map_posterior import implied_fex

    post.check_render_config(dataset.render_config, where=str(dataset.path))
    indices = np.asarray(indices, dtype=np.int64)
    levels = np.asarray(levels, dtype=float)
    hits = np.zeros(len(levels))
    hits_inner = np.zeros(len(levels))
    n_pix = n_inner = 0
    pits = []
    f_draws, f_map, kinds = [], [], set()
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        x, y, m = dataset.maps(idx), dataset.exsitu(idx), dataset.mask(idx)
        if samples is None:
            s = post.sample(x, num_samples, seed=seed + start, mask=m)
        else:
            s = samples[start : start + len(idx)]
        hits += _pixel_hits(s, y, m, levels)
        inner = m & (y > 0) & (y < 1)
        hits_inner += _pixel_hits(s, y, inner, levels)
        n_pix += int(m.sum())
        n_inner += int(inner.sum())
        pits.append(randomized_pit(s, y, m, seed=seed + start))
        w, kind = post.mass_weights(
            x, m, mass=None if mass is None else mass[start : start + len(idx)]
        )
        kinds.add(kind)
        f_draws.append(implied_fex(s, w))
        f_map.append(implied_fex(y[:, None], w)[:, 0])
    cov = hits / max(n_pix, 1)
    cov_inner = hits_inner / max(n_inner, 1)
    cov_rpit = pit_coverage(np.concatenate(pits), levels)
    f_draws_all, f_true = np.concatenate(f_draws), np.concatenate(f_map)
    out: dict[str, Any] = {
        "levels": levels.tolist(),
        "pixel_coverage": cov.tolist(),
        "pixel_coverage_error_68": _at(levels, cov, 0.68) - 0.68,
        "pixel_coverage_error_95": _at(levels, cov, 0.95) - 0.95,
        "pixel_max_coverage_error": float(np.max(np.abs(cov - levels))),
        "pixel_rpit_coverage": cov_rpit.tolist(),
        "pixel_rpit_coverage_error_68": _at(levels, cov_rpit, 0.68) - 0.68,
        "pixel_rpit_coverage_error_95": _at(levels, cov_rpit, 0.95) - 0.95,
        "pixel_interior_coverage": cov_inner.tolist(),
        "pixel_interior_coverage_error_68": _at(levels, cov_inner, 0.68) - 0.68,
        "pixel_interior_fraction": n_inner / max(n_pix, 1),
        "n_obs": len(indices),
        "n_pixels": n_pix,
        "num_samples": int(f_draws_all.shape[1]),
        "weighting": "+".join(sorted(kinds)),
    }
    curves = {"fex": f_true}
    labels = dataset.labels["f_ex"][indices]
    if np.all(np.isfinite(labels)):
        curves["fex_label"] = labels
    for key, truth in curves.items():
        c = central_coverage(f_draws_all, truth, levels)
        out[f"{key}_coverage"] = c.tolist()
        out[f"{key}_coverage_error_68"] = _at(levels, c, 0.68) - 0.68
        out[f"{key}_coverage_error_95"] = _at(levels, c, 0.95) - 0.95
    if out_dir is not None:
        out_dir = Path(out_dir)
        fig = plot_map_coverage(out)
        save_figure(fig, out_dir / "map_coverage")
        atomic_write_json(out_dir / "map_calibration.json", out)
    return out


def evaluate_map_posterior(
    post: Any,
    dataset: MapDataset,
    indices: np.ndarray,
    out_dir: str | Path | None = None,
    *,
    num_samples: int = 100,
    seed: int = 0,
    n_panels: int = 4,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Residuals of the mean of ``num_samples`` maps drawn three ways (seed figs. 2-3).

    Args:
        post: a :class:`~sbi_exsitu.map_posterior.MapPosterior`.
        dataset: maps with true ex-situ maps.
        indices: test observations.
        out_dir: if given, write ``map_residuals.png``,
            ``map_residual_vs_truth.png`` and ``map_panels.png``.
        num_samples: draws per observation and method.
        seed: sampling seed.
        n_panels: galaxies in the panel figure.
        batch_size: observations sampled at once.

    Returns:
        ``{"metrics": {...}, "samples": {"flow": (n, S, H, W)}}``; metrics per
        method: ``mean_abs_residual`` (over all test pixels), ``mean_residual``,
        ``median_abs_residual``, ``galaxy_mean_abs_residual`` (mean over
        galaxies of the per-map mean); for the flow also ``mean_pixel_std`` and
        the implied-f_ex errors.
    """
    from sbi_exsitu.map_posterior import implied_fex

    post.check_render_config(dataset.render_config, where=str(dataset.path))
    indices = np.asarray(indices, dtype=np.int64)
    x, truth, mask = (
        dataset.maps(indices),
        dataset.exsitu(indices),
        dataset.mask(indices),
    )
    means, stds, flow_samples = {}, None, None
    for method in METHODS:
        out = np.empty_like(truth)
        sd = np.empty_like(truth)
        keep = [] if method == "flow" else None
        for start in range(0, len(indices), batch_size):
            sl = slice(start, start + batch_size)
            s = post.sample(
                x[sl],
                num_samples,
                seed=seed + start,
                mask=mask[sl],
                method=method,
                exsitu=truth[sl],
            )
            out[sl], sd[sl] = s.mean(axis=1), s.std(axis=1)
            if keep is not None:
                keep.append(s)
        means[method] = out
        if method == "flow":
            stds, flow_samples = sd, np.concatenate(keep)
    metrics: dict[str, Any] = {
        "n_obs": len(indices),
        "num_samples": num_samples,
        "n_pixels": int(mask.sum()),
    }
    residuals = {}
    for method, mean in means.items():
        r = (mean - truth)[mask]
        residuals[method] = r
        per_map = np.array(
            [np.abs(mean[i] - truth[i])[mask[i]].mean() for i in range(len(indices))]
        )
        metrics[method] = {
            "mean_abs_residual": float(np.abs(r).mean()),
            "mean_residual": float(r.mean()),
            "median_abs_residual": float(np.median(np.abs(r))),
            "galaxy_mean_abs_residual": float(per_map.mean()),
        }
    metrics["flow"]["mean_pixel_std"] = float(stds[mask].mean())
    w, kind = post.mass_weights(x, mask)
    f_post = implied_fex(flow_samples, w)
    f_med = np.median(f_post, axis=1)
    f_map = implied_fex(truth[:, None], w)[:, 0]
    fex: dict[str, Any] = {"weighting": kind, "vs_true_map": _errors(f_med, f_map)}
    labels = dataset.labels["f_ex"][indices]
    if np.all(np.isfinite(labels)):
        fex["vs_label"] = _errors(f_med, labels)
        fex["true_map_vs_label"] = _errors(f_map, labels)
    metrics["f_ex"] = fex
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_figure(plot_residual_distribution(residuals), out_dir / "map_residuals")
        save_figure(
            plot_residual_vs_truth(residuals, truth[mask]),
            out_dir / "map_residual_vs_truth",
        )
        pick = np.linspace(0, len(indices) - 1, min(n_panels, len(indices)))
        pick = pick.round().astype(int)
        save_figure(
            plot_map_panels(
                x[pick],
                truth[pick],
                means["flow"][pick],
                stds[pick],
                mask[pick],
                list(dataset.render_config.channels),
                f_ex=dataset.labels["f_ex"][indices[pick]],
            ),
            out_dir / "map_panels",
        )
    return {"metrics": metrics, "samples": {"flow": flow_samples}}


def _errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    d = np.asarray(pred) - np.asarray(truth)
    return {
        "bias": float(d.mean()),
        "scatter": float(d.std()),
        "rmse": float(np.sqrt(np.mean(d**2))),
        "mae": float(np.abs(d).mean()),
    }


# -- figures -----------------------------------------------------------------------
def plot_residual_distribution(residuals: dict[str, np.ndarray]) -> plt.Figure:
    """Histogram of per-pixel residuals per method, with mean |residual| lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-1, 1, 81)
    for method, r in residuals.items():
        c = _COLORS.get(method, None)
        mae = np.abs(r).mean()
        ax.hist(
            r,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.8,
            color=c,
            label=f"{method}: mean |r| = {mae:.3f}",
        )
        ax.axvline(r.mean(), color=c, ls=":", lw=1.2)
        ax.axvline(mae, color=c, ls="--", lw=1.2)
    ax.set(
        xlabel="pixel residual (posterior mean - true ex-situ fraction)",
        ylabel="density (log scale)",
        yscale="log",
        title="Per-pixel residuals (test set; dotted: mean, dashed: mean |r|)\n"
        "narrow and centred = good; flow should beat prior",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_residual_vs_truth(
    residuals: dict[str, np.ndarray], truth: np.ndarray, n_bins: int = 10
) -> plt.Figure:
    """Median and 16-84% band of the residual in bins of the true pixel fraction."""
    fig, ax = plt.subplots(figsize=(6, 4))
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(truth, edges) - 1, 0, n_bins - 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for method, r in residuals.items():
        q = np.array(
            [
                np.percentile(r[which == b], [16, 50, 84])
                if np.any(which == b)
                else [np.nan] * 3
                for b in range(n_bins)
            ]
        )
        c = _COLORS.get(method, None)
        ax.fill_between(centres, q[:, 0], q[:, 2], color=c, alpha=0.15)
        ax.plot(centres, q[:, 1], "o-", color=c, label=method)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(
        xlabel="true pixel ex-situ fraction",
        ylabel="residual (mean - truth)",
        ylim=(-1, 1),
        title="Residual vs true pixel ex-situ fraction "
        "(median, 16-84%)\nflat at 0 = unbiased",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_map_panels(
    maps: np.ndarray,
    truth: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    mask: np.ndarray,
    channels: Sequence[str],
    f_ex: np.ndarray | None = None,
) -> plt.Figure:
    """Rows of galaxies: observation maps | truth | posterior mean | std | residual."""
    n, c = maps.shape[:2]
    cols = c + 4
    fig, axes = plt.subplots(
        n, cols, figsize=(1.6 * cols, 1.7 * n + 0.4), squeeze=False
    )

    def show(ax: plt.Axes, img: np.ndarray, m: np.ndarray, **kw: Any) -> Any:
        im = ax.imshow(np.where(m, img, np.nan), origin="lower", **kw)
        ax.set_xticks([])
        ax.set_yticks([])
        return im

    last = {}
    for i in range(n):
        m = mask[i]
        for k in range(c):
            show(axes[i, k], maps[i, k], m, cmap="viridis")
        last["truth"] = show(axes[i, c], truth[i], m, cmap="magma", vmin=0, vmax=1)
        show(axes[i, c + 1], mean[i], m, cmap="magma", vmin=0, vmax=1)
        last["std"] = show(axes[i, c + 2], std[i], m, cmap="cividis", vmin=0, vmax=0.5)
        last["res"] = show(
            axes[i, c + 3], mean[i] - truth[i], m, cmap="RdBu_r", vmin=-0.5, vmax=0.5
        )
        label = f"#{i}" if f_ex is None else f"f_ex={f_ex[i]:.2f}"
        axes[i, 0].set_ylabel(label, fontsize=8)
    titles = [
        *channels,
        "true ex-situ",
        "posterior mean",
        "posterior std",
        "mean - truth",
    ]
    for k, t in enumerate(titles):
        axes[0, k].set_title(t, fontsize=8)
    for key, col in (("truth", c + 1), ("std", c + 2), ("res", c + 3)):
        fig.colorbar(
            last[key], ax=axes[:, col], shrink=0.6, location="bottom", pad=0.02
        )
    return fig


def plot_map_coverage(result: dict[str, Any]) -> plt.Figure:
    """Per-pixel and implied-f_ex coverage of central intervals vs nominal level."""
    levels = np.asarray(result["levels"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for ax, keys, title in (
        (
            axes[0],
            [
                ("pixel_coverage", "central interval, all pixels", "C0"),
                ("pixel_interior_coverage", "pixels with 0 < truth < 1", "C2"),
                ("pixel_rpit_coverage", "randomised PIT, all pixels", "C3"),
            ],
            f"per-pixel ({result['n_pixels']} pixels)",
        ),
        (
            axes[1],
            [
                ("fex_coverage", "vs f_ex of the true map", "C0"),
                ("fex_label_coverage", "vs f_ex label", "C3"),
            ],
            f"implied f_ex ({result['n_obs']} maps, weights: {result['weighting']})",
        ),
    ):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        if "f_ex" in title:
            half = 1.96 * np.sqrt(levels * (1 - levels) / result["n_obs"])
            ax.fill_between(
                levels,
                levels - half,
                levels + half,
                color="0.85",
                label="95% scatter if calibrated",
            )
        for key, label, color in keys:
            if key in result:
                ax.plot(levels, result[key], color=color, lw=2, label=label)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            aspect="equal",
            xlabel="central interval probability",
            ylabel="empirical coverage",
            title=title + "\nbelow diagonal = overconfident",
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    e68, e95 = result["pixel_coverage_error_68"], result["pixel_coverage_error_95"]
    axes[0].text(
        0.97,
        0.03,
        f"central 68%: {e68:+.3f}, 95%: {e95:+.3f}\n"
        f"randomised PIT 68%: {result.get('pixel_rpit_coverage_error_68', 0):+.3f}",
        ha="right",
        va="bottom",
        transform=axes[0].transAxes,
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_map_training(
    hist_cvae: dict[str, Any], hist_flow: dict[str, Any]
) -> plt.Figure:
    """Training and validation losses of the two phases."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, h, title in (
        (axes[0], hist_cvae, "cVAE: -ELBO per pixel"),
        (axes[1], hist_flow, "latent flow: -log q(z|x)"),
    ):
        ax.plot(h["train_loss"], label="train")
        ax.plot(h["val_loss"], label="validation", lw=2)
        if h.get("best_epoch", -1) >= 0:
            ax.axvline(h["best_epoch"], color="k", ls=":", lw=1)
        ax.set(xlabel="epoch", title=title)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
