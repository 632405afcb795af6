"""Equal-weight Gaussian mixtures, one per observation: the MDN-CNN's posterior.

The MDN-CNN ensemble (:mod:`sbi_exsitu.baselines.mdn_cnn`) mixes K one-Gaussian members
with equal weights; this holds the (n, K) means and scales and gives moments,
densities, CDFs, draws and modes, vectorised over observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

__all__ = ["GaussianMixture"]


@dataclass(frozen=True)
class GaussianMixture:
    r"""Equal-weight mixtures of K Normals, one mixture per observation.

    Attributes:
        loc: (n, K) member means.
        scale: (n, K) member standard deviations (> 0).

    Example:
        >>> mix = GaussianMixture(np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]]))
        >>> float(mix.mean[0]), round(float(mix.std[0]), 4)
        (0.5, 1.118)
    """

    loc: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        loc = np.asarray(self.loc, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        if loc.ndim != 2 or loc.shape != scale.shape:
            raise ValueError(
                f"loc and scale must both be (n, K), got {loc.shape} and {scale.shape}"
            )
        if not np.all(scale > 0):
            raise ValueError("every scale must be > 0")
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "scale", scale)

    def __len__(self) -> int:
        return self.loc.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """(n,) mixture means."""
        return self.loc.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        """(n,) mixture standard deviations (law of total variance)."""
        second = np.mean(self.scale**2 + self.loc**2, axis=1)
        return np.sqrt(np.maximum(second - self.mean**2, 0.0))

    def log_prob(self, theta: Any) -> np.ndarray:
        """Log density of ``theta`` under each observation's mixture.

        Args:
            theta: (n,), (n, 1), (n, S) or (n, S, 1) values; row i is scored
                under mixture i. A trailing axis of size 1 is dropped.

        Returns:
            (n,) or (n, S) log densities.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim >= 2 and theta.shape[-1] == 1:
            theta = theta[..., 0]
        if theta.ndim not in (1, 2) or theta.shape[0] != len(self):
            raise ValueError(
                f"theta must be (n,) or (n, S) with n = {len(self)}, got {theta.shape}"
            )
        t = theta.reshape(len(self), -1)[:, :, None]
        members = stats.norm.logpdf(t, self.loc[:, None, :], self.scale[:, None, :])
        k = self.loc.shape[1]
        return (special.logsumexp(members, axis=-1) - math.log(k)).reshape(theta.shape)

    def cdf(self, theta: Any) -> np.ndarray:
        """(n,) mixture CDF at ``theta`` (n,), row i under mixture i."""
        theta = np.asarray(theta, dtype=np.float64).reshape(len(self), 1)
        return stats.norm.cdf(theta, self.loc, self.scale).mean(axis=1)

    def sample(self, num_samples: int, seed: int = 0) -> np.ndarray:
        """(n, S, 1) draws: a uniformly chosen member, then its Normal."""
        rng = np.random.default_rng(seed)
        n, k = self.loc.shape
        member = rng.integers(k, size=(n, num_samples))
        rows = np.arange(n)[:, None]
        z = rng.standard_normal((n, num_samples))
        draws = self.loc[rows, member] + self.scale[rows, member] * z
        return draws[..., None]

    def mode(self, grid_size: int = 256, iterations: int = 30) -> np.ndarray:
        """(n,) the highest mode of each mixture (the paper's MAP estimate).

        A grid over the mixture's support finds the basin of the highest mode;
        fixed-point (mean-shift) iterations for Gaussian mixtures then refine it
        to floating-point precision.
        """
        out = np.empty(len(self))
        for start in range(0, len(self), 512):  # bounds the (n, G, K) grid
            loc = self.loc[start : start + 512]
            scale = self.scale[start : start + 512]
            lo = (loc - 4 * scale).min(axis=1, keepdims=True)
            hi = (loc + 4 * scale).max(axis=1, keepdims=True)
            grid = lo + (hi - lo) * np.linspace(0, 1, grid_size)[None, :]
            dens = stats.norm.pdf(grid[:, :, None], loc[:, None], scale[:, None])
            x = grid[np.arange(len(loc)), dens.sum(-1).argmax(axis=1)]
            for _ in range(iterations):
                w = stats.norm.pdf(x[:, None], loc, scale) / scale**2
                x = (w * loc).sum(1) / w.sum(1)
            out[start : start + 512] = x
        return out
