"""Exact comparison of HDF5 files, shared by the dataset tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def h5_contents(path: Path) -> dict[str, np.ndarray]:
    """Every dataset and attribute of an HDF5 file (attributes as ``@name``)."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()])
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
        out.update({f"@{k}": v for k, v in h5.attrs.items()})
    return out


def assert_same_h5(a: Path, b: Path) -> None:
    """Assert two HDF5 files hold equal datasets and attributes."""
    ca, cb = h5_contents(a), h5_contents(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
