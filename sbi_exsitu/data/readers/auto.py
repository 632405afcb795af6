"""Detect a simulation file's format and read it with the right reader.

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> from sbi_exsitu.data.readers.fixtures import write_eagle_file
    >>> p = Particles(pos=np.eye(3), vel=np.zeros((3, 3)), mass=np.ones(3) * 1e8,
    ...               age=np.ones(3), metallicity=np.full(3, 0.02))
    >>> path = os.path.join(tempfile.mkdtemp(), "gal.hdf5")
    >>> write_eagle_file(path, p)
    >>> detect_format(path)
    'EAGLE'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.readers._hdf5 import ReaderError
from sbi_exsitu.data.readers.eagle import read_eagle
from sbi_exsitu.data.readers.tng import read_tng_cutout

__all__ = ["catalogue_path", "detect_format", "read_galaxy"]


def detect_format(path: str | Path) -> str:
    """``"TNG"`` or ``"EAGLE"``, from the star-particle field names.

    Raises:
        ReaderError: the file is not HDF5 or matches neither schema.
    """
    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            if "PartType4/GFM_StellarFormationTime" in f:
                return "TNG"
            if "PartType4/StellarFormationTime" in f:
                return "EAGLE"
            has_stars = "PartType4" in f
    except OSError as err:
        raise ReaderError(f"{path}: cannot open as HDF5: {err}") from None
    where = (
        "field 'PartType4/GFM_StellarFormationTime' (TNG) or "
        "'PartType4/StellarFormationTime' (EAGLE)"
    )
    if not has_stars:
        where = "group 'PartType4' (star particles)"
    raise ReaderError(
        f"{path}: {where} is missing, expected a TNG cutout or an EAGLE particle file"
    )


def read_galaxy(
    path: str | Path,
    *,
    flags: str | Path | None = None,
    offsets: str | Path | None = None,
    catalogue: bool | str | Path = True,
    **kwargs: Any,
) -> tuple[Particles, str]:
    """Read one galaxy from a TNG cutout or an EAGLE particle file.

    Args:
        path: the file.
        flags: Stellar Assembly flags (TNG only), see
            :func:`~sbi_exsitu.data.readers.tng.read_tng_cutout`.
        offsets: offsets file for full-snapshot flags (TNG only).
        catalogue: the subhalo catalogue entry (centre, half-mass radius):
            True reads ``<stem>.json`` next to the file if it exists; a path
            (``{stem}`` is replaced by the file's stem) must exist; False
            reads none. ``Particles.provenance["catalogue"]`` says which.
        **kwargs: passed to the reader.

    Returns:
        The particles and the format name (``"TNG"`` or ``"EAGLE"``).

    Raises:
        ReaderError: unknown format, or whatever the reader raises.
    """
    path = Path(path)
    fmt = detect_format(path)
    cat = catalogue_path(path, catalogue)
    if fmt == "TNG":
        particles = read_tng_cutout(
            path, flags=flags, offsets=offsets, catalogue=cat, **kwargs
        )
        return _note_missing(particles, path, catalogue, cat), fmt
    if flags is not None or offsets is not None:
        raise ReaderError(
            f"{path}: EAGLE file given Stellar Assembly flags/offsets, expected "
            "them for TNG cutouts only (the flags are TNG post-processing)"
        )
    particles = read_eagle(path, catalogue=cat, **kwargs)
    return _note_missing(particles, path, catalogue, cat), fmt


def catalogue_path(path: str | Path, catalogue: bool | str | Path) -> Path | None:
    """The catalogue JSON to read for ``path`` (see :func:`read_galaxy`).

    Raises:
        ReaderError: an explicit catalogue path that does not exist.
    """
    path = Path(path)
    if catalogue is False:
        return None
    if catalogue is True:
        sidecar = path.with_suffix(".json")
        return sidecar if sidecar.is_file() else None
    given = Path(str(catalogue).replace("{stem}", path.stem))
    if not given.is_file():
        raise ReaderError(
            f"{path}: catalogue {given} does not exist (from --catalogue "
            f"{catalogue!s}); expected the subhalo JSON of this galaxy"
        )
    return given


def _note_missing(
    particles: Particles, path: Path, asked: bool | str | Path, used: Path | None
) -> Particles:
    # Say why no catalogue was used: a JSON under another name is not found.
    if used is None and asked is True:
        particles.provenance["catalogue"] = (
            f"none (no {path.with_suffix('.json').name} next to the file; "
            "point at it with --catalogue)"
        )
    return particles
