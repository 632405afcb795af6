"""Tests for sbi_exsitu.studies.inspection and the ``sbi-exsitu inspect`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import DatasetError, MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate
from sbi_exsitu.studies.inspection import (
    RING_PAIRS,
    dataset_gradients,
    inspect_datasets,
    ring_gradients,
    ring_means,
)


def _radial_map(size: int, fov_re: float) -> np.ndarray:
    c = np.arange(size) + 0.5 - size / 2
    return np.hypot(c[:, None], c[None, :]) / (size / fov_re)  # r in r_e


def test_ring_means_recover_a_linear_profile() -> None:
    r = _radial_map(64, 6.0)  # fov 6 r_e: the 2 r_e ring fits inside
    maps = np.stack([r, 3 * r + 1])[None].astype(np.float32)
    means = ring_means(maps, np.ones((1, 64, 64), bool), 6.0, radii=(0.5, 1.0, 2.0))
    np.testing.assert_allclose(means[0, 0], [0.5, 1.0, 2.0], rtol=0.03)
    np.testing.assert_allclose(means[0, 1], [2.5, 4.0, 7.0], rtol=0.03)


def test_ring_gradients_ignore_masked_pixels_and_flag_empty_rings() -> None:
    r = _radial_map(128, 6.0)
    maps = np.stack([r])[None].astype(np.float32)
    mask = np.ones((2, 128, 128), bool)
    mask[1, r > 1.5] = False  # no data at 2 r_e
    noisy = maps.repeat(2, axis=0)
    noisy[1, 0, ~mask[1]] = 1e6  # masked garbage must not leak in
    g = ring_gradients(noisy, mask, 6.0)
    assert g["outer"][0, 0] == pytest.approx(1.0, rel=0.05)
    assert np.isnan(g["outer"][1, 0]) and np.isnan(g["inner_outer"][1, 0])
    assert g["inner"][1, 0] == pytest.approx(0.25, rel=0.1)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> list[Path]:
    out = []
    for model in ("tng-like", "eagle-like"):
        cfg = SimulationConfig.from_dict(
            {
                "simulate": {"model": model, "n_galaxies": 6, "seed": 5},
                "model": {"max_particles": 3000},
                "render": {"resolution": 24},
            }
        )
        path = tmp_path_factory.mktemp(model) / "d.h5"
        out.append(simulate(cfg, path, progress=False))
    return out


def test_dataset_gradients_match_in_memory(two_models: list[Path]) -> None:
    with MapDataset(two_models[0]) as ds:
        streamed = dataset_gradients(ds, batch_size=7)
        idx = np.arange(len(ds))
        direct = ring_gradients(ds.maps(idx), ds.mask(idx), ds.render_config.fov_re)
    for key in RING_PAIRS:
        np.testing.assert_array_equal(streamed[key], direct[key])
        assert streamed[key].shape == (len(idx), 5)


def test_cli_inspect_and_missing_file(two_models: list[Path], tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["inspect", *map(str, two_models), "-o", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    names = ("example_maps.png", "fex_mstar.png", "ring_gradients.png")
    extra = ("exsitu_profile.png", "debris_tng-like.png", "debris_eagle-like.png")
    for name in names + extra:
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f"wrote {tmp_path / name}" in ok.output
    bad = runner.invoke(
        app, ["inspect", str(tmp_path / "nope.h5"), "-o", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "not found" in bad.output
    with pytest.raises(DatasetError):
        inspect_datasets([tmp_path / "nope.h5"], tmp_path)
