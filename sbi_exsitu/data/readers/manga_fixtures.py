"""Writers of small MaNGA DAP MAPS and Pipe3D files for an analytic galaxy, for tests.

No MaNGA data can be downloaded in the test environment, so these write files to
the SDSS DR17 data model (DAP: Westfall et al. 2019; Pipe3D: Sánchez et al.
2016, 2022) for a galaxy whose maps are known in closed form: an exponential
mass profile, a tanh rotation curve, a declining dispersion profile and linear
age and [Z/H] gradients, inside a circular bundle footprint. Extension and
channel names, the channel keys ``C1``, ``C2``, ..., the ``QUALDATA``/``ERRDATA``
links, the PRIMARY keys and the Pipe3D ``DESC_n`` keys are those the readers use;
extensions the readers ignore (emission lines, spectral indices) are left out.
Real DR17 files hold the DAP's ``STELLAR_SIGMACORR`` in two channels and
``BINID`` in five; so do these, in the DR17 order (the readers pick them by
name, so the order is not tested to matter).

Example:
    >>> import tempfile
    >>> files = write_manga_galaxy(tempfile.mkdtemp())
    >>> files.maps.name
    'manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MangaFixture", "analytic_galaxy", "write_manga_galaxy"]

_SPEED_OF_LIGHT_KMS = 299_792.458
_BINID_CHANNELS = (
    "BINNED_SPECTRA",
    "STELLAR_CONTINUA",
    "EM_LINE_MOMENTS",
    "EM_LINE_MODELS",
    "SPECTRAL_INDICES",
)
_PIPE3D_DESCS = (
    "Unbinned flux intensity at 5635AA",
    "CS_BINS: continuum segmentation",
    "Luminosity Weighted Age of the stellar population in log10(age/yr)",
    "Mass Weighted Age of the stellar population in log10(age/yr)",
    "Error in the age of the stellar population",
    "Luminosity Weighted Metallicity of the stellar population in [Z/H]",
    "Mass Weighted Metallicity of the stellar population in [Z/H]",
    "Error in the metallicity of the stellar population",
    "Dust attenuation Av in mag",
    "Stellar Mass density per pixel in log10(Msun/spaxels^2)",
    "Stellar Mass density per pixel with dust correction in log10(Msun/spaxels^2)",
    "Error in the Stellar Mass density",
    "Mean signal-to-noise S/N of the spectra",
)


@dataclass(frozen=True)
class MangaFixture:
    """What :func:`write_manga_galaxy` wrote and the maps it encodes.

    Attributes:
        maps: the DAP MAPS file.
        pipe3d: the Pipe3D cube file.
        truth: channel -> (ny, nx) map in SpaxelMaps units (velocity relative
            to systemic, corrected dispersion, Msun, Gyr, linear Z).
        footprint: (ny, nx) bool, spaxels inside the bundle.
        centre: (x, y) of the centre in spaxel units.
    """

    maps: Path
    pipe3d: Path
    truth: dict[str, np.ndarray]
    footprint: np.ndarray
    centre: tuple[float, float]


def analytic_galaxy(
    n: int = 34, centre: Sequence[float] = (16.5, 17.5), r_e_spaxels: float = 8.0
) -> dict[str, np.ndarray]:
    """Closed-form maps (SpaxelMaps units) and the raw DAP sigma and correction."""
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    dx, dy = xx - centre[0], yy - centre[1]
    r = np.hypot(dx, dy)
    cos_phi = np.divide(dx, r, out=np.zeros_like(r), where=r > 0)
    dispersion = 80.0 + 120.0 * np.exp(-r / r_e_spaxels)
    correction = np.full_like(r, 30.0)
    return {
        "mass": 1e8 * np.exp(-1.678 * r / r_e_spaxels),
        "velocity": 200.0 * np.tanh(r / 4.0) * cos_phi,
        "dispersion": dispersion,
        "age": 10.0 - 0.3 * r,
        "metallicity": 0.019 * 10.0 ** (0.1 - 0.02 * r),
        "raw_sigma": np.sqrt(dispersion**2 + correction**2),
        "sigma_correction": correction,
        "r": r,
    }


def _image(fits, data, name, **header):
    return fits.ImageHDU(np.asarray(data, dtype=np.float32), fits.Header(header), name)


def _maps_hdus(fits, g, footprint, n, centre, bin_id):
    inside = footprint.astype(np.float32)
    mask_out = np.where(footprint, 0, 1 << 30).astype(np.int32)
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    # On-sky X grows to the east = towards smaller x on a north-up image.
    sky = np.stack([-(xx - centre[0]) * 0.5, (yy - centre[1]) * 0.5])
    ell = np.stack([g["r"] * 0.5, g["r"] / 8.0, g["r"] * 0.25, np.zeros_like(g["r"])])
    binid = np.stack([bin_id] * 5).astype(np.int32)
    chans = {f"C{i + 1}": c for i, c in enumerate(_BINID_CHANNELS)}

    def kin(name, value):
        return [
            _image(fits, value, name, QUALDATA=f"{name}_MASK", ERRDATA=f"{name}_IVAR"),
            _image(fits, inside * 0.01, f"{name}_IVAR"),
            fits.ImageHDU(mask_out, name=f"{name}_MASK"),
        ]

    return [
        _image(fits, sky, "SPX_SKYCOO", C1="On-sky X", C2="On-sky Y"),
        _image(fits, ell, "SPX_ELLCOO", C1="Elliptical radius", C2="R/R_e",
               C3="R h/kpc", C4="Elliptical azimuth"),
        _image(fits, g["mass"] / 1e7 * inside, "SPX_MFLUX"),
        _image(fits, inside * 4.0, "SPX_MFLUX_IVAR"),
        fits.ImageHDU(binid, fits.Header(chans), name="BINID"),
        *kin("STELLAR_VEL", g["velocity"]),
        *kin("STELLAR_SIGMA", g["raw_sigma"]),
        _image(fits, np.stack([g["sigma_correction"], g["sigma_correction"] * 0.9]),
               "STELLAR_SIGMACORR", C1="resolution_difference", C2="fit"),
    ]  # fmt: skip


def _pipe3d_planes(g, footprint):
    snr = np.where(footprint, 50.0 * np.exp(-g["r"] / 6.0), 0.0)
    log_m = np.log10(g["mass"])
    zh = np.log10(g["metallicity"] / 0.019)
    lage = np.log10(g["age"] * 1e9)
    planes = [g["mass"], np.zeros_like(snr), lage - 0.1, lage, 0.05 + 0 * snr,
              zh - 0.1, zh, 0.03 + 0 * snr, 0.2 + 0 * snr, log_m - 0.1, log_m,
              0.1 + 0 * snr, snr]  # fmt: skip
    return np.stack([np.where(footprint, p, 0.0) for p in planes])


def write_manga_galaxy(
    directory: str | Path,
    *,
    plateifu: str = "8485-1901",
    daptype: str = "HYB10-MILESHC-MASTARSSP",
    n: int = 34,
    bundle_radius: float = 15.0,
    omit: Sequence[str] = (),
    omit_keys: Sequence[str] = (),
    mask_all: bool = False,
) -> MangaFixture:
    """Write ``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz`` and its Pipe3D file.

    Args:
        directory: where to write both files.
        plateifu: ``PLATE-IFU`` of the galaxy.
        daptype: the ``DAPTYPE`` header value and file-name suffix.
        n: the maps are n x n spaxels.
        bundle_radius: radius of the circular footprint, spaxels.
        omit: MAPS extensions to leave out (to test the errors).
        omit_keys: PRIMARY header keys to leave out (``REFF``, ``SCINPVEL``, ...).
        mask_all: flag every spaxel DONOTUSE.
    """
    from astropy.io import fits

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    centre = (n / 2 - 0.5, n / 2 + 0.5)
    g = analytic_galaxy(n, centre)
    footprint = g["r"] < bundle_radius
    bin_id = np.where(footprint, np.arange(n * n).reshape(n, n), -1)
    primary = {"PLATEIFU": plateifu, "DAPTYPE": daptype, "REFF": 4.0,
               "ECOOPA": 30.0, "ECOOELL": 0.2, "SCINPVEL": 0.03 * _SPEED_OF_LIGHT_KMS,
               "OBJRA": 150.0, "OBJDEC": 2.0}  # fmt: skip
    header = fits.Header({k: v for k, v in primary.items() if k not in omit_keys})
    hdus = [h for h in _maps_hdus(fits, g, footprint, n, centre, bin_id)
            if h.name not in {o.upper() for o in omit}]  # fmt: skip
    if mask_all:
        for h in hdus:
            if h.name.endswith("_MASK"):
                h.data[:] = 1 << 30
    maps = directory / f"manga-{plateifu}-MAPS-{daptype}.fits.gz"
    fits.HDUList([fits.PrimaryHDU(header=header), *hdus]).writeto(maps, overwrite=True)
    descs = {f"DESC_{i}": d for i, d in enumerate(_PIPE3D_DESCS)}
    ssp = fits.ImageHDU(
        _pipe3d_planes(g, footprint).astype(np.float32), fits.Header(descs), "SSP"
    )
    pipe3d = directory / f"manga-{plateifu}.Pipe3D.cube.fits.gz"
    fits.HDUList([fits.PrimaryHDU(), ssp]).writeto(pipe3d, overwrite=True)
    truth = {k: g[k] for k in ("mass", "velocity", "dispersion", "age", "metallicity")}
    return MangaFixture(maps, pipe3d, truth, footprint, centre)
