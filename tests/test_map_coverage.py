"""Map-posterior calibration on posteriors with known behaviour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sbi_exsitu.data.dataset import DatasetWriter, MapDataset
from sbi_exsitu.data.exsitu_fraction import mass_weights
from sbi_exsitu.data.render import RenderConfig, RenderedViews
from sbi_exsitu.evaluation.map_coverage import (
    central_coverage,
    closed_interval_coverage,
    map_calibration,
    pit_coverage,
    pixel_coverage,
    randomized_pit,
)

RES = 8


def test_pixel_coverage_calibrated_and_overconfident() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(30, RES, RES))
    mask = rng.uniform(size=(30, RES, RES)) > 0.2
    good = rng.normal(size=(30, 300, RES, RES))
    narrow = 0.5 * rng.normal(size=(30, 300, RES, RES))
    levels = [0.5, 0.68, 0.95]
    cov = pixel_coverage(good, truth, mask, levels)
    assert np.allclose(cov, levels, atol=0.03)
    assert np.all(pixel_coverage(narrow, truth, mask, levels) < cov - 0.1)


def test_masked_pixels_are_ignored() -> None:
    truth = np.zeros((2, RES, RES))
    samples = np.broadcast_to(
        np.linspace(-1, 1, 10)[None, :, None, None], (2, 10, RES, RES)
    )
    mask = np.zeros((2, RES, RES), bool)
    mask[:, :4] = True
    truth[:, 4:] = 5.0  # never covered, but masked out
    assert np.allclose(pixel_coverage(samples, truth, mask, [0.5]), 1.0)


def test_coverage_with_atoms() -> None:
    # Truth and draws from the same law with an atom at 0 (like the ex-situ
    # pixels): closed intervals over-cover; sharing the atom (pixel_coverage)
    # and the randomised PIT are nominal.
    rng = np.random.default_rng(3)

    def draw(size: tuple[int, ...]) -> np.ndarray:
        u = rng.uniform(size=size)
        return np.where(u < 0.5, 0.0, rng.uniform(size=size))

    truth, samples = draw((40, RES, RES)), draw((40, 200, RES, RES))
    mask = np.ones((40, RES, RES), bool)
    levels = [0.2, 0.68, 0.95]
    assert closed_interval_coverage(samples, truth, mask, levels)[0] > 0.5
    assert np.allclose(pixel_coverage(samples, truth, mask, levels), levels, atol=0.03)
    cov = pit_coverage(randomized_pit(samples, truth, mask), levels)
    assert np.allclose(cov, levels, atol=0.03)


def test_coverage_shares_an_atom_cut_by_the_band() -> None:
    # 40% of the draws sit on the truth, in the middle of the CDF: the central
    # 20% band [0.4, 0.6] holds half of the atom [0.3, 0.7].
    draws = np.r_[np.full(30, -1.0), np.zeros(40), np.full(30, 1.0)]
    samples = draws.reshape(1, 100, 1, 1)
    truth, mask = np.zeros((1, 1, 1)), np.ones((1, 1, 1), bool)
    cov = pixel_coverage(samples, truth, mask, [0.2, 0.4, 0.9])
    assert np.allclose(cov, [0.5, 1.0, 1.0])
    assert np.allclose(closed_interval_coverage(samples, truth, mask, [0.2]), 1.0)


def test_central_coverage_of_scalars() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=2000)
    draws = rng.uniform(size=(2000, 400))
    cov = central_coverage(draws, truth, [0.68, 0.95])
    assert np.allclose(cov, [0.68, 0.95], atol=0.03)


class _Oracle:
    """A 'posterior' that draws every pixel from the true generative model U(0, 1)."""

    def __init__(self, config: RenderConfig, scale: float = 1.0) -> None:
        self.render_config = config
        self.scale = scale

    def check_render_config(self, other: RenderConfig, where: str = "") -> None:
        assert other == self.render_config

    def sample(self, maps, num_samples, *, seed=0, mask=None, **kw):
        rng = np.random.default_rng(seed)
        draws = 0.5 + self.scale * (
            rng.uniform(size=(len(maps), num_samples, RES, RES)) - 0.5
        )
        return np.where(mask[:, None], draws, 0.0)

    def mass_weights(self, maps, mask, mass=None):
        return mass_weights(maps, mask, self.render_config, mass=mass)


@pytest.fixture(scope="module")
def uniform_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = RenderConfig(resolution=RES, channels=("velocity",), min_pixels=1)
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("mapcal") / "d.h5"
    with DatasetWriter(path, cfg) as w:
        for g in range(60):
            mask = rng.uniform(size=(2, RES, RES)) > 0.3
            y = np.where(mask, rng.uniform(size=(2, RES, RES)), 0.0)
            w.add_galaxy(
                RenderedViews(
                    maps=np.where(mask[:, None], 1.0, 0.0).astype(np.float32),
                    exsitu=y.astype(np.float32),
                    mask=mask,
                    directions=np.eye(3)[:2],
                ),
                galaxy_id=g,
                f_ex=float(y[0][mask[0]].mean()),
                log_mstar=10.0,
                half_mass_radius=1.0,
                model="toy",
            )
    return path


def test_map_calibration_oracle_is_calibrated(
    uniform_dataset: Path, tmp_path: Path
) -> None:
    ds = MapDataset(uniform_dataset)
    idx = np.arange(len(ds))
    out = map_calibration(
        _Oracle(ds.render_config), ds, idx, num_samples=200, out_dir=tmp_path
    )
    assert abs(out["pixel_coverage_error_68"]) < 0.03
    assert abs(out["pixel_coverage_error_95"]) < 0.02
    assert abs(out["pixel_closed_coverage_error_68"]) < 0.03
    assert out["weighting"] == "uniform"
    assert out["n_pixels"] == int(ds.mask(idx).sum())
    assert (tmp_path / "map_coverage.png").is_file()
    assert (tmp_path / "map_calibration.json").is_file()
    # The oracle is the exact posterior of the whole map (independent uniform
    # pixels), so its implied f_ex is calibrated too (120 maps: sd 0.04).
    assert abs(out["fex_coverage_error_68"]) < 0.13


def test_map_calibration_flags_overconfidence(uniform_dataset: Path) -> None:
    ds = MapDataset(uniform_dataset)
    out = map_calibration(
        _Oracle(ds.render_config, scale=0.5), ds, np.arange(len(ds)), num_samples=200
    )
    assert out["pixel_coverage_error_68"] < -0.25
