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

from sbi_exsitu.data.particles import Particles, ParticlesError, half_mass_radius
from sbi_exsitu.data.readers._hdf5 import ReaderError, read_array, read_attr
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
    if isinstance(catalogue, (str, Path)):
        try:
            catalogue = json.loads(Path(catalogue).read_text())
        except (OSError, ValueError) as err:
            raise ReaderError(
                f"{catalogue}: cannot read catalogue JSON: {err}"
            ) from None
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ReaderError(f"{path}: cannot open as HDF5: {err}") from None
    with f:
        if "Header" not in f:
            raise ReaderError(
                f"{path}: group 'Header' is missing, expected an EAGLE "
                "header (ExpansionFactor, HubbleParam, BoxSize, ...)"
            )
        header = f["Header"]
        a = read_attr(header, "ExpansionFactor", positive=True, what="scale factor")
        h = read_attr(header, "HubbleParam", positive=True)
        box = read_attr(header, "BoxSize", positive=True, what="cMpc/h")
        cosmo = Cosmology(
            h,
            read_attr(header, "Omega0", positive=True),
            read_attr(header, "OmegaLambda"),
        )
        if "PartType4" not in f:
            raise ReaderError(
                f"{path}: group 'PartType4' is missing, expected the star particles"
            )
        n = f["PartType4/Coordinates"].shape[0] if "PartType4/Coordinates" in f else 0
        raw = {
            "Coordinates": read_array(
                f, "PartType4/Coordinates", kind="f", shape=(None, 3)
            ),
            "Velocity": read_array(f, "PartType4/Velocity", kind="f", shape=(n, 3)),
            "Mass": read_array(f, "PartType4/Mass", kind="f", shape=(n,)),
            "StellarFormationTime": read_array(
                f, "PartType4/StellarFormationTime", kind="f", shape=(n,)
            ),
            fields[metallicity]: read_array(
                f, f"PartType4/{fields[metallicity]}", kind="f", shape=(n,)
            ),
        }
        member = np.ones(n, dtype=bool)
        if "PartType4/GroupNumber" in f or "PartType4/SubGroupNumber" in f:
            group = np.abs(
                read_array(f, "PartType4/GroupNumber", kind="iu", shape=(n,)).astype(
                    np.int64
                )
            )
            sub = read_array(
                f, "PartType4/SubGroupNumber", kind="iu", shape=(n,)
            ).astype(np.int64)
            member = _membership(path, group, sub, group_number, subgroup_number)
        elif group_number is not None:
            raise ReaderError(
                f"{path}: field 'PartType4/GroupNumber' is missing, "
                f"expected it to select group {group_number}"
            )
        if flags is not None and np.shape(flags) != (n,):
            raise ReaderError(
                f"{path}: the ex-situ flags have shape "
                f"{np.shape(flags)}, expected ({n},)"
            )
        # Comoving positions wrapped around one member before any conversion.
        x = raw["Coordinates"][member]
        x = x - box * np.round((x - x[0]) / box)
        x = _proper(f, "PartType4/Coordinates", x, a, h, KPC_CM)
        v = _proper(f, "PartType4/Velocity", raw["Velocity"][member], a, h, KMS_CMS)
        m = _proper(f, "PartType4/Mass", raw["Mass"][member], a, h, MSUN_G)
        a_form = _proper(
            f,
            "PartType4/StellarFormationTime",
            raw["StellarFormationTime"][member],
            a,
            h,
            1.0,
        )
        z = _proper(
            f,
            f"PartType4/{fields[metallicity]}",
            raw[fields[metallicity]][member],
            a,
            h,
            1.0,
        )
        # BoxSize is in the units of the raw Coordinates (cMpc/h).
        box_kpc = float(
            _proper(f, "PartType4/Coordinates", np.array(box), a, h, KPC_CM)
        )

    if np.any(m <= 0):
        raise ReaderError(
            f"{path}: field 'PartType4/Mass' has zero or negative "
            "values, expected masses > 0"
        )
    if np.any(z < 0):
        raise ReaderError(
            f"{path}: field 'PartType4/{fields[metallicity]}' has "
            "negative values, expected >= 0"
        )
    if np.any(a_form <= 0) or np.any(a_form > a * (1 + 1e-5)):
        raise ReaderError(
            f"{path}: field 'PartType4/StellarFormationTime' has values outside "
            f"(0, ExpansionFactor = {a}], expected birth scale factors"
        )

    r_e = None
    if catalogue is not None and "CentreOfPotential_x" in catalogue:
        try:
            c = np.array([float(catalogue[f"CentreOfPotential_{k}"]) for k in "xyz"])
        except (KeyError, TypeError, ValueError):
            raise ReaderError(
                f"{path}: catalogue field 'CentreOfPotential_x/y/z' is "
                "incomplete or not numeric, expected three cMpc"
            ) from None
        centre = c * 1e3 * a  # cMpc -> kpc
    else:
        centre = shrinking_sphere_centre(x, m)
    if catalogue is not None and "HalfMassRad_Star" in catalogue:
        r_e = float(catalogue["HalfMassRad_Star"])
        if not np.isfinite(r_e) or r_e <= 0:
            raise ReaderError(
                f"{path}: catalogue field 'HalfMassRad_Star' is {r_e}, "
                "expected a radius > 0 kpc"
            )
    rel = x - centre
    rel -= box_kpc * np.round(rel / box_kpc)
    radius = np.sqrt((rel**2).sum(axis=1))
    if r_e is None:
        r_e = half_mass_radius(rel, m)
    core = radius <= 0.1 * r_e
    if not core.any():
        core = radius == radius.min()
    systemic = v[core].mean(axis=0)
    try:
        return Particles(
            pos=rel,
            vel=v - systemic,
            mass=m,
            age=np.maximum(cosmo.age(a_form, a), 0.0),
            metallicity=z,
            ex_situ=None if flags is None else np.asarray(flags)[member],
            centre=centre,
            systemic_velocity=systemic,
            half_mass_radius=r_e,
            name=name or path.stem,
        )
    except ParticlesError as err:
        raise ReaderError(f"{path}: {err}") from None


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
