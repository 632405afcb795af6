"""Read map datasets: :class:`MapDataset`, and the schema both sides share.

The file layout is described in :mod:`sbi_exsitu.data.dataset` (which also
writes it and re-exports everything here); split from it so the writer and the
reader each stay one idea.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.data.mock.debris import ASSEMBLY_LABELS
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.data.skips import SkipSummary, read_skipped
from sbi_exsitu.data.splits import SPLIT_FRACTIONS, split_by_galaxy
from sbi_exsitu.errors import DatasetError, SampleIndexError

__all__ = [
    "SCHEMA_VERSION",
    "LABELS",
    "OPTIONAL_LABELS",
    "MapDataset",
    "check_schema",
    "partial_path",
    "readable",
]

SCHEMA_VERSION = 1
LABELS = ("f_ex", "log_mstar", "galaxy_id", "view_id", "model", "half_mass_radius")
#: Merger-history labels (:mod:`sbi_exsitu.data.mock.debris`): read when present.
OPTIONAL_LABELS = ASSEMBLY_LABELS
_LABEL_DTYPES = {
    "f_ex": np.float64,
    "log_mstar": np.float64,
    "galaxy_id": np.int64,
    "view_id": np.int16,
    # Fixed length, not h5py.string_dtype(): variable-length strings live in the
    # file's global heap, which a SIGKILL mid-write can leave corrupt ("bad heap
    # index" on resume); fixed-length bytes are plain chunk data that the
    # resume's truncation to n_complete repairs. Files written with the old
    # variable-length dtype still read and resume.
    "model": "S64",
    "half_mass_radius": np.float64,
}


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def readable(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def check_schema(h5: h5py.File, path: Path) -> None:
    version = h5.attrs.get("schema_version")
    if isinstance(version, np.generic):  # show 2, not np.int64(2)
        version = version.item()
    if version != SCHEMA_VERSION:
        h5.close()
        raise DatasetError(
            f"{path}: attribute 'schema_version' is {version!r}, expected "
            f"{SCHEMA_VERSION} (re-render the dataset with this version of sbi-exsitu)"
        )
    for name in ("maps", "exsitu", "mask", *(f"labels/{k}" for k in LABELS)):
        if name not in h5:
            h5.close()
            raise DatasetError(f"{path}: dataset '/{name}' is missing")


class MapDataset:
    """Read a dataset written by :class:`DatasetWriter`, streaming maps on demand.

    Labels are small and read at once; maps are read per index batch, so memory
    stays bounded whatever the file size.

    Args:
        path: the HDF5 file.
        expect_config: if given, refuse a file rendered with another config.

    Raises:
        DatasetError: missing or truncated file, wrong schema, or config mismatch.
    """

    def __init__(self, path: str | Path, expect_config: RenderConfig | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            hint = ""
            if partial_path(self.path).exists():
                hint = " (an interrupted .partial file exists: resume the job)"
            raise DatasetError(f"{self.path}: file not found{hint}")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise DatasetError(
                f"{self.path}: not a readable HDF5 file (truncated or corrupt?): {err}"
            ) from None
        check_schema(self._h5, self.path)
        try:
            self.render_config = RenderConfig.from_json(self._h5.attrs["render_config"])
            n = int(self._h5.attrs["n_complete"])
            self.labels: dict[str, np.ndarray] = {}
            for key in LABELS:
                data = self._h5[f"labels/{key}"][:n]
                if key == "model":
                    data = data.astype(str)
                self.labels[key] = data
            for key in OPTIONAL_LABELS:  # absent from files written before them
                if f"labels/{key}" in self._h5:
                    self.labels[key] = self._h5[f"labels/{key}"][:n]
        except (OSError, KeyError, ValueError) as err:
            raise DatasetError(f"{self.path}: cannot read labels: {err}") from None
        self._n = n
        if self._h5["maps"].shape[0] < n:
            raise DatasetError(
                f"{self.path}: '/maps' holds {self._h5['maps'].shape[0]} samples, "
                f"expected n_complete={n} (truncated file)"
            )
        if expect_config is not None:
            self.check_config(expect_config)

    @property
    def attrs(self) -> dict[str, Any]:
        """Free-form attributes (JSON-decoded where possible)."""
        out = {}
        for key, value in self._h5.attrs.items():
            try:
                out[key] = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                out[key] = value
        return out

    @property
    def particle_cap(self) -> int | None:
        """The most star particles any galaxy of this dataset was rendered from.

        A ``simulate`` dataset's model cap (``max_particles`` of its stored model
        parameters; the ``[simulate] particle_subsample`` augmentation only ever
        removes particles), a ``render`` dataset's ``max_particles`` (the cap its
        galaxies were subsampled to, if any). None when the file does not say:
        a ``render`` dataset without a cap, an ``ingest`` dataset (maps, not
        particles), or a file from before the attribute.

        Why it matters: a posterior trained on maps of at most N particles reads
        the smoother maps of a galaxy with many more particles as another galaxy
        (a galaxy of f_ex 0.168 read 0.148 from 12k particles, 0.098 from 60k;
        ``benchmarks/particle_resampling.py``), so ``render --like RUN``
        subsamples galaxies to the cap of the run's training data.
        """
        attrs = self.attrs
        params = attrs.get("model_params")
        if isinstance(params, dict) and params.get("max_particles") is not None:
            return int(params["max_particles"])
        cap = attrs.get("max_particles")
        return None if cap is None else int(cap)

    def check_config(self, expected: RenderConfig) -> None:
        """Raise :class:`DatasetError` naming every difference from ``expected``."""
        if self.render_config != expected:
            raise DatasetError(
                f"{self.path}: maps were rendered with a different config than "
                "expected (file != expected): "
                + "; ".join(self.render_config.diff(expected))
            )

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return tuple(self._h5["maps"].shape[1:])  # type: ignore[return-value]

    @property
    def has_labels(self) -> bool:
        """True when every sample has an f_ex label."""
        return bool(self._n) and bool(np.all(np.isfinite(self.labels["f_ex"])))

    def _read(
        self, name: str, indices: Sequence[int] | np.ndarray | slice
    ) -> np.ndarray:
        if isinstance(indices, slice):
            lo, hi, _ = indices.indices(self._n)
            return self._checked_read(name, indices, lo, hi - 1)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *self._h5[name].shape[1:]), self._h5[name].dtype)
        if idx.min() < 0 or idx.max() >= self._n:
            raise SampleIndexError(f"{self.path}: index out of range [0, {self._n})")
        # h5py wants increasing unique indices; read those, then restore order.
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._checked_read(name, uniq, int(uniq[0]), int(uniq[-1]))[inverse]

    def _checked_read(self, name: str, sel: Any, lo: int, hi: int) -> np.ndarray:
        # A damaged chunk fails its checksum (fletcher32) or its decompression
        # inside HDF5; say which file and samples instead of a bare OSError.
        try:
            return self._h5[name][sel]
        except OSError as err:
            raise DatasetError(
                f"{self.path}: cannot read '/{name}' of samples {lo}..{hi}, the "
                f"file is damaged ({err}); re-copy it or re-render the dataset"
            ) from None

    def maps(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """(n, C, H, W) float32 observation maps."""
        return self._read("maps", indices)

    def exsitu(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """(n, H, W) float32 ex-situ fraction maps."""
        return self._read("exsitu", indices)

    def mask(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """(n, H, W) bool pixel masks."""
        return self._read("mask", indices)

    def iter_batches(
        self, indices: np.ndarray | None = None, batch_size: int = 256
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, maps)`` in chunks of ``batch_size``."""
        indices = np.arange(self._n) if indices is None else np.asarray(indices)
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            yield batch, self.maps(batch)

    def splits(
        self, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS
    ) -> dict[str, np.ndarray]:
        """Galaxy-grouped train/validation/test indices (:func:`split_by_galaxy`).

        Dropped galaxies (every view skipped) take part in the shuffle, so the
        other galaxies land in the split they would without the drops.
        """
        return split_by_galaxy(
            self.labels["galaxy_id"],
            fractions,
            seed,
            all_galaxies=self.skip_summary().dropped_galaxies,
        )

    @property
    def skipped_views(self) -> np.ndarray:
        """(M, 2) (galaxy_id, view_id) of the views an observed run skipped."""
        return read_skipped(self._h5)

    def skip_summary(self) -> SkipSummary:
        """Counts of skipped views and dropped galaxies (:mod:`..skips`)."""
        return SkipSummary.from_records(self.skipped_views, self.labels["galaxy_id"])

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> MapDataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c, h, w = self.shape
        return f"MapDataset('{self.path}', n={self._n}, maps=({c}, {h}, {w}))"
