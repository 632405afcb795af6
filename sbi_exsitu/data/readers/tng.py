"""IllustrisTNG subhalo cutouts (web API) and Stellar Assembly ex-situ flags.

A cutout ``cutout_<id>.hdf5`` holds the ``PartType4`` entries of one subhalo in
comoving simulation units, wind cells included (TNG data release, Nelson et al.
2019, arXiv:1812.05609). :func:`read_tng_cutout` converts it to
:class:`~sbi_exsitu.data.particles.Particles`:

==========================  ======================  ===========================
field                       file unit               conversion
==========================  ======================  ===========================
``Coordinates``             ckpc/h                  x * a / h -> kpc
``Velocities``              km/s * sqrt(a)          v * sqrt(a) -> peculiar km/s
``Masses``                  1e10 Msun/h             m * 1e10 / h -> Msun
``GFM_StellarFormationTime``  birth scale factor    age = t(a) - t(a_form), Gyr
``GFM_Metallicity``         metal mass fraction     unchanged
==========================  ======================  ===========================

with a = ``Header/Time`` and h = ``Header/HubbleParam``, and ages in the file's
own cosmology (``Omega0``, ``OmegaLambda``; see :mod:`.cosmology`). Entries with
``GFM_StellarFormationTime <= 0`` are wind cells and are dropped. Positions are
wrapped across the periodic box (``BoxSize``) before centring.

Centre and systemic velocity follow Angeloudi et al. (2023): the centre is the
potential minimum -- ``SubhaloPos`` from the group catalogue when given, else the
star particle with the lowest ``Potential`` -- and the systemic velocity is the
(unweighted) mean velocity of the 5% most-bound star particles (lowest
``Potential``). The half-mass radius is ``SubhaloHalfmassRadType[4]`` when a
catalogue is given, else it is computed from the kept particles.

Ex-situ flags come from the Stellar Assembly catalogue (Rodriguez-Gomez et al.
2016): the ``InSitu`` dataset (1 in-situ, 0 ex-situ, -1 undefined), either a
per-cutout copy with one row per cutout entry, or the full-snapshot
``stars_NNN.hdf5`` sliced at ``offsets_NNN.hdf5:Subhalo/SnapByType[id, 4]``. When
both files carry particle IDs (``ParticleID`` in the flags, ``ParticleIDs`` in
the cutout) they must agree row by row. Particles with ``InSitu = -1`` are dropped
from a labelled galaxy. ``ParticleID`` in the public catalogue is (unconfirmed),
so it is optional.

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> from sbi_exsitu.data.readers.fixtures import write_tng_cutout
    >>> rng = np.random.default_rng(0)
    >>> p = Particles(pos=rng.normal(size=(50, 3)), vel=rng.normal(size=(50, 3)),
    ...               mass=np.full(50, 1e7), age=np.full(50, 5.0),
    ...               metallicity=np.full(50, 0.01))
    >>> path = os.path.join(tempfile.mkdtemp(), "cutout_7.hdf5")
    >>> _ = write_tng_cutout(path, p, n_wind=5)
    >>> q = read_tng_cutout(path)
    >>> len(q), round(q.log_mstar, 3)
    (50, 8.699)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.readers._hdf5 import (
    ReaderError,
    open_hdf5,
    read_array,
    read_attr,
    require_group,
    row_count,
)
from sbi_exsitu.data.readers._stars import (
    build_particles,
    check_masses,
    check_nonnegative,
    header_cosmology,
    nearest_image,
)
from sbi_exsitu.data.readers.cosmology import Cosmology
from sbi_exsitu.data.readers.stellar_assembly import (
    cutout_subhalo_id,
    read_insitu_flags,
)

__all__ = [
    "SubhaloCatalogue",
    "read_tng_cutout",
    "read_insitu_flags",
    "cutout_subhalo_id",
    "is_tng_cutout",
]

MOST_BOUND_FRACTION = 0.05
# Float32 formation times of stars born at the snapshot can round above Time.
_A_TOLERANCE = 1e-5


@dataclass(frozen=True)
class SubhaloCatalogue:
    """Group-catalogue values of one subhalo, in the catalogue's own units.

    Attributes:
        pos: ``SubhaloPos`` (3,), ckpc/h, the potential minimum.
        vel: ``SubhaloVel`` (3,), peculiar km/s (no sqrt(a) factor); used as the
            systemic velocity only when the cutout has no ``Potential``.
        half_mass_radius: ``SubhaloHalfmassRadType[4]``, ckpc/h.
    """

    pos: np.ndarray | None = None
    vel: np.ndarray | None = None
    half_mass_radius: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> SubhaloCatalogue:
        """Build from the web API's subhalo JSON or group-catalogue field names.

        API keys: ``pos_x/pos_y/pos_z``, ``vel_x/vel_y/vel_z``,
        ``halfmassrad_stars``; catalogue keys: ``SubhaloPos``, ``SubhaloVel``,
        ``SubhaloHalfmassRadType`` (index 4 = stars). Missing keys stay ``None``.

        Args:
            data: the mapping.
            where: a description (the file) for error messages.

        Raises:
            ReaderError: a value is not finite or has the wrong size.
        """

        def vector(api: str, cat: str) -> np.ndarray | None:
            if cat in data:
                value = data[cat]
                field = cat
            elif all(f"{api}_{c}" in data for c in "xyz"):
                value = [data[f"{api}_{c}"] for c in "xyz"]
                field = f"{api}_x/y/z"
            else:
                return None
            arr = _finite_array(value, where, field)
            if arr.shape != (3,):
                raise ReaderError(
                    f"{where}: field '{field}' has shape {arr.shape}, expected (3,)"
                )
            return arr

        radius = None
        if "SubhaloHalfmassRadType" in data:
            arr = _finite_array(
                data["SubhaloHalfmassRadType"], where, "SubhaloHalfmassRadType"
            )
            if arr.shape != (6,):
                raise ReaderError(
                    f"{where}: field 'SubhaloHalfmassRadType' has shape {arr.shape}, "
                    "expected (6,) (one radius per particle type)"
                )
            radius, field = float(arr[4]), "SubhaloHalfmassRadType[4]"
        elif "halfmassrad_stars" in data:
            radius = float(
                _finite_array(data["halfmassrad_stars"], where, "halfmassrad_stars")
            )
            field = "halfmassrad_stars"
        if radius is not None and radius <= 0:
            raise ReaderError(
                f"{where}: field '{field}' is {radius}, expected a stellar half-mass "
                "radius > 0 ckpc/h"
            )
        return cls(
            pos=vector("pos", "SubhaloPos"),
            vel=vector("vel", "SubhaloVel"),
            half_mass_radius=radius,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> SubhaloCatalogue:
        """Read the web API's subhalo JSON (``.../subhalos/<id>/``) from a file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ReaderError(f"{path}: cannot read subhalo JSON: {err}") from None
        if not isinstance(data, dict):
            raise ReaderError(f"{path}: expected a JSON object of subhalo fields")
        return cls.from_mapping(data, str(path))


