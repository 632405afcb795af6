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

from sbi_exsitu.posteriors.summary import PosteriorSummary, highest_density_intervals

__all__ = ["MapSummary"]


def _stats(f: np.ndarray) -> tuple[np.ndarray, ...]:
    """(median, mean, std, hdi68, hdi95) of (n, S) scalar draws."""
    hdi68, hdi95 = highest_density_intervals(f)
    return np.median(f, axis=1), f.mean(axis=1), f.std(axis=1), hdi68, hdi95


@dataclass
class MapSummary:
    """Per-observation summaries of the map posterior.

    Attributes:
        mean, std: (n, H, W) pixel-wise posterior mean and std (0 outside mask).
        mask: (n, H, W) the pixels summarised.
        f_ex_median, f_ex_mean, f_ex_std: (n,) implied scalar f_ex *in the
            mask* (the mass-weighted mean of the map draws).
        f_ex_hdi68, f_ex_hdi95: (n, 2) highest-density intervals of f_ex.
        weighting: how the mass weights of f_ex were obtained.
        galaxy: the whole galaxy's f_ex, in-mask f_ex plus the outside-mask
            term of :mod:`sbi_exsitu.posteriors.map.outside`, as
            ``(median, mean, std, hdi68, hdi95)``; None for a run without the
            outside-mask head. Columns ``f_ex_galaxy_*``.
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
    galaxy: tuple[np.ndarray, ...] | None = None

    @classmethod
    def from_draws(
        cls,
        samples: np.ndarray,
        mask: np.ndarray,
        f_in: np.ndarray,
        weighting: str,
        f_galaxy: np.ndarray | None = None,
    ) -> MapSummary:
        """Summaries of (n, S, H, W) map draws and their (n, S) f_ex draws."""
        return cls(
            samples.mean(axis=1),
            samples.std(axis=1),
            mask,
            *_stats(f_in),
            weighting,
            None if f_galaxy is None else _stats(f_galaxy),
        )

    @property
    def f_ex_galaxy_median(self) -> np.ndarray | None:
        """(n,) median whole-galaxy f_ex, or None without the head."""
        return None if self.galaxy is None else self.galaxy[0]

    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat ``{column: (n,) array}`` of the implied f_ex, as for a scalar run.

        ``f_ex_*`` is the in-mask f_ex; ``f_ex_galaxy_*`` (with the
        outside-mask head) the whole galaxy's, comparable with a scalar run's
        ``f_ex_*`` and the ``f_ex`` label.
        """
        stats = (self.f_ex_median, self.f_ex_mean, self.f_ex_std)
        hdis = (self.f_ex_hdi68, self.f_ex_hdi95)
        cols = PosteriorSummary(
            ["f_ex"], *(v[:, None] for v in stats), *(h[:, None] for h in hdis)
        ).to_columns()
        if self.galaxy is not None:
            med, mean, std, h68, h95 = self.galaxy
            cols |= PosteriorSummary(
                ["f_ex_galaxy"],
                *(v[:, None] for v in (med, mean, std, h68, h95)),
            ).to_columns()
        return cols
