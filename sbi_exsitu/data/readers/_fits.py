"""Checked access to FITS extensions, channels and header keys (astropy).

The survey readers (MaNGA DAP MAPS, Pipe3D) go through these helpers so that a
malformed file fails with a :class:`~sbi_exsitu.errors.ReaderError` naming the
file, the extension and what was expected, never with a bare ``KeyError`` from
astropy. Extensions are found by their ``EXTNAME`` and channels of a 3-D
extension by the header keys that name them (DAP: ``C1``, ``C2``, ...; Pipe3D:
``DESC_0``, ``DESC_1``, ...), never by position: the DAP data model has added
and reordered extensions and channels between releases (Westfall et al. 2019,
AJ 158, 231; DR17 data model, Abdurro'uf et al. 2022, ApJS 259, 35).

astropy is imported inside the functions, not at module import, because it takes
about a second to import and most commands never read FITS files.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> path = os.path.join(tempfile.mkdtemp(), "m.fits")
    >>> hdr = fits.Header({"C1": "A", "C2": "B"})
    >>> data = np.stack([np.zeros((2, 2)), np.ones((2, 2))])
    >>> fits.HDUList([fits.PrimaryHDU(),
    ...               fits.ImageHDU(data, hdr, name="X")]).writeto(path)
    >>> with open_fits(path) as hdul:
    ...     channel(hdul, path, "X", "B").tolist()
    [[1.0, 1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.errors import ReaderError

__all__ = [
    "open_fits",
    "extension",
    "channel_names",
    "channel",
    "header_value",
]


def open_fits(path: str | Path) -> Any:
    """Open a (possibly gzipped) FITS file, or raise ReaderError naming it."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path}: no such file")
    try:
        return fits.open(path, memmap=False)
    except OSError as err:
        raise ReaderError(
            f"{path}: not a readable FITS file ({err}); expected e.g. a DR17 "
            "manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz"
        ) from err


def extension(hdul: Any, path: str | Path, name: str) -> Any:
    """The HDU whose ``EXTNAME`` is ``name``, or a ReaderError listing the others."""
    names = [hdu.name for hdu in hdul]
    if name.upper() not in names:
        raise ReaderError(
            f"{path}: no '{name}' extension (EXTNAME); the file has {names}. "
            "Is it the right product (a DAP MAPS or Pipe3D cube file)?"
        )
    return hdul[name]


def channel_names(hdu: Any, prefix: str = "C", start: int = 1) -> list[str]:
    """Channel names of a 3-D extension from its ``<prefix><n>`` header keys."""
    out = []
    n = start
    while f"{prefix}{n}" in hdu.header:
        out.append(str(hdu.header[f"{prefix}{n}"]).strip())
        n += 1
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def channel(
    hdul: Any,
    path: str | Path,
    ext: str,
    name: str | None,
    *,
    prefix: str = "C",
    start: int = 1,
) -> np.ndarray:
    """One (ny, nx) float64 channel of ``ext`` chosen by its channel name.

    Args:
        hdul: the open file.
        path: the file name, for messages.
        ext: the extension's ``EXTNAME``.
        name: the channel name (compared case- and punctuation-insensitively);
            None for a 2-D extension (a single map).
        prefix: header-key prefix naming the channels (``C`` for the DAP).
        start: number of the first channel key (DAP: 1, Pipe3D: 0).

    Raises:
        ReaderError: the extension or channel is missing, or the shape is wrong.
    """
    hdu = extension(hdul, path, ext)
    data = hdu.data
    if name is None:
        if data is None or data.ndim != 2:
            raise ReaderError(
                f"{path} [{ext}]: expected one 2-D (ny, nx) map, got shape "
                f"{None if data is None else data.shape}"
            )
        return np.asarray(data, dtype=np.float64)
    names = channel_names(hdu, prefix, start)
    wanted = [i for i, n in enumerate(names) if _norm(n) == _norm(name)]
    if not wanted:
        raise ReaderError(
            f"{path} [{ext}]: no channel named '{name}' in the {prefix}{start}, "
            f"{prefix}{start + 1}, ... header keys; the channels are {names}"
        )
    if data is None or data.ndim != 3 or data.shape[0] != len(names):
        raise ReaderError(
            f"{path} [{ext}]: expected a (channel, ny, nx) array with "
            f"{len(names)} channels, got shape {None if data is None else data.shape}"
        )
    return np.asarray(data[wanted[0]], dtype=np.float64)


def header_value(
    hdul: Any, path: str | Path, key: str, *, ext: str = "PRIMARY", hint: str = ""
) -> Any:
    """A header value, or a ReaderError naming the file, extension and key."""
    header = extension(hdul, path, ext).header
    if key not in header or header[key] is None or header[key] == "":
        raise ReaderError(f"{path} [{ext}]: no header key '{key}'{hint}")
    return header[key]
