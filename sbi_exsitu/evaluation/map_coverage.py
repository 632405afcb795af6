r"""Calibration of the map-valued posterior: per-pixel and implied-f_ex coverage.

:func:`map_calibration` measures per-pixel coverage: the fraction of unmasked
pixels whose true value lies in the central x% interval of the posterior,
as a curve over x; and the coverage of the implied scalar f_ex (both
against the f_ex implied by the *true* map with the same weights, which tests
the map posterior itself, and against the f_ex label, which also carries what
lies outside the mask; :mod:`sbi_exsitu.data.exsitu_fraction`).

Decision -- the central interval of a posterior with atoms. About half of the
unmasked pixels are exactly 0 or 1, and the posterior of such a pixel has an
atom there. The central x% interval is the set of values whose CDF lies in
[(1 - x)/2, (1 + x)/2]; at an atom the CDF jumps from F(y-) to F(y) and the
band can cut through the jump. :func:`pixel_coverage` then counts the pixel by
the share of the atom inside the band, |[F(y-), F(y)] ∩ band| / (F(y) - F(y-)):
the expected coverage of the randomised PIT (Czado, Gneiting & Held 2009),
nominal for a calibrated posterior with or without atoms, and the usual
definition wherever the posterior is continuous. The closed interval
[q_lo, q_hi] of the draws (:func:`closed_interval_coverage`) counts a truth on
the atom as covered whenever the interval touches it and so over-covers even a
perfect posterior (+0.13 at 68% on ``map-quickstart``); it is reported as
``pixel_closed_coverage``, with ``pixel_interior_coverage`` over 0 < truth < 1.

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

import matplotlib.pyplot as plt
import numpy as np

from sbi_exsitu.atomic import atomic_write_json, check_output_path
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.figures import save_figure
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "COVERAGE_LEVELS",
    "central_coverage",
    "closed_interval_coverage",
    "coverage_from_cdf",
    "map_calibration",
    "pit_coverage",
    "pixel_coverage",
    "plot_map_coverage",
    "randomized_pit",
]

COVERAGE_LEVELS = np.unique(np.r_[np.linspace(0.0, 1.0, 21), 0.68, 0.95].round(4))


def pixel_coverage(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[float] = COVERAGE_LEVELS,
) -> np.ndarray:
    """Fraction of unmasked pixels whose truth lies in each central interval.

    An atom of the draws at the truth counts by its share inside the central
    band of probability (module docstring): nominal for a calibrated
    posterior, atoms or not.

    Args:
        samples: (n, S, H, W) posterior draws.
        truth: (n, H, W) true maps.
        mask: (n, H, W) pixels that count.
        levels: central interval probabilities x in [0, 1].

    Returns:
        (L,) coverage per level.
    """
    return _pixel_hits(samples, truth, mask, levels) / max(int(mask.sum()), 1)


def closed_interval_coverage(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[float] = COVERAGE_LEVELS,
) -> np.ndarray:
    """Like :func:`pixel_coverage` with the closed interval [q_lo, q_hi] of the
    draws: a truth on an atom is covered whenever the interval touches it."""
    hits = _closed_hits(samples, truth, mask, levels)
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
    below, at_or_below = _cdf_at_truth(samples, truth, mask)
    v = np.random.default_rng(seed).uniform(size=below.shape)
    return below + v * (at_or_below - below)


def pit_coverage(pit: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Coverage of central intervals implied by PIT values: P(|u - 1/2| <= x/2)."""
    dist = np.abs(np.asarray(pit) - 0.5)[:, None]
    return (dist <= np.asarray(levels, dtype=float)[None] / 2 + 1e-12).mean(axis=0)


