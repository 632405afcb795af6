"""Mass profiles and equilibrium kinematics shared by every mock formation model.

The gravity-driven half of a mock galaxy: where the mass is and how fast it moves.
All profiles are spherical in their enclosed mass (the disc too, in the thin-disc
limit), so the circular speed is ``V_c(r) = sqrt(G M(<r) / r)`` of the *total*
enclosed mass (stars + NFW dark halo).

- :class:`Sersic`: the Prugniel & Simien (1997) deprojection of a Sérsic profile,
  ``rho(r) ∝ x^-p exp(-b x^(1/n))`` with ``x = r / R_e``, ``b = b_n`` of the
  projected profile and ``p = 1 - 0.6097/n + 0.05563/n^2`` (Lima Neto, Gerbal &
  Márquez 1999). Its enclosed mass is an incomplete gamma function, so sampling
  radii is an inverse-CDF lookup on a radial grid.
- :class:`ExponentialDisc`: ``Sigma(R) ∝ exp(-R/R_d)`` with an isothermal
  ``sech^2(z/z0)`` vertical profile (Spitzer 1942).
- :class:`NFW`: Navarro, Frenk & White (1997) halo of mass ``M_200c`` and
  concentration ``c``.
- :func:`jeans_dispersion`: isotropic Jeans equation (Binney & Tremaine 2008,
  eq. 4.216) ``rho sigma^2(r) = ∫_r^∞ rho G M(r') / r'^2 dr'`` integrated
  numerically on a log-radial grid in log space (no underflow in the wings).
- :func:`disc_kinematics`: velocity dispersions of an isothermal disc and its
  mean rotation from the asymmetric-drift equation (Binney & Tremaine eq. 4.228).
- :class:`GalaxyStructure`: the components of one galaxy together;
  :func:`sample_spheroid` draws the phase space of a Jeans spheroid.

Units: kpc, km/s, Msun; ``G`` in kpc (km/s)^2 / Msun.

Example:
    >>> import numpy as np
    >>> s = Sersic(mass=1e11, r_e=5.0, n=4.0)
    >>> round(float(s.enclosed(np.array([1e6]))[0] / 1e11), 6)
    1.0
    >>> halo = NFW(m200=1e12, c=10.0)
    >>> round(halo.r200)  # kpc
    211
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincinv, gammaln

__all__ = [
    "G",
    "RHO_CRIT",
    "Sersic",
    "ExponentialDisc",
    "NFW",
    "total_enclosed",
    "jeans_dispersion",
    "disc_kinematics",
    "sample_spheroid",
    "GalaxyStructure",
    "cylindrical_to_cartesian",
]

#: Gravitational constant in kpc (km/s)^2 / Msun.
G = 4.300917270e-6
#: Critical density today for h = 0.6774 (Planck 2015, as TNG) in Msun / kpc^3.
RHO_CRIT = 277.536627 * 0.6774**2

# Radial grids for inverse-CDF sampling and the Jeans integral, in units of the
# profile's own scale; 1e-4..1e3 covers all but ~1e-6 of a Sérsic n=4 mass.
_GRID_LOG10_RANGE = (-4.0, 3.0)
_GRID_POINTS = 2048


class _Profile:
    """Interface: ``enclosed(r)``, ``log_density(r)``, ``sample_radius(u)``."""

    mass: float

    def enclosed(self, r: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_density(self, r: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Sersic(_Profile):
    """Deprojected Sérsic spheroid (Prugniel & Simien 1997).

    Args:
        mass: total mass in Msun.
        r_e: projected half-mass (effective) radius in kpc.
        n: Sérsic index.
    """

    mass: float
    r_e: float
    n: float

    @property
    def b(self) -> float:
        """``b_n``: half the projected mass lies inside ``R_e`` (Ciotti 1991)."""
        return float(gammaincinv(2.0 * self.n, 0.5))

    @property
    def p(self) -> float:
        """Inner log-slope of the deprojected density (Lima Neto+99)."""
        return 1.0 - 0.6097 / self.n + 0.05563 / self.n**2

    @property
    def _shape(self) -> float:
        return self.n * (3.0 - self.p)

    def enclosed(self, r: np.ndarray) -> np.ndarray:
        """Mass inside the sphere of radius ``r`` (Msun)."""
        x = np.asarray(r, dtype=float) / self.r_e
        return self.mass * gammainc(self._shape, self.b * x ** (1.0 / self.n))

    def log_density(self, r: np.ndarray) -> np.ndarray:
        """Natural log of the density in Msun / kpc^3."""
        n, b, p = self.n, self.b, self.p
        log_rho0 = (
            np.log(self.mass)
            + self._shape * np.log(b)
            - np.log(4.0 * np.pi * self.r_e**3 * n)
            - gammaln(self._shape)
        )
        x = np.asarray(r, dtype=float) / self.r_e
        return log_rho0 - p * np.log(x) - b * x ** (1.0 / n)

    def sample_radius(self, u: np.ndarray) -> np.ndarray:
        """Radii for uniform deviates ``u`` by inverse CDF on a radial grid."""
        x = np.logspace(*_GRID_LOG10_RANGE, _GRID_POINTS)
        cdf = gammainc(self._shape, self.b * x ** (1.0 / self.n))
        return self.r_e * _inverse_cdf(u, cdf, x)


@dataclass(frozen=True)
class ExponentialDisc(_Profile):
    """Exponential disc with an isothermal ``sech^2(z / z0)`` vertical profile.

    Its enclosed mass is the thin-disc cylinder mass ``M [1 - (1 + x) e^-x]``,
    ``x = r / R_d``, used as if spherical (error ≲ 15% in V_c near the peak of
    the disc's own rotation curve, much less once the halo and spheroid count).

    Args:
        mass: total mass in Msun.
        r_d: scale length in kpc (projected face-on half-mass radius 1.678 R_d).
        z0: vertical ``sech^2`` scale height in kpc.
    """

    mass: float
    r_d: float
    z0: float

    def enclosed(self, r: np.ndarray) -> np.ndarray:
        """Mass inside radius ``r`` in the thin-disc approximation (Msun)."""
        x = np.asarray(r, dtype=float) / self.r_d
        return self.mass * (1.0 - (1.0 + x) * np.exp(-x))

    def surface_density(self, radius: np.ndarray) -> np.ndarray:
        """Face-on surface density at cylindrical radius ``R`` (Msun / kpc^2)."""
        sigma0 = self.mass / (2.0 * np.pi * self.r_d**2)
        return sigma0 * np.exp(-np.asarray(radius, dtype=float) / self.r_d)

    def sample(self, u_r: np.ndarray, u_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cylindrical radius and height for uniform deviates (inverse CDFs).

        The radial CDF ``1 - (1 + x) e^-x`` is a gamma(2) CDF, tabulated on a grid;
        the vertical one is ``(1 + tanh(z / z0)) / 2``, inverted exactly.
        """
        x = np.logspace(*_GRID_LOG10_RANGE, _GRID_POINTS)
        radius = self.r_d * _inverse_cdf(u_r, gammainc(2.0, x), x)
        u_z = np.clip(u_z, 1e-12, 1.0 - 1e-12)
        return radius, self.z0 * np.arctanh(2.0 * u_z - 1.0)


@dataclass(frozen=True)
class NFW:
    """Navarro-Frenk-White dark halo, defined by ``M_200c`` and concentration.

    Args:
        m200: mass inside ``r200`` (mean density 200 ``RHO_CRIT``), Msun.
        c: concentration ``r200 / r_s``.
    """

    m200: float
    c: float

    @property
    def r200(self) -> float:
        """Radius enclosing a mean density of 200 times critical (kpc)."""
        return float((3.0 * self.m200 / (800.0 * np.pi * RHO_CRIT)) ** (1.0 / 3.0))

    def enclosed(self, r: np.ndarray) -> np.ndarray:
        """Mass inside radius ``r`` (Msun); keeps growing beyond r200."""
        x = np.asarray(r, dtype=float) * self.c / self.r200
        norm = np.log1p(self.c) - self.c / (1.0 + self.c)
        return self.m200 * (np.log1p(x) - x / (1.0 + x)) / norm


def total_enclosed(
    components: Sequence[_Profile | NFW],
) -> Callable[[np.ndarray], np.ndarray]:
    """``M(<r)`` of a sum of components, as one vectorised function."""

    def enclosed(r: np.ndarray) -> np.ndarray:
        return sum(c.enclosed(r) for c in components)

    return enclosed


def jeans_dispersion(
    tracer: Sersic,
    enclosed_mass: Callable[[np.ndarray], np.ndarray],
    r: np.ndarray,
) -> np.ndarray:
    """One-dimensional velocity dispersion of an isotropic spheroid (km/s).

    Solves ``rho(r) sigma^2(r) = ∫_r^∞ rho(r') G M(<r') / r'^2 dr'`` by the
    trapezoid rule on a log-radial grid (in units of the tracer's ``R_e``), summed
    in log space so that ``exp(-b x^(1/n))`` never underflows, then interpolates
    to ``r`` (log-log; clamped at the grid ends).

    Args:
        tracer: the spheroid whose density weights the integral.
        enclosed_mass: total ``M(<r)`` of the potential, in Msun.
        r: radii in kpc where the dispersion is wanted.

    Returns:
        ``sigma(r)`` with the shape of ``r``.
    """
    grid = tracer.r_e * np.logspace(*_GRID_LOG10_RANGE, _GRID_POINTS)
    dlnr = np.log(grid[1] / grid[0])
    log_rho = tracer.log_density(grid)
    # Integrand in d ln r: rho G M / r^2 * r.
    log_f = log_rho + np.log(G * enclosed_mass(grid) / grid)
    log_cum = np.logaddexp.accumulate(log_f[::-1])[::-1]  # sum_{j >= i} f_j
    # Trapezoid: subtract half of the lower end point (the upper one is ~0).
    log_int = log_cum + np.log1p(-0.5 * np.exp(log_f - log_cum)) + np.log(dlnr)
    log_sigma2 = log_int - log_rho
    lr = np.log(np.asarray(r, dtype=float))
    return np.exp(0.5 * np.interp(lr, np.log(grid), log_sigma2))


def disc_kinematics(
    disc: ExponentialDisc,
    enclosed_mass: Callable[[np.ndarray], np.ndarray],
    radius: np.ndarray,
    sigma_z_over_r: float,
) -> dict[str, np.ndarray]:
    """Dispersions and mean rotation of an isothermal exponential disc.

    ``sigma_z^2 = pi G Sigma(R) z0`` (self-gravitating isothermal sheet; constant
    ``z0`` makes ``sigma_z^2 ∝ Sigma``), ``sigma_R = sigma_z / sigma_z_over_r``,
    ``sigma_phi^2 / sigma_R^2 = kappa^2 / 4 Omega^2 = (1 + dln V_c / dln R) / 2``
    (epicycle approximation) and the asymmetric drift

    ``v_phi^2 = V_c^2 - sigma_R^2 (sigma_phi^2 / sigma_R^2 - 1 + 2 R / R_d)``

    (Binney & Tremaine 2008 eq. 4.228 with ``Sigma sigma_R^2 ∝ exp(-2R/R_d)``),
    clipped at zero near the centre where pressure wins.

    Args:
        disc: the disc.
        enclosed_mass: total ``M(<r)`` in Msun.
        radius: cylindrical radii in kpc.
        sigma_z_over_r: ``sigma_z / sigma_R`` (≈ 0.6 in the solar neighbourhood).

    Returns:
        Dict with ``v_circ``, ``v_phi`` (mean), ``sigma_r``, ``sigma_phi``,
        ``sigma_z``, each shaped like ``radius``.
    """
    radius = np.maximum(np.asarray(radius, dtype=float), 1e-6 * disc.r_d)
    # Everything depending on M(<R) is tabulated on a log grid and interpolated:
    # evaluating incomplete gamma functions per particle would dominate the cost.
    grid = np.geomspace(radius.min() * 0.99, radius.max() * 1.01 + 1e-9, 512)
    log_v = 0.5 * np.log(G * enclosed_mass(grid) / grid)
    dlnv = np.gradient(log_v, np.log(grid))
    lr = np.log(radius)
    v_circ = np.exp(np.interp(lr, np.log(grid), log_v))
    ratio = np.clip(0.5 * (1.0 + np.interp(lr, np.log(grid), dlnv)), 0.0, 1.0)
    sigma_z = np.sqrt(np.pi * G * disc.surface_density(radius) * disc.z0)
    sigma_r = sigma_z / sigma_z_over_r
    v_phi2 = v_circ**2 - sigma_r**2 * (ratio - 1.0 + 2.0 * radius / disc.r_d)
    return {
        "v_circ": v_circ,
        "v_phi": np.sqrt(np.clip(v_phi2, 0.0, None)),
        "sigma_r": sigma_r,
        "sigma_phi": sigma_r * np.sqrt(ratio),
        "sigma_z": sigma_z,
    }


@dataclass(frozen=True)
class GalaxyStructure:
    """The analytic mass model of one drawn galaxy (for sampling and for tests).

    Args:
        disc: in-situ disc.
        bulge: in-situ bulge.
        spheroid: ex-situ spheroid.
        halo: dark halo.
    """

    disc: ExponentialDisc
    bulge: Sersic
    spheroid: Sersic
    halo: NFW

    @property
    def stellar_components(self) -> tuple[Any, ...]:
        """The stellar components with non-zero mass."""
        return tuple(c for c in (self.disc, self.bulge, self.spheroid) if c.mass > 0)

    def stellar_enclosed(self, r: np.ndarray) -> np.ndarray:
        """Stellar mass inside radius ``r`` (Msun)."""
        return total_enclosed(self.stellar_components)(r)

    def enclosed(self, r: np.ndarray) -> np.ndarray:
        """Total (stars + dark matter) mass inside radius ``r`` (Msun)."""
        return total_enclosed((*self.stellar_components, self.halo))(r)

    def circular_velocity(self, r: np.ndarray) -> np.ndarray:
        """``sqrt(G M(<r) / r)`` of the total enclosed mass (km/s)."""
        r = np.asarray(r, dtype=float)
        return np.sqrt(G * self.enclosed(r) / r)

    def half_mass_radius(self) -> float:
        """3D radius enclosing half the stellar mass (kpc), by root finding."""
        total = sum(c.mass for c in self.stellar_components)
        return float(
            brentq(
                lambda r: self.stellar_enclosed(r) - 0.5 * total,
                1e-4,
                1e4,
                xtol=1e-8,
                rtol=1e-10,
            )
        )

    def spheroid_dispersion(self, r: np.ndarray) -> np.ndarray:
        """Isotropic Jeans dispersion of the ex-situ spheroid (km/s)."""
        return jeans_dispersion(self.spheroid, self.enclosed, r)


def sample_spheroid(
    rng: np.random.Generator,
    profile: Sersic,
    enclosed: Callable[[np.ndarray], np.ndarray],
    n: int,
    spin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Jeans spheroid with prograde streaming v_phi = spin sigma R / r."""
    if n == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    r = profile.sample_radius(rng.random(n))
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    radius, z = r * np.sqrt(1.0 - cos_t**2), r * cos_t
    sigma = jeans_dispersion(profile, enclosed, r)
    v_mean = spin * sigma * radius / r
    # Keep the second moment <v_phi^2> = sigma^2 of the isotropic Jeans solution.
    sigma_phi = np.sqrt(np.clip(sigma**2 - v_mean**2, 0.0, None))
    v_r = sigma * rng.standard_normal(n)
    v_phi = v_mean + sigma_phi * rng.standard_normal(n)
    v_z = sigma * rng.standard_normal(n)
    return cylindrical_to_cartesian(radius, phi, z, v_r, v_phi, v_z)


def cylindrical_to_cartesian(
    radius: np.ndarray,
    phi: np.ndarray,
    z: np.ndarray,
    v_r: np.ndarray,
    v_phi: np.ndarray,
    v_z: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) positions and velocities from cylindrical coordinates."""
    cos, sin = np.cos(phi), np.sin(phi)
    pos = np.stack([radius * cos, radius * sin, z], axis=1)
    vel = np.stack([v_r * cos - v_phi * sin, v_r * sin + v_phi * cos, v_z], axis=1)
    return pos, vel


def _inverse_cdf(u: np.ndarray, cdf: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Invert a tabulated monotone CDF (log-linear interpolation in ``x``)."""
    keep = np.concatenate(([True], np.diff(cdf) > 0))  # strictly increasing
    return np.exp(np.interp(u, cdf[keep], np.log(x[keep])))
