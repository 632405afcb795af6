"""Stellar-population maps of the Pipe3D MaNGA value-added catalogue.

Pipe3D (Sánchez et al. 2016, RMxAA 52, 21 and 171; the DR17 MaNGA VAC,
Sánchez et al. 2022, ApJS 262, 36) fits each MaNGA cube with single stellar
populations and writes ``manga-PLATE-IFU.Pipe3D.cube.fits.gz``. Its ``SSP``
extension is a (plane, ny, nx) cube on the MaNGA cube's 0.5 arcsec grid whose
planes are described by the header keys ``DESC_0``, ``DESC_1``, ...; planes
are chosen here by words in that text, never by number (the plane order is
not part of the data model). Conversions to
:class:`~sbi_exsitu.data.observe.SpaxelMaps` units:

* stellar mass density, log10(Msun / spaxel) -> Msun per spaxel (10**x); the
  dust-corrected plane when there is one;
* mass-weighted age, log10(age / yr) -> Gyr (10**x / 1e9);
* mass-weighted metallicity [Z/H] = log10(Z / Z_sun) -> Z = Z_sun 10**[Z/H] with
  Z_sun = :data:`PIPE3D_SOLAR_Z` = 0.019, the solar metallicity of the
  Padova-isochrone SSP libraries Pipe3D's templates are built on (Sánchez et
  al. 2016; an assumption worth checking against the VAC's data model of the
  release in hand, pass ``solar_z`` to change it);
* spaxels whose S/N plane (``DESC_n`` mentioning S/N) is below ``min_snr``
  (5 by default, as in the MaNGA application of Angeloudi et al. 2024) are
  invalid in every channel.

Supported: Pipe3D only. The Firefly DR17 VAC is not: it is one large file for
all cubes, on Voronoi bins, and its masses run ~0.3 dex below Pipe3D's, so a
posterior trained on Pipe3D-like maps would be biased by it.

Example:
    >>> import tempfile
    >>> from sbi_exsitu.data.readers.manga_fixtures import write_manga_galaxy
    >>> files = write_manga_galaxy(tempfile.mkdtemp())
    >>> pop = read_pipe3d(files.pipe3d)
    >>> sorted(pop.values)
    ['age', 'mass', 'metallicity']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.data.readers._fits import channel_names, extension, open_fits
from sbi_exsitu.errors import ReaderError

__all__ = ["PIPE3D_SOLAR_Z", "PIPE3D_PLANES", "Pipe3DMaps", "read_pipe3d"]

#: Z_sun of Pipe3D's [Z/H] (see the module docstring).
PIPE3D_SOLAR_Z = 0.019

#: Channel -> (words the DESC_n text must hold, words it must not hold).
PIPE3D_PLANES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mass": (("stellar", "mass", "density"), ("error",)),
    "age": (("mass", "weighted", "age"), ("error", "luminosity")),
    "metallicity": (("mass", "weighted", "metallicity"), ("error", "luminosity")),
    "snr": (("s n",), ("error",)),
    "mass_error": (("error", "stellar", "mass", "density"), ()),
    "age_error": (("error", "age"), ("luminosity",)),
    "metallicity_error": (("error", "metallicity"), ("luminosity",)),
}


@dataclass(frozen=True)
class Pipe3DMaps:
    """Mass, age and metallicity maps in SpaxelMaps units, with validity."""

    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    error: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the maps."""
        return self.values["mass"].shape


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def _find(descs: list[str], key: str) -> list[int]:
    need, avoid = PIPE3D_PLANES[key]
    hits = []
    for i, d in enumerate(descs):
        w = _words(d)
        if all(f" {n} " in w for n in need) and not any(f" {a} " in w for a in avoid):
            hits.append(i)
    if key == "mass" and len(hits) > 1:
        # Prefer the dust-corrected mass density (Sánchez et al. 2016, sec. 5).
        dust = [i for i in hits if " dust " in _words(descs[i])]
        hits = dust or hits
    return hits


def _plane(cube: np.ndarray, descs: list[str], key: str, path: Path) -> np.ndarray:
    hits = _find(descs, key)
    if not hits:
        need, _ = PIPE3D_PLANES[key]
        raise ReaderError(
            f"{path} [SSP]: no plane whose DESC_n mentions {' '.join(need)!r}; "
            f"the planes are {descs}. Is it a Pipe3D cube file?"
        )
    return np.asarray(cube[hits[0]], dtype=np.float64)


def _descriptions(hdu: Any, path: Path) -> list[str]:
    descs = channel_names(hdu, "DESC_", 0)
    if not descs:
        descs = channel_names(hdu, "DESC_", 1)
    cube = hdu.data
    if cube is None or cube.ndim != 3 or cube.shape[0] < len(descs) or not descs:
        raise ReaderError(
            f"{path} [SSP]: expected a (plane, ny, nx) cube with one DESC_n header "
            f"key per plane, got shape {None if cube is None else cube.shape} and "
            f"{len(descs)} DESC_n keys"
        )
    return descs


def read_pipe3d(
    path: str | Path, *, min_snr: float = 5.0, solar_z: float = PIPE3D_SOLAR_Z
) -> Pipe3DMaps:
    """Read mass, age and metallicity maps from a Pipe3D cube file.

    Args:
        path: ``manga-PLATE-IFU.Pipe3D.cube.fits.gz``.
        min_snr: spaxels with a lower S/N are invalid.
        solar_z: Z_sun that Pipe3D's [Z/H] is relative to.

    Raises:
        ReaderError: no ``SSP`` extension, a plane is missing, or no spaxel is
            above ``min_snr``.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        hdu = extension(hdul, path, "SSP")
        descs = _descriptions(hdu, path)
        cube = np.asarray(hdu.data, dtype=np.float64)
        log_m = _plane(cube, descs, "mass", path)
        log_age = _plane(cube, descs, "age", path)
        zh = _plane(cube, descs, "metallicity", path)
        snr = _plane(cube, descs, "snr", path)
        errors = {
            ch: _plane(cube, descs, f"{ch}_error", path)
            for ch in ("mass", "age", "metallicity")
            if _find(descs, f"{ch}_error")
        }
    good = np.isfinite(snr) & (snr >= min_snr)
    if not good.any():
        raise ReaderError(
            f"{path} [SSP]: no spaxel has S/N >= {min_snr} (max "
            f"{np.nanmax(snr) if np.isfinite(snr).any() else 'NaN'}); every "
            "stellar-population value would be masked"
        )
    values = {
        "mass": 10.0**log_m,
        "age": 10.0**log_age / 1e9,
        "metallicity": solar_z * 10.0**zh,
    }
    valid = {ch: good & np.isfinite(v) for ch, v in values.items()}
    values = {ch: np.where(valid[ch], v, 0.0) for ch, v in values.items()}
    # Pipe3D errors are in dex: propagate to the linear quantities.
    error = {ch: np.log(10.0) * values[ch] * np.abs(e) for ch, e in errors.items()}
    return Pipe3DMaps(values=values, valid=valid, error=error)
