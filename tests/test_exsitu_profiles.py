"""Tests for sbi_exsitu.studies.exsitu_profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate
from sbi_exsitu.studies.exsitu_profiles import (
    PROFILE_RADII,
    _classes,
    exsitu_ring_profiles,
    transitions,
)


def test_transitions_count_crossings_and_skip_empty_rings() -> None:
    profiles = np.array(
        [
            [0.1, 0.3, 0.6, 0.8, 0.9, 0.9],  # one in-situ -> ex-situ transition
            [0.7, 0.8, 0.9, 0.9, 0.9, 0.9],  # ex-situ everywhere
            [0.6, 0.4, 0.3, 0.6, 0.8, np.nan],  # two (accreted centre)
            [0.1, 0.1, np.nan, 0.2, 0.3, 0.4],  # in-situ everywhere
        ]
    )
    assert transitions(profiles).tolist() == [1, 0, 2, 0]
    classes = _classes(profiles)
    assert list(classes.values()) == [0.25, 0.25, 0.25, 0.25]


@pytest.fixture(scope="module")
def mock_set(tmp_path_factory) -> Path:
    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"model": "tng-like", "n_galaxies": 8, "seed": 2, "views": 4},
            "model": {"max_particles": 3000},
            "render": {"resolution": 24},
        }
    )
    return simulate(cfg, tmp_path_factory.mktemp("p") / "d.h5", progress=False)


def test_profiles_are_one_view_per_galaxy_and_fractions(mock_set: Path) -> None:
    with MapDataset(mock_set) as ds:
        prof, logm = exsitu_ring_profiles(ds)
        assert prof.shape == (8, len(PROFILE_RADII))  # 32 views, 8 galaxies
        gal = np.unique(ds.labels["galaxy_id"], return_index=True)[1]
        np.testing.assert_allclose(np.sort(logm), np.sort(ds.labels["log_mstar"][gal]))
    finite = prof[np.isfinite(prof)]
    assert finite.size > 0 and finite.min() >= 0 and finite.max() <= 1
    # Ex-situ stars sit further out than in-situ ones on average (the mocks'
    # design, as in Illustris): the outer ring holds more than the inner one.
    assert np.nanmean(prof[:, -1]) > np.nanmean(prof[:, 0])
