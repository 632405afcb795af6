"""Readers of real files: TNG cutouts, EAGLE particle files and MaNGA maps.

Each simulation reader converts one galaxy to
:class:`~sbi_exsitu.data.particles.Particles` in physical units (kpc, km/s, Msun,
Gyr, metal mass fraction); :func:`read_galaxy` detects the format. The survey
reader :func:`read_manga` turns a MaNGA DAP MAPS file (+ Pipe3D maps) into
:class:`~sbi_exsitu.data.observe.SpaxelMaps`. This layer uses numpy, scipy,
h5py and astropy only (never torch).

Example:
    >>> from sbi_exsitu.data.readers import read_galaxy  # doctest: +SKIP
    >>> particles, fmt = read_galaxy("cutout_12345.hdf5")  # doctest: +SKIP
"""

from __future__ import annotations

from sbi_exsitu.data.readers._hdf5 import ReaderError
from sbi_exsitu.data.readers.auto import detect_format, read_galaxy
from sbi_exsitu.data.readers.cosmology import Cosmology
from sbi_exsitu.data.readers.eagle import read_eagle
from sbi_exsitu.data.readers.manga import read_dap_maps, read_manga
from sbi_exsitu.data.readers.pipe3d import read_pipe3d
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
    "read_dap_maps",
    "read_manga",
    "read_pipe3d",
    "read_tng_cutout",
]
