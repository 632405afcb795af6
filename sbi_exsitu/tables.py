"""Tables of per-observation results, written atomically as CSV or HDF5.

Example:
    >>> import tempfile
    >>> path = write_table({"a": np.arange(2), "b": np.array([0.5, 0.25])},
    ...                    Path(tempfile.mkdtemp()) / "t.csv")
    >>> path.read_text().splitlines()
    ['a,b', '0,0.5', '1,0.25']
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.atomic import atomic_path, atomic_write_text, check_output_path
from sbi_exsitu.errors import OutputError

__all__ = ["TABLE_SUFFIXES", "write_table"]

TABLE_SUFFIXES = (".csv", ".h5", ".hdf5")


def write_table(
    columns: dict[str, Any],
    path: str | Path,
    samples: np.ndarray | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Write equal-length columns as CSV or HDF5 (by suffix), atomically.

    Args:
        columns: name -> (n,) array.
        path: ``.csv``, ``.h5`` or ``.hdf5``.
        samples: optional (n, S, ...) posterior draws (HDF5 only).
        arrays: further (n, ...) arrays by HDF5 path, e.g. ``"maps/mean"``
            (HDF5 only; a CSV table leaves them out).
        inputs: files the table was computed from; ``path`` must be none of
            them. An existing table is replaced.

    Raises:
        OutputPathError: ``path`` is an input, a folder, or not writable.
    """
    path = check_output_path(path, inputs=inputs, overwrite=True)
    if path.suffix not in TABLE_SUFFIXES:
        raise OutputError(f"{path}: output must end in one of {TABLE_SUFFIXES}")
    cols = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise OutputError(f"columns have different lengths: {sorted(lengths)}")
    if path.suffix == ".csv":
        if samples is not None:
            raise ValueError("posterior samples need an HDF5 output (.h5)")
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(cols)
        for row in zip(*cols.values(), strict=True):
            writer.writerow([_fmt(v) for v in row])
        atomic_write_text(path, buf.getvalue())
        return path
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        table = h5.create_group("table")
        for name, values in cols.items():
            if values.dtype.kind in "UO":
                table.create_dataset(
                    name, data=values.astype(object), dtype=h5py.string_dtype()
                )
            else:
                table.create_dataset(name, data=values)
        for name, values in (arrays or {}).items():
            values = np.asarray(values, dtype=np.float32)
            h5.create_dataset(
                name, data=values, chunks=(1, *values.shape[1:]), compression="lzf"
            )
        if samples is not None:
            h5.create_dataset(
                "samples",
                data=samples.astype(np.float32),
                chunks=(1, *samples.shape[1:]),
                compression="lzf",
            )
    return path


def _fmt(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return value
