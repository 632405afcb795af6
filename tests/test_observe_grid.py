"""Resampling spaxel maps onto the posterior grid (sbi_exsitu.data.observe.grid)."""

import numpy as np
import pytest

from sbi_exsitu.data.observe import SpaxelMaps, to_posterior_grid
from sbi_exsitu.data.render import RenderConfig, RenderError, preprocess
from sbi_exsitu.errors import ObservationError

CFG = RenderConfig(resolution=16, fov_re=4.0, smooth_sigma=0.0)


def _maps(fn, shape=(60, 60), centre=(30.0, 30.0), r_e=3.0, valid=None):
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx] + 0.5
    xx, yy = x - centre[0], y - centre[1]
    values = fn(xx, yy)
    ok = {c: np.ones(shape, bool) if valid is None else valid for c in values}
    return SpaxelMaps("toy", values, ok, 0.5, centre, r_e)


def _smooth(xx, yy):
    r2 = xx**2 + yy**2
    return {
        "mass": np.exp(-r2 / 200.0),
        "velocity": 3.0 * xx,
        "dispersion": np.full_like(xx, 50.0),
        "age": 5.0 + 0.1 * yy,
        "metallicity": 0.02 + 0.0 * xx,
    }


def test_mass_conserved_when_the_posterior_grid_covers_the_maps():
    # fov 4 r_e = 12 arcsec = 24 spaxels; the mass lies in a 20x20 block.
    def block(xx, yy):
        m = ((np.abs(xx) < 10) & (np.abs(yy) < 10)).astype(float)
        return {"mass": m * 2.5}

    sm = _maps(block)
    cfg = RenderConfig(resolution=16, channels=("mass",))
    stats, valid = to_posterior_grid(sm, cfg)
    assert stats.mass.sum() == pytest.approx(sm.values["mass"].sum(), rel=1e-9)
    assert valid.sum() > 0


def test_smooth_maps_are_recovered():
    sm = _maps(_smooth)
    stats, valid = to_posterior_grid(sm, CFG)
    assert valid.all()
    n, pix = 16, 24 / 16  # pixel side in spaxels
    c = (np.arange(n) + 0.5) * pix - 12
    xx, yy = np.meshgrid(c, c)
    # Spaxels hold piecewise-constant values: a linear field is recovered to
    # its change over half a spaxel (the distance to the nearest spaxel centre).
    np.testing.assert_allclose(stats.velocity, 3.0 * xx, atol=3.0 * 0.5)
    np.testing.assert_allclose(stats.age, 5.0 + 0.1 * yy, atol=0.1 * 0.5)
    assert np.abs(stats.velocity - 3.0 * xx).mean() < 0.5 * 3.0 * 0.5
    # A velocity gradient across a pixel broadens it: sigma^2 = 50^2 + var(v).
    assert np.all(stats.dispersion > 50.0)
    assert np.all(stats.dispersion < np.hypot(50.0, 3.0 * pix))
    # Surface density per posterior pixel = spaxel density x pixel area.
    np.testing.assert_allclose(
        stats.mass, np.exp(-(xx**2 + yy**2) / 200.0) * pix**2, rtol=0.02
    )


def test_pixels_off_the_usable_spaxels_are_invalid():
    valid = np.ones((60, 60), bool)
    valid[:, :30] = False  # left half unusable
    sm = _maps(_smooth, valid=valid)
    stats, ok = to_posterior_grid(sm, CFG)
    assert not ok[:, :8].any() and ok[:, 8:].all()
    assert np.isnan(stats.velocity[:, :8]).all()
    assert (stats.mass[:, :8] == 0).all()


def test_preprocess_takes_the_valid_mask_and_refuses_count_rules():
    stats, valid = to_posterior_grid(_maps(_smooth), CFG)
    maps, mask = preprocess(stats, CFG, valid=valid)
    assert mask.all() and np.isfinite(maps).all()
    with pytest.raises(RenderError, match="keep_top_fraction"):
        preprocess(stats, RenderConfig.preset("paper", resolution=16), valid=valid)
    with pytest.raises(RenderError, match="weighting"):
        preprocess(stats, RenderConfig(resolution=16, weighting="none"), valid=valid)


def test_too_little_observed_area_names_the_observation_fixes():
    stats, valid = to_posterior_grid(_maps(_smooth), CFG)
    few = np.zeros_like(valid)
    few[0, :3] = True  # 3 pixels, fewer than min_pixels
    with pytest.raises(RenderError, match=r"observed area.*redshift floor.*min_snr"):
        preprocess(stats, CFG, valid=few)


def test_missing_channel_is_named():
    sm = _maps(lambda xx, yy: {"mass": np.ones_like(xx)})
    with pytest.raises(ObservationError, match="velocity"):
        to_posterior_grid(sm, CFG)
