"""Moment maps share the renderer's binning (sbi_exsitu.data.projection)."""

import numpy as np

from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.projection import moment_maps
from sbi_exsitu.data.render import RenderConfig, pixel_statistics


def test_moment_ratios_are_the_renderers_mass_weighted_maps():
    rng = np.random.default_rng(3)
    n = 5000
    p = Particles(
        pos=rng.normal(size=(n, 3)),
        vel=rng.normal(0, 60, (n, 3)),
        mass=rng.uniform(1, 3, n),
        age=rng.uniform(1, 12, n),
        metallicity=rng.uniform(0.001, 0.03, n),
    )
    cfg = RenderConfig(resolution=16)
    d = np.array([0.3, -0.2, 1.0])
    stats = pixel_statistics(p, d, cfg)
    m = moment_maps(p, d, 16, 0.5 * cfg.fov_re * p.half_mass_radius)
    np.testing.assert_array_equal(m[0], stats.mass)
    has = stats.mass > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        v = m[1] / m[0]
        sigma = np.sqrt(np.maximum(m[2] / m[0] - v**2, 0))
        age, z = m[3] / m[0], m[4] / m[0]
    np.testing.assert_allclose(v[has], stats.velocity[has], rtol=1e-9, atol=1e-9)
    # E[v^2] - E[v]^2 cancels to ~1e-6 km/s in one-particle pixels (the
    # renderer's two-pass form gives exactly 0): harmless at km/s precision.
    np.testing.assert_allclose(sigma[has], stats.dispersion[has], atol=1e-4)
    np.testing.assert_allclose(age[has], stats.age[has], rtol=1e-12)
    np.testing.assert_allclose(z[has], stats.metallicity[has], rtol=1e-12)
