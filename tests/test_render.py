"""Tests for :mod:`sbi_exsitu.data.render`: properties the maps must have."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from sbi_exsitu.data.cameras import camera_basis, polyhedron_vertices
from sbi_exsitu.data.exsitu_target import smoothed_exsitu_fraction
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.render import (
    CHANNELS,
    RenderConfig,
    RenderError,
    pixel_mask,
    pixel_statistics,
    preprocess,
    render_views,
)

FIELDS = (
    "mass",
    "count",
    "velocity",
    "dispersion",
    "age",
    "metallicity",
    "exsitu_fraction",
)
PROPERTY = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def galaxy(n: int = 5000, seed: int = 0, rotation: float = 0.0, **kw) -> Particles:
    """A Plummer-like sphere with isotropic velocities plus optional rotation."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(0, 2.0, (n, 3))
    vel = rng.normal(0, 80.0, (n, 3))
    vel[:, 0] -= rotation * np.tanh(pos[:, 1])
    vel[:, 1] += rotation * np.tanh(pos[:, 0])
    out = {
        "pos": pos,
        "vel": vel,
        "mass": rng.uniform(0.5e6, 1.5e6, n),
        "age": rng.uniform(1, 13, n),
        "metallicity": rng.uniform(0.001, 0.04, n),
        "ex_situ": rng.random(n) < 0.4,
    }
    return Particles(**{**out, **kw})


def random_direction(seed: int) -> np.ndarray:
    # Its own stream: the galaxy's first particle must not sit on the axis.
    d = np.random.default_rng([seed, 1]).normal(size=3)
    return d / np.linalg.norm(d)


def assert_stats_close(a, b, transform=lambda m: m, rtol=1e-9, atol=1e-9):
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(a, name),
            transform(getattr(b, name)),
            rtol=rtol,
            atol=atol,
            equal_nan=True,
            err_msg=name,
        )


@PROPERTY
@given(seed=seeds, n=st.integers(200, 5000), fov=st.floats(0.5, 8.0))
def test_mass_map_sums_the_particles_in_view(seed, n, fov):
    p = galaxy(n, seed)
    d = random_direction(seed)
    config = RenderConfig(resolution=16, fov_re=fov)
    stats = pixel_statistics(p, d, config)
    e1, e2, _ = camera_basis(d)
    half = 0.5 * fov * p.half_mass_radius
    x, y = p.pos @ e1, p.pos @ e2
    inside = (x >= -half) & (x < half) & (y >= -half) & (y < half)
    assert stats.mass.sum() == pytest.approx(p.mass[inside].sum(), rel=1e-12)
    assert stats.count.sum() == inside.sum()
    ex = p.mass[inside & p.ex_situ].sum()
    assert np.nansum(stats.exsitu_fraction * stats.mass) == pytest.approx(ex, rel=1e-9)


@PROPERTY
@given(
    seed=seeds, preset=st.sampled_from(["default", "paper"]), vertex=st.integers(0, 19)
)
def test_rotation_about_the_line_of_sight_rotates_every_map(seed, preset, vertex):
    p = galaxy(4000, seed, rotation=100.0)
    d = polyhedron_vertices(20)[vertex]
    e1, e2, los = camera_basis(d)
    # +90 degrees about the line of sight: e1 -> e2, e2 -> -e1, so an image
    # point (x, y) moves to (-y, x); with rows = y this is np.rot90(k=-1).
    rot = np.outer(e2, e1) - np.outer(e1, e2) + np.outer(los, los)
    config = RenderConfig.preset(preset, resolution=24)
    a = pixel_statistics(p.rotated(rot), d, config)
    b = pixel_statistics(p, d, config)
    assert_stats_close(a, b, lambda m: np.rot90(m, k=-1))
    maps_a, mask_a = preprocess(a, config)
    maps_b, mask_b = preprocess(b, config)
    np.testing.assert_array_equal(mask_a, np.rot90(mask_b, k=-1))
    np.testing.assert_allclose(maps_a, np.rot90(maps_b, k=-1, axes=(1, 2)), atol=1e-4)


