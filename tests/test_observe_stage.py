"""The mock observation stage: PSF, ratios, noise, seeds, end to end."""

import numpy as np
import pytest

from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.data.observe.stage import (
    _add_noise,
    _psf,
    observe_view,
    observe_views,
    render_observed_views,
)
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.render import RenderConfig, RenderError

RENDER = RenderConfig(resolution=16)
IDEAL = ObserveConfig(coverage_re=None, snr_at_re=None, target_snr=None)
FACE_ON = np.array([0.0, 0.0, 1.0])  # x, y of the particles are the image axes


def _galaxy(n=20_000, seed=0, sigma_v=80.0):
    rng = np.random.default_rng(seed)
    return Particles(
        pos=rng.normal(0, 2, (n, 3)),
        vel=rng.normal(0, sigma_v, (n, 3)),
        mass=np.full(n, 1e5),
        age=rng.uniform(1, 12, n),
        metallicity=np.full(n, 0.02),
        ex_situ=rng.random(n) < 0.3,
    )


def _blobs(points, masses, vels):
    """Particles in tight clumps at ``points`` (kpc, in the image plane)."""
    pos = np.array([[x, y, 0.0] for x, y in points])
    vel = np.array([[0.0, 0.0, -v] for v in vels])  # v_los = -v_z (receding)
    return Particles(
        pos=pos,
        vel=vel,
        mass=np.asarray(masses, float),
        age=np.ones(len(pos)),
        metallicity=np.full(len(pos), 0.02),
        half_mass_radius=1.0,
    )


def test_psf_conserves_mass_and_gives_the_configured_fwhm():
    m = np.zeros((5, 61, 61))
    m[:, 30, 30] = 1.0
    cfg = ObserveConfig(psf_fwhm_arcsec=2.5, spaxel_arcsec=0.5)
    out = _psf(m, cfg)
    assert out[0].sum() == pytest.approx(1.0, abs=1e-6)
    x = np.arange(61) - 30
    var = (out[0].sum(axis=0) * x**2).sum()
    fwhm_spaxels = 2 * np.sqrt(2 * np.log(2) * var)
    assert fwhm_spaxels == pytest.approx(2.5 / 0.5, rel=0.01)


def test_observed_total_mass_is_the_particles_mass_inside_the_grid():
    g = _galaxy()
    sm = observe_views(g, 4, RENDER, IDEAL, seed=0)[0]
    # The grid spans fov_re r_e; the PSF moves some light across its edge,
    # both ways: the total agrees to the particles' own edge effects.
    inside = g.mass[np.abs(g.pos[:, :2]).max(axis=1) < 2 * g.half_mass_radius]
    assert np.nansum(sm.values["mass"]) == pytest.approx(inside.sum(), rel=0.1)


