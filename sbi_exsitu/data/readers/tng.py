"""IllustrisTNG subhalo cutouts (web API) and Stellar Assembly ex-situ flags.

A cutout ``cutout_<id>.hdf5`` holds the ``PartType4`` entries of one subhalo in
comoving simulation units, wind cells included (FORMATS.md). :func:`read_tng_cutout`
converts it to :class:`~sbi_exsitu.data.particles.Particles`:

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.data.particles import Particles, ParticlesError
from sbi_exsitu.data.readers._hdf5 import ReaderError, read_array, read_attr
from sbi_exsitu.data.readers.cosmology import Cosmology

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
    if isinstance(catalogue, (str, Path)):
        catalogue = SubhaloCatalogue.from_json(catalogue)
    elif isinstance(catalogue, Mapping):
        catalogue = SubhaloCatalogue.from_mapping(catalogue, str(path))
    if not 0 < most_bound_fraction <= 1:
        raise ValueError("most_bound_fraction must be in (0, 1]")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ReaderError(f"{path}: cannot open as HDF5: {err}") from None
    with f:
        if "Header" not in f:
            raise ReaderError(
                f"{path}: group 'Header' is missing, expected a TNG "
                "cutout header (Time, HubbleParam, BoxSize, ...)"
            )
        header = f["Header"]
        a = read_attr(header, "Time", positive=True, what="scale factor a")
        h = read_attr(header, "HubbleParam", positive=True, what="h")
        box = read_attr(header, "BoxSize", positive=True, what="ckpc/h")
        cosmo = Cosmology(
            hubble_param=h,
            omega_m=read_attr(header, "Omega0", positive=True),
            omega_lambda=read_attr(header, "OmegaLambda"),
        )
        if "PartType4" not in f:
            raise ReaderError(
                f"{path}: group 'PartType4' is missing, expected the star particles "
                "of the subhalo (does it have any stars?)"
            )
        n = f["PartType4/Coordinates"].shape[0] if "PartType4/Coordinates" in f else 0
        coords = read_array(f, "PartType4/Coordinates", kind="f", shape=(None, 3))
        vel = read_array(f, "PartType4/Velocities", kind="f", shape=(n, 3))
        mass = read_array(f, "PartType4/Masses", kind="f", shape=(n,))
        sft = read_array(f, "PartType4/GFM_StellarFormationTime", kind="f", shape=(n,))
        metal = read_array(f, "PartType4/GFM_Metallicity", kind="f", shape=(n,))
        potential = None
        if "PartType4/Potential" in f:
            potential = read_array(f, "PartType4/Potential", kind="f", shape=(n,))
        ids = None
        if "PartType4/ParticleIDs" in f:
            ids = read_array(f, "PartType4/ParticleIDs", kind="iu", shape=(n,))
        if "NumPart_ThisFile" in header.attrs:
            counts = read_attr(header, "NumPart_ThisFile", size=6)
            if int(counts[4]) != n:
                raise ReaderError(
                    f"{path}: attribute 'Header/NumPart_ThisFile' gives "
                    f"{int(counts[4])} stars, expected {n} (the length of "
                    "'PartType4/Coordinates')"
                )

    star = sft > 0
    if not star.any():
        raise ReaderError(
            f"{path}: field 'PartType4/GFM_StellarFormationTime' is <= 0 for all "
            f"{n} entries, i.e. only wind cells; expected at least one star particle"
        )
    keep = star.copy()
    insitu = None
    if flags is not None:
        if isinstance(flags, np.ndarray):
            insitu = np.asarray(flags)
            if insitu.shape != (n,):
                raise ReaderError(
                    f"{path}: the InSitu flags have shape {insitu.shape}, expected "
                    f"({n},) (one per PartType4 entry, wind cells included)"
                )
        else:
            if offsets is not None and subhalo_id is None:
                subhalo_id = cutout_subhalo_id(path)
            insitu = read_insitu_flags(
                flags,
                n,
                offsets=offsets,
                subhalo_id=subhalo_id,
                particle_ids=ids,
                cutout=str(path),
            )
        keep &= insitu >= 0
        if not keep.any():
            raise ReaderError(
                f"{flags}: field 'InSitu' is -1 (undefined) for every star of "
                f"{path}, expected at least one labelled star particle"
            )

    if np.any(sft[keep] > a * (1 + _A_TOLERANCE)):
        bad = int(np.sum(sft[keep] > a * (1 + _A_TOLERANCE)))
        raise ReaderError(
            f"{path}: field 'PartType4/GFM_StellarFormationTime' has {bad} stars "
            f"born after the snapshot, expected birth scale factors <= Time = {a}"
        )
    for field, values in (("Masses", mass), ("GFM_Metallicity", metal)):
        if field == "Masses" and np.any(values[keep] <= 0):
            raise ReaderError(
                f"{path}: field 'PartType4/{field}' has zero or "
                "negative values, expected masses > 0"
            )
        if np.any(values[keep] < 0):
            raise ReaderError(
                f"{path}: field 'PartType4/{field}' has negative values, expected >= 0"
            )

    # Centre (ckpc/h): the catalogue's potential minimum, else the most-bound star.
    if catalogue is not None and catalogue.pos is not None:
        centre = catalogue.pos
    elif potential is not None:
        centre = coords[star][np.argmin(potential[star])]
    else:
        raise ReaderError(
            f"{path}: field 'PartType4/Potential' is missing and no catalogue "
            "SubhaloPos was given, expected one of them to locate the potential "
            "minimum"
        )
    rel = coords - centre
    rel -= box * np.round(rel / box)  # nearest periodic image
    vel_pec = vel.astype(np.float64) * math.sqrt(a)
    if potential is not None:
        k = max(1, math.ceil(most_bound_fraction * int(star.sum())))
        order = np.argsort(potential[star], kind="stable")[:k]
        systemic = vel_pec[star][order].mean(axis=0)
    elif catalogue is not None and catalogue.vel is not None:
        systemic = catalogue.vel
    else:
        raise ReaderError(
            f"{path}: field 'PartType4/Potential' is missing and no catalogue "
            "SubhaloVel was given, expected one of them for the systemic velocity"
        )

    r_e = None
    if catalogue is not None and catalogue.half_mass_radius is not None:
        r_e = catalogue.half_mass_radius * a / h
    age = np.maximum(cosmo.age(sft[keep], a), 0.0)
    try:
        return Particles(
            pos=rel[keep] * (a / h),
            vel=vel_pec[keep] - systemic,
            mass=mass[keep].astype(np.float64) * (1e10 / h),
            age=age,
            metallicity=metal[keep],
            ex_situ=None if insitu is None else insitu[keep] == 0,
            centre=np.asarray(centre, dtype=np.float64) * (a / h),
            systemic_velocity=systemic,
            half_mass_radius=r_e,
            name=name or path.stem,
        )
    except ParticlesError as err:
        raise ReaderError(f"{path}: {err}") from None
