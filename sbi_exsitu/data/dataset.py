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
    /skipped_views      (M, 2) int64, observed runs only, with attrs n_skipped
                        and n_dropped (:mod:`sbi_exsitu.data.skips`)

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.atomic import OutputLock, check_output_path
from sbi_exsitu.data.map_dataset import (
    _LABEL_DTYPES,
    LABELS,
    OPTIONAL_LABELS,
    SCHEMA_VERSION,
    MapDataset,
    check_schema,
    partial_path,
    readable,
)
from sbi_exsitu.data.render import RenderConfig, RenderedViews
from sbi_exsitu.data.skips import (
    SkipSummary,
    append_skipped,
    read_skipped,
    truncate_skipped,
)
from sbi_exsitu.data.splits import SPLIT_FRACTIONS, split_by_galaxy, subsample
from sbi_exsitu.errors import DatasetError

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
        self.partial = partial_path(self.path)
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
        if self.partial.exists() and not reopened_final and not readable(self.partial):
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
        try:
            _check_stored(h5, self.partial, self.config, attrs)
        except DatasetError:
            h5.close()
            raise
        n_done = int(h5.attrs["n_complete"])
        names = ("maps", "exsitu", "mask", *(f"labels/{k}" for k in LABELS))
        names += tuple(f"labels/{k}" for k in OPTIONAL_LABELS if f"labels/{k}" in h5)
        for name in names:
            if h5[name].shape[0] != n_done:  # a galaxy half-written at the crash
                h5[name].resize(n_done, axis=0)
        truncate_skipped(h5)
        return h5

    @staticmethod
    def finished_galaxies(
        path: str | Path, render_config: RenderConfig, attrs: Mapping[str, Any]
    ) -> set[int]:
        """Galaxy ids of a FINISHED file written with these settings, read-only.

        What a resume would skip, without the rename and lock of a resume: a job
        that reuses a finished dataset must not move it under other readers.

        Raises:
            DatasetError: the file's schema, render config or ``attrs`` (as passed
                to the writer) differ from the stored ones.
        """
        attrs = {k: json.dumps(v, sort_keys=True) for k, v in attrs.items()}
        with h5py.File(path, "r") as h5:
            _check_stored(h5, Path(path), render_config, attrs)
            return _galaxies_done(h5)

    def completed_galaxies(self) -> set[int]:
        """Galaxy ids already written in full (dropped ones too: all views skipped)."""
        return _galaxies_done(self._h5)

    def skip_summary(self) -> SkipSummary:
        """The views skipped so far (:mod:`sbi_exsitu.data.skips`)."""
        kept = self._h5["labels/galaxy_id"][: len(self)]
        return SkipSummary.from_records(read_skipped(self._h5), kept)

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
        skipped_views: Sequence[int] = (),
    ) -> None:
        """Append all views of one galaxy, then mark them complete.

        ``assembly`` holds :data:`OPTIONAL_LABELS` values (missing ones are NaN).
        ``view_ids`` defaults to ``views.view_ids``, else 0 .. V-1;
        ``skipped_views`` are the views left out (:mod:`~sbi_exsitu.data.skips`),
        and ``views`` may then hold none (the galaxy is dropped).
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
            "view_id": np.asarray(
                view_ids
                if view_ids is not None
                else views.view_ids
                if views.view_ids is not None
                else range(v)
            ),
            "model": np.array([_model_bytes(model, self.path)] * v),
            "half_mass_radius": np.full(v, half_mass_radius, np.float64),
        }
        assembly = dict(assembly or {})
        if unknown := sorted(set(assembly) - set(OPTIONAL_LABELS)):
            raise DatasetError(f"{self.path}: unknown assembly labels {unknown}")
        optional = [k for k in OPTIONAL_LABELS if f"labels/{k}" in self._h5]
        for k in optional:
            labels[k] = np.full(v, assembly.get(k, np.nan), np.float64)
        h5 = self._h5
        columns = [
            ("maps", views.maps),
            ("exsitu", views.exsitu),
            ("mask", views.mask),
            *((f"labels/{k}", labels[k]) for k in (*LABELS, *optional)),
        ]
        for name, data in columns if v else []:  # a dropped galaxy writes no rows
            h5[name].resize(end, axis=0)
            h5[name][start:end] = data
        n_skipped = append_skipped(h5, galaxy_id, skipped_views)
        h5.flush()
        h5.attrs["n_complete"] = end
        if len(skipped_views):
            h5.attrs["n_skipped"] = n_skipped
            h5.attrs["n_dropped"] = int(h5.attrs.get("n_dropped", 0)) + (v == 0)
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


def _galaxies_done(h5: h5py.File) -> set[int]:
    """Galaxy ids written in full, and those dropped (every view skipped)."""
    n = int(h5.attrs["n_complete"])
    return set(np.union1d(h5["labels/galaxy_id"][:n], read_skipped(h5)[:, 0]).tolist())


def _check_stored(
    h5: h5py.File, path: Path, config: RenderConfig, attrs: Mapping[str, str]
) -> None:
    """Refuse to continue ``h5`` with another schema, render config or settings."""
    check_schema(h5, path)
    stored = RenderConfig.from_json(h5.attrs["render_config"])
    if stored != config:
        raise DatasetError(
            f"{path}: cannot resume, render config differs: "
            + "; ".join(config.diff(stored))
        )
    for key, value in attrs.items():
        if key in h5.attrs and h5.attrs[key] != value:
            raise DatasetError(
                f"{path}: cannot resume, attribute '{key}' differs from the stored "
                "one (written with other settings or by an older version); delete "
                "it, pass overwrite (--overwrite), or write to another path"
            )


def _model_bytes(model: str, path: Path) -> bytes:
    """The formation-model label as stored: ASCII, at most 64 bytes."""
    try:
        raw = str(model).encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > 64:
        raise DatasetError(
            f"{path}: formation-model name {model!r} cannot be stored; expected "
            "1-64 ASCII characters (rename the model)"
        )
    return raw
