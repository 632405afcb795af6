"""RenderConfig.min_density_re: a pixel mask that does not move with the count."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.data.particles import Particles, subsample
from sbi_exsitu.data.render import RenderConfig, RenderError, render_views


def _plummer(n: int = 40_000, seed: int = 0) -> Particles:
    rng = np.random.default_rng(seed)
    r = 1.0 / np.sqrt(rng.uniform(0.0, 0.99, n) ** (-2.0 / 3.0) - 1.0)
    u = rng.normal(size=(n, 3))
    return Particles(
        pos=r[:, None] * u / np.linalg.norm(u, axis=1, keepdims=True),
        vel=rng.normal(0, 50, (n, 3)),
        mass=np.full(n, 1e5),
        age=rng.uniform(1, 12, n),
        metallicity=np.full(n, 0.02),
        ex_situ=rng.random(n) < 0.3,
    )


def _area(p: Particles, config: RenderConfig) -> float:
    return float(render_views(p, config, 4).mask.sum())


def test_off_by_default_and_absent_from_the_stored_json() -> None:
    cfg = RenderConfig(resolution=32)
    assert cfg.min_density_re is None
    assert "min_density_re" not in cfg.to_dict()
    on = RenderConfig.from_dict({"resolution": 32, "min_density_re": 0.25})
    assert RenderConfig.from_json(on.to_json()) == on
    assert on.diff(cfg) == ["min_density_re: 0.25 != None"]
    assert RenderConfig(min_density_re=False).min_density_re is None


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_values_name_the_field(bad) -> None:
    with pytest.raises(RenderError, match="min_density_re"):
        RenderConfig(min_density_re=bad)


def test_mask_keeps_its_area_when_particles_are_fewer() -> None:
    p = _plummer()
    # Two thresholds giving about the same mask at the full count.
    count = RenderConfig(resolution=32, min_count=12)
    density = RenderConfig(resolution=32, min_density_re=0.2)
    half = subsample(p, len(p) // 2, seed=1)
    quarter = subsample(p, len(p) // 4, seed=1)
    full_c, full_d = _area(p, count), _area(p, density)
    assert full_d == pytest.approx(full_c, rel=0.25)
    # A count cut loses the outskirts; the density cut keeps nearly all of them.
    assert _area(quarter, count) / full_c < 0.75
    assert _area(half, density) / full_d > 0.9
    assert _area(quarter, density) / full_d > 0.9


def test_too_small_a_mask_names_the_density_cut() -> None:
    with pytest.raises(RenderError, match="min_density_re"):
        render_views(_plummer(2000), RenderConfig(resolution=32, min_density_re=50), 4)
