"""HDF5 datasets of rendered maps: atomic, resumable writing and streaming reading.

One file per dataset (schema version :data:`SCHEMA_VERSION`)::

    /maps               (N, C, H, W) float32, one sample per chunk
    /exsitu             (N, H, W)    float32, ex-situ mass fraction per pixel
    /mask               (N, H, W)    bool, pixels holding data
    /labels/f_ex        (N,) float64 (NaN = unlabelled, e.g. real data without flags)
    /labels/log_mstar   (N,) float64, log10 M*/Msun
    /labels/galaxy_id   (N,) int64
    /labels/view_id     (N,) int16, index of the camera in its polyhedron
    /labels/model       (N,) str, formation model or source ("tng-like", "TNG100")
    /labels/half_mass_radius (N,) float64, kpc
    /labels/<assembly>  (N,) float64, optional (:data:`OPTIONAL_LABELS`, NaN = unknown)
    attrs: schema_version, render_config (JSON), n_complete, and free-form attrs

Writes go to ``<name>.partial`` next to the target and are renamed over it only
when the writer closes cleanly, so a crash never leaves a half-written file under
the real name; with ``overwrite`` the old file stays readable until that rename.
Galaxies are appended whole and ``n_complete`` is updated after each flush;
reopening with ``resume=True`` truncates anything past it and carries on. A writer
holds ``<name>.lock`` (:class:`~sbi_exsitu.atomic.OutputLock`), so a second writer
of the same output fails at once and leaves the first one's files alone. A writer
that wrote nothing leaves nothing: no empty dataset, no empty ``.partial``.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from sbi_exsitu.data.render import RenderConfig, RenderedViews
    >>> cfg = RenderConfig(resolution=8, min_pixels=1)
    >>> views = RenderedViews(maps=np.zeros((2, 5, 8, 8), np.float32),
    ...     exsitu=np.zeros((2, 8, 8), np.float32), mask=np.ones((2, 8, 8), bool),
    ...     directions=np.eye(3)[:2])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.h5"
    >>> with DatasetWriter(path, cfg) as w:
    ...     w.add_galaxy(views, galaxy_id=0, f_ex=0.3, log_mstar=10.5,
    ...                  half_mass_radius=3.0, model="toy")
    >>> ds = MapDataset(path)
    >>> len(ds), ds.maps([1, 0]).shape
    (2, (2, 5, 8, 8))
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.atomic import OutputLock, check_output_path
from sbi_exsitu.data.mock.debris import ASSEMBLY_LABELS
from sbi_exsitu.data.render import RenderConfig, RenderedViews
from sbi_exsitu.data.splits import SPLIT_FRACTIONS, split_by_galaxy, subsample
from sbi_exsitu.errors import DatasetError, SampleIndexError

__all__ = [
    "SCHEMA_VERSION",
    "LABELS",
    "OPTIONAL_LABELS",
    "DatasetError",
    "DatasetWriter",
    "MapDataset",
    "split_by_galaxy",
    "subsample",
    "SPLIT_FRACTIONS",
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
    "model": h5py.string_dtype(),
    "half_mass_radius": np.float64,
}


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class DatasetWriter:
    """Append rendered galaxies to an HDF5 dataset, atomically and resumably.

    Args:
        path: the final file.
        render_config: the configuration every map was rendered with.
        resume: continue an interrupted (``.partial``) or finished file.
        overwrite: replace an existing file.
        attrs: JSON-serialisable metadata stored as file attributes (e.g. the
            simulation config); on resume they must match the stored ones.

    Raises:
        DatasetError: the file exists and neither ``resume`` nor ``overwrite`` is
            set, or on resume the schema or render config differ.
    """

    def __init__(
        self,
        path: str | Path,
        render_config: RenderConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.partial = _partial_path(self.path)
        self.config = render_config
        attrs = {k: json.dumps(v, sort_keys=True) for k, v in (attrs or {}).items()}
        check_output_path(self.path, overwrite=True)  # existence is checked below
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Lock before touching any file, so a losing writer changes nothing.
        self._lock = OutputLock(self.path).acquire()
        try:
            self._open(attrs, resume, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, attrs: dict[str, str], resume: bool, overwrite: bool) -> None:
        exists = self.path.exists() or self.partial.exists()
        if exists and not (resume or overwrite):
            which = self.path if self.path.exists() else self.partial
            raise DatasetError(
                f"{which} exists; resume it (resume=True) or replace it "
                "(overwrite=True)",
                cli_message=f"{which} exists; resume it with --resume (same "
                "inputs) or replace it with --overwrite",
            )
        reopened_final = False
        if overwrite and not resume:
            # Only the old .partial goes; the old final file stays until close.
            self.partial.unlink(missing_ok=True)
        elif resume and not self.partial.exists() and self.path.exists():
            os.replace(self.path, self.partial)
            reopened_final = True
        if self.partial.exists() and not reopened_final and not _readable(self.partial):
            # Killed before its first flush: nothing to resume, it would only block.
            msg = f"{self.partial} is unreadable (killed mid-write); starting again"
            warnings.warn(msg, stacklevel=3)
            self.partial.unlink()
        if self.partial.exists():
            try:
                self._h5 = self._reopen(attrs)
            except DatasetError:
                if reopened_final:  # a refused resume must not hide a finished file
                    os.replace(self.partial, self.path)
                raise
        else:
            self._h5 = self._create(attrs)

    def _create(self, attrs: dict[str, str]) -> h5py.File:
        n, c = self.config.resolution, self.config.n_channels
        h5 = h5py.File(self.partial, "w")
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["render_config"] = self.config.to_json()
        h5.attrs["n_complete"] = 0
        for key, value in attrs.items():
            h5.attrs[key] = value
        h5.create_dataset(
            "maps",
            (0, c, n, n),
            np.float32,
            maxshape=(None, c, n, n),
            chunks=(1, c, n, n),
            compression="lzf",
            fletcher32=True,
        )
        h5.create_dataset(
            "exsitu",
            (0, n, n),
            np.float32,
            maxshape=(None, n, n),
            chunks=(1, n, n),
            compression="lzf",
            fletcher32=True,
        )
        h5.create_dataset(
            "mask",
            (0, n, n),
            bool,
            maxshape=(None, n, n),
            chunks=(1, n, n),
            compression="lzf",
            fletcher32=True,
        )
        for key in (*LABELS, *OPTIONAL_LABELS):
            h5.create_dataset(
                f"labels/{key}",
                (0,),
                _LABEL_DTYPES.get(key, np.float64),
                maxshape=(None,),
                chunks=(4096,),
            )
        h5.flush()  # a valid (empty) file from the start, also if killed now
        return h5

    def _reopen(self, attrs: dict[str, str]) -> h5py.File:
        try:
            h5 = h5py.File(self.partial, "a")
        except OSError as err:
            raise DatasetError(
                f"{self.partial}: cannot reopen to resume ({err}); delete it or "
                "pass overwrite"
            ) from None
        _check_schema(h5, self.partial)
        stored = RenderConfig.from_json(h5.attrs["render_config"])
        if stored != self.config:
            h5.close()
            raise DatasetError(
                f"{self.partial}: cannot resume, render config differs: "
                + "; ".join(self.config.diff(stored))
            )
        for key, value in attrs.items():
            if key in h5.attrs and h5.attrs[key] != value:
                h5.close()
                raise DatasetError(
                    f"{self.partial}: cannot resume, attribute '{key}' differs from "
                    "the stored one (different settings than the interrupted run)"
                )
        n_done = int(h5.attrs["n_complete"])
        names = ("maps", "exsitu", "mask", *(f"labels/{k}" for k in LABELS))
        names += tuple(f"labels/{k}" for k in OPTIONAL_LABELS if f"labels/{k}" in h5)
        for name in names:
            if h5[name].shape[0] != n_done:  # a galaxy half-written at the crash
                h5[name].resize(n_done, axis=0)
        return h5

    def completed_galaxies(self) -> set[int]:
        """Galaxy ids already written in full."""
        return set(np.unique(self._h5["labels/galaxy_id"][:]).tolist())

    def __len__(self) -> int:
        return int(self._h5.attrs["n_complete"])

    def add_galaxy(
        self,
        views: RenderedViews,
        *,
        galaxy_id: int,
        f_ex: float,
        log_mstar: float,
        half_mass_radius: float,
        model: str,
        view_ids: Sequence[int] | None = None,
        assembly: Mapping[str, float] | None = None,
    ) -> None:
        """Append all views of one galaxy, then mark them complete.

        ``assembly`` holds :data:`OPTIONAL_LABELS` values (missing ones are NaN).
        """
        shape = (self.config.n_channels, self.config.resolution, self.config.resolution)
        if views.maps.shape[1:] != shape:
            raise DatasetError(
                f"{self.path}: maps have shape {views.maps.shape[1:]}, expected "
                f"{shape} from the render config"
            )
        v = len(views)
        start = len(self)
        end = start + v
        labels = {
            "f_ex": np.full(v, f_ex, np.float64),
            "log_mstar": np.full(v, log_mstar, np.float64),
            "galaxy_id": np.full(v, galaxy_id, np.int64),
            "view_id": np.asarray(view_ids if view_ids is not None else range(v)),
            "model": np.array([model] * v, dtype=object),
            "half_mass_radius": np.full(v, half_mass_radius, np.float64),
        }
        assembly = dict(assembly or {})
        if unknown := sorted(set(assembly) - set(OPTIONAL_LABELS)):
            raise DatasetError(f"{self.path}: unknown assembly labels {unknown}")
        optional = [k for k in OPTIONAL_LABELS if f"labels/{k}" in self._h5]
        for k in optional:
            labels[k] = np.full(v, assembly.get(k, np.nan), np.float64)
        h5 = self._h5
        for name, data in (
            ("maps", views.maps),
            ("exsitu", views.exsitu),
            ("mask", views.mask),
            *((f"labels/{k}", labels[k]) for k in (*LABELS, *optional)),
        ):
            h5[name].resize(end, axis=0)
            h5[name][start:end] = data
        h5.flush()
        h5.attrs["n_complete"] = end
        h5.flush()

    def close(self, finalize: bool = True) -> Path:
        """Close; with ``finalize`` rename the partial file to the target.

        A file without a complete sample is deleted: it would only block a re-run.
        """
        if getattr(self, "_lock", None) is None or self._lock._fd is None:
            return self.path if finalize else self.partial  # already closed
        try:
            empty = self._h5.id.valid and len(self) == 0
            if self._h5.id.valid:
                self._h5.close()
            if empty:
                self.partial.unlink(missing_ok=True)
            elif finalize:
                os.replace(self.partial, self.path)
                return self.path
        finally:
            self._lock.release()
        return self.path if finalize else self.partial

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # On error keep the partial file: it is what --resume continues from.
        self.close(finalize=exc_type is None)


def _readable(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def _check_schema(h5: h5py.File, path: Path) -> None:
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
            if _partial_path(self.path).exists():
                hint = " (an interrupted .partial file exists: resume the job)"
            raise DatasetError(f"{self.path}: file not found{hint}")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise DatasetError(
                f"{self.path}: not a readable HDF5 file (truncated or corrupt?): {err}"
            ) from None
        _check_schema(self._h5, self.path)
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
        """Galaxy-grouped train/validation/test indices (:func:`split_by_galaxy`)."""
        return split_by_galaxy(self.labels["galaxy_id"], fractions, seed)

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
