"""Writers of tiny simulation files in the exact TNG / EAGLE schemas, for tests.

The inverse of the readers: they take :class:`~sbi_exsitu.data.particles.Particles`
in physical units and write the file a simulation would have written (same
group and dataset names, dtypes, units and attributes, as in the TNG release of
Nelson et al. 2019 and the EAGLE release of McAlpine et al. 2016), so tests can
check every conversion and run particles -> file -> reader round trips.
They are also handy to try the ``render`` command without downloading data.

The potential written to TNG cutouts is a monotonic proxy, -1 / sqrt(r^2 +
eps^2) around the particles' origin, so the most-bound stars are the innermost
ones, as in a real galaxy.

Example:
    >>> import tempfile, os
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> p = Particles(pos=np.eye(3), vel=np.zeros((3, 3)), mass=np.ones(3) * 1e8,
    ...               age=np.ones(3), metallicity=np.full(3, 0.02))
    >>> out = write_tng_cutout(os.path.join(tempfile.mkdtemp(), "c.hdf5"), p)
    >>> out.insitu.tolist()  # no ex-situ flags on p
    [-1, -1, -1]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.readers.cosmology import Cosmology
from sbi_exsitu.data.readers.eagle import KMS_CMS, KPC_CM, MSUN_G

__all__ = [
    "TNG_COSMOLOGY",
    "EAGLE_COSMOLOGY",
    "CutoutFixture",
    "write_tng_cutout",
    "write_insitu_flags",
    "write_offsets",
    "write_subhalo_json",
    "write_eagle_file",
    "symmetric_galaxy",
]

TNG_COSMOLOGY = Cosmology(hubble_param=0.6774, omega_m=0.3089, omega_lambda=0.6911)
EAGLE_COSMOLOGY = Cosmology(hubble_param=0.6777, omega_m=0.307, omega_lambda=0.693)


@dataclass(frozen=True)
class CutoutFixture:
    """What :func:`write_tng_cutout` wrote, to build matching flag files.

    Attributes:
        path: the cutout file.
        insitu: (N,) int8 ``InSitu`` per cutout row: 1 in-situ, 0 ex-situ, -1 for
            wind cells and for particles without flags.
        particle_ids: (N,) uint64 ``ParticleIDs`` per cutout row.
        is_wind: (N,) bool, the rows that are wind cells.
    """

    path: Path
    insitu: np.ndarray
    particle_ids: np.ndarray
    is_wind: np.ndarray


def symmetric_galaxy(
    n_pairs: int,
    *,
    seed: int = 0,
    exsitu_fraction: float | None = 0.3,
    centre: Sequence[float] = (0.0, 0.0, 0.0),
    systemic_velocity: Sequence[float] = (0.0, 0.0, 0.0),
    half_mass_radius: float | None = None,
    max_age: float = 10.0,
    name: str = "symmetric",
) -> Particles:
    """A galaxy whose centre and systemic velocity readers recover exactly.

    One star sits at rest at the origin and the others come in mirrored pairs
    (x, v) and (-x, -v): the deepest potential is at the origin and any sphere
    or set of most-bound stars that takes whole pairs has zero mean velocity.
    With ``2 * n_pairs + 1`` stars, 5% most-bound sets take whole pairs when
    ``ceil(0.05 * (2 n + 1))`` is odd (e.g. n = 100).

    Args:
        n_pairs: number of mirrored pairs.
        seed: random seed.
        exsitu_fraction: probability of a star being ex-situ (``None``: no flags).
        centre: recorded centre (kpc).
        systemic_velocity: recorded systemic velocity (km/s).
        half_mass_radius: if given, stored instead of the computed one.
        max_age: ages are uniform in [0, max_age] Gyr.
        name: the galaxy's name.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_pairs, 3)) * rng.uniform(0.5, 5.0, (n_pairs, 1))
    v = rng.normal(0, 120, size=(n_pairs, 3))
    n = 2 * n_pairs + 1
    flags = None
    if exsitu_fraction is not None:
        flags = rng.random(n) < exsitu_fraction
        flags[0] = False
    return Particles(
        pos=np.vstack([np.zeros((1, 3)), x, -x]),
        vel=np.vstack([np.zeros((1, 3)), v, -v]),
        mass=rng.uniform(0.5e6, 2e6, n),
        age=rng.uniform(0.0, max_age, n),
        metallicity=rng.uniform(0.001, 0.04, n),
        ex_situ=flags,
        centre=np.asarray(centre, float),
        systemic_velocity=np.asarray(systemic_velocity, float),
        half_mass_radius=half_mass_radius,
        name=name,
    )


def _formation_a(particles: Particles, cosmo: Cosmology, a: float) -> np.ndarray:
    t_form = cosmo.cosmic_time(a) - particles.age
    return np.minimum(cosmo.scale_factor(t_form, a_max=a), a)


def _potential(pos: np.ndarray) -> np.ndarray:
    return -1.0 / np.sqrt((pos**2).sum(axis=1) + 1e-6)


