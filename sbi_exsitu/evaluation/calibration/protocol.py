"""The posterior interface that calibration codes against.

Calibration needs only batched sampling and log-densities, so any object with the
methods below can be checked: the scalar posterior, an ensemble, or a toy with a
known answer (as in the tests).

Example:
    >>> import numpy as np
    >>> class Flat:
    ...     param_names = ["f_ex"]
    ...     members = ()
    ...     def sample(self, maps, num_samples, *, seed=None, batch_size=512,
    ...                progress=False):
    ...         rng = np.random.default_rng(seed)
    ...         return rng.random((len(maps), num_samples, 1))
    ...     def log_prob(self, theta, maps):
    ...         return np.zeros(theta.shape[:2])
    >>> isinstance(Flat(), PosteriorLike)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["PosteriorLike"]


@runtime_checkable
class PosteriorLike(Protocol):
    """A posterior over ``D`` named parameters, vectorised over observations.

    Attributes:
        param_names: the ``D`` parameter names, e.g. ``["f_ex"]``; they name the
            truth labels in a dataset.
        members: ensemble members, each itself posterior-like; a single posterior
            lists itself.
    """

    param_names: list[str]
    members: Sequence[PosteriorLike]

    def sample(
        self,
        maps: np.ndarray,
        num_samples: int,
        *,
        seed: int | None = None,
        batch_size: int = 512,
        progress: bool = False,
    ) -> np.ndarray:
        """Draw ``(n_obs, num_samples, D)`` samples, one set per observation."""
        ...

    def log_prob(self, theta: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """Log-density of ``theta`` ``(n_obs, S, D)`` given ``maps``: ``(n_obs, S)``."""
        ...
