"""MaNGA survey input: a DAP MAPS file (+ Pipe3D maps) as :class:`SpaxelMaps`.

Kinematics come from the MaNGA Data Analysis Pipeline (DAP; Westfall et al. 2019,
AJ 158, 231) MAPS file of SDSS DR17 (Abdurro'uf et al. 2022, ApJS 259, 35),
``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz``; the stellar-population maps (mass,
age, metallicity) from the Pipe3D value-added catalogue
(:mod:`sbi_exsitu.data.readers.pipe3d`). Both are on the reconstructed cube's
grid of 0.5 arcsec spaxels (Law et al. 2016, AJ 152, 83).

What is read, always by ``EXTNAME`` and by the channel keys ``C1``, ``C2``, ...
(never by position):

* ``STELLAR_VEL`` (+ ``_IVAR``, ``_MASK``): km/s relative to the redshift given
  by the PRIMARY header's ``SCINPVEL`` (= c z, km/s), as the DAP gives it; the
  redshift is ``SCINPVEL / c`` (as the DAP's own scripts compute the NSA
  redshift). A ``Z`` or ``NSA_Z`` primary key is used when ``SCINPVEL`` is
  absent. The input redshift can differ from the true systemic one by tens of
  km/s; the velocities are kept as the DAP gives them, since a standardised
  velocity channel (``RenderConfig.standardize``) drops the constant offset.
* ``STELLAR_SIGMA`` (+ ``_IVAR``, ``_MASK``) and ``STELLAR_SIGMACORR``: the
  dispersion with the instrumental broadening removed is
  sqrt(STELLAR_SIGMA^2 - STELLAR_SIGMACORR^2) with the *first* channel of the
  correction, named ``resolution_difference`` (DR17 has two channels; DR15
  one 2-D map); spaxels where the difference is negative are masked.
* ``BINID``: the channel named ``STELLAR_CONTINUA`` (the bins of the stellar
  kinematics; -1 = not analysed).
* ``SPX_SKYCOO``: on-sky offsets (arcsec) from the object's position (``OBJRA``,
  ``OBJDEC``); the centre is the point where both vanish, found by a linear fit
  over the grid. Without the extension the centre is the middle of the array
  (the DRP centres the cube on the object).
* ``SPX_MFLUX_IVAR``: spaxels with zero inverse variance are outside the fibre
  bundle; they are invalid in every channel.
* PRIMARY header: ``REFF`` (arcsec, the NSA elliptical Petrosian half-light
  radius; it sets the posterior's field of view), ``ECOOPA`` and ``ECOOELL``
  (position angle and ellipticity of the elliptical coordinates, recorded in the
  name only), ``DAPTYPE`` (e.g. ``HYB10-MILESHC-MASTARSSP``).

Mask bit 30 (DONOTUSE) of a ``_MASK`` extension invalidates a spaxel; so do a
zero inverse variance and a bin id of -1. The DR17 DAP types are ``SPX-`` (one
spaxel per bin), ``VOR10-`` (Voronoi bins of S/N ~ 10) and ``HYB10-`` (stellar
kinematics in S/N ~ 10 Voronoi bins, emission lines per spaxel), each with
``MILESHC-MASTARSSP`` templates (Westfall et al. 2019; Abdurro'uf et al. 2022).

Example:
    >>> import os, tempfile
    >>> from sbi_exsitu.data.readers.manga_fixtures import write_manga_galaxy
    >>> files = write_manga_galaxy(tempfile.mkdtemp())
    >>> m = read_manga(files.maps, files.pipe3d)
    >>> m.spaxel_arcsec, sorted(m.values)
    (0.5, ['age', 'dispersion', 'mass', 'metallicity', 'velocity'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.data.observe.spaxels import SpaxelMaps
from sbi_exsitu.data.readers._fits import (
    channel,
    extension,
    header_value,
    open_fits,
)
from sbi_exsitu.data.readers.pipe3d import read_pipe3d
from sbi_exsitu.errors import ReaderError

__all__ = [
    "MANGA_SPAXEL_ARCSEC",
    "DONOTUSE_BIT",
    "SPEED_OF_LIGHT_KMS",
    "SIGMACORR_CHANNEL",
    "DapKinematics",
    "read_dap_maps",
    "read_manga",
]

#: Side of a reconstructed-cube spaxel (Law et al. 2016, AJ 152, 83).
MANGA_SPAXEL_ARCSEC = 0.5
#: DAP maps mask bit "DONOTUSE" (Westfall et al. 2019, table of MAPS mask bits).
DONOTUSE_BIT = 30
#: Speed of light in km/s (exact, SI definition).
SPEED_OF_LIGHT_KMS = 299_792.458
#: The STELLAR_SIGMACORR channel used (DR17 channel 1; Marvin's DR17 datamodel).
SIGMACORR_CHANNEL = "resolution_difference"


@dataclass(frozen=True)
class DapKinematics:
    """What :func:`read_dap_maps` reads from one DAP MAPS file.

    Attributes:
        name: ``manga-PLATE-IFU`` (from ``PLATEIFU``, else the file name).
        daptype: the DAP analysis type, e.g. ``"HYB10-MILESHC-MASTARSSP"``.
        velocity, dispersion: (ny, nx) km/s maps (dispersion corrected).
        velocity_error, dispersion_error: (ny, nx) 1-sigma errors (km/s; inf
            where unknown).
        valid_velocity, valid_dispersion: (ny, nx) bool.
        bin_id: (ny, nx) int stellar-continuum bin ids (-1 = none).
        footprint: (ny, nx) bool, spaxels inside the fibre bundle.
        centre: (x, y) of the galaxy centre in spaxel units.
        centre_source: where the centre came from, for logs.
        r_e_arcsec: ``REFF``.
        redshift: ``SCINPVEL / c`` (or ``Z`` / ``NSA_Z``).
        position_angle, ellipticity: ``ECOOPA`` (deg), ``ECOOELL``.
    """

    name: str
    daptype: str
    velocity: np.ndarray
    dispersion: np.ndarray
    velocity_error: np.ndarray
    dispersion_error: np.ndarray
    valid_velocity: np.ndarray
    valid_dispersion: np.ndarray
    bin_id: np.ndarray
    footprint: np.ndarray
    centre: tuple[float, float]
    centre_source: str
    r_e_arcsec: float
    redshift: float
    position_angle: float
    ellipticity: float


def _donotuse(mask: np.ndarray) -> np.ndarray:
    return (mask.astype(np.int64) & (1 << DONOTUSE_BIT)) != 0


def _companion(hdul: Any, path: Path, ext: str, kind: str) -> str:
    """Name of the ``_IVAR``/``_MASK`` extension of ``ext``.

    The DAP names it in the header (``ERRDATA``, ``QUALDATA``); older files only
    by the suffix.
    """
    key = {"IVAR": "ERRDATA", "MASK": "QUALDATA"}[kind]
    header = extension(hdul, path, ext).header
    return str(header.get(key, f"{ext}_{kind}")).strip()


def _map_with_quality(
    hdul: Any, path: Path, ext: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, ivar, good) of a 2-D DAP map and its companions."""
    value = channel(hdul, path, ext, None)
    ivar = channel(hdul, path, _companion(hdul, path, ext, "IVAR"), None)
    mask = channel(hdul, path, _companion(hdul, path, ext, "MASK"), None)
    if not (value.shape == ivar.shape == mask.shape):
        raise ReaderError(
            f"{path} [{ext}]: the map, its IVAR and MASK have shapes "
            f"{value.shape}, {ivar.shape}, {mask.shape}; expected one shape"
        )
    good = np.isfinite(value) & (ivar > 0) & ~_donotuse(mask)
    return value, ivar, good