def write_tng_cutout(
    path: str | Path,
    particles: Particles,
    *,
    scale_factor: float = 1.0,
    cosmology: Cosmology = TNG_COSMOLOGY,
    box_size: float = 75_000.0,
    cutout_id: int = 0,
    n_wind: int = 0,
    first_id: int = 1,
    seed: int = 0,
    omit: Sequence[str] = (),
) -> CutoutFixture:
    """Write ``particles`` as a TNG web-API subhalo cutout.

    Positions are shifted by ``particles.centre`` and wrapped into the periodic
    box, velocities by ``particles.systemic_velocity``; ``n_wind`` wind cells
    (formation time < 0, and the deepest potential, so a reader that forgets to
    drop them finds the wrong centre) are mixed in at random rows.

    Args:
        path: output file.
        particles: the stars, physical units.
        scale_factor: ``Header/Time``.
        cosmology: h, Omega0 and OmegaLambda of the header.
        box_size: ``Header/BoxSize`` in ckpc/h.
        cutout_id: ``Header/CutoutID``.
        n_wind: number of wind cells to add.
        first_id: the first ``ParticleIDs`` value (consecutive ids).
        seed: random seed for wind rows and values.
        omit: PartType4 dataset names not to write (to test missing fields).

    Returns:
        A :class:`CutoutFixture`.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    a, h = float(scale_factor), cosmology.hubble_param
    n = len(particles) + n_wind
    is_wind = np.zeros(n, dtype=bool)
    is_wind[rng.choice(n, size=n_wind, replace=False)] = True
    star_rows = np.flatnonzero(~is_wind)

    pos = np.zeros((n, 3))
    pos[star_rows] = particles.pos
    pos[is_wind] = rng.normal(size=(n_wind, 3))
    vel = np.zeros((n, 3))
    vel[star_rows] = particles.vel
    vel[is_wind] = rng.normal(0, 300, size=(n_wind, 3))
    mass = np.zeros(n)
    mass[star_rows] = particles.mass
    mass[is_wind] = particles.mass.mean()
    sft = np.zeros(n)
    sft[star_rows] = _formation_a(particles, cosmology, a)
    sft[is_wind] = -rng.uniform(0.1, 0.9, n_wind)
    metal = np.zeros(n)
    metal[star_rows] = particles.metallicity
    potential = _potential(pos)
    potential[is_wind] = -1e9

    insitu = np.full(n, -1, dtype=np.int8)
    if particles.ex_situ is not None:
        insitu[star_rows] = np.where(particles.ex_situ, 0, 1)
    ids = np.arange(first_id, first_id + n, dtype=np.uint64)

    coords = ((pos + particles.centre) * (h / a)) % box_size
    data = {
        "Coordinates": coords.astype(np.float64),
        "Velocities": ((vel + particles.systemic_velocity) / np.sqrt(a)).astype(
            np.float32
        ),
        "Masses": (mass * h / 1e10).astype(np.float32),
        "GFM_InitialMass": (mass * 1.2 * h / 1e10).astype(np.float32),
        "GFM_StellarFormationTime": sft.astype(np.float32),
        "GFM_Metallicity": metal.astype(np.float32),
        "ParticleIDs": ids,
        "Potential": (potential * 1e5 / a).astype(np.float32),
    }
    counts = np.zeros(6, dtype=np.int32)
    counts[4] = n
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        hdr.attrs["Time"] = a
        hdr.attrs["Redshift"] = 1.0 / a - 1.0
        hdr.attrs["HubbleParam"] = h
        hdr.attrs["BoxSize"] = float(box_size)
        hdr.attrs["Omega0"] = cosmology.omega_m
        hdr.attrs["OmegaLambda"] = cosmology.omega_lambda
        hdr.attrs["OmegaBaryon"] = 0.0486
        hdr.attrs["MassTable"] = np.zeros(6)
        hdr.attrs["NumPart_ThisFile"] = counts
        hdr.attrs["CutoutID"] = int(cutout_id)
        grp = f.create_group("PartType4")
        for key, value in data.items():
            if key not in omit:
                grp.create_dataset(key, data=value)
    return CutoutFixture(path=path, insitu=insitu, particle_ids=ids, is_wind=is_wind)


def write_insitu_flags(
    path: str | Path, insitu: np.ndarray, particle_ids: np.ndarray | None = None
) -> Path:
    """Write a Stellar Assembly file (``InSitu`` i1, optional ``ParticleID`` u8).

    Use one cutout's :attr:`CutoutFixture.insitu` for a per-cutout flag file, or
    the concatenation over several cutouts for a full-snapshot ``stars_NNN.hdf5``.
    """
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("InSitu", data=np.asarray(insitu, dtype=np.int8))
        if particle_ids is not None:
            f.create_dataset("ParticleID", data=np.asarray(particle_ids, np.uint64))
        f.create_dataset("SubfindID", data=np.zeros(len(insitu), dtype=np.int32))
    return path


def write_offsets(path: str | Path, snap_by_type: np.ndarray) -> Path:
    """Write ``offsets_NNN.hdf5`` with ``Subhalo/SnapByType`` (n_subhalos, 6)."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("Subhalo/SnapByType", data=np.asarray(snap_by_type, np.int64))
    return path


