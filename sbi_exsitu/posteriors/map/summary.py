"""Per-observation summaries of the map posterior (:class:`MapSummary`).

Example:
    >>> import numpy as np
    >>> z = np.zeros((1, 2, 2))
    >>> f, h = np.array([0.3]), np.array([[0.2, 0.4]])
    >>> s = MapSummary(z, z, z > 0, f, f, f, h, h, "unweighted")
    >>> s.to_columns()["f_ex_hdi68_low"]
    array([0.2])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbi_exsitu.posteriors.summary import PosteriorSummary

__all__ = ["MapSummary"]


@dataclass
class MapSummary:
    """Per-observation summaries of the map posterior.

    Attributes:
        mean, std: (n, H, W) pixel-wise posterior mean and std (0 outside mask).
        mask: (n, H, W) the pixels summarised.
        f_ex_median, f_ex_mean, f_ex_std: (n,) implied scalar f_ex.
        f_ex_hdi68, f_ex_hdi95: (n, 2) highest-density intervals of f_ex.
        weighting: how the mass weights of f_ex were obtained.
    """

    mean: np.ndarray
    std: np.ndarray
    mask: np.ndarray
    f_ex_median: np.ndarray
    f_ex_mean: np.ndarray
    f_ex_std: np.ndarray
    f_ex_hdi68: np.ndarray
    f_ex_hdi95: np.ndarray
    weighting: str

    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat ``{column: (n,) array}`` of the implied f_ex, as for a scalar run."""
        stats = (self.f_ex_median, self.f_ex_mean, self.f_ex_std)
        hdis = (self.f_ex_hdi68, self.f_ex_hdi95)
        return PosteriorSummary(
            ["f_ex"], *(v[:, None] for v in stats), *(h[:, None] for h in hdis)
        ).to_columns()
