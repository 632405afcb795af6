"""benchmarks/alignment.py: channel subsets, run names and the markdown table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from sbi_exsitu.data.dataset import DatasetWriter, MapDataset
from sbi_exsitu.data.render import CHANNELS, RenderConfig, RenderedViews


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("alignment")


def _write(path: Path, model: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = RenderConfig(resolution=8, channels=tuple(CHANNELS), min_pixels=1)
    with DatasetWriter(path, cfg) as w:
        for g in range(3):
            maps = rng.normal(size=(2, len(CHANNELS), 8, 8)).astype(np.float32)
            w.add_galaxy(
                RenderedViews(
                    maps=maps,
                    exsitu=np.zeros((2, 8, 8), np.float32),
                    mask=np.ones((2, 8, 8), bool),
                    directions=np.eye(3)[:2],
                ),
                galaxy_id=g,
                f_ex=0.1 * g,
                log_mstar=10.0,
                half_mass_radius=1.0,
                model=model,
            )


def test_channel_data_slices_the_named_channels(bench, tmp_path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for i, model in enumerate(("tng-like", "eagle-like")):
        _write(data / f"{model}__all5__ap4.h5", model, i)
    assert bench.channel_data(data, out, "all5")[0] == data / "tng-like__all5__ap4.h5"
    tng, eagle = bench.channel_data(data, out, "mass_kinematics_age")
    assert tng.parent == out / "data"
    pick = [CHANNELS.index(c) for c in ("mass", "velocity", "dispersion", "age")]
    for path, base in ((tng, "tng-like"), (eagle, "eagle-like")):
        with MapDataset(path) as sub, MapDataset(data / f"{base}__all5__ap4.h5") as ds:
            assert (
                sub.render_config.channels == bench.CHANNEL_SETS["mass_kinematics_age"]
            )
            np.testing.assert_array_equal(
                sub.maps(slice(None)), ds.maps(slice(None))[:, pick]
            )
    with pytest.raises(SystemExit, match="expected one of"):
        bench.channel_data(data, out, "mass_age")


def test_run_names_keep_the_all_channel_cache(bench) -> None:
    # All channels: the names (and so the caches) of runs made before --channels.
    assert bench.run_name("all5", "mmd+em w=0.3", 1) == "mmd-em-w0.3__s1"
    assert bench.run_name("mass_kinematics", "none", 0) == "mass_kinematics__none__s0"


def test_markdown_has_one_row_per_channel_set_and_setting(bench) -> None:
    q = {"bias": -0.02, "scatter": 0.05, "rmse": 0.06, "coverage_error": 0.1}
    row = {k: q for k in ("eagle_val", "eagle_test", "tng_test")}
    results = {
        "a": row | {"setting": "none", "seed": 0, "domain_auc": 0.6},
        "b": row | {"setting": "none", "seed": 1, "domain_auc": 0.8},
        "c": row | {"setting": "none", "seed": 0, "channels": "mass_kinematics"},
    }
    lines = bench.markdown(results).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| all5 | none | 2 | -0.020 [-0.020, -0.020]")
    assert "0.700 [0.600, 0.800]" in lines[2]
    assert lines[3].startswith("| mass_kinematics | none | 1 | -0.020 |")


def test_pseudo_label_benchmark_parses_overrides_and_keeps_views(tmp_path) -> None:
    pl = load_benchmark("pseudo_label_transfer")
    got = pl.overrides(
        ["training.max_lr_reductions=3", "posterior.embedding_features=64"]
    )
    assert got == {
        "training": {"max_lr_reductions": 3},
        "posterior": {"embedding_features": 64},
    }
    with pytest.raises(SystemExit, match="training.KEY=VALUE"):
        pl.overrides(["max_epochs=3"])
    src = tmp_path / "eagle.h5"
    _write(src, "eagle-like", 0)
    assert pl.fewer_views(src, 0) == src
    with MapDataset(pl.fewer_views(src, 1)) as ds:
        assert set(np.asarray(ds.labels["view_id"])) == {0}
        assert len(np.unique(ds.labels["galaxy_id"])) == 3
