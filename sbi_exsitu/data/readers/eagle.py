"""EAGLE particle files (public release): star particles of one galaxy.

Every EAGLE dataset carries its own unit conversion as attributes
(``CGSConversionFactor``, ``h-scale-exponent``, ``aexp-scale-exponent``):

    proper_cgs = value * CGSConversionFactor * h**h_exp * a**aexp_exp

:func:`read_eagle` applies exactly that to every field, then divides by the cgs
value of the target unit (:data:`KPC_CM`, :data:`MSUN_G`, 1e5 cm/s per km/s), so
``Coordinates`` (cMpc/h) become kpc, ``Velocity`` (km/s sqrt(a)) peculiar km/s,
``Mass`` (1e10 Msun/h) Msun. Formation scale factors (``StellarFormationTime``)
become ages in the file's cosmology (``Header``: ``ExpansionFactor``,
``HubbleParam``, ``Omega0``, ``OmegaLambda``). The metallicity is
``SmoothedMetallicity`` by default (``metallicity="particle"`` for
``Metallicity``). EAGLE has no wind cells.

A file may hold several galaxies: membership is by (|GroupNumber|,
SubGroupNumber) -- negative group numbers mark particles inside the FoF radius but
outside the group, and SubGroupNumber = 2**30 marks unbound particles. Without a
``group_number`` the file must hold exactly one galaxy.

Centre and systemic velocity: the public particle data have no potential, so the
centre is the catalogue's ``CentreOfPotential`` when given, else a shrinking-
sphere centre of mass (Power et al. 2003), a standard proxy for the potential
minimum. The systemic velocity is the paper's: the (unweighted) mean velocity of
the stars within 0.1 r_e (the nearest star if that sphere is empty). The EAGLE
database units assumed for the catalogue -- ``CentreOfPotential_x/y/z`` in cMpc
(no h), ``HalfMassRad_Star`` in physical kpc -- are (unconfirmed).

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> from sbi_exsitu.data.readers.fixtures import write_eagle_file
    >>> rng = np.random.default_rng(0)
    >>> p = Particles(pos=rng.normal(size=(50, 3)), vel=rng.normal(size=(50, 3)),
    ...               mass=np.full(50, 1e7), age=np.full(50, 5.0),
    ...               metallicity=np.full(50, 0.01))
    >>> path = os.path.join(tempfile.mkdtemp(), "eagle.hdf5")
    >>> write_eagle_file(path, p)
    >>> q = read_eagle(path)
    >>> len(q), round(q.log_mstar, 3)
    (50, 8.699)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sbi_exsitu.data.particles import Particles, half_mass_radius
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

__all__ = [
    "KPC_CM",
    "MSUN_G",
    "NO_GROUP",
    "read_eagle",
    "is_eagle_file",
    "shrinking_sphere_centre",
]

# EAGLE's own constants, so that its CGSConversionFactors round-trip exactly.
KPC_CM = 3.085678e21
MSUN_G = 1.989e33
KMS_CMS = 1e5
NO_GROUP = 2**30
_UNIT_ATTRS = ("CGSConversionFactor", "h-scale-exponent", "aexp-scale-exponent")


def is_eagle_file(path: str | Path) -> bool:
    """Whether ``path`` looks like an EAGLE particle file."""
    with h5py.File(path, "r") as f:
        return "PartType4/StellarFormationTime" in f


def _proper(
    f: h5py.File, name: str, data: np.ndarray, a: float, h: float, unit_cgs: float
) -> np.ndarray:
    """Convert a dataset's values to ``unit_cgs`` units with its attributes."""
    dset = f[name]
    factors = []
    for attr in _UNIT_ATTRS:
        if attr not in dset.attrs:
            raise ReaderError(
                f"{f.filename}: attribute '{name}/{attr}' is missing, expected the "
                "EAGLE unit attributes CGSConversionFactor, h-scale-exponent and "
                "aexp-scale-exponent on every dataset"
            )
        factors.append(read_attr(dset, attr))
    cgs, h_exp, a_exp = factors
    return data.astype(np.float64) * (cgs * h**h_exp * a**a_exp / unit_cgs)


