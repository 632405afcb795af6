"""Helpers of the misspecification, false-alarm and alignment benchmarks:
the PSF-blurred target, one view per galaxy and its false-alarm rate, the
logistic domain classifier, the ROC figure, and the bias / scatter / RMSE /
galaxy-aware coverage error of a posterior on a split.

Loaded by path (:func:`load`): the benchmark scripts keep ``benchmarks/`` off
``sys.path`` (``benchmarks/embeddings.py`` would shadow the package).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Blurred",
    "draw_quality",
    "first_views",
    "load",
    "logistic",
    "one_view_per_galaxy",
    "per_galaxy_far",
    "plot_roc",
    "psf_blur",
    "split_quality",
]

#: Gaussian PSF sigma (pixels at 32 px) of the "ideal->psf" case.
PSF_SIGMA_PX = 1.0


def load(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module, by path."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def psf_blur(maps: np.ndarray, sigma: float = PSF_SIGMA_PX) -> np.ndarray:
    """Maps seen through a Gaussian PSF of ``sigma`` pixels, inside their mask.

    Normalised convolution (blur(m * mask) / blur(mask)) so the blur does not drag
    the edge of the galaxy towards the zeros outside the mask: the milder, harder
    to detect shift. The mask is where any channel is non-zero (masked pixels are
    exactly 0 in every channel, see ``data.render.preprocess``).
    """
    from scipy import ndimage

    maps = np.asarray(maps, np.float64)
    mask = np.any(maps != 0, axis=1, keepdims=True).astype(np.float64)
    blur = (0, 0, sigma, sigma)
    norm = ndimage.gaussian_filter(mask, blur, mode="constant")
    out = ndimage.gaussian_filter(maps * mask, blur, mode="constant")
    out = np.where(mask > 0, out / np.maximum(norm, 1e-12), 0.0)
    return out.astype(np.float32)


class Blurred:
    """A dataset whose maps are seen through :func:`psf_blur` (in memory)."""

    def __init__(self, ds: Any, sigma: float = PSF_SIGMA_PX):
        self.ds, self.sigma = ds, sigma
        self.labels = ds.labels

    def __len__(self) -> int:
        return len(self.ds)

    def splits(self, seed: int = 0) -> dict[str, np.ndarray]:
        return self.ds.splits(seed=seed)

    def maps(self, indices: Any) -> np.ndarray:
        return psf_blur(self.ds.maps(indices), self.sigma)


def logistic(x0: np.ndarray, x1: np.ndarray, seed: int) -> Any:
    """A logistic domain classifier (torch, L2-regularised): returns a scorer."""
    import torch

    x = torch.as_tensor(np.r_[x0, x1], dtype=torch.float32)
    y = torch.as_tensor(np.r_[np.zeros(len(x0)), np.ones(len(x1))], dtype=torch.float32)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)
    w = torch.where(y > 0, len(x0) / len(x1), 1.0)  # balance the classes

    def closure():
        opt.zero_grad()
        logit = lin((x - mu) / sd).squeeze(1)
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logit, y, weight=w)
            + 1e-3 * lin.weight.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)

    def score(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            zt = (torch.as_tensor(z, dtype=torch.float32) - mu) / sd
            return lin(zt).squeeze(1).double().numpy()

    return score


def one_view_per_galaxy(ds: Any) -> np.ndarray:
    """Index of the first view of every galaxy (views of one galaxy correlate)."""
    _, first = np.unique(ds.labels["galaxy_id"], return_index=True)
    return np.sort(first)


def first_views(ds: Any, idx: np.ndarray) -> np.ndarray:
    """Positions in ``idx`` of the first view of each of its galaxies."""
    _, first = np.unique(ds.labels["galaxy_id"][idx], return_index=True)
    return np.sort(first)


def per_galaxy_far(flags: np.ndarray) -> dict[str, Any]:
    """False-alarm rate of the flags of one view per fresh galaxy
    (:func:`one_view_per_galaxy`), with a binomial 95 % interval (Clopper-Pearson,
    ``scipy.stats.binomtest``): n counts galaxies, not views."""
    from scipy.stats import binomtest

    k, n = int(np.sum(flags)), len(flags)
    ci = binomtest(k, n).proportion_ci(0.95)
    return {
        "far_galaxies": round(k / n, 4),
        "far_galaxies_ci95": [round(ci.low, 4), round(ci.high, 4)],
        "n_galaxies_fresh": n,
    }


def plot_roc(curves: dict, path: Path, title: str) -> None:
    """ROC curves of the detectors of one case (docs/crosstest.md)."""
    import matplotlib.pyplot as plt

    from sbi_exsitu.figures import save_figure

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, (neg, pos) in curves.items():
        thr = np.unique(np.r_[neg, pos])[::-1]
        tpr = np.r_[0.0, [(pos >= t).mean() for t in thr]]
        fpr = np.r_[0.0, [(neg >= t).mean() for t in thr]]
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.axvline(0.05, color="grey", lw=0.6)
    ax.set(xlabel="false-alarm rate (in-model maps)", ylabel="detection rate",
           title=title)  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def draw_quality(
    samples: np.ndarray,
    log_q_samples: np.ndarray,
    log_q_truth: np.ndarray,
    labels: dict[str, np.ndarray],
    seed: int,
) -> dict[str, float]:
    """Bias, scatter, RMSE of the posterior median and the max coverage error.

    ``samples`` are (n, draws, 1) f_ex draws, the log-probabilities those of
    the first 100 draws and of the truth; ``labels`` hold ``f_ex``,
    ``galaxy_id`` and ``log_mstar`` of the n maps. The coverage error counts
    galaxies (views of one galaxy are grouped), as the verdict does.
    """
    from sbi_exsitu.evaluation.accuracy import evaluate
    from sbi_exsitu.evaluation.calibration import CalibrationReport

    truth = np.asarray(labels["f_ex"])[:, None]
    report = CalibrationReport.from_arrays(
        samples, truth, log_q_samples, log_q_truth, param_names=["f_ex"],
        seed=seed, groups=labels["galaxy_id"],
    )  # fmt: skip
    median = np.median(samples[:, :, 0], axis=1)
    m = evaluate(median, truth[:, 0], labels["log_mstar"])["overall"]
    out = {k: float(m[k]) for k in ("bias", "scatter", "rmse")}
    out["coverage_error"] = float(report.to_dict()["max_abs_coverage_error"])
    return out


def split_quality(posterior: Any, ds: Any, split: str, seed: int) -> dict[str, float]:
    """:func:`draw_quality` of 500 draws per map on one split of ``ds``
    (``ds.splits(seed=0)``), rounded to 4 decimals."""
    idx = ds.splits(seed=0)[split]
    maps = ds.maps(idx)
    labels = {k: ds.labels[k][idx] for k in ("f_ex", "galaxy_id", "log_mstar")}
    samples = posterior.sample(maps, 500, seed=seed)
    q = draw_quality(
        samples,
        posterior.log_prob(samples[:, :100], maps),
        posterior.log_prob(labels["f_ex"][:, None], maps),
        labels,
        seed,
    )
    return {k: round(v, 4) for k, v in q.items()}
