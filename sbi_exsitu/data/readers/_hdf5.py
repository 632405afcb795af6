"""Checked access to HDF5 groups, datasets and attributes.

Every reader goes through these helpers so that a malformed file always fails
with a :class:`ReaderError` naming the file, the field and what was expected,
never with a bare ``KeyError`` from h5py.

Example:
    >>> import h5py, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.hdf5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("A/B", data=[1.0, 2.0])
    >>> with h5py.File(path, "r") as f:
    ...     read_array(f, "A/B", kind="f", shape=(None,)).tolist()
    [1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.errors import ReaderError

__all__ = [
    "ReaderError",
    "read_array",
    "read_attr",
    "has",
    "describe_kind",
    "open_hdf5",
    "require_group",
    "row_count",
]

_KINDS = {
    "f": "floating-point",
    "i": "integer",
    "u": "unsigned integer",
    "iu": "integer",
    "fiu": "numeric",
}


def describe_kind(kind: str) -> str:
    """Human name of a dtype kind string such as ``"f"`` or ``"iu"``."""
    return _KINDS.get(kind, kind)


def has(f: h5py.File, name: str) -> bool:
    """Whether ``name`` (a group or dataset path) exists in ``f``."""
    return name in f


def _fname(f: h5py.File) -> str:
    return str(Path(f.filename))


def open_hdf5(path: Path) -> h5py.File:
    """Open ``path`` read-only; a file h5py cannot open is a :class:`ReaderError`."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ReaderError(f"{path}: cannot open as HDF5: {err}") from None


def require_group(f: h5py.File, path: Path, name: str, expected: str) -> h5py.Group:
    """The group ``name`` of ``f``, or a :class:`ReaderError` saying what it holds.

    ``path`` is the name the caller was given (not ``f.filename``), so that
    messages quote the file exactly as the user spelled it.
    """
    if name not in f:
        raise ReaderError(f"{path}: group '{name}' is missing, expected {expected}")
    return f[name]


def row_count(f: h5py.File, name: str) -> int:
    """Length of dataset ``name`` (0 if missing: :func:`read_array` then says so).

    Readers take N from the first dataset and check the others against it.
    """
    return f[name].shape[0] if name in f else 0


def read_array(
    f: h5py.File,
    name: str,
    *,
    kind: str = "fiu",
    shape: Sequence[int | None] | None = None,
    rows: slice | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Read a dataset, checking that it exists, its dtype kind, shape and values.

    Args:
        f: an open file.
        name: dataset path, e.g. ``"PartType4/Coordinates"``.
        kind: allowed numpy dtype kinds (``"f"``, ``"iu"``, ...).
        shape: expected shape, ``None`` entries match any length.
        rows: read only these rows (a slice of the first axis); the shape check
            applies to the whole dataset.
        finite: require every value to be finite (floating-point data only).

    Returns:
        The data as a numpy array.

    Raises:
        ReaderError: missing dataset, wrong dtype, wrong shape or NaN/inf.
    """
    where = f"{_fname(f)}: field '{name}'"
    if name not in f:
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        if parent and parent not in f:
            raise ReaderError(
                f"{_fname(f)}: group '{parent}' is missing, expected it to hold "
                f"'{name}'"
            )
        raise ReaderError(f"{where} is missing, expected a dataset")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise ReaderError(f"{where} is a group, expected a dataset")
    if obj.dtype.kind not in kind:
        raise ReaderError(
            f"{where} has dtype {obj.dtype}, expected {describe_kind(kind)} data"
        )
    if shape is not None:
        ok = len(obj.shape) == len(shape) and all(
            want is None or want == got
            for want, got in zip(shape, obj.shape, strict=True)
        )
        if not ok:
            dims = ["N" if s is None else str(s) for s in shape]
            want = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
            raise ReaderError(f"{where} has shape {obj.shape}, expected {want}")
    data = np.asarray(obj[rows] if rows is not None else obj[()])
    if finite and data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        bad = int(np.sum(~np.isfinite(data)))
        raise ReaderError(
            f"{where} has {bad} NaN or infinite values, expected finite numbers"
        )
    return data


def read_attr(
    obj: h5py.Group | h5py.Dataset,
    name: str,
    *,
    size: int | None = None,
    positive: bool = False,
    what: str = "",
) -> Any:
    """Read a numeric attribute, checking existence, size and finiteness.

    Args:
        obj: the group or dataset holding the attribute.
        name: attribute name.
        size: expected number of elements (``None`` = a scalar).
        positive: require every element to be > 0.
        what: an explanation appended to the error (units, meaning).

    Returns:
        A float (scalar) or a float64 array of ``size`` elements.

    Raises:
        ReaderError: missing, non-numeric, wrong size, non-finite or not positive.
    """
    prefix = obj.name.strip("/")
    full = f"{prefix}/{name}" if prefix else name
    where = f"{_fname(obj.file)}: attribute '{full}'"
    hint = f" ({what})" if what else ""
    if name not in obj.attrs:
        raise ReaderError(f"{where} is missing, expected a number{hint}")
    try:
        value = np.asarray(obj.attrs[name], dtype=np.float64)
    except (TypeError, ValueError):
        raise ReaderError(f"{where} is not numeric, expected a number{hint}") from None
    want = 1 if size is None else size
    if value.size != want:
        raise ReaderError(f"{where} has {value.size} elements, expected {want}{hint}")
    if not np.all(np.isfinite(value)) or (positive and np.any(value <= 0)):
        cond = "finite and > 0" if positive else "finite"
        raise ReaderError(f"{where} is {value.tolist()}, expected {cond}{hint}")
    return float(value.reshape(-1)[0]) if size is None else value.reshape(-1)