def shrinking_sphere_centre(
    pos: np.ndarray, mass: np.ndarray, *, shrink: float = 0.975, min_count: int = 100
) -> np.ndarray:
    """Centre of mass of a sphere shrunk iteratively (Power et al. 2003).

    Args:
        pos: (N, 3) positions.
        mass: (N,) masses.
        shrink: radius factor per iteration.
        min_count: stop when fewer particles (or 1% of N) remain inside.

    Returns:
        The (3,) centre.
    """
    centre = np.average(pos, axis=0, weights=mass)
    radius = np.sqrt(((pos - centre) ** 2).sum(axis=1)).max()
    stop = max(min(min_count, len(pos)), int(0.01 * len(pos)), 1)
    while True:
        inside = ((pos - centre) ** 2).sum(axis=1) <= radius**2
        if inside.sum() < stop:
            return centre
        centre = np.average(pos[inside], axis=0, weights=mass[inside])
        radius *= shrink


def read_eagle(
    path: str | Path,
    *,
    group_number: int | None = None,
    subgroup_number: int = 0,
    catalogue: Mapping[str, Any] | str | Path | None = None,
    flags: np.ndarray | None = None,
    metallicity: str = "smoothed",
    name: str | None = None,
) -> Particles:
    """Read one galaxy's star particles from an EAGLE particle file.

    Args:
        path: the HDF5 file.
        group_number: FoF group of the galaxy; ``None`` requires a single galaxy.
        subgroup_number: subgroup within the group (0 = central).
        catalogue: EAGLE database values (a mapping or a JSON file) with
            ``CentreOfPotential_x/y/z`` (cMpc) and ``HalfMassRad_Star`` (kpc).
        flags: optional ex-situ flags (True = accreted), one per PartType4 row.
        metallicity: ``"smoothed"`` or ``"particle"``.
        name: the galaxy's name (default: the file stem).

    Returns:
        The galaxy in physical units, centred.

    Raises:
        ReaderError: missing fields or unit attributes, bad values, or no (or
            several) galaxies matching the group numbers.
    """
    path = Path(path)
    fields = {"smoothed": "SmoothedMetallicity", "particle": "Metallicity"}
    if metallicity not in fields:
        raise ValueError(f"metallicity must be one of {sorted(fields)}")
    z_field = fields[metallicity]
    catalogue_source = catalogue if isinstance(catalogue, (str, Path)) else "given"
    catalogue = _load_catalogue(catalogue)
    with open_hdf5(path) as f:
        a, h, box, cosmo = _read_header(f, path)
        raw = _read_stars(f, path, z_field)
        n = len(raw["Mass"])
        member = _select_members(f, path, n, group_number, subgroup_number)
        if flags is not None and np.shape(flags) != (n,):
            raise ReaderError(
                f"{path}: the ex-situ flags have shape "
                f"{np.shape(flags)}, expected ({n},)"
            )
        star = _to_physical(f, raw, member, a, h, box)
        # BoxSize is in the units of the raw Coordinates (cMpc/h).
        box_kpc = float(
            _proper(f, "PartType4/Coordinates", np.array(box), a, h, KPC_CM)
        )
    _check_values(path, star, z_field, a)
    centre = _centre(path, catalogue, star["Coordinates"], star["Mass"], a)
    r_e = _catalogue_half_mass_radius(path, catalogue)
    rel = nearest_image(star["Coordinates"] - centre, box_kpc)
    if r_e is None:
        r_e = half_mass_radius(rel, star["Mass"])
    systemic = _systemic_velocity(rel, star["Velocity"], r_e)
    has = catalogue is not None and "CentreOfPotential_x" in catalogue
    provenance = {
        "catalogue": "none" if catalogue is None else str(catalogue_source),
        "centre": "catalogue CentreOfPotential" if has else "shrinking sphere",
        "systemic velocity": "mean velocity within 0.1 r_e",
        "r_e": (
            "catalogue HalfMassRad_Star"
            if catalogue is not None and "HalfMassRad_Star" in catalogue
            else "3D half-mass radius"
        ),
    }
    return build_particles(
        path,
        pos=rel,
        vel=star["Velocity"] - systemic,
        mass=star["Mass"],
        age=np.maximum(cosmo.age(star["StellarFormationTime"], a), 0.0),
        metallicity=star[z_field],
        ex_situ=None if flags is None else np.asarray(flags)[member],
        centre=centre,
        systemic_velocity=systemic,
        half_mass_radius=r_e,
        name=name or path.stem,
        provenance=provenance,
    )


