r"""Residuals and figures of the map-valued posterior.

:func:`evaluate_map_posterior` reproduces figs. 2 and 3 of Angeloudi et al.
(2024, arXiv:2410.24069): for test galaxies the mean of ``num_samples`` maps
drawn three ways -- *reconstruction* (latent from the encoder given the truth,
a lower bound on the error), *prior* (latent from N(0, I): the plain cVAE) and
*flow* (latent from the conditional flow: the posterior) -- the distribution
of per-pixel residuals (mean map - truth) with their means, the residual
against the true pixel ex-situ fraction, and panels of observation maps, true
map, posterior mean, posterior std and residual. Only unmasked pixels count.

:func:`sbi_exsitu.evaluation.map_coverage.map_calibration` measures the calibration.

"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.figures import save_figure
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "evaluate_map_posterior",
    "plot_map_panels",
    "plot_map_training",
    "plot_residual_distribution",
    "plot_residual_vs_truth",
]

METHODS = ("reconstruction", "prior", "flow")
_COLORS = {"reconstruction": "C2", "prior": "C1", "flow": "C0"}


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
        post: a :class:`~sbi_exsitu.posteriors.map.posterior.MapPosterior`.
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
    from sbi_exsitu.data.exsitu_fraction import implied_fex

    post.check_render_config(dataset.render_config, where=str(dataset.path))
    indices = np.asarray(indices, dtype=np.int64)
    x, truth, mask = (
        dataset.maps(indices),
        dataset.exsitu(indices),
        dataset.mask(indices),
    )
    means, stds, flow_samples = {}, None, None
    # A flow-matching posterior has no latent: it draws with "flow" only.
    for method in getattr(post, "methods", METHODS):
        out = np.empty_like(truth)
        sd = np.empty_like(truth)
        keep = [] if method == "flow" else None
        for start in range(0, len(indices), batch_size):
            sl = slice(start, start + batch_size)
            s = post.sample(
                x[sl],
                num_samples,
                seed=derive_seed(seed, "batch", start),
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
        # With the outside-mask head: the whole galaxy's f_ex, like the label.
        galaxy = getattr(post, "galaxy_fex", lambda *a, **k: None)(
            x, mask, flow_samples, seed=seed
        )
        if galaxy is not None:
            fex["galaxy_vs_label"] = _errors(np.median(galaxy, axis=1), labels)
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
