"""The star particles of one galaxy, in physical units.

Every galaxy source (mock formation models, TNG and EAGLE readers) converts to
:class:`Particles` at its boundary, so everything downstream speaks one language:

========================  ==========  =================================
field                     shape       unit
========================  ==========  =================================
``pos``                   (N, 3)      kpc, relative to ``centre``
``vel``                   (N, 3)      km/s, relative to ``systemic_velocity``
``mass``                  (N,)        Msun (> 0)
``age``                   (N,)        Gyr (>= 0)
``metallicity``           (N,)        metal mass fraction Z = M_Z / M (>= 0)
``ex_situ``               (N,)        bool, True for accreted stars
``centre``                (3,)        kpc, where ``pos`` was measured from
``systemic_velocity``     (3,)        km/s, subtracted from ``vel``
``half_mass_radius``      scalar      kpc (> 0), the stellar r_e
========================  ==========  =================================

``pos`` and ``vel`` are already centred: ``centre`` and ``systemic_velocity`` only
record where the source put the origin; ``provenance`` says, in words, where a
reader took them (and r_e) from and what it dropped, for the ``render`` log.
``ex_situ`` may be ``None`` for real data without Stellar Assembly flags; such
galaxies have no f_ex label.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = Particles(pos=rng.normal(size=(100, 3)), vel=rng.normal(size=(100, 3)),
    ...               mass=np.full(100, 1e6), age=np.full(100, 8.0),
    ...               metallicity=np.full(100, 0.02), ex_situ=np.zeros(100, bool))
    >>> round(p.f_ex, 3), round(p.log_mstar, 1)
    (0.0, 8.0)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from sbi_exsitu.errors import ParticlesError

__all__ = ["Particles", "ParticlesError", "half_mass_radius", "subsample"]


def half_mass_radius(pos: np.ndarray, mass: np.ndarray) -> float:
    """Radius (3D, around the origin) enclosing half of the total mass.

    Args:
        pos: (N, 3) positions.
        mass: (N,) masses.

    Returns:
        The half-mass radius, interpolated between the two bracketing particles.
    """
    r = np.sqrt(np.einsum("ij,ij->i", pos, pos))
    order = np.argsort(r)
    cum = np.cumsum(mass[order])
    half = 0.5 * cum[-1]
    return float(np.interp(half, cum, r[order]))


@dataclass(frozen=True, eq=False)
class Particles:
    """A galaxy's star particles in physical units, validated on construction.

    See the module docstring for fields and units. Arrays are converted to float64
    (``ex_situ`` to bool) and made read-only, so a ``Particles`` can be shared
    between renderers without copies.

    Raises:
        ParticlesError: a field has the wrong shape, a non-finite value, a
            non-positive mass or radius, or a negative age or metallicity.
    """

    pos: np.ndarray
    vel: np.ndarray
    mass: np.ndarray
    age: np.ndarray
    metallicity: np.ndarray
    ex_situ: np.ndarray | None = None
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    systemic_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    half_mass_radius: float | None = None
    name: str = "galaxy"
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        n = None
        for key, ndim_tail in (
            ("pos", (3,)),
            ("vel", (3,)),
            ("mass", ()),
            ("age", ()),
            ("metallicity", ()),
        ):
            arr = _as_float(self, key)
            if arr.ndim != 1 + len(ndim_tail) or arr.shape[1:] != ndim_tail:
                want = "(N, 3)" if ndim_tail else "(N,)"
                raise ParticlesError(
                    f"{self.name}: field '{key}' has shape {arr.shape}, expected {want}"
                )
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ParticlesError(
                    f"{self.name}: field '{key}' has {arr.shape[0]} particles, "
                    f"expected {n} (the length of 'pos')"
                )
            set_(self, key, arr)
        if n == 0:
            raise ParticlesError(f"{self.name}: no particles (field 'pos' is empty)")
        if np.any(self.mass <= 0):
            bad = int(np.sum(self.mass <= 0))
            raise ParticlesError(
                f"{self.name}: field 'mass' has {bad} zero or negative values, "
                "expected all masses > 0 Msun"
            )
        for key in ("age", "metallicity"):
            if np.any(getattr(self, key) < 0):
                raise ParticlesError(
                    f"{self.name}: field '{key}' has negative values, expected >= 0"
                )
        if self.ex_situ is not None:
            flags = np.asarray(self.ex_situ)
            if flags.shape != (n,):
                raise ParticlesError(
                    f"{self.name}: field 'ex_situ' has shape {flags.shape}, "
                    f"expected ({n},)"
                )
            if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
                raise ParticlesError(
                    f"{self.name}: field 'ex_situ' must hold booleans or 0/1"
                )
            flags = flags.astype(bool)
            flags.setflags(write=False)
            set_(self, "ex_situ", flags)
        for key in ("centre", "systemic_velocity"):
            arr = _as_float(self, key)
            if arr.shape != (3,):
                raise ParticlesError(
                    f"{self.name}: field '{key}' has shape {arr.shape}, expected (3,)"
                )
            set_(self, key, arr)
        if self.half_mass_radius is None:
            set_(self, "half_mass_radius", half_mass_radius(self.pos, self.mass))
        r_e = float(self.half_mass_radius)
        if not np.isfinite(r_e) or r_e <= 0:
            raise ParticlesError(
                f"{self.name}: field 'half_mass_radius' is {r_e}, expected a finite "
                "radius > 0 kpc"
            )
        set_(self, "half_mass_radius", r_e)

    def __len__(self) -> int:
        return self.mass.shape[0]

    @property
    def total_mass(self) -> float:
        """Total stellar mass in Msun."""
        return float(self.mass.sum())

    @property
    def log_mstar(self) -> float:
        """log10 of the total stellar mass in Msun."""
        return float(np.log10(self.total_mass))

    @property
    def f_ex(self) -> float:
        """Ex-situ mass fraction, NaN when the flags are unknown."""
        if self.ex_situ is None:
            return float("nan")
        return float(self.mass[self.ex_situ].sum() / self.total_mass)

    def rotated(self, matrix: np.ndarray) -> Particles:
        """A copy with positions and velocities rotated by a 3x3 matrix."""
        matrix = np.asarray(matrix, dtype=np.float64)
        return Particles(
            pos=self.pos @ matrix.T,
            vel=self.vel @ matrix.T,
            mass=self.mass,
            age=self.age,
            metallicity=self.metallicity,
            ex_situ=self.ex_situ,
            centre=self.centre,
            systemic_velocity=self.systemic_velocity,
            half_mass_radius=self.half_mass_radius,
            name=self.name,
        )


def subsample(particles: Particles, n_keep: int, seed: int) -> Particles:
    """A random ``n_keep`` of the particles, heavier so that M* is unchanged.

    What a coarser simulation of the same galaxy gives: fewer, more massive
    particles drawn from the same distribution (without replacement, in their
    original order). The masses are scaled by one common factor, so M*, f_ex
    and every mass-weighted mean are unbiased; r_e is re-measured from the kept
    particles, as that simulation would measure it. Used by the ``[simulate]
    particle_subsample`` augmentation and ``benchmarks/particle_resampling.py``.

    Args:
        particles: the galaxy.
        n_keep: particles to keep, in ``[1, len(particles)]``.
        seed: seed of the draw.

    Returns:
        The coarser galaxy (same name, centre and systemic velocity).

    Raises:
        ParticlesError: ``n_keep`` is out of range.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> p = Particles(pos=rng.normal(size=(100, 3)), vel=np.zeros((100, 3)),
        ...               mass=rng.uniform(1, 2, 100) * 1e6, age=np.ones(100),
        ...               metallicity=np.ones(100) * 0.02)
        >>> q = subsample(p, 25, seed=1)
        >>> len(q), bool(np.isclose(q.total_mass, p.total_mass))
        (25, True)
    """
    n = len(particles)
    if isinstance(n_keep, bool) or not 1 <= int(n_keep) <= n:
        raise ParticlesError(
            f"{particles.name}: cannot keep {n_keep!r} of {n} particles, expected "
            f"an integer in [1, {n}]"
        )
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(n, size=int(n_keep), replace=False))
    mass = particles.mass[keep]
    return dataclasses.replace(
        particles,
        pos=particles.pos[keep],
        vel=particles.vel[keep],
        mass=mass * (particles.mass.sum() / mass.sum()),
        age=particles.age[keep],
        metallicity=particles.metallicity[keep],
        ex_situ=None if particles.ex_situ is None else particles.ex_situ[keep],
        half_mass_radius=None,
    )


def _as_float(obj: Particles, key: str) -> np.ndarray:
    try:
        arr = np.array(getattr(obj, key), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ParticlesError(
            f"{obj.name}: field '{key}' is not numeric: {err}"
        ) from err
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ParticlesError(
            f"{obj.name}: field '{key}' has {bad} NaN or infinite values, "
            "expected finite numbers"
        )
    arr.setflags(write=False)
    return arr
