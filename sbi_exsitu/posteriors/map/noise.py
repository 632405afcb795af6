r"""Shared pixel noise of the map posterior: a one-factor Gaussian copula.

The decoder of :mod:`sbi_exsitu.posteriors.map.cvae` gives every pixel a censored
Gaussian
:math:`y_p = \mathrm{clip}(\mu_p + \sigma_p \epsilon_p, 0, 1)`. With
:math:`\epsilon_p` drawn independently per pixel, the implied f_ex of a draw (a
mass-weighted mean over hundreds of pixels) averages the pixel noise away, while
the real errors of a map given its latent are coherent: on the validation split
of ``configs/map-quickstart.toml`` the normal scores :math:`(y_p - \mu_p) /
\sigma_p` given the encoder's latent correlate by 0.12 at 1 px and still 0.05 at
8 px, and the mass-weighted sum of the pixel errors has 12x the variance that
independent noise predicts. A draw's noise is therefore

.. math:: \epsilon_p = \sqrt{\rho}\, g + \sqrt{1 - \rho}\, w_p, \qquad
          g, w_p \sim \mathcal{N}(0, 1),

one shared factor :math:`g` per draw. Every :math:`\epsilon_p` stays
:math:`\mathcal{N}(0, 1)`, so each pixel keeps its censored-Gaussian marginal
and the per-pixel calibration does not change; only the dependence between
pixels does.

Why :math:`\rho` is fitted the way it is: the per-pixel likelihood the cVAE is
trained on does not depend on it, and maximum likelihood of a copula on the
normal scores of the interior pixels (one shared factor, or a stationary
Gaussian-kernel correlation) over-corrects the implied f_ex threefold, because
the dependence is strongest in the faint outskirts that carry little mass. So
:func:`fit_shared_noise` picks :math:`\rho` on the *validation* split, after
training, by the mean CRPS of the implied f_ex of flow draws against the f_ex of
the true map: a proper scoring rule on the one quantity the dependence matters
for, in the spirit of temperature scaling (Guo et al. 2017). The test split is
not touched.

References:
    | On Calibration of Modern Neural Networks (Guo et al., 2017)
    | https://arxiv.org/abs/1706.04599
    | Strictly Proper Scoring Rules, Prediction, and Estimation
      (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

Example:
    >>> import torch
    >>> eps = shared_normal((2000, 8, 8), 0.3, torch.Generator().manual_seed(0))
    >>> round(eps.std().item(), 1), eps.shape
    (1.0, torch.Size([2000, 8, 8]))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sbi_exsitu.posteriors.map.pixel_noise import tail_noise
from sbi_exsitu.seeding import derive_seed

__all__ = ["RHO_GRID", "crps_ensemble", "fit_shared_noise", "shared_normal"]

# 0 (independent pixels) and a log grid up to 0.95 (a map that moves as one):
# the CRPS is flat near its optimum, so a grid does as well as a line search.
RHO_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 0.95, 25)])


def shared_normal(
    shape: tuple[int, ...],
    rho: float,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    r"""Unit-variance noise (B, H, W) with correlation :math:`\rho` between pixels.

    Args:
        shape: (B, H, W); one shared factor per leading index.
        rho: 0 <= rho < 1; 0 gives independent pixels.
        generator: torch RNG.
    """
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"shared noise rho is {rho}, expected 0 <= rho < 1")
    w = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if rho == 0.0:
        return w
    g = torch.randn(
        (shape[0],) + (1,) * (len(shape) - 1),
        generator=generator,
        dtype=dtype,
        device=device,
    )
    return _mix(g, w, rho)


def _mix(shared: Any, white: Any, rho: float) -> Any:
    """sqrt(rho) g + sqrt(1 - rho) w: unit variance from unit-variance parts."""
    return rho**0.5 * shared + (1.0 - rho) ** 0.5 * white


def crps_ensemble(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    r"""CRPS of (n, S) ensemble draws for (n,) truths, lower is better.

    :math:`\mathrm{E}|X - y| - \tfrac12 \mathrm{E}|X - X'|` with the
    pairwise term from the sorted draws in O(S log S) (Gneiting & Raftery
    2007). Written here because it is three lines and no dependency we use has
    it.

    Example:
        >>> x = np.array([[0.0, 1.0]])
        >>> crps_ensemble(x, np.array([0.0])).round(3)
        array([0.25])
    """
    x = np.sort(np.asarray(draws, dtype=np.float64), axis=1)
    s = x.shape[1]
    term1 = np.abs(x - np.asarray(truth, dtype=np.float64)[:, None]).mean(axis=1)
    # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - S + 1) x_(i) for sorted x, i from 0.
    k = 2.0 * np.arange(s) - s + 1.0
    term2 = 2.0 * (x * k).sum(axis=1) / s**2
    return term1 - 0.5 * term2


def fit_shared_noise(
    post: Any,
    dataset: Any,
    indices: np.ndarray,
    *,
    num_samples: int = 100,
    seed: int = 0,
    grid: np.ndarray = RHO_GRID,
    batch_size: int = 32,
) -> tuple[float, dict[str, Any]]:
    """The shared-noise weight rho with the best implied-f_ex CRPS on ``indices``.

    Every grid value reuses the same latents, (mu, sigma) maps and normal
    draws (common random numbers), so the comparison is free of sampling noise
    between grid values.

    Args:
        post: a :class:`~sbi_exsitu.posteriors.map.posterior.MapPosterior`.
        dataset: a :class:`~sbi_exsitu.data.dataset.MapDataset` with ex-situ maps.
        indices: observations to fit on (the validation split).
        num_samples: flow draws per observation.
        seed: sampling seed.
        grid: candidate values of rho.
        batch_size: observations per vectorised call.

    Returns:
        The best rho and a JSON-ready table: ``grid``, ``crps`` (mean over
        observations) and ``coverage_68`` of the implied f_ex per grid value.
    """
    from sbi_exsitu.data.exsitu_fraction import implied_fex
    from sbi_exsitu.evaluation.map_coverage import central_coverage

    indices = np.asarray(indices, dtype=np.int64)
    grid = np.asarray(grid, dtype=float)
    f_draws = [[] for _ in grid]
    f_true = []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        x, y, m = dataset.maps(idx), dataset.exsitu(idx), dataset.mask(idx)
        mu, sigma = post.pixel_likelihood(
            x, num_samples, mask=m, seed=derive_seed(seed, "batch", start)
        )
        w, _ = post.mass_weights(x, m)
        f_true.append(implied_fex(y[:, None], w)[:, 0])
        g = torch.randn(mu.shape[:2] + (1, 1), generator=gen).numpy()
        white = torch.randn(mu.shape, generator=gen).numpy()
        for k, rho in enumerate(grid):
            # The pixel-noise calibration (scale, tail) acts on the mixed noise.
            eps = tail_noise(
                _mix(g, white, rho),
                getattr(post, "noise_scale", 1.0),
                getattr(post, "noise_tail", 1.0),
            )
            draws = np.clip(mu + sigma * eps, 0.0, 1.0) * m[:, None]
            f_draws[k].append(implied_fex(draws, w))
    truth = np.concatenate(f_true)
    crps, cov68 = [], []
    for k in range(len(grid)):
        f = np.concatenate(f_draws[k])
        crps.append(float(crps_ensemble(f, truth).mean()))
        cov68.append(float(central_coverage(f, truth, [0.68])[0]))
    best = int(np.argmin(crps))
    table = {
        "grid": grid.tolist(),
        "crps": crps,
        "coverage_68": cov68,
        "n_obs": len(indices),
        "num_samples": num_samples,
    }
    return float(grid[best]), table
