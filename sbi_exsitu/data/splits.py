"""Galaxy-grouped splits and seeded subsets of sample indices.

Views of one galaxy are not independent observations: every split puts all
views of a galaxy on the same side, so no test galaxy was seen in training.

Example:
    >>> ids = np.repeat(np.arange(20), 3)          # 20 galaxies x 3 views
    >>> parts = split_by_galaxy(ids, seed=0)
    >>> sorted(len(v) for v in parts.values())
    [6, 9, 45]
    >>> set(ids[parts["test"]]) & set(ids[parts["train"]])
    set()
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SPLIT_FRACTIONS", "split_by_galaxy", "subsample"]

SPLIT_FRACTIONS = (0.75, 0.10, 0.15)


def subsample(indices: np.ndarray, max_count: int | None, seed: int) -> np.ndarray:
    """At most ``max_count`` of ``indices``, drawn without replacement and sorted.

    All of them (unchanged) when there are no more than ``max_count`` or it is
    None; the same seed gives the same subset.
    """
    indices = np.asarray(indices)
    if max_count is None or len(indices) <= max_count:
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, max_count, replace=False))


def split_by_galaxy(
    galaxy_ids: np.ndarray,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    seed: int = 0,
    names: Sequence[str] = ("train", "validation", "test"),
    *,
    all_galaxies: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Split sample indices so that all views of a galaxy land in one split.

    Args:
        galaxy_ids: (N,) galaxy id of every sample.
        fractions: fraction of galaxies per split (sums to 1).
        seed: seed of the galaxy shuffle; the same seed gives the same split.
        names: split names.
        all_galaxies: galaxies without samples that still take part in the
            shuffle (an observed run's dropped galaxies), so that dropping a
            galaxy moves no other galaxy to another split.

    Returns:
        Split name -> sorted sample indices.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if len(fractions) != len(names) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions {list(fractions)} must sum to 1")
    galaxies = np.union1d(galaxy_ids, np.asarray(all_galaxies, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(galaxies))
    cuts = np.round(np.cumsum(fractions) * len(galaxies)).astype(int)
    assignment = np.empty(len(galaxies), dtype=np.int64)
    for k, (lo, hi) in enumerate(zip(np.r_[0, cuts[:-1]], cuts, strict=True)):
        assignment[order[lo:hi]] = k
    split_of_sample = assignment[np.searchsorted(galaxies, galaxy_ids)]
    return {name: np.flatnonzero(split_of_sample == k) for k, name in enumerate(names)}
