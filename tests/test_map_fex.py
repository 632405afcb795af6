"""Mass weights and the implied f_ex of a map."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.data.exsitu_fraction import fit_mass_scale, implied_fex, mass_weights
from sbi_exsitu.data.render import RenderConfig


def test_mass_weights_cases() -> None:
    mask = np.ones((1, 4, 4), bool)
    mask[0, 0, 0] = False
    logm = np.full((1, 1, 4, 4), 8.0)
    logm[0, 0, 1, 1] = 9.0  # ten times the mass of the other pixels
    raw = RenderConfig(resolution=8, channels=("mass",), standardize=False)
    w, kind = mass_weights(logm, mask, raw)
    assert kind == "mass_channel" and w[0, 0, 0] == 0
    assert w[0, 1, 1] / w[0, 2, 2] == pytest.approx(10.0)
    std = RenderConfig(resolution=8, channels=("mass",))
    assert mass_weights(logm, mask, std)[1] == "uniform"
    assert mass_weights(logm, mask, std, mass_scale=1.0)[1] == "fitted_scale"
    y = np.zeros((1, 1, 4, 4))
    y[0, 0, 1, 1] = 1.0
    f = implied_fex(y, w)
    assert f[0, 0] == pytest.approx(10 / (10 + 14))


def test_fit_mass_scale_recovers_scale() -> None:
    cfg = RenderConfig(resolution=8, channels=("mass", "age"), min_pixels=1)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(80, 2, 8, 8))
    mask = rng.uniform(size=(80, 8, 8)) > 0.2
    y = rng.uniform(size=(80, 8, 8))
    w = mask * 10 ** (1.3 * z[:, 0])
    f = (w * y).sum((1, 2)) / w.sum((1, 2))
    assert fit_mass_scale(y, z, mask, f, cfg) == pytest.approx(1.3, abs=0.011)
    assert (
        fit_mass_scale(y, z, mask, f, RenderConfig(resolution=8, channels=("age",)))
        is None
    )