def _sigma_correction(hdul: Any, path: Path) -> np.ndarray:
    data = extension(hdul, path, "STELLAR_SIGMACORR").data
    if data is not None and data.ndim == 2:  # DR15: a single map
        return np.asarray(data, dtype=np.float64)
    # DR17's first channel, the quadrature difference of the galaxy's and the
    # templates' resolution (the second, "fit", is the alternative correction).
    return channel(hdul, path, "STELLAR_SIGMACORR", SIGMACORR_CHANNEL)


def _redshift(hdul: Any, path: Path) -> float:
    header = hdul[0].header
    if header.get("SCINPVEL") not in (None, ""):
        return float(header["SCINPVEL"]) / SPEED_OF_LIGHT_KMS
    for key in ("Z", "NSA_Z"):
        if header.get(key) not in (None, ""):
            return float(header[key])
    raise ReaderError(
        f"{path} [PRIMARY]: no redshift: none of the header keys SCINPVEL "
        "(c z, km/s), Z, NSA_Z; the stellar velocities are relative to it. "
        "Add SCINPVEL from the DAPall/NSA catalogue to the header"
    )


def _centre(hdul: Any, path: Path, shape: tuple[int, int]) -> tuple[tuple, str]:
    ny, nx = shape
    if "SPX_SKYCOO" not in [h.name for h in hdul]:
        return (nx / 2, ny / 2), "array centre (no SPX_SKYCOO)"
    hdu = hdul["SPX_SKYCOO"]
    names = [str(hdu.header.get(f"C{i}", "")).strip() for i in (1, 2)]
    sky = np.stack([channel(hdul, path, "SPX_SKYCOO", n) for n in names])
    # SPX_SKYCOO is at spaxel centres; fit on-sky = A @ (x, y) + b, solve for 0.
    yy, xx = np.mgrid[0:ny, 0:nx] + 0.5
    design = np.column_stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    coef, *_ = np.linalg.lstsq(design, sky.reshape(2, -1).T, rcond=None)
    a, b = coef[:2].T, coef[2]
    if abs(np.linalg.det(a)) < 1e-12:
        return (nx / 2, ny / 2), "array centre (SPX_SKYCOO degenerate)"
    x0, y0 = np.linalg.solve(a, -b)
    return (float(x0), float(y0)), "SPX_SKYCOO zero (OBJRA, OBJDEC)"


