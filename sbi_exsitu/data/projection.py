"""Project star particles on a camera's square pixel grid and sum moments.

Shared by the idealised renderer (:func:`sbi_exsitu.data.render.pixel_statistics`)
and the mock observation stage (:mod:`sbi_exsitu.data.observe.stage`), so both
bin particles the same way: one flat pixel index per particle, with an extra dump
bin (index ``n * n``) for particles outside the field of view.

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> rng = np.random.default_rng(0)
    >>> p = Particles(pos=rng.normal(size=(500, 3)), vel=rng.normal(0, 50, (500, 3)),
    ...               mass=np.ones(500), age=np.ones(500),
    ...               metallicity=np.full(500, 0.02))
    >>> m = moment_maps(p, np.array([0.0, 0.0, 1.0]), 16, 4.0)
    >>> m.shape, float(m[0].sum()) <= 500
    ((5, 16, 16), True)
"""

from __future__ import annotations

import numpy as np

from sbi_exsitu.data.cameras import camera_basis
from sbi_exsitu.data.particles import Particles

__all__ = ["MOMENTS", "pixel_index", "moment_maps"]

#: The mass-weighted moment maps of :func:`moment_maps`, in order.
MOMENTS: tuple[str, ...] = ("mass", "mass_v", "mass_v2", "mass_age", "mass_z")


def pixel_index(
    particles: Particles, direction: np.ndarray, n: int, half: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index and line-of-sight velocity of every particle.

    Args:
        particles: the galaxy.
        direction: (3,) vector from the galaxy towards the camera.
        n: pixels per side.
        half: half the field of view, kpc.

    Returns:
        ``(idx, v)``: (N,) index in ``[0, n * n]`` (``n * n`` = outside) with
        pixel ``iy * n + ix``, and (N,) velocity (km/s, positive = receding).
    """
    e1, e2, los = camera_basis(direction)
    size = n * n
    scale = n / (2 * half)
    fx = np.floor((particles.pos @ e1 + half) * scale)
    fy = np.floor((particles.pos @ e2 + half) * scale)
    # Test on floats before the int cast, so far outliers cannot overflow.
    inside = (fx >= 0) & (fx < n) & (fy >= 0) & (fy < n)
    # Particles outside the field of view go to an extra dump bin (index
    # ``size``) that is dropped at the end: no boolean-indexed copies of every
    # per-particle array, and the in-view sums keep their order (same result).
    idx = np.where(inside, fy.astype(np.intp) * n + fx.astype(np.intp), size)
    # Positive line-of-sight velocity = receding from the camera.
    v = -(particles.vel @ los)
    return idx, v


def moment_maps(
    particles: Particles, direction: np.ndarray, n: int, half: float
) -> np.ndarray:
    """(5, n, n) mass-weighted moment sums per pixel, in the order of :data:`MOMENTS`.

    Sigma, Sigma v, Sigma v^2, Sigma age and Sigma Z: sums, not means, so a
    linear operation (a PSF) can act on them before the ratios are formed.
    Particles carry no internal dispersion, so Sigma (v^2 + sigma^2) is Sigma v^2.
    """
    idx, v = pixel_index(particles, direction, n, half)
    size = n * n
    m = particles.mass
    weights = (m, m * v, m * v * v, m * particles.age, m * particles.metallicity)
    out = np.empty((len(weights), n, n))
    for k, w in enumerate(weights):
        out[k] = np.bincount(idx, weights=w, minlength=size + 1)[:size].reshape(n, n)
    return out
