"""IllustrisTNG Stellar Assembly ex-situ flags for the rows of one cutout.

The catalogue of Rodriguez-Gomez et al. (2016) stores ``InSitu`` (1 in-situ,
0 ex-situ, -1 undefined) either per cutout (one row per cutout entry, wind cells
included) or for a full snapshot (``stars_NNN.hdf5``), sliced at
``offsets_NNN.hdf5:Subhalo/SnapByType[id, 4]``. :func:`read_insitu_flags` reads
either; :mod:`.tng` applies the flags to a cutout.

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sbi_exsitu.data.readers.fixtures import write_insitu_flags
    >>> path = os.path.join(tempfile.mkdtemp(), "flags.hdf5")
    >>> _ = write_insitu_flags(path, np.array([1, 0, -1]))
    >>> read_insitu_flags(path, 3).tolist()
    [1, 0, -1]
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from sbi_exsitu.data.readers._hdf5 import ReaderError, read_array, read_attr

__all__ = ["cutout_subhalo_id", "read_insitu_flags"]


def cutout_subhalo_id(path: str | Path) -> int:
    """The subhalo id of a cutout: ``Header/CutoutID``, else ``cutout_<id>`` name.

    Raises:
        ReaderError: neither is available.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "Header" in f and "CutoutID" in f["Header"].attrs:
            return int(read_attr(f["Header"], "CutoutID"))
    match = re.search(r"cutout_(\d+)", path.name)
    if match:
        return int(match.group(1))
    raise ReaderError(
        f"{path}: attribute 'Header/CutoutID' is missing and the name is not "
        "'cutout_<id>.hdf5'; expected one of them to give the subhalo id needed to "
        "slice the offsets (or pass subhalo_id)"
    )


def read_insitu_flags(
    flags: str | Path,
    n_rows: int,
    *,
    offsets: str | Path | None = None,
    subhalo_id: int | None = None,
    particle_ids: np.ndarray | None = None,
    cutout: str = "cutout",
) -> np.ndarray:
    """Stellar Assembly ``InSitu`` values for the rows of one cutout.

    Args:
        flags: a per-cutout flag file (root dataset ``InSitu``, one row per cutout
            entry) or, with ``offsets``, the full-snapshot ``stars_NNN.hdf5``.
        n_rows: number of ``PartType4`` entries in the cutout (winds included).
        offsets: ``offsets_NNN.hdf5`` with ``Subhalo/SnapByType``.
        subhalo_id: the subhalo, required with ``offsets``.
        particle_ids: the cutout's ``ParticleIDs``, checked against the flags'
            ``ParticleID`` when both exist.
        cutout: the cutout's name, for messages.

    Returns:
        (n_rows,) int8 array of 1 (in-situ), 0 (ex-situ) or -1 (undefined).

    Raises:
        ReaderError: missing fields, lengths or particle IDs that do not match,
            values outside {-1, 0, 1}.
    """
    flags = Path(flags)
    rows = slice(0, n_rows)
    if offsets is not None:
        if subhalo_id is None:
            raise ReaderError(f"{offsets}: a subhalo id is needed to use the offsets")
        with h5py.File(offsets, "r") as f:
            table = read_array(f, "Subhalo/SnapByType", kind="iu", shape=(None, 6))
        if not 0 <= subhalo_id < len(table):
            raise ReaderError(
                f"{offsets}: field 'Subhalo/SnapByType' has {len(table)} subhaloes, "
                f"expected a row for subhalo {subhalo_id} of {cutout}"
            )
        start = int(table[subhalo_id, 4])
        rows = slice(start, start + n_rows)
    with h5py.File(flags, "r") as f:
        if "InSitu" not in f:
            raise ReaderError(
                f"{flags}: field 'InSitu' is missing, expected the Stellar Assembly "
                "flags (1 in-situ, 0 ex-situ, -1 undefined) at the file root"
            )
        total = f["InSitu"].shape[0] if f["InSitu"].ndim == 1 else -1
        if offsets is None and total != n_rows:
            raise ReaderError(
                f"{flags}: field 'InSitu' has {total} entries, expected {n_rows} "
                f"(one per PartType4 entry of {cutout}, wind cells included); for "
                "a full-snapshot stars_NNN.hdf5 also pass its offsets file"
            )
        if offsets is not None and rows.stop > total:
            raise ReaderError(
                f"{flags}: field 'InSitu' has {total} entries, expected at least "
                f"{rows.stop} (offset {rows.start} + {n_rows} stars of {cutout}); "
                "are the flags and offsets of the same snapshot?"
            )
        insitu = read_array(f, "InSitu", kind="iu", shape=(None,), rows=rows)
        ids = None
        if particle_ids is not None and "ParticleID" in f:
            ids = read_array(f, "ParticleID", kind="iu", shape=(total,), rows=rows)
    bad = ~np.isin(insitu, (-1, 0, 1))
    if bad.any():
        raise ReaderError(
            f"{flags}: field 'InSitu' has {int(bad.sum())} values outside "
            "{-1, 0, 1}, expected 1 in-situ, 0 ex-situ, -1 undefined"
        )
    if ids is not None:
        wrong = np.flatnonzero(ids.astype(np.uint64) != particle_ids.astype(np.uint64))
        if wrong.size:
            raise ReaderError(
                f"{flags}: field 'ParticleID' differs from 'PartType4/ParticleIDs' "
                f"of {cutout} at {wrong.size} of {n_rows} rows (first at row "
                f"{wrong[0]}: {ids[wrong[0]]} != {particle_ids[wrong[0]]}), expected "
                "the same particles in the same order: wrong offsets or subhalo id?"
            )
    return insitu.astype(np.int8)
