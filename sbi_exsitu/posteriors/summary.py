"""Per-observation posterior summaries and their highest-density intervals.

Example:
    >>> draws = np.random.default_rng(0).normal(size=(2, 4000, 1))
    >>> lo, hi = highest_density_intervals(draws, probs=(0.68,))[0][0, 0]
    >>> bool(-1.1 < lo < -0.9 and 0.9 < hi < 1.1)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PosteriorSummary", "highest_density_intervals"]


@dataclass
class PosteriorSummary:
    """Per-observation summaries; every array has shape (n_obs, D).

    ``hdi68``/``hdi95`` have shape (n_obs, D, 2) (lower, upper).
    """

    param_names: list[str]
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    hdi68: np.ndarray
    hdi95: np.ndarray
    misspecification: Any = None

    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat ``{column: (n_obs,) array}`` for CSV/HDF5 tables."""
        cols: dict[str, np.ndarray] = {}
        for d, name in enumerate(self.param_names):
            cols[f"{name}_median"] = self.median[:, d]
            cols[f"{name}_mean"] = self.mean[:, d]
            cols[f"{name}_std"] = self.std[:, d]
            for level, hdi in (("68", self.hdi68), ("95", self.hdi95)):
                cols[f"{name}_hdi{level}_low"] = hdi[:, d, 0]
                cols[f"{name}_hdi{level}_high"] = hdi[:, d, 1]
        if self.misspecification is not None:
            cols |= self.misspecification.to_columns()
        return cols


def highest_density_intervals(
    draws: np.ndarray, probs: Sequence[float] = (0.68, 0.95)
) -> list[np.ndarray]:
    """arviz HDIs of draws (n_obs, S, *shape): one (n_obs, *shape, 2) per prob."""
    import arviz as az

    chain = np.moveaxis(draws, 1, 0)[None]  # arviz: (chain, draw, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns about a single chain
        return [np.asarray(az.hdi(chain, hdi_prob=p)) for p in probs]
