"""Readers of real simulation files: TNG cutouts and EAGLE particle files.

Each reader converts one galaxy to :class:`~sbi_exsitu.data.particles.Particles` in
physical units (kpc, km/s, Msun, Gyr, metal mass fraction); :func:`read_galaxy`
detects the format. This layer uses numpy, scipy and h5py only (never torch).

Example:
    >>> from sbi_exsitu.data.readers import read_galaxy  # doctest: +SKIP
    >>> particles, fmt = read_galaxy("cutout_12345.hdf5")  # doctest: +SKIP
"""

from __future__ import annotations

from sbi_exsitu.data.readers._hdf5 import ReaderError
from sbi_exsitu.data.readers.auto import detect_format, read_galaxy
from sbi_exsitu.data.readers.cosmology import Cosmology
from sbi_exsitu.data.readers.eagle import read_eagle
from sbi_exsitu.data.readers.tng import (
    SubhaloCatalogue,
    read_insitu_flags,
    read_tng_cutout,
)

__all__ = [
    "Cosmology",
    "ReaderError",
    "SubhaloCatalogue",
    "detect_format",
    "read_eagle",
    "read_galaxy",
    "read_insitu_flags",
    "read_tng_cutout",
]
