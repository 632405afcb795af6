"""The views an observed simulation skipped, stored next to the maps.

An observed view that keeps fewer than ``render.min_pixels`` valid pixels (a
galaxy too small for its bundle at the drawn redshift, too faint for the S/N
mask) is skipped and recorded, rather than aborting the run
(:func:`sbi_exsitu.data.simulate.simulate`); a galaxy that loses every view is
dropped. The records live in the dataset file:

    /skipped_views      (M, 2) int64, (galaxy_id, view_id) of every skipped view
    attrs n_skipped     rows of /skipped_views that are complete (like n_complete)
    attrs n_dropped     galaxies of which every view was skipped

A dataset (a table, not an attribute: HDF5 attributes stop at 64 KiB, and a
large run may skip thousands of views). The table is created with the first
skip only, so a file without skips -- every idealised file -- is exactly what
it was before skips existed.

Skipping is a selection effect: small and faint galaxies are under-represented
in the training set. The records let a test set be judged on the same
selection (drop the same (galaxy, view) pairs from another dataset of the same
galaxies, :func:`keep_mask`), and :meth:`~sbi_exsitu.data.dataset.MapDataset.splits`
splits over the dropped galaxies too, so every surviving galaxy lands in the
same split as in a run that dropped none.

Example:
    >>> pairs = np.array([[3, 0], [3, 1], [5, 2]])
    >>> s = SkipSummary.from_records(pairs, kept_galaxy_ids=np.array([1, 1, 5, 5]))
    >>> s.n_views_skipped, s.n_views_attempted, s.dropped_galaxies
    (3, 7, (3,))
    >>> keep_mask(np.array([1, 5, 5]), np.array([0, 2, 0]), pairs).tolist()
    [True, False, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np

__all__ = [
    "SKIPPED",
    "SkipSummary",
    "append_skipped",
    "keep_mask",
    "read_skipped",
    "truncate_skipped",
]

SKIPPED = "skipped_views"


def append_skipped(h5: h5py.File, galaxy_id: int, view_ids: Sequence[int]) -> int:
    """Write the skipped views of one galaxy; the new row count to commit.

    The caller stores the returned count in ``attrs["n_skipped"]`` together with
    ``n_complete``, so a crash in between leaves rows a resume truncates.
    """
    n = int(h5.attrs.get("n_skipped", 0))
    if not len(view_ids):
        return n
    if SKIPPED not in h5:
        h5.create_dataset(
            SKIPPED, (0, 2), np.int64, maxshape=(None, 2), chunks=(1024, 2)
        )
    rows = np.column_stack([np.full(len(view_ids), galaxy_id), view_ids])
    h5[SKIPPED].resize(n + len(rows), axis=0)
    h5[SKIPPED][n:] = rows
    return n + len(rows)


def truncate_skipped(h5: h5py.File) -> None:
    """Drop rows past ``n_skipped`` (a galaxy half-written when a run died)."""
    if SKIPPED in h5:
        h5[SKIPPED].resize(int(h5.attrs.get("n_skipped", 0)), axis=0)


def read_skipped(h5: h5py.File) -> np.ndarray:
    """(M, 2) int64 (galaxy_id, view_id) of the complete skip records."""
    if SKIPPED not in h5:
        return np.empty((0, 2), np.int64)
    return h5[SKIPPED][: int(h5.attrs.get("n_skipped", 0))]


def keep_mask(
    galaxy_ids: np.ndarray, view_ids: np.ndarray, skipped: np.ndarray
) -> np.ndarray:
    """True for the samples whose (galaxy, view) is not in ``skipped``.

    Applied to a dataset of the same galaxies and views (e.g. the idealised
    counterpart of an observed run), it selects what the observed run kept.
    """
    if not len(skipped):
        return np.ones(len(galaxy_ids), dtype=bool)
    # One int64 key per pair: view ids are int16 in the file, so < 2**16.
    key = (np.asarray(galaxy_ids, np.int64) << 16) + np.asarray(view_ids, np.int64)
    gone = (skipped[:, 0].astype(np.int64) << 16) + skipped[:, 1]
    return ~np.isin(key, gone)


@dataclass(frozen=True)
class SkipSummary:
    """How many views (and whole galaxies) an observed simulation skipped.

    Attributes:
        n_views_skipped: views left out.
        n_views_attempted: views kept plus views skipped.
        dropped_galaxies: ids of the galaxies that lost every view.
        partly_skipped: ids of the galaxies that lost some, not all, views.
    """

    n_views_skipped: int
    n_views_attempted: int
    dropped_galaxies: tuple[int, ...]
    partly_skipped: tuple[int, ...]

    @classmethod
    def from_records(
        cls, skipped: np.ndarray, kept_galaxy_ids: np.ndarray
    ) -> SkipSummary:
        """From the skip records and the galaxy id of every kept view."""
        hit = np.unique(skipped[:, 0]) if len(skipped) else np.empty(0, np.int64)
        present = np.isin(hit, kept_galaxy_ids)
        return cls(
            n_views_skipped=len(skipped),
            n_views_attempted=len(skipped) + len(kept_galaxy_ids),
            dropped_galaxies=tuple(int(g) for g in hit[~present]),
            partly_skipped=tuple(int(g) for g in hit[present]),
        )

    @property
    def fraction(self) -> float:
        """Share of the attempted views that were skipped (0 when none)."""
        return self.n_views_skipped / max(self.n_views_attempted, 1)

    def describe(self) -> str:
        """One line, e.g. ``skipped 12 of 400 views (3.0%); dropped 1 galaxy``."""
        n = len(self.dropped_galaxies)
        ids = ", ".join(map(str, self.dropped_galaxies[:10]))
        more = ", ..." if n > 10 else ""
        return (
            f"skipped {self.n_views_skipped} of {self.n_views_attempted} views "
            f"({100 * self.fraction:.1f}%) with too few observed pixels; dropped "
            f"{n} galax{'y' if n == 1 else 'ies'} that lost every view"
            + (f" (ids {ids}{more})" if n else "")
        )
