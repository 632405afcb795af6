"""Steps the TNG and EAGLE readers share once their units are converted.

Both readers end the same way: check the converted star values, put positions
on the nearest periodic image of the centre, and build a :class:`Particles`
whose own validation errors are re-raised as :class:`ReaderError` naming the
file. Each reader keeps what differs (field names, units, centre and systemic
velocity recipes).

Example:
    >>> import numpy as np
    >>> nearest_image(np.array([[9.0, -6.0, 1.0]]), 10.0).tolist()
    [[-1.0, 4.0, 1.0]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.data.particles import Particles, ParticlesError
from sbi_exsitu.data.readers._hdf5 import ReaderError, read_attr
from sbi_exsitu.data.readers.cosmology import Cosmology

__all__ = [
    "build_particles",
    "check_masses",
    "check_nonnegative",
    "header_cosmology",
    "nearest_image",
]


def header_cosmology(header: h5py.Group, hubble_param: float) -> Cosmology:
    """The cosmology of a snapshot header (``Omega0``, ``OmegaLambda``)."""
    return Cosmology(
        hubble_param=hubble_param,
        omega_m=read_attr(header, "Omega0", positive=True),
        omega_lambda=read_attr(header, "OmegaLambda"),
    )


def nearest_image(offset: np.ndarray, box: float) -> np.ndarray:
    """``offset`` wrapped to the nearest periodic image in a box of side ``box``."""
    return offset - box * np.round(offset / box)


def check_masses(path: Path, field: str, mass: np.ndarray) -> None:
    """Raise unless every mass in ``PartType4/<field>`` is > 0."""
    if np.any(mass <= 0):
        raise ReaderError(
            f"{path}: field 'PartType4/{field}' has zero or "
            "negative values, expected masses > 0"
        )


def check_nonnegative(path: Path, field: str, values: np.ndarray) -> None:
    """Raise if ``PartType4/<field>`` (e.g. a metallicity) has negative values."""
    if np.any(values < 0):
        raise ReaderError(
            f"{path}: field 'PartType4/{field}' has negative values, expected >= 0"
        )


def build_particles(path: Path, **fields: Any) -> Particles:
    """:class:`Particles` from ``fields``; its own checks fail naming ``path``."""
    try:
        return Particles(**fields)
    except ParticlesError as err:
        raise ReaderError(f"{path}: {err}") from None