def _load_catalogue(
    catalogue: Mapping[str, Any] | str | Path | None,
) -> Mapping[str, Any] | None:
    """The catalogue mapping, read from its JSON file when given a path."""
    if not isinstance(catalogue, (str, Path)):
        return catalogue
    try:
        return json.loads(Path(catalogue).read_text())
    except (OSError, ValueError) as err:
        raise ReaderError(f"{catalogue}: cannot read catalogue JSON: {err}") from None


def _read_header(f: h5py.File, path: Path) -> tuple[float, float, float, Cosmology]:
    """(scale factor, h, BoxSize in cMpc/h, cosmology) from ``Header``."""
    header = require_group(
        f,
        path,
        "Header",
        "an EAGLE header (ExpansionFactor, HubbleParam, BoxSize, ...)",
    )
    a = read_attr(header, "ExpansionFactor", positive=True, what="scale factor")
    h = read_attr(header, "HubbleParam", positive=True)
    box = read_attr(header, "BoxSize", positive=True, what="cMpc/h")
    return a, h, box, header_cosmology(header, h)


def _read_stars(f: h5py.File, path: Path, z_field: str) -> dict[str, np.ndarray]:
    """The raw (file-unit) star fields, by dataset name, all of one length."""
    require_group(f, path, "PartType4", "the star particles")
    n = row_count(f, "PartType4/Coordinates")
    shapes = {
        "Coordinates": (None, 3),
        "Velocity": (n, 3),
        "Mass": (n,),
        "StellarFormationTime": (n,),
        z_field: (n,),
    }
    return {
        key: read_array(f, f"PartType4/{key}", kind="f", shape=shape)
        for key, shape in shapes.items()
    }


def _select_members(
    f: h5py.File,
    path: Path,
    n: int,
    group_number: int | None,
    subgroup_number: int,
) -> np.ndarray:
    """Rows of the galaxy: by group numbers when the file has them, else all."""
    if "PartType4/GroupNumber" in f or "PartType4/SubGroupNumber" in f:
        group = read_array(f, "PartType4/GroupNumber", kind="iu", shape=(n,))
        sub = read_array(f, "PartType4/SubGroupNumber", kind="iu", shape=(n,))
        return _membership(
            path,
            np.abs(group.astype(np.int64)),
            sub.astype(np.int64),
            group_number,
            subgroup_number,
        )
    if group_number is not None:
        raise ReaderError(
            f"{path}: field 'PartType4/GroupNumber' is missing, "
            f"expected it to select group {group_number}"
        )
    return np.ones(n, dtype=bool)


def _to_physical(
    f: h5py.File,
    raw: dict[str, np.ndarray],
    member: np.ndarray,
    a: float,
    h: float,
    box: float,
) -> dict[str, np.ndarray]:
    """The members' fields in kpc, km/s, Msun and plain numbers.

    Positions are wrapped around one member while still comoving, so that a
    galaxy straddling the box edge is whole before the conversion.
    """
    units = {"Coordinates": KPC_CM, "Velocity": KMS_CMS, "Mass": MSUN_G}
    out = {}
    for key, values in raw.items():
        x = values[member]
        if key == "Coordinates":
            x = x - box * np.round((x - x[0]) / box)
        out[key] = _proper(f, f"PartType4/{key}", x, a, h, units.get(key, 1.0))
    return out


