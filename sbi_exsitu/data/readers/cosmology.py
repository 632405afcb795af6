"""Stellar ages from formation scale factors, in each file's own cosmology.

The cosmic time at scale factor ``a`` in a matter + Lambda (+ curvature) universe
is the integral of the Friedmann equation,

    t(a) = integral_0^a da' / (a' H(a')),
    H(a) = H0 sqrt(Omega_m a^-3 + Omega_k a^-2 + Omega_Lambda),

with Omega_k = 1 - Omega_m - Omega_Lambda and H0 = 100 h km/s/Mpc. Radiation is
neglected, as in the TNG and EAGLE runs. We integrate numerically with
:func:`scipy.integrate.quad` (astropy is not a dependency of the project and is
not needed for this one integral). Substituting x = a^(3/2) makes the integrand
smooth at a = 0:

    t = 2 / (3 H0) integral_0^{a^(3/2)} dx / sqrt(Omega_m + Omega_k x^(2/3)
                                                   + Omega_Lambda x^2).

The integral is tabulated at a fixed grid of x and interpolated with a cubic
spline, so millions of particles cost one small table. For a flat universe it
matches the closed form (Hogg 1999, astro-ph/9905116)
t(a) = 2 / (3 H0 sqrt(Omega_Lambda)) asinh(sqrt(Omega_Lambda / Omega_m) a^(3/2))
to better than 1e-9 relative.

Example:
    >>> tng = Cosmology(hubble_param=0.6774, omega_m=0.3089, omega_lambda=0.6911)
    >>> round(float(tng.cosmic_time(1.0)), 2)
    13.8
    >>> float(tng.age(1.0, 1.0))
    0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import quad
from scipy.interpolate import CubicSpline

__all__ = ["Cosmology", "HUBBLE_TIME_GYR"]

# 1 / (100 km/s/Mpc) in Gyr: Mpc in km / (100 km/s) / (Julian Gyr in s).
HUBBLE_TIME_GYR = 3.0856775814913673e19 / 100.0 / (365.25 * 86400.0 * 1e9)
_GRID = 1025


@dataclass(frozen=True)
class Cosmology:
    """A matter + Lambda cosmology, as stored in a snapshot header.

    Attributes:
        hubble_param: h = H0 / (100 km/s/Mpc).
        omega_m: matter density parameter today (TNG header ``Omega0``).
        omega_lambda: dark-energy density parameter today.
    """

    hubble_param: float
    omega_m: float
    omega_lambda: float

    def __post_init__(self) -> None:
        for key in ("hubble_param", "omega_m"):
            value = getattr(self, key)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"cosmology: '{key}' is {value}, expected > 0")
        if not np.isfinite(self.omega_lambda) or self.omega_lambda < 0:
            raise ValueError(
                f"cosmology: 'omega_lambda' is {self.omega_lambda}, expected >= 0"
            )

    @property
    def omega_k(self) -> float:
        """Curvature density parameter, 1 - Omega_m - Omega_Lambda."""
        return 1.0 - self.omega_m - self.omega_lambda

    @property
    def hubble_time(self) -> float:
        """1 / H0 in Gyr."""
        return HUBBLE_TIME_GYR / self.hubble_param

    def _integrand(self, x: float) -> float:
        e2 = self.omega_m + self.omega_k * x ** (2.0 / 3.0) + self.omega_lambda * x * x
        return 1.0 / np.sqrt(e2)

    def cosmic_time(self, a: np.ndarray | float) -> np.ndarray:
        """Time since the Big Bang at scale factor ``a``, in Gyr.

        Args:
            a: scale factors in (0, a_max]; any shape.

        Returns:
            Cosmic times in Gyr, same shape as ``a``.

        Raises:
            ValueError: ``a`` has a non-positive or non-finite value, or the
                universe recollapses before reaching it.
        """
        a = np.asarray(a, dtype=np.float64)
        if a.size == 0:
            return a.copy()
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError("cosmic_time: scale factors must be finite and > 0")
        x = a**1.5
        x_max = float(x.max())
        grid = np.linspace(0.0, x_max, _GRID)
        if np.any(
            self.omega_m + self.omega_k * grid ** (2 / 3) + self.omega_lambda * grid**2
            <= 0
        ):
            raise ValueError(
                "cosmic_time: H(a)^2 <= 0 before the largest scale factor "
                f"{a.max():.4g}: this cosmology recollapses"
            )
        # Each grid cell integrated to machine precision, then summed.
        pieces = [
            quad(self._integrand, lo, hi, epsabs=0, epsrel=1e-12)[0]
            for lo, hi in zip(grid[:-1], grid[1:], strict=True)
        ]
        table = np.concatenate([[0.0], np.cumsum(pieces)])
        spline = CubicSpline(grid, table)
        return 2.0 / 3.0 * self.hubble_time * spline(x)

    def age(self, a_form: np.ndarray | float, a_now: float) -> np.ndarray:
        """Age in Gyr at ``a_now`` of stars born at scale factors ``a_form``.

        Args:
            a_form: formation scale factors (> 0).
            a_now: the snapshot's scale factor.

        Returns:
            t(a_now) - t(a_form) in Gyr; stars born after ``a_now`` get a
            negative age (the readers check for that).
        """
        a_form = np.asarray(a_form, dtype=np.float64)
        both = np.concatenate([a_form.reshape(-1), [float(a_now)]])
        t = self.cosmic_time(both)
        return (t[-1] - t[:-1]).reshape(a_form.shape)

    def scale_factor(self, t: np.ndarray | float, a_max: float = 1.0) -> np.ndarray:
        """Inverse of :meth:`cosmic_time`: the scale factor at cosmic time ``t``.

        Args:
            t: cosmic times in Gyr, in (0, t(a_max)].
            a_max: the largest scale factor to consider.

        Returns:
            Scale factors, same shape as ``t``, accurate to ~1e-12 relative.

        Raises:
            ValueError: a time is not in (0, t(a_max)].
        """
        t = np.asarray(t, dtype=np.float64)
        grid = np.linspace(0.0, a_max**1.5, 20001)[1:] ** (2.0 / 3.0)
        t_grid = self.cosmic_time(grid)
        if np.any(~np.isfinite(t)) or np.any(t <= 0) or np.any(t > t_grid[-1]):
            raise ValueError(
                f"scale_factor: cosmic times must be in (0, {t_grid[-1]:.4f}] Gyr "
                f"(the age of the universe at a = {a_max})"
            )
        a = np.interp(t, t_grid, grid)
        # Newton steps from the interpolated guess: dt/da = 1 / (a H(a)).
        for _ in range(2):
            rate = self.hubble_time / (
                a
                * np.sqrt(self.omega_m / a**3 + self.omega_k / a**2 + self.omega_lambda)
            )
            a = a + (t - self.cosmic_time(a)) / rate
        return a
