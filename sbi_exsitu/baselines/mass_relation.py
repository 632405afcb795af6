"""The bare f_ex-M* relation baseline (Angeloudi et al. 2023, fig. 14).

Split out of :mod:`sbi_exsitu.baselines.run`, which re-exports it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.interpolate import CubicSpline

__all__ = ["MassRelationBaseline"]


@dataclass
class MassRelationBaseline:
    r"""f_ex from stellar mass alone: a cubic spline through binned medians.

    Arguments:
        n_bins: Equal-count bins of log M* (fewer if a bin would hold fewer than
            ``min_per_bin`` galaxies).
        min_per_bin: Smallest number of galaxies per bin.
        per_bin_scatter: Uncertainty from the residual scatter of each mass bin
            (interpolated linearly in log M*) rather than one global scatter.
        min_std: Floor of the uncertainty.

    Example:
        >>> x = np.linspace(10, 12, 200)
        >>> rel = MassRelationBaseline(n_bins=5).fit(x, (x - 10) / 2)
        >>> round(float(rel.predict(np.array([11.0]))[0][0]), 3)
        0.5
    """

    n_bins: int = 10
    min_per_bin: int = 10
    per_bin_scatter: bool = True
    min_std: float = 1e-3
    knots: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    scatter: list[float] = field(default_factory=list)

    def fit(
        self, log_mstar: Any, f_ex: Any, groups: Any | None = None
    ) -> MassRelationBaseline:
        """Fit on training labels (unstandardised log10 M*/Msun).

        Args:
            log_mstar: (n,) log stellar masses.
            f_ex: (n,) ex-situ fractions.
            groups: (n,) galaxy ids; the views of a galaxy are averaged first.

        Returns:
            ``self``.
        """
        x = np.asarray(log_mstar, dtype=np.float64)
        y = np.asarray(f_ex, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(
                f"log_mstar and f_ex must be (n,), got {x.shape}, {y.shape}"
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("log_mstar and f_ex must be finite")
        if groups is not None:
            _, inverse, counts = np.unique(
                groups, return_inverse=True, return_counts=True
            )
            x = np.bincount(inverse, x) / counts
            y = np.bincount(inverse, y) / counts
        n_bins = min(self.n_bins, len(x) // self.min_per_bin)
        if n_bins < 2:
            raise ValueError(
                f"need at least {2 * self.min_per_bin} galaxies for two mass bins, "
                f"got {len(x)}"
            )
        order = np.argsort(x, kind="stable")
        bins = np.array_split(order, n_bins)  # equal-count bins in log M*
        knots = np.array([np.median(x[b]) for b in bins])
        values = np.array([np.median(y[b]) for b in bins])
        # Ties in mass would give equal knots; CubicSpline needs them distinct.
        knots, first = np.unique(knots, return_index=True)
        if len(knots) < 2:
            raise ValueError("log_mstar has too few distinct values for a spline")
        self.knots, self.values = knots.tolist(), values[first].tolist()
        residual = y - self._spline_mean(x)
        if self.per_bin_scatter:
            std = np.array([residual[b].std(ddof=1) for b in bins])[first]
        else:
            std = np.full(len(knots), residual.std(ddof=1))
        self.scatter = np.maximum(std, self.min_std).tolist()
        return self

    def _check_fitted(self) -> None:
        if not self.knots:
            raise RuntimeError("MassRelationBaseline is not fitted; call fit() first")

    def _spline_mean(self, x: np.ndarray) -> np.ndarray:
        knots = np.asarray(self.knots)
        spline = CubicSpline(knots, np.asarray(self.values), bc_type="natural")
        # Constant beyond the training range: a cubic extrapolates wildly.
        return np.clip(spline(np.clip(x, knots[0], knots[-1])), 0.0, 1.0)

    def predict(self, log_mstar: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n,) f_ex from the spline (clipped to [0, 1]) and (n,) its scatter."""
        self._check_fitted()
        x = np.asarray(log_mstar, dtype=np.float64)
        std = np.interp(x, self.knots, self.scatter)
        return self._spline_mean(x), std

    def log_prob(self, f_ex: Any, log_mstar: Any) -> np.ndarray:
        """(n,) Normal log density of ``f_ex`` given each mass (unbounded)."""
        mean, std = self.predict(log_mstar)
        return stats.norm.logpdf(np.asarray(f_ex, dtype=np.float64), mean, std)

    def sample(self, log_mstar: Any, num_samples: int, seed: int = 0) -> np.ndarray:
        """(n, S, 1) draws of f_ex given each mass."""
        mean, std = self.predict(log_mstar)
        z = np.random.default_rng(seed).standard_normal((len(mean), num_samples))
        return (mean[:, None] + std[:, None] * z)[..., None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings and fitted knots."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MassRelationBaseline:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


# --------------------------------------------------------------------------- benchmark