def _check_values(
    path: Path, star: dict[str, np.ndarray], z_field: str, a: float
) -> None:
    """Physical checks of the converted masses, metallicities and birth times."""
    check_masses(path, "Mass", star["Mass"])
    check_nonnegative(path, z_field, star[z_field])
    a_form = star["StellarFormationTime"]
    if np.any(a_form <= 0) or np.any(a_form > a * (1 + 1e-5)):
        raise ReaderError(
            f"{path}: field 'PartType4/StellarFormationTime' has values outside "
            f"(0, ExpansionFactor = {a}], expected birth scale factors"
        )


def _centre(
    path: Path,
    catalogue: Mapping[str, Any] | None,
    pos: np.ndarray,
    mass: np.ndarray,
    a: float,
) -> np.ndarray:
    """The catalogue's CentreOfPotential (cMpc -> kpc), else a shrinking sphere."""
    if catalogue is None or "CentreOfPotential_x" not in catalogue:
        return shrinking_sphere_centre(pos, mass)
    try:
        c = np.array([float(catalogue[f"CentreOfPotential_{k}"]) for k in "xyz"])
    except (KeyError, TypeError, ValueError):
        raise ReaderError(
            f"{path}: catalogue field 'CentreOfPotential_x/y/z' is "
            "incomplete or not numeric, expected three cMpc"
        ) from None
    return c * 1e3 * a  # cMpc -> kpc


def _catalogue_half_mass_radius(
    path: Path, catalogue: Mapping[str, Any] | None
) -> float | None:
    """``HalfMassRad_Star`` (physical kpc) when the catalogue has it."""
    if catalogue is None or "HalfMassRad_Star" not in catalogue:
        return None
    r_e = float(catalogue["HalfMassRad_Star"])
    if not np.isfinite(r_e) or r_e <= 0:
        raise ReaderError(
            f"{path}: catalogue field 'HalfMassRad_Star' is {r_e}, "
            "expected a radius > 0 kpc"
        )
    return r_e


def _systemic_velocity(rel: np.ndarray, vel: np.ndarray, r_e: float) -> np.ndarray:
    """Mean velocity of the stars within 0.1 r_e (the nearest one if none)."""
    radius = np.sqrt((rel**2).sum(axis=1))
    core = radius <= 0.1 * r_e
    if not core.any():
        core = radius == radius.min()
    return vel[core].mean(axis=0)


def _membership(
    path: Path,
    group: np.ndarray,
    sub: np.ndarray,
    group_number: int | None,
    subgroup_number: int,
) -> np.ndarray:
    bound = sub != NO_GROUP
    if group_number is None:
        pairs = {
            (int(g), int(s)) for g, s in zip(group[bound], sub[bound], strict=True)
        }
        if len(pairs) > 1:
            shown = ", ".join(f"({g}, {s})" for g, s in sorted(pairs)[:5])
            raise ReaderError(
                f"{path}: fields 'PartType4/GroupNumber', 'SubGroupNumber' hold "
                f"{len(pairs)} galaxies ({shown}{', ...' if len(pairs) > 5 else ''}),"
                " expected one; pass group_number (and subgroup_number)"
            )
        member = bound
    else:
        member = bound & (group == abs(group_number)) & (sub == subgroup_number)
    if not member.any():
        want = (
            "any bound star"
            if group_number is None
            else (f"stars of group {group_number}, subgroup {subgroup_number}")
        )
        raise ReaderError(
            f"{path}: fields 'PartType4/GroupNumber', 'SubGroupNumber' select no "
            f"particle, expected {want} (SubGroupNumber = 2**30 is unbound)"
        )
    return member