def test_ratios_are_formed_after_the_convolution():
    # A heavy clump receding at +100 km/s and a light one approaching at -100,
    # 2 kpc apart. Midway both PSF wings are equal, so the telescope sees the
    # mass-weighted (9 x 100 - 1 x 100) / 10 = +80 km/s; blurring the ratio
    # (velocity) map instead would give about 0 there.
    scale = 0.6213  # kpc/arcsec at z = 0.03
    d = 2.0 * scale  # 2 arcsec = 4 spaxels
    p = _blobs([(-d, 0.0), (d, 0.0)], [9.0, 1.0], [100.0, -100.0])
    cfg = ObserveConfig(coverage_re=None, snr_at_re=None, target_snr=None)
    sm = observe_view(
        p,
        FACE_ON,
        RenderConfig(resolution=16, fov_re=8.0),
        cfg,
        redshift=0.03,
        rng=np.random.default_rng(0),
    )
    n = sm.shape[0]
    v_mid = sm.values["velocity"][n // 2, n // 2 - 1 : n // 2 + 1].mean()
    assert v_mid == pytest.approx(80.0, abs=8.0)


def test_instrumental_dispersion_is_removed_as_the_dap_does():
    b = {k: np.array([10.0, 10.0, 100.0]) for k in ("mass", "age", "metallicity")}
    b["velocity"] = np.zeros(3)
    b["dispersion"] = np.array([30.0, 30.0, 120.0])
    ok = {k: np.ones(3, bool) for k in b}
    cfg = ObserveConfig()
    snb = np.array([20.0, 20.0, 20.0])
    zero = np.zeros((5, 3))
    out, good, _ = _add_noise(b, ok, snb, zero, cfg)
    np.testing.assert_allclose(out["dispersion"], b["dispersion"])  # no noise
    # The noise acts on sigma_obs = sqrt(30^2 + 70^2) = 76.2; a -1.5 sigma
    # draw (error 76.2 / 20 = 3.8) leaves 70.5 > 70, -2.5 leaves 66.7 < 70:
    # sigma*^2 < 0, masked, while the same draw on 120 km/s stays valid.
    z = zero.copy()
    z[2] = [-1.5, -2.5, -2.5]
    out, good, err = _add_noise(b, ok, snb, z, cfg)
    assert good["dispersion"].tolist() == [True, False, True]
    assert err["dispersion"][0] == pytest.approx(np.hypot(30, 70) / 20)
    assert good["velocity"].all()


def test_same_seed_same_maps_different_seed_different():
    g = _galaxy()
    cfg = ObserveConfig(redshift=(0.02, 0.1))
    a = render_observed_views(g, RENDER, cfg, 4, seed=1, galaxy=3)
    b = render_observed_views(g, RENDER, cfg, 4, seed=1, galaxy=3)
    c = render_observed_views(g, RENDER, cfg, 4, seed=2, galaxy=3)
    np.testing.assert_array_equal(a.maps, b.maps)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.maps, c.maps)
    # Views of one galaxy share its redshift but not their noise.
    sm = observe_views(g, 4, RENDER, cfg, seed=1, galaxy=3)
    assert len({s.redshift for s in sm}) == 1
    assert not np.allclose(sm[0].values["mass"], sm[1].values["mass"])


def test_noise_binning_and_footprint_on_a_galaxy():
    g = _galaxy()
    sm = observe_views(g, 4, RENDER, ObserveConfig(), seed=0)[0]
    assert sm.bin_id is not None
    usable = sm.usable(("mass", "velocity"))
    ids = sm.bin_id[usable]
    assert len(np.unique(ids)) < ids.size  # some spaxels were binned
    err = sm.error["velocity"][usable]
    assert np.all(np.isfinite(err) & (err > 0))
    # Binned spaxels share one value.
    big = np.bincount(ids).argmax()
    assert np.unique(sm.values["velocity"][sm.bin_id == big]).size == 1


def test_observed_views_carry_an_intrinsic_exsitu_map_on_the_valid_pixels():
    g = _galaxy()
    v = render_observed_views(g, RENDER, ObserveConfig(), 4, seed=0)
    assert v.maps.shape == (4, 5, 16, 16)
    assert v.mask.any() and not v.mask.all()
    assert np.all(v.exsitu[~v.mask] == 0)
    assert np.all((v.exsitu[v.mask] >= 0) & (v.exsitu[v.mask] <= 1))
    assert np.all(v.maps[:, :, ~v.mask[0]][0] == 0)


def test_paper_preset_is_refused_for_observed_maps():
    with pytest.raises(RenderError, match="keep_top_fraction"):
        render_observed_views(
            _galaxy(), RenderConfig.preset("paper", resolution=16), IDEAL, 4, seed=0
        )


def test_exsitu_target_is_defined_on_valid_pixels_without_particles():
    # 3,000 particles at 32 px leave empty pixels that the PSF fills with
    # light; an all-ex-situ galaxy must have fraction 1 on every valid pixel.
    g = _galaxy(n=3000)
    g = Particles(
        pos=g.pos,
        vel=g.vel,
        mass=g.mass,
        age=g.age,
        metallicity=g.metallicity,
        ex_situ=np.ones(len(g), bool),
    )
    render = RenderConfig(resolution=32, fov_re=3.0)
    v = render_observed_views(g, render, ObserveConfig(), 4, seed=0)
    from sbi_exsitu.data.render import pixel_statistics

    empty = v.mask[0] & (pixel_statistics(g, v.directions[0], render).count == 0)
    assert empty.any()  # the case this test is about occurs
    np.testing.assert_array_equal(v.exsitu[v.mask], 1.0)
