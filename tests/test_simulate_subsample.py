"""The ``[simulate] particle_subsample`` augmentation and the shared subsample()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sbi_exsitu.data.galaxy_views as gv
import sbi_exsitu.data.simulate as sim
from sbi_exsitu.data.dataset import DatasetError, MapDataset
from sbi_exsitu.data.particles import Particles, ParticlesError, subsample
from sbi_exsitu.data.render import render_views
from sbi_exsitu.data.simulate import SimulationConfig, simulate
from sbi_exsitu.schema import ConfigError
from tests._h5 import assert_same_h5, h5_contents

N_PARTICLES = 3000
SMALL = {
    "simulate": {"model": "tng-like", "n_galaxies": 3, "seed": 3, "views": 6},
    "model": {"max_particles": N_PARTICLES, "min_particles": N_PARTICLES},
    "render": {"resolution": 16},
}


def _config(extra: dict | None = None, **simulate_overrides) -> SimulationConfig:
    doc = {k: dict(v) for k, v in SMALL.items()} | dict(extra or {})
    doc["simulate"].update(simulate_overrides)
    return SimulationConfig.from_dict(doc, where="test.toml")


def _galaxy(n: int = 2000, seed: int = 0) -> Particles:
    rng = np.random.default_rng(seed)
    return Particles(
        pos=rng.normal(size=(n, 3)),
        vel=rng.normal(0, 50, (n, 3)),
        mass=rng.uniform(0.5, 2.0, n) * 1e6,
        age=rng.uniform(1, 12, n),
        metallicity=np.full(n, 0.02),
        ex_situ=rng.random(n) < 0.3,
    )


def test_subsample_keeps_mstar_and_a_seeded_subset() -> None:
    p = _galaxy()
    q = subsample(p, 500, seed=7)
    assert len(q) == 500
    assert q.total_mass == pytest.approx(p.total_mass, rel=1e-12)
    # The kept particles are a subset of the originals, in their order.
    rows = {tuple(r) for r in p.pos}
    assert all(tuple(r) in rows for r in q.pos)
    ratio = q.mass / p.mass[np.isin(p.pos[:, 0], q.pos[:, 0])]
    np.testing.assert_allclose(ratio, ratio[0])  # one common mass factor
    np.testing.assert_array_equal(subsample(p, 500, seed=7).pos, q.pos)
    assert not np.array_equal(subsample(p, 500, seed=8).pos, q.pos)
    assert q.half_mass_radius != p.half_mass_radius  # re-measured


@pytest.mark.parametrize("n_keep", [0, -1, 2001, True])
def test_subsample_refuses_impossible_counts(n_keep) -> None:
    with pytest.raises(ParticlesError, match=r"cannot keep .* of 2000 particles"):
        subsample(_galaxy(), n_keep, seed=0)


def test_off_is_the_default_and_leaves_the_attributes_alone(tmp_path: Path) -> None:
    assert _config().particle_subsample is None
    assert _config(particle_subsample=False).particle_subsample is None
    assert "particle_subsample" not in _config().to_dict()["simulate"]
    a = simulate(_config(), tmp_path / "a.h5", progress=False)
    b = simulate(_config(particle_subsample=False), tmp_path / "b.h5", progress=False)
    assert_same_h5(a, b)


def test_off_renders_every_view_from_the_full_galaxy(tmp_path: Path) -> None:
    cfg = _config(n_galaxies=1)
    with MapDataset(simulate(cfg, tmp_path / "a.h5", progress=False)) as ds:
        maps = ds.maps(slice(None))
    p, _ = sim.draw_galaxy(cfg, 0)
    np.testing.assert_array_equal(maps, render_views(p, cfg.render, 6).maps)


@pytest.fixture(scope="module")
def augmented(tmp_path_factory) -> tuple[Path, list[Particles]]:
    """An augmented dataset and the particle subsets each of its views used."""
    seen: list[Particles] = []
    real = gv.subsample

    def spy(p, n_keep, seed):
        seen.append(real(p, n_keep, seed))
        return seen[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(gv, "subsample", spy)
    try:
        out = simulate(
            _config(particle_subsample=[0.25, 1.0]),
            tmp_path_factory.mktemp("aug") / "d.h5",
            progress=False,
        )
    finally:
        mp.undo()
    return out, seen


def test_views_get_different_counts_and_stored_option(augmented) -> None:
    out, seen = augmented
    counts = np.array([len(p) for p in seen])
    assert len(counts) == 3 * 6
    assert np.all((counts >= 0.25 * N_PARTICLES) & (counts <= N_PARTICLES))
    assert len(np.unique(counts)) > 10  # a fresh draw per view
    assert counts.min() < 0.5 * N_PARTICLES < counts.max()
    with MapDataset(out) as ds:
        stored = ds.attrs["simulation"]["simulate"]["particle_subsample"]
        # The augmentation only removes particles: the cap is the model's.
        assert ds.particle_cap == N_PARTICLES >= counts.max()
    assert stored == [0.25, 1.0]


def test_labels_are_the_full_galaxy_and_maps_are_the_subsets(
    augmented, tmp_path: Path
) -> None:
    out, seen = augmented
    full = simulate(_config(), tmp_path / "full.h5", progress=False)
    a, b = h5_contents(out), h5_contents(full)
    for key in ("galaxy_id", "view_id", "f_ex", "log_mstar", "half_mass_radius"):
        np.testing.assert_array_equal(a[f"labels/{key}"], b[f"labels/{key}"])
    assert not np.array_equal(a["maps"], b["maps"])
    maps, exsitu = a["maps"], a["exsitu"]
    cfg = _config()
    for g in range(3):
        p, _ = sim.draw_galaxy(cfg, g)
        for k in range(6):
            sub = seen[6 * g + k]
            assert sub.total_mass == pytest.approx(p.total_mass, rel=1e-12)
            one = render_views(sub, cfg.render, gv.polyhedron_vertices(6)[k : k + 1])
            np.testing.assert_array_equal(maps[6 * g + k], one.maps[0])
            # The ex-situ target is the view's own subset, like its maps.
            np.testing.assert_array_equal(exsitu[6 * g + k], one.exsitu[0])


def test_augmented_is_reproducible_across_workers(augmented, tmp_path: Path) -> None:
    out, _ = augmented
    again = simulate(
        _config(particle_subsample=[0.25, 1.0]),
        tmp_path / "d.h5",
        workers=2,
        progress=False,
    )
    assert_same_h5(out, again)
    other = simulate(
        _config(particle_subsample=[0.25, 1.0], seed=4),
        tmp_path / "e.h5",
        progress=False,
    )
    assert not np.array_equal(h5_contents(out)["maps"], h5_contents(other)["maps"])


def test_resume_refuses_another_subsample_range(tmp_path: Path) -> None:
    out = simulate(_config(n_galaxies=1), tmp_path / "d.h5", progress=False)
    with pytest.raises(DatasetError, match="differs"):
        simulate(
            _config(n_galaxies=2, particle_subsample=[0.5, 1.0]),
            out,
            resume=True,
            progress=False,
        )


def test_observed_views_keep_their_noise_streams(tmp_path: Path) -> None:
    # Keeping every particle ([1, 1]) renders view by view; the observation
    # noise of view k must still come from stream k.
    obs = {"observe": {"redshift": [0.02, 0.08]}}
    a = simulate(_config(obs, n_galaxies=2), tmp_path / "a.h5", progress=False)
    b = simulate(
        _config(obs, n_galaxies=2, particle_subsample=[1.0, 1.0]),
        tmp_path / "b.h5",
        progress=False,
    )
    ca, cb = h5_contents(a), h5_contents(b)
    for key in ("maps", "mask", "exsitu"):
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)


@pytest.mark.parametrize(
    "value", [[0.0, 1.0], [0.5, 0.2], [0.1, 1.5], [0.5], "all", [0.2, 0.5, 1.0]]
)
def test_bad_ranges_name_the_key(value) -> None:
    with pytest.raises(ConfigError, match=r"\[simulate\].*particle_subsample"):
        _config(particle_subsample=value)
    with pytest.raises(sim.SimulationError, match="particle_subsample"):
        SimulationConfig(particle_subsample=value)
