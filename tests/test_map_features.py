"""Unsupervised map features and the typicality density of the misspecification
detector (issue #17)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.evaluation.map_features import (
    DEFAULT_COMPONENTS,
    FeatureDensity,
    MapFeatures,
    radial_profiles,
)


def _maps(n: int, seed: int = 0, slope: float = -1.0) -> np.ndarray:
    """Noisy maps with a radial gradient of random amplitude in channel 0."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:16, :16]
    r = np.hypot(y - 7.5, x - 7.5) / 8
    amp = rng.uniform(0.5, 1.5, size=(n, 1, 1, 1))
    base = slope * amp * r + rng.normal(0, 0.3, size=(n, 1, 16, 16))
    return np.concatenate([base, rng.normal(size=(n, 1, 16, 16))], axis=1)


def test_radial_profiles_are_rotation_invariant_and_see_gradients() -> None:
    m = _maps(3)
    rot = np.rot90(m, k=1, axes=(2, 3))
    np.testing.assert_allclose(radial_profiles(m), radial_profiles(rot), atol=1e-12)
    flat = radial_profiles(np.zeros((1, 1, 16, 16)) + 2.0, n_bins=4)
    np.testing.assert_allclose(flat, 2.0)
    prof = radial_profiles(_maps(50), n_bins=4)[:, :4].mean(0)  # channel 0 means
    assert np.all(np.diff(prof) < 0)  # the negative gradient is kept


@pytest.mark.parametrize("kind", ["profile", "pca"])
def test_features_are_white_on_the_training_maps(kind: str) -> None:
    m = _maps(400)
    feats = MapFeatures.fit(m, kind=kind, n_components=8)
    z = feats.transform(m)
    assert z.shape == (400, 8)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.cov(z.T), np.eye(8), atol=1e-6)
    np.testing.assert_allclose(feats.transform(m[:5]), z[:5])
    with pytest.raises(ValueError, match="kind"):
        MapFeatures.fit(m, kind="wavelet")
    with pytest.raises(ValueError, match="n_components"):
        MapFeatures.fit(m, kind=kind, n_components=0)


def test_default_keeps_the_leading_components_and_records_the_count() -> None:
    m = _maps(400)
    feats = MapFeatures.fit(m)  # 2 channels x 8 annuli x (mean, RMS) = 32 raw
    assert feats.components.shape == (DEFAULT_COMPONENTS, 32)
    assert feats.n_components == feats.to_json()["n_components"] == DEFAULT_COMPONENTS
    # The leading components: the 32-component fit's first ones, in order.
    full = MapFeatures.fit(m, n_components=32)
    np.testing.assert_allclose(
        np.abs(feats.transform(m)), np.abs(full.transform(m)[:, :DEFAULT_COMPONENTS])
    )


def test_typicality_flags_both_tails_and_the_flow_roundtrips(tmp_path) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1000, 4))
    gauss = FeatureDensity.fit(z, kind="gauss")
    typical = gauss.typicality(z).mean()
    # The origin has the HIGHEST density, yet it is atypical in 4 dimensions.
    assert gauss.typicality(np.zeros((1, 4)))[0] > 1.5 * typical
    assert gauss.typicality(np.full((1, 4), 3.0))[0] > 5 * typical
    flow = FeatureDensity.fit(z, kind="flow", seed=0, steps=100)
    info = flow.save(tmp_path / "flow.pt")
    back = FeatureDensity.load(info, tmp_path / "flow.pt")
    np.testing.assert_allclose(back.typicality(z[:20]), flow.typicality(z[:20]))
    assert flow.typicality(z + 4.0).mean() > 3 * flow.typicality(z).mean()