def write_subhalo_json(
    path: str | Path,
    particles: Particles,
    *,
    scale_factor: float = 1.0,
    hubble_param: float = TNG_COSMOLOGY.hubble_param,
    subhalo_id: int = 0,
) -> Path:
    """Write the web API's subhalo JSON (comoving units) for ``particles``."""
    path = Path(path)
    to_ckpc_h = hubble_param / scale_factor
    data = {
        "id": subhalo_id,
        "halfmassrad_stars": particles.half_mass_radius * to_ckpc_h,
    }
    for k, axis in enumerate("xyz"):
        data[f"pos_{axis}"] = float(particles.centre[k] * to_ckpc_h)
        data[f"vel_{axis}"] = float(particles.systemic_velocity[k])
    path.write_text(json.dumps(data))
    return path


def write_eagle_file(
    path: str | Path,
    particles: Particles,
    *,
    scale_factor: float = 1.0,
    cosmology: Cosmology = EAGLE_COSMOLOGY,
    box_size: float = 67.77,
    group_number: int = 1,
    subgroup_number: int = 0,
    others: Sequence[tuple[Particles, int, int]] = (),
    omit_units: Sequence[str] = (),
) -> None:
    """Write galaxies as an EAGLE particle file with unit attributes.

    Args:
        path: output file.
        particles: the main galaxy.
        scale_factor: ``Header/ExpansionFactor``.
        cosmology: h, Omega0 and OmegaLambda of the header.
        box_size: ``Header/BoxSize`` in cMpc/h.
        group_number: GroupNumber of the main galaxy.
        subgroup_number: SubGroupNumber of the main galaxy.
        others: more (particles, group, subgroup) to store in the same file
            (subgroup 2**30 = unbound).
        omit_units: dataset names written without their unit attributes.
    """
    a, h = float(scale_factor), cosmology.hubble_param
    gals = [(particles, group_number, subgroup_number), *others]
    cat = {
        key: np.concatenate([getattr(p, key) for p, _, _ in gals])
        for key in ("mass", "metallicity")
    }
    pos = np.concatenate([p.pos + p.centre for p, _, _ in gals])
    vel = np.concatenate([p.vel + p.systemic_velocity for p, _, _ in gals])
    a_form = np.concatenate([_formation_a(p, cosmology, a) for p, _, _ in gals])
    group = np.concatenate([np.full(len(p), g, np.int32) for p, g, _ in gals])
    sub = np.concatenate([np.full(len(p), s, np.int32) for p, _, s in gals])
    # (values, CGSConversionFactor, h-scale-exponent, aexp-scale-exponent)
    mpc = 1e3 * KPC_CM
    data = {
        "Coordinates": ((pos * KPC_CM / mpc * h / a) % box_size, mpc, -1.0, 1.0),
        "Velocity": ((vel / np.sqrt(a)).astype(np.float32), KMS_CMS, 0.0, 0.5),
        "Mass": ((cat["mass"] * h / 1e10).astype(np.float32), 1e10 * MSUN_G, -1.0, 0.0),
        "InitialMass": (
            (cat["mass"] * h / 1e10).astype(np.float32),
            1e10 * MSUN_G,
            -1.0,
            0.0,
        ),
        "StellarFormationTime": (a_form.astype(np.float32), 1.0, 0.0, 0.0),
        "SmoothedMetallicity": (cat["metallicity"].astype(np.float32), 1.0, 0.0, 0.0),
        "Metallicity": ((cat["metallicity"] * 1.1).astype(np.float32), 1.0, 0.0, 0.0),
        "ParticleIDs": (np.arange(1, len(pos) + 1, dtype=np.int64), 1.0, 0.0, 0.0),
        "GroupNumber": (group, 1.0, 0.0, 0.0),
        "SubGroupNumber": (sub, 1.0, 0.0, 0.0),
    }
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        hdr.attrs["ExpansionFactor"] = a
        hdr.attrs["Time"] = a
        hdr.attrs["Redshift"] = 1.0 / a - 1.0
        hdr.attrs["HubbleParam"] = h
        hdr.attrs["BoxSize"] = float(box_size)
        hdr.attrs["Omega0"] = cosmology.omega_m
        hdr.attrs["OmegaLambda"] = cosmology.omega_lambda
        grp = f.create_group("PartType4")
        for key, (values, cgs, h_exp, a_exp) in data.items():
            dset = grp.create_dataset(key, data=values)
            if key not in omit_units:
                dset.attrs["CGSConversionFactor"] = cgs
                dset.attrs["h-scale-exponent"] = h_exp
                dset.attrs["aexp-scale-exponent"] = a_exp