def _check_daptype(
    path: Path, daptype: str, expected: str | Sequence[str] | None
) -> None:
    if expected is None:
        return
    wanted = [expected] if isinstance(expected, str) else list(expected)
    found = daptype.upper()
    if any(found == w.upper() or found.startswith(w.upper() + "-") for w in wanted):
        return
    names = " or ".join(f"'{w}'" for w in wanted)
    raise ReaderError(
        f"{path} [PRIMARY]: DAPTYPE is '{daptype}' but the posterior expects "
        f"{names} maps (binning and templates change the maps). Download "
        f"manga-PLATE-IFU-MAPS-{wanted[0]}{'' if '-' in wanted[0] else '-...'}"
        ".fits.gz instead"
    )


def read_dap_maps(
    path: str | Path, *, daptype: str | Sequence[str] | None = None
) -> DapKinematics:
    """Read the stellar kinematics and geometry of one DAP MAPS file.

    Args:
        path: ``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz``.
        daptype: the DAP type the caller needs (e.g. the one a posterior was
            trained for), or several; a type also matches by its binning prefix
            (``"HYB10"`` accepts ``HYB10-MILESHC-MASTARSSP``); None accepts any.

    Raises:
        ReaderError: the file, an extension, a channel or a header key is
            missing, the DAP type differs from ``daptype``, or no spaxel has a
            usable velocity.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        found = str(header_value(hdul, path, "DAPTYPE", hint=", not a DAP MAPS file?"))
        _check_daptype(path, found, daptype)
        r_e = float(
            header_value(
                hdul,
                path,
                "REFF",
                hint=" (NSA half-light radius, arcsec); "
                "add it from the DAPall/NSA catalogue (nsa_elpetro_th50_r)",
            )
        )
        vel, vel_ivar, vel_ok = _map_with_quality(hdul, path, "STELLAR_VEL")
        sig, sig_ivar, sig_ok = _map_with_quality(hdul, path, "STELLAR_SIGMA")
        corr = _sigma_correction(hdul, path)
        bin_id = channel(hdul, path, "BINID", "STELLAR_CONTINUA").astype(np.int64)
        flux_ivar = channel(hdul, path, "SPX_MFLUX_IVAR", None)
        centre, source = _centre(hdul, path, vel.shape)
        header = hdul[0].header
        name = f"manga-{header['PLATEIFU']}" if "PLATEIFU" in header else path.name
        redshift = _redshift(hdul, path)
        pa, ell = float(header.get("ECOOPA", 0.0)), float(header.get("ECOOELL", 0.0))
    if not r_e > 0:
        raise ReaderError(f"{path} [PRIMARY]: REFF = {r_e}, expected > 0 arcsec")
    footprint = flux_ivar > 0
    analysed = footprint & (bin_id >= 0)
    sig2 = sig**2 - corr**2
    sig_ok = sig_ok & analysed & np.isfinite(corr) & (sig2 > 0)
    vel_ok = vel_ok & analysed
    if not vel_ok.any():
        raise ReaderError(
            f"{path} [STELLAR_VEL]: every spaxel is masked (DONOTUSE, zero IVAR "
            "or no stellar-continuum bin); nothing to infer from this galaxy"
        )
    dispersion = np.sqrt(np.where(sig_ok, sig2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        vel_err = np.where(vel_ivar > 0, 1 / np.sqrt(vel_ivar), np.inf)
        # d sqrt(s^2 - c^2) = s ds / sqrt(s^2 - c^2)
        sig_err = np.where(
            sig_ok & (sig_ivar > 0), sig / (np.sqrt(sig_ivar) * dispersion), np.inf
        )
    return DapKinematics(
        name=f"{name} ({found})",
        daptype=found,
        velocity=np.where(vel_ok, vel, 0.0),
        dispersion=dispersion,
        velocity_error=vel_err,
        dispersion_error=sig_err,
        valid_velocity=vel_ok,
        valid_dispersion=sig_ok,
        bin_id=np.where(analysed, bin_id, -1),
        footprint=footprint,
        centre=centre,
        centre_source=source,
        r_e_arcsec=r_e,
        redshift=redshift,
        position_angle=pa,
        ellipticity=ell,
    )


def read_manga(
    maps: str | Path,
    pipe3d: str | Path | None = None,
    *,
    daptype: str | Sequence[str] | None = None,
    min_snr: float = 5.0,
) -> SpaxelMaps:
    """One MaNGA galaxy as :class:`SpaxelMaps`: DAP kinematics + Pipe3D populations.

    Args:
        maps: the DAP MAPS file.
        pipe3d: the Pipe3D cube file of the same galaxy; None gives only the
            velocity and dispersion channels.
        daptype: the DAP type(s) accepted, see :func:`read_dap_maps`.
        min_snr: Pipe3D spaxels below this S/N are invalid (5, as in the
            Angeloudi et al. 2024 MaNGA application).

    Raises:
        ReaderError: see :func:`read_dap_maps` and
            :func:`~sbi_exsitu.data.readers.pipe3d.read_pipe3d`; also when the
            two files' grids differ.
    """
    dap = read_dap_maps(maps, daptype=daptype)
    values = {"velocity": dap.velocity, "dispersion": dap.dispersion}
    valid = {"velocity": dap.valid_velocity, "dispersion": dap.valid_dispersion}
    error = {"velocity": dap.velocity_error, "dispersion": dap.dispersion_error}
    if pipe3d is not None:
        pop = read_pipe3d(pipe3d, min_snr=min_snr)
        if pop.shape != dap.velocity.shape:
            raise ReaderError(
                f"{pipe3d} [SSP]: maps are {pop.shape} spaxels but {maps} has "
                f"{dap.velocity.shape}; expected the Pipe3D file of the same "
                "galaxy (same PLATE-IFU)"
            )
        for ch in pop.values:
            values[ch] = pop.values[ch]
            valid[ch] = pop.valid[ch] & dap.footprint
            if ch in pop.error:
                error[ch] = pop.error[ch]
    return SpaxelMaps(
        name=dap.name,
        values=values,
        valid=valid,
        spaxel_arcsec=MANGA_SPAXEL_ARCSEC,
        centre=dap.centre,
        r_e_arcsec=dap.r_e_arcsec,
        redshift=dap.redshift,
        bin_id=dap.bin_id,
        error=error,
    )