def _cdf_at_truth(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """F(y-) and F(y) of the draws' empirical CDF at the truth, per pixel."""
    sel = mask.astype(bool)
    draws = samples.transpose(0, 2, 3, 1)[sel]  # (P, S)
    t = truth[sel][:, None]
    return (draws < t).mean(axis=1), (draws <= t).mean(axis=1)


def _cdf_hits(
    below: np.ndarray, upto: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    """(P, L) share of each pixel's atom (or point) inside each central band."""
    levels = np.asarray(levels, dtype=float)
    below, upto = below[:, None], upto[:, None]
    lo, hi = (1 - levels[None]) / 2, (1 + levels[None]) / 2
    jump = upto - below
    share = np.clip(np.minimum(hi, upto) - np.maximum(lo, below), 0, None) / (
        np.where(jump > 0, jump, 1.0)
    )
    inside = (below >= lo - 1e-12) & (below <= hi + 1e-12)
    return np.where(jump > 0, share, inside).astype(float)


def coverage_from_cdf(
    below: np.ndarray,
    upto: np.ndarray,
    levels: Sequence[float],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(L,) coverage from each pixel's predictive F(y-) and F(y) at the truth.

    The same counting as :func:`pixel_coverage` (an atom counts by its share
    inside the band), for a predictive CDF known in closed form; ``weights``
    per pixel (e.g. 1 / views of the galaxy) give a weighted mean.
    """
    hits = _cdf_hits(np.asarray(below), np.asarray(upto), levels)
    w = np.ones(len(hits)) if weights is None else np.asarray(weights, float)
    return (w[:, None] * hits).sum(axis=0) / max(float(w.sum()), 1e-300)


def _pixel_hits(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    below, upto = _cdf_at_truth(samples, truth, mask)
    return _cdf_hits(below, upto, levels).sum(axis=0)


def _closed_hits(
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


def _error(levels: np.ndarray, coverage: np.ndarray, level: float) -> float:
    """Coverage minus nominal at the grid level nearest ``level``."""
    k = int(np.argmin(np.abs(levels - level)))
    return float(coverage[k]) - level


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
    joint: bool = True,
) -> dict[str, Any]:
    """Per-pixel and implied-f_ex coverage of a map posterior on labelled maps.

    Args:
        post: a :class:`~sbi_exsitu.posteriors.map.posterior.MapPosterior`.
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
        joint: also the joint, galaxy-aware tests of
            :func:`sbi_exsitu.evaluation.map_joint.joint_map_calibration` (TARP
            over whole maps, SBC on the implied f_ex), under ``"joint"``; they
            keep every draw in memory.

    Returns:
        JSON-ready dict: ``levels``, ``pixel_coverage``,
        ``pixel_coverage_error_68``/``_95`` (coverage - nominal),
        ``pixel_max_coverage_error``, ``pixel_closed_coverage`` (closed
        intervals of the draws, over-covering at atoms) and
        ``pixel_interior_coverage`` (0 < truth < 1) with their errors,
        ``fex_coverage`` (vs the true map's f_ex),
        ``fex_label_coverage`` (and ``fex_galaxy_label_coverage``: the
        whole-galaxy f_ex of a posterior with the outside-mask head against
        the label), their ``_error_68``/``_95``, ``n_obs``,
        ``n_pixels``, ``weighting``.
    """
    from sbi_exsitu.data.exsitu_fraction import implied_fex

    if out_dir is not None:  # before the sampling, not after it
        check_output_path(out_dir, kind="dir", inputs=[getattr(dataset, "path", None)])
    post.check_render_config(dataset.render_config, where=str(dataset.path))
    indices = np.asarray(indices, dtype=np.int64)
    levels = np.asarray(levels, dtype=float)
    hits = np.zeros(len(levels))
    hits_inner = np.zeros(len(levels))
    hits_closed = np.zeros(len(levels))
    n_pix = n_inner = 0
    f_draws, f_map, kinds, kept, g_draws = [], [], set(), [], []
    # A posterior with the outside-mask head also gives the whole galaxy's f_ex.
    galaxy_fex = getattr(post, "galaxy_fex", lambda *a, **k: None)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        x, y, m = dataset.maps(idx), dataset.exsitu(idx), dataset.mask(idx)
        if samples is None:
            s = post.sample(
                x, num_samples, seed=derive_seed(seed, "batch", start), mask=m
            )
        else:
            s = samples[start : start + len(idx)]
        if joint:
            kept.append(s)
        hits += _pixel_hits(s, y, m, levels)
        inner = m & (y > 0) & (y < 1)
        hits_inner += _pixel_hits(s, y, inner, levels)
        n_pix += int(m.sum())
        n_inner += int(inner.sum())
        hits_closed += _closed_hits(s, y, m, levels)
        w, kind = post.mass_weights(
            x, m, mass=None if mass is None else mass[start : start + len(idx)]
        )
        kinds.add(kind)
        f_draws.append(implied_fex(s, w))
        f_map.append(implied_fex(y[:, None], w)[:, 0])
        g = galaxy_fex(x, m, s, seed=derive_seed(seed, "outside", start))
        if g is not None:
            g_draws.append(g)
    cov = hits / max(n_pix, 1)
    cov_inner = hits_inner / max(n_inner, 1)
    cov_closed = hits_closed / max(n_pix, 1)
    f_draws_all, f_true = np.concatenate(f_draws), np.concatenate(f_map)
    out: dict[str, Any] = {
        "levels": levels.tolist(),
        "pixel_coverage": cov.tolist(),
        "pixel_coverage_error_68": _error(levels, cov, 0.68),
        "pixel_coverage_error_95": _error(levels, cov, 0.95),
        "pixel_max_coverage_error": float(np.max(np.abs(cov - levels))),
        "pixel_closed_coverage": cov_closed.tolist(),
        "pixel_closed_coverage_error_68": _error(levels, cov_closed, 0.68),
        "pixel_closed_coverage_error_95": _error(levels, cov_closed, 0.95),
        "pixel_interior_coverage": cov_inner.tolist(),
        "pixel_interior_coverage_error_68": _error(levels, cov_inner, 0.68),
        "pixel_interior_fraction": n_inner / max(n_pix, 1),
        "n_obs": len(indices),
        "n_pixels": n_pix,
        "num_samples": int(f_draws_all.shape[1]),
        "weighting": "+".join(sorted(kinds)),
    }
    labels = dataset.labels["f_ex"][indices]
    curves = {"fex": (f_draws_all, f_true)}
    if np.all(np.isfinite(labels)):
        curves["fex_label"] = (f_draws_all, labels)
        if g_draws:
            curves["fex_galaxy_label"] = (np.concatenate(g_draws), labels)
    for key, (draws, truth) in curves.items():
        c = central_coverage(draws, truth, levels)
        out[f"{key}_coverage"] = c.tolist()
        out[f"{key}_coverage_error_68"] = _error(levels, c, 0.68)
        out[f"{key}_coverage_error_95"] = _error(levels, c, 0.95)
    if joint:
        from sbi_exsitu.evaluation.map_joint import joint_map_calibration

        out["joint"] = joint_map_calibration(
            np.concatenate(kept),
            dataset.exsitu(indices),
            dataset.mask(indices),
            f_draws_all,
            f_true,
            dataset.labels["galaxy_id"][indices],
            seed=derive_seed(seed, "joint"),
        )
    if out_dir is not None:
        out_dir = Path(out_dir)
        fig = plot_map_coverage(out)
        save_figure(fig, out_dir / "map_coverage")
        atomic_write_json(out_dir / "map_calibration.json", out)
    return out


def plot_map_coverage(result: dict[str, Any]) -> plt.Figure:
    """Per-pixel and implied-f_ex coverage of central intervals vs nominal level."""
    levels = np.asarray(result["levels"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for ax, keys, title in (
        (
            axes[0],
            [
                ("pixel_coverage", "all pixels (atoms shared)", "C0"),
                ("pixel_interior_coverage", "pixels with 0 < truth < 1", "C2"),
                ("pixel_closed_coverage", "closed intervals of draws", "C3"),
            ],
            f"per-pixel ({result['n_pixels']} pixels)",
        ),
        (
            axes[1],
            [
                ("fex_coverage", "vs f_ex of the true map", "C0"),
                ("fex_label_coverage", "in-mask f_ex vs f_ex label", "C3"),
                ("fex_galaxy_label_coverage", "galaxy f_ex vs f_ex label", "C1"),
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
        f"68%: {e68:+.3f}, 95%: {e95:+.3f}\n"
        "closed intervals 68%: "
        f"{result.get('pixel_closed_coverage_error_68', 0):+.3f}",
        ha="right",
        va="bottom",
        transform=axes[0].transAxes,
        fontsize=9,
    )
    fig.tight_layout()
    return fig