def _finite_array(value: Any, where: str, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReaderError(f"{where}: field '{field}' is not numeric") from None
    if not np.all(np.isfinite(arr)):
        raise ReaderError(f"{where}: field '{field}' is {value}, expected finite")
    return arr


def is_tng_cutout(path: str | Path) -> bool:
    """Whether ``path`` looks like a TNG cutout (has GFM star fields)."""
    with h5py.File(path, "r") as f:
        return "PartType4/GFM_StellarFormationTime" in f


def read_tng_cutout(
    path: str | Path,
    *,
    flags: str | Path | np.ndarray | None = None,
    offsets: str | Path | None = None,
    subhalo_id: int | None = None,
    catalogue: SubhaloCatalogue | Mapping[str, Any] | str | Path | None = None,
    most_bound_fraction: float = MOST_BOUND_FRACTION,
    name: str | None = None,
) -> Particles:
    """Read a TNG subhalo cutout into physical-unit :class:`Particles`.

    Args:
        path: the cutout HDF5 file.
        flags: Stellar Assembly flags: a file (see :func:`read_insitu_flags`) or
            an array of ``InSitu`` values, one per cutout entry. ``None`` gives
            an unlabelled galaxy (``ex_situ = None``).
        offsets: ``offsets_NNN.hdf5``, when ``flags`` is the full-snapshot file.
        subhalo_id: overrides the id from ``Header/CutoutID`` / the file name.
        catalogue: group-catalogue values (a :class:`SubhaloCatalogue`, a mapping
            or the path of the API's subhalo JSON).
        most_bound_fraction: fraction of most-bound stars averaged for the
            systemic velocity (the paper: 5%).
        name: the galaxy's name (default: the file stem).

    Returns:
        The galaxy, centred on the potential minimum, wind cells dropped.

    Raises:
        ReaderError: a missing or malformed field, flags that do not match, or
            no star particle left; the message names the file and the field.
    """
    path = Path(path)
    source = str(catalogue) if isinstance(catalogue, (str, Path)) else "given"
    catalogue = _as_catalogue(catalogue, path)
    if not 0 < most_bound_fraction <= 1:
        raise ValueError("most_bound_fraction must be in (0, 1]")
    with open_hdf5(path) as f:
        a, h, box, cosmo = _read_header(f, path)
        cut = _read_stars(f, path)
    star = cut.sft > 0
    if not star.any():
        raise ReaderError(
            f"{path}: field 'PartType4/GFM_StellarFormationTime' is <= 0 for all "
            f"{cut.n} entries, i.e. only wind cells; expected at least one star "
            "particle"
        )
    insitu = _insitu(path, cut, flags, offsets, subhalo_id)
    keep = star if insitu is None else _labelled(path, flags, star, insitu)
    _check_values(path, cut, keep, a)
    centre = _centre(path, cut, star, catalogue)
    rel = nearest_image(cut.coords - centre, box)
    vel_pec = cut.vel.astype(np.float64) * math.sqrt(a)
    systemic = _systemic_velocity(
        path, cut, star, vel_pec, catalogue, most_bound_fraction
    )
    r_e = None
    if catalogue is not None and catalogue.half_mass_radius is not None:
        r_e = catalogue.half_mass_radius * a / h
    cat_pos = catalogue is not None and catalogue.pos is not None
    provenance = {
        "wind cells dropped": str(int((~star).sum())),
        "catalogue": "none" if catalogue is None else source,
        "centre": "catalogue SubhaloPos" if cat_pos else "lowest-Potential star",
        "systemic velocity": (
            f"mean of the {most_bound_fraction:.0%} most-bound stars"
            if cut.potential is not None
            else "catalogue SubhaloVel"
        ),
        "r_e": "catalogue halfmassrad_stars" if r_e else "3D half-mass radius",
    }
    return build_particles(
        path,
        pos=rel[keep] * (a / h),
        vel=vel_pec[keep] - systemic,
        mass=cut.mass[keep].astype(np.float64) * (1e10 / h),
        age=np.maximum(cosmo.age(cut.sft[keep], a), 0.0),
        metallicity=cut.metal[keep],
        ex_situ=None if insitu is None else insitu[keep] == 0,
        centre=np.asarray(centre, dtype=np.float64) * (a / h),
        systemic_velocity=systemic,
        half_mass_radius=r_e,
        name=name or path.stem,
        provenance=provenance,
    )


def _as_catalogue(
    catalogue: SubhaloCatalogue | Mapping[str, Any] | str | Path | None, path: Path
) -> SubhaloCatalogue | None:
    """A :class:`SubhaloCatalogue` from any accepted form (JSON path, mapping)."""
    if isinstance(catalogue, (str, Path)):
        return SubhaloCatalogue.from_json(catalogue)
    if isinstance(catalogue, Mapping):
        return SubhaloCatalogue.from_mapping(catalogue, str(path))
    return catalogue


def _read_header(f: h5py.File, path: Path) -> tuple[float, float, float, Cosmology]:
    """(a = Time, h, BoxSize in ckpc/h, cosmology) from ``Header``."""
    header = require_group(
        f,
        path,
        "Header",
        "a TNG cutout header (Time, HubbleParam, BoxSize, ...)",
    )
    a = read_attr(header, "Time", positive=True, what="scale factor a")
    h = read_attr(header, "HubbleParam", positive=True, what="h")
    box = read_attr(header, "BoxSize", positive=True, what="ckpc/h")
    return a, h, box, header_cosmology(header, h)


@dataclass(frozen=True)
class _Cutout:
    """The ``PartType4`` entries of a cutout in file units, winds included."""

    n: int
    coords: np.ndarray
    vel: np.ndarray
    mass: np.ndarray
    sft: np.ndarray
    metal: np.ndarray
    potential: np.ndarray | None
    ids: np.ndarray | None


def _read_stars(f: h5py.File, path: Path) -> _Cutout:
    """Read and shape-check the star fields; ``NumPart_ThisFile`` must agree."""
    require_group(
        f,
        path,
        "PartType4",
        "the star particles of the subhalo (does it have any stars?)",
    )
    n = row_count(f, "PartType4/Coordinates")

    def optional(field: str, kind: str) -> np.ndarray | None:
        name = f"PartType4/{field}"
        return read_array(f, name, kind=kind, shape=(n,)) if name in f else None

    cut = _Cutout(
        n=n,
        coords=read_array(f, "PartType4/Coordinates", kind="f", shape=(None, 3)),
        vel=read_array(f, "PartType4/Velocities", kind="f", shape=(n, 3)),
        mass=read_array(f, "PartType4/Masses", kind="f", shape=(n,)),
        sft=read_array(f, "PartType4/GFM_StellarFormationTime", kind="f", shape=(n,)),
        metal=read_array(f, "PartType4/GFM_Metallicity", kind="f", shape=(n,)),
        potential=optional("Potential", "f"),
        ids=optional("ParticleIDs", "iu"),
    )
    header = f["Header"]
    if "NumPart_ThisFile" in header.attrs:
        counts = read_attr(header, "NumPart_ThisFile", size=6)
        if int(counts[4]) != n:
            raise ReaderError(
                f"{path}: attribute 'Header/NumPart_ThisFile' gives "
                f"{int(counts[4])} stars, expected {n} (the length of "
                "'PartType4/Coordinates')"
            )
    return cut


def _insitu(
    path: Path,
    cut: _Cutout,
    flags: str | Path | np.ndarray | None,
    offsets: str | Path | None,
    subhalo_id: int | None,
) -> np.ndarray | None:
    """The ``InSitu`` value of every cutout entry, from an array or the files."""
    if flags is None:
        return None
    if isinstance(flags, np.ndarray):
        insitu = np.asarray(flags)
        if insitu.shape != (cut.n,):
            raise ReaderError(
                f"{path}: the InSitu flags have shape {insitu.shape}, expected "
                f"({cut.n},) (one per PartType4 entry, wind cells included)"
            )
        return insitu
    if offsets is not None and subhalo_id is None:
        subhalo_id = cutout_subhalo_id(path)
    return read_insitu_flags(
        flags,
        cut.n,
        offsets=offsets,
        subhalo_id=subhalo_id,
        particle_ids=cut.ids,
        cutout=str(path),
    )


def _labelled(
    path: Path,
    flags: str | Path | np.ndarray | None,
    star: np.ndarray,
    insitu: np.ndarray,
) -> np.ndarray:
    """The stars with a defined label (``InSitu`` -1 is dropped)."""
    keep = star & (insitu >= 0)
    if not keep.any():
        raise ReaderError(
            f"{flags}: field 'InSitu' is -1 (undefined) for every star of "
            f"{path}, expected at least one labelled star particle"
        )
    return keep


def _check_values(path: Path, cut: _Cutout, keep: np.ndarray, a: float) -> None:
    """Birth times up to the snapshot, masses > 0, metallicities >= 0 (kept rows)."""
    late = cut.sft[keep] > a * (1 + _A_TOLERANCE)
    if np.any(late):
        raise ReaderError(
            f"{path}: field 'PartType4/GFM_StellarFormationTime' has "
            f"{int(np.sum(late))} stars born after the snapshot, expected birth "
            f"scale factors <= Time = {a}"
        )
    check_masses(path, "Masses", cut.mass[keep])
    check_nonnegative(path, "GFM_Metallicity", cut.metal[keep])


def _centre(
    path: Path, cut: _Cutout, star: np.ndarray, catalogue: SubhaloCatalogue | None
) -> np.ndarray:
    """The potential minimum (ckpc/h): catalogue SubhaloPos, else most-bound star."""
    if catalogue is not None and catalogue.pos is not None:
        return catalogue.pos
    if cut.potential is not None:
        return cut.coords[star][np.argmin(cut.potential[star])]
    raise ReaderError(
        f"{path}: field 'PartType4/Potential' is missing and no catalogue "
        "SubhaloPos was given, expected one of them to locate the potential "
        "minimum"
    )


def _systemic_velocity(
    path: Path,
    cut: _Cutout,
    star: np.ndarray,
    vel_pec: np.ndarray,
    catalogue: SubhaloCatalogue | None,
    most_bound_fraction: float,
) -> np.ndarray:
    """Mean peculiar velocity of the most-bound stars, else catalogue SubhaloVel."""
    if cut.potential is not None:
        k = max(1, math.ceil(most_bound_fraction * int(star.sum())))
        order = np.argsort(cut.potential[star], kind="stable")[:k]
        return vel_pec[star][order].mean(axis=0)
    if catalogue is not None and catalogue.vel is not None:
        return catalogue.vel
    raise ReaderError(
        f"{path}: field 'PartType4/Potential' is missing and no catalogue "
        "SubhaloVel was given, expected one of them for the systemic velocity"
    )