@PROPERTY
@given(seed=seeds, weighting=st.sampled_from(["mass", "none"]))
def test_velocity_flip(seed, weighting):
    p = galaxy(3000, seed, rotation=150.0)
    flipped = galaxy(3000, seed, rotation=150.0, vel=-p.vel)
    d = random_direction(seed)
    config = RenderConfig(resolution=16, weighting=weighting)
    a, b = pixel_statistics(flipped, d, config), pixel_statistics(p, d, config)
    assert np.nanmax(np.abs(b.velocity)) > 10  # the test has something to flip
    np.testing.assert_allclose(a.velocity, -b.velocity, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(a.dispersion, b.dispersion, rtol=1e-9, equal_nan=True)
    ma, _ = preprocess(a, config)
    mb, _ = preprocess(b, config)
    v, s = CHANNELS.index("velocity"), CHANNELS.index("dispersion")
    np.testing.assert_allclose(ma[v], -mb[v], atol=1e-5)
    np.testing.assert_allclose(ma[s], mb[s], atol=1e-5)


@pytest.mark.parametrize("n_views", [6, 8, 12, 20])
def test_opposite_cameras_see_mirror_images(n_views):
    p = galaxy(4000, n_views, rotation=120.0)
    config = RenderConfig(resolution=20)
    dirs = polyhedron_vertices(n_views)
    for d in dirs:
        a, b = pixel_statistics(p, -d, config), pixel_statistics(p, d, config)
        # Rows are the image y axis, which flips between antipodes.
        for name in ("mass", "count", "dispersion", "age", "metallicity"):
            np.testing.assert_allclose(
                getattr(a, name),
                np.flipud(getattr(b, name)),
                rtol=1e-12,
                equal_nan=True,
                err_msg=name,
            )
        np.testing.assert_allclose(
            a.velocity, -np.flipud(b.velocity), atol=1e-9, equal_nan=True
        )
    views = render_views(p, config, n_views)
    for k, d in enumerate(dirs):
        k_opp = int(np.argmin(dirs @ d))
        np.testing.assert_array_equal(views.mask[k_opp], np.flipud(views.mask[k]))


def test_views_of_an_isotropic_sphere_agree():
    p = galaxy(40_000, seed=7)
    config = RenderConfig(resolution=32)
    n = config.resolution
    centre = np.arange(n) + 0.5 - n / 2
    radius = np.hypot(centre[:, None], centre[None, :])
    rings = np.digitize(radius, [4, 8, 12, 16])
    profiles, counts, v_means, sigma = [], [], [], []
    for d in polyhedron_vertices(20):
        s = pixel_statistics(p, d, config)
        profiles.append(np.bincount(rings.ravel(), s.mass.ravel())[:4])
        counts.append(np.bincount(rings.ravel(), s.count.ravel())[:4])
        v_means.append(np.nansum(s.velocity * s.count) / s.count.sum())
        sigma.append(np.nanmedian(s.dispersion))
    profiles, counts = np.array(profiles), np.array(counts)
    # Poisson noise on each ring's mass (particle masses vary by +-50%).
    noise = profiles.mean(0) * 1.1 / np.sqrt(counts.mean(0))
    assert np.all(np.abs(profiles - profiles.mean(0)) < 5 * noise)
    assert np.all(np.abs(v_means) < 5 * 80 / np.sqrt(len(p)) * 3)
    np.testing.assert_allclose(sigma, 80, rtol=0.15)


@PROPERTY
@given(seed=seeds, n=st.integers(300, 20_000), res=st.sampled_from([16, 32, 64]))
def test_paper_preset_keeps_at_most_a_quarter_most_populated(seed, n, res):
    p = galaxy(n, seed)
    config = RenderConfig.preset("paper", resolution=res)
    stats = pixel_statistics(p, random_direction(seed), config)
    keep = pixel_mask(stats, config)
    assert keep.mean() <= 0.25
    assert keep.any()
    # The kept pixels are the most populated ones (ties are kept or dropped whole).
    assert stats.count[keep].min() > stats.count[~keep].max()


@PROPERTY
@given(seed=seeds, n=st.integers(100, 5000))
def test_unweighted_statistics_equal_scipy(seed, n):
    p = galaxy(n, seed, rotation=60.0)
    d = random_direction(seed)
    config = RenderConfig(resolution=16, weighting="none")
    stats = pixel_statistics(p, d, config)
    e1, e2, los = camera_basis(d)
    half = 0.5 * config.fov_re * p.half_mass_radius
    edges = np.linspace(-half, half, config.resolution + 1)
    x, y, v = p.pos @ e1, p.pos @ e2, -(p.vel @ los)
    for name, values, statistic in (
        ("mass", p.mass, "sum"),
        ("count", p.mass, "count"),
        ("velocity", v, "mean"),
        ("dispersion", v, "std"),
        ("age", p.age, "mean"),
        ("metallicity", p.metallicity, "mean"),
    ):
        ref = sps.binned_statistic_2d(x, y, values, statistic, bins=[edges, edges])
        np.testing.assert_allclose(
            getattr(stats, name),
            ref.statistic.T,
            rtol=1e-9,
            atol=1e-9,
            equal_nan=True,
            err_msg=name,
        )


@pytest.mark.parametrize("weighting", ["mass", "none"])
def test_dispersion_is_stable_under_a_large_systemic_offset(weighting):
    rng = np.random.default_rng(0)
    n = 20_000
    pos = rng.normal(size=(n, 3))
    vel = np.zeros((n, 3))
    vel[:, 2] = 1e6 + rng.normal(0, 0.1, n)  # the naive E[v^2]-E[v]^2 fails here
    p = Particles(
        pos=pos,
        vel=vel,
        mass=rng.uniform(1, 2, n),
        age=np.ones(n),
        metallicity=np.ones(n),
    )
    d = np.array([0.0, 0.0, 1.0])
    config = RenderConfig(resolution=8, weighting=weighting)
    stats = pixel_statistics(p, d, config)
    centred = Particles(
        pos=pos,
        vel=vel - [0, 0, 1e6],
        mass=p.mass,
        age=p.age,
        metallicity=p.metallicity,
    )
    ref = pixel_statistics(centred, d, config)
    ok = stats.count > 1
    np.testing.assert_allclose(stats.dispersion[ok], ref.dispersion[ok], rtol=1e-5)
    np.testing.assert_allclose(stats.velocity[ok], ref.velocity[ok] - 1e6, rtol=1e-12)


def test_mass_weighting_differs_from_plain_means():
    p = galaxy(3000, 1)
    d = random_direction(1)
    a = pixel_statistics(p, d, RenderConfig(resolution=8, weighting="mass"))
    b = pixel_statistics(p, d, RenderConfig(resolution=8, weighting="none"))
    (iy, ix) = np.unravel_index(np.argmax(a.count), a.count.shape)
    assert a.age[iy, ix] != pytest.approx(b.age[iy, ix], rel=1e-6)


@pytest.mark.parametrize("aperture", [1.0, 2.0, 4.0])
def test_aperture_masks(aperture):
    p = galaxy(40_000, 2)
    config = RenderConfig(resolution=32, aperture_re=aperture, min_count=1)
    stats = pixel_statistics(p, [0, 0, 1], config)
    keep = pixel_mask(stats, config)
    n = config.resolution
    centre = np.arange(n) + 0.5 - n / 2
    # Pixel-centre radius in half-mass radii; the aperture is a diameter.
    r_re = np.hypot(centre[:, None], centre[None, :]) * config.fov_re / n
    assert np.all(r_re[keep] <= aperture / 2)
    populated = stats.count >= 1
    assert np.all(keep[(r_re <= aperture / 2) & populated])
    area = np.pi * (aperture / 2) ** 2 / config.fov_re**2 * n * n
    assert keep.sum() == pytest.approx(area, rel=0.1)
    maps, mask = preprocess(stats, config)
    assert np.all(maps[:, ~mask] == 0)


def test_apertures_are_nested():
    p = galaxy(20_000, 3)
    masks = [
        pixel_mask(pixel_statistics(p, [1, 0, 0], c), c)
        for c in (RenderConfig(resolution=32, aperture_re=a) for a in (1, 2, 4))
    ]
    assert masks[0].sum() < masks[1].sum() < masks[2].sum()
    assert np.all(masks[1][masks[0]]) and np.all(masks[2][masks[1]])


def test_preprocessed_maps_are_standardised_and_masked():
    p = galaxy(20_000, 4, rotation=100.0)
    for preset in ("default", "paper"):
        config = RenderConfig.preset(preset, resolution=32)
        views = render_views(p, config, 4)
        assert views.maps.shape == (4, 5, 32, 32)
        assert views.maps.dtype == np.float32
        for maps, mask in zip(views.maps, views.mask, strict=True):
            assert np.all(maps[:, ~mask] == 0)
            np.testing.assert_allclose(maps[:, mask].mean(1), 0, atol=1e-5)
            np.testing.assert_allclose(maps[:, mask].std(1), 1, atol=1e-4)
        assert np.all((views.exsitu >= 0) & (views.exsitu <= 1))
        assert np.all(views.exsitu[~views.mask] == 0)


def test_smoothing_is_normalised_inside_the_mask():
    # A constant age map stays constant up to the edge of the mask.
    p = galaxy(20_000, 5, age=np.full(20_000, 7.0))
    config = RenderConfig(
        resolution=32, channels=("age",), standardize=False, smooth_sigma=2.0
    )
    maps, mask = preprocess(pixel_statistics(p, [0, 1, 0], config), config)
    np.testing.assert_allclose(maps[0][mask], 7.0, rtol=1e-6)


def test_logs_and_clips():
    n = 20_000
    rng = np.random.default_rng(0)
    vel = rng.normal(0, 10, (n, 3))
    vel[:, 2] += 1000  # towards a camera on +z: approaching, v < 0
    p = galaxy(n, 6, vel=vel, metallicity=np.full(n, 0.0127 * 100))
    config = RenderConfig(
        resolution=16,
        standardize=False,
        smooth_sigma=0,
        channels=("mass", "velocity", "metallicity"),
    )
    stats = pixel_statistics(p, [0, 0, 1], config)
    maps, mask = preprocess(stats, config)
    np.testing.assert_allclose(maps[0][mask], np.log10(stats.mass[mask]), rtol=1e-6)
    np.testing.assert_allclose(maps[1][mask], -250.0)  # receding = +, clipped
    np.testing.assert_allclose(maps[2][mask], 1.0)  # log Z/Zsun = 2, clipped to 1
    raw = dataclasses.replace(config, clip_velocity=None, clip_log_metallicity=None)
    maps, mask = preprocess(stats, raw)
    assert np.all(maps[1][mask] < -900)
    np.testing.assert_allclose(maps[2][mask], 2.0, rtol=1e-6)


def test_channel_subsets_keep_order():
    p = galaxy(5000, 8)
    full = render_views(p, RenderConfig(resolution=16), [[0, 0, 1]])
    sub = render_views(
        p, RenderConfig(resolution=16, channels=("age", "velocity")), [[0, 0, 1]]
    )
    np.testing.assert_array_equal(sub.maps[0, 0], full.maps[0, 3])
    np.testing.assert_array_equal(sub.maps[0, 1], full.maps[0, 1])


def test_unflagged_particles_give_nan_exsitu_maps():
    p = galaxy(5000, 9, ex_situ=None)
    views = render_views(p, RenderConfig(resolution=16), 4)
    assert np.isnan(views.exsitu).all()
    assert np.isfinite(views.maps).all()


def test_smoothed_exsitu_target_is_a_mass_fraction_above_the_shot_noise():
    p = galaxy(3000, 4)
    d = random_direction(4)
    raw_cfg = RenderConfig(resolution=32, min_count=1)
    raw = render_views(p, raw_cfg, d[None])
    smooth = render_views(
        p, dataclasses.replace(raw_cfg, exsitu_smooth_sigma=1.0), d[None]
    )
    m = raw.mask[0]
    atoms = lambda y: np.mean((y[m] == 0) | (y[m] == 1))  # noqa: E731
    assert atoms(raw.exsitu[0]) > 0.2 > 0.02 > atoms(smooth.exsitu[0])
    assert ((smooth.exsitu >= 0) & (smooth.exsitu <= 1)).all()
    # The observation maps do not depend on the target's kernel.
    np.testing.assert_array_equal(raw.maps, smooth.maps)
    # smooth(ex mass) / smooth(mass): the smoothed ex-situ mass is conserved
    # (zero padding, kernel far inside the field of view).
    st_ = pixel_statistics(p, d, RenderConfig(resolution=32, fov_re=12.0))
    frac = smoothed_exsitu_fraction(st_.mass, st_.exsitu_fraction, 1.0)
    from scipy import ndimage

    total = ndimage.gaussian_filter(st_.mass, 1.0, mode="constant")
    ex_mass = np.nansum(st_.exsitu_fraction * st_.mass)
    assert np.nansum(frac * total) == pytest.approx(ex_mass, rel=1e-6)
    assert np.array_equal(
        smoothed_exsitu_fraction(st_.mass, st_.exsitu_fraction, 0.0),
        st_.exsitu_fraction,
        equal_nan=True,
    )


def test_configs_without_the_target_kernel_keep_the_raw_target():
    # Datasets written before exsitu_smooth_sigma stored the raw ratio.
    # The key is written only when set, so their JSON is unchanged too.
    old = RenderConfig(resolution=16).to_dict()
    assert "exsitu_smooth_sigma" not in old
    assert RenderConfig.from_dict(old).exsitu_smooth_sigma == 0.0
    smooth = RenderConfig(resolution=16, exsitu_smooth_sigma=1.0)
    assert RenderConfig.from_dict(smooth.to_dict()) == smooth
    assert smooth.diff(RenderConfig(resolution=16)) == [
        "exsitu_smooth_sigma: 1.0 != 0.0"
    ]
    with pytest.raises(RenderError, match="exsitu_smooth_sigma"):
        RenderConfig(exsitu_smooth_sigma=-1.0)


def test_errors():
    with pytest.raises(RenderError, match="aperture cannot be larger"):
        RenderConfig(fov_re=4.0, aperture_re=5.0)
    with pytest.raises(RenderError, match="'channels'.*'velocity'"):
        RenderConfig(channels=("mass", "velocty"))
    with pytest.raises(RenderError, match="'weighting'"):
        RenderConfig(weighting="light")
    with pytest.raises(RenderError, match="Did you mean 'resolution'"):
        RenderConfig.from_dict({"resoluton": 64})
    with pytest.raises(RenderError, match="unknown render preset"):
        RenderConfig.preset("papper")
    with pytest.raises(RenderError, match="at resolution 128.*too few particles"):
        render_views(galaxy(30, 0), RenderConfig(resolution=128), 4)


@PROPERTY
@given(
    resolution=st.integers(8, 256),
    channels=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=5, unique=True),
    aperture=st.one_of(st.none(), st.floats(0.1, 4.0)),
    clip=st.one_of(st.none(), st.tuples(st.floats(-3, -0.1), st.floats(0, 3))),
    preset=st.sampled_from(["default", "paper"]),
)
def test_config_json_round_trip(resolution, channels, aperture, clip, preset):
    config = RenderConfig.preset(
        preset,
        resolution=resolution,
        channels=channels,
        aperture_re=aperture,
        clip_log_metallicity=clip,
    )
    again = RenderConfig.from_json(config.to_json())
    assert again == config
    assert again.to_json() == config.to_json()
    assert config.diff(again) == []


def test_diff_names_each_field():
    a = RenderConfig()
    b = RenderConfig.preset("paper", resolution=64)
    diff = a.diff(b)
    assert "resolution: 128 != 64" in diff
    assert {d.split(":")[0] for d in diff} == {
        "resolution",
        "weighting",
        "min_count",
        "keep_top_fraction",
    }
    assert RenderConfig.from_dict({"preset": "paper"}) == RenderConfig.preset("paper")
    assert RenderConfig(clip_velocity=False).clip_velocity is None
