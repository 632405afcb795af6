"""The cross-simulator grid: config, exact channel slices, the union set, a small grid
end to end through the CLI, and reuse of finished cells."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.schema import ConfigError
from sbi_exsitu.studies.crosstest.study import (
    UNION_ID_OFFSET,
    CrosstestSection,
    cell_name,
    derive_channels,
    union_dataset,
)

pytestmark = pytest.mark.filterwarnings("ignore:Number of TARP samples")

GRID = """
[run]
name = "grid"
out_dir = "{out}"
seed = 0
threads = 1

[simulate]
n_galaxies = 40
seed = 3
views = 4

[model]
max_particles = 3000
min_particles = 3000

[render]
resolution = 16
min_pixels = 4

[posterior]
embedding_features = 8
hidden_features = 16
num_transforms = 1
ensemble_size = 1

[training]
batch_size = 32
max_epochs = 2
patience = 2
min_epochs = 1

[crosstest]
models = ["tng-like", "eagle-like"]
apertures = [4.0, 2.0]
num_samples = 50
n_shuffle = 50
highlight = [["mass_kinematics", 4.0], ["mass_kinematics", 2.0]]

[crosstest.channels]
mass_kinematics = ["mass", "velocity", "dispersion"]
"""


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_section_defaults_and_errors() -> None:
    sec = CrosstestSection.from_dict({})
    assert sec.train_sets == ["tng-like", "eagle-like", "union"]
    assert list(sec.channels) == ["all", "mass_kinematics", "age_metallicity"]
    assert sec.highlighted() == [("all", 4.0), ("mass_kinematics", 1.0)]
    assert CrosstestSection.from_dict({"apertures": [False]}).apertures == (None,)
    with pytest.raises(ConfigError, match="Did you mean 'apertures'"):
        CrosstestSection.from_dict({"aperture": [1.0]})
    with pytest.raises(ConfigError, match="channels 'x'"):
        CrosstestSection.from_dict({"channels": {"x": ["mass", "colour"]}})
    with pytest.raises(ConfigError, match="not a grid cell"):
        CrosstestSection.from_dict({"highlight": [["all", 3.0]]})
    with pytest.raises(ConfigError, match="models"):
        CrosstestSection.from_dict({"models": ["tng-like", "nope"]})
    assert cell_name("union", "all", None) == "union__all__apfull"


def _simulate(path, channels=None, aperture=2.0, n=6, model="tng-like"):
    from sbi_exsitu.data.simulate import SimulationConfig, simulate

    render = {"resolution": 16, "min_pixels": 4, "aperture_re": aperture}
    if channels:
        render["channels"] = channels
    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"model": model, "n_galaxies": n, "seed": 2, "views": 4},
            "model": {"max_particles": 3000, "min_particles": 3000},
            "render": render,
        }
    )
    return simulate(cfg, path, progress=False)


def test_channel_slice_equals_rendering_those_channels(tmp_path) -> None:
    subset = ["velocity", "metallicity"]
    base = _simulate(tmp_path / "all.h5")
    direct = _simulate(tmp_path / "direct.h5", channels=subset)
    with MapDataset(base) as ds:
        out = derive_channels(ds, tuple(subset), tmp_path / "slice.h5")
    with MapDataset(out) as sl, MapDataset(direct) as dr:
        assert (
            sl.render_config
            == dr.render_config
            == RenderConfig(
                resolution=16, min_pixels=4, aperture_re=2.0, channels=tuple(subset)
            )
        )
        np.testing.assert_array_equal(sl.maps(slice(None)), dr.maps(slice(None)))
        np.testing.assert_array_equal(sl.mask(slice(None)), dr.mask(slice(None)))
        for key in ("f_ex", "galaxy_id", "view_id", "model"):
            np.testing.assert_array_equal(sl.labels[key], dr.labels[key])


def test_union_leaves_out_test_galaxies_and_offsets_ids(tmp_path) -> None:
    a = MapDataset(_simulate(tmp_path / "a.h5", n=20))
    b = MapDataset(_simulate(tmp_path / "b.h5", n=20, model="eagle-like"))
    out = union_dataset([a, b], split_seed=0, out=tmp_path / "u.h5")
    with MapDataset(out) as u:
        gid = u.labels["galaxy_id"]
        for k, src in enumerate((a, b)):
            sp = src.splits(seed=0)
            kept = np.unique(
                src.labels["galaxy_id"][np.r_[sp["train"], sp["validation"]]]
            )
            mine = gid[(gid >= k * UNION_ID_OFFSET) & (gid < (k + 1) * UNION_ID_OFFSET)]
            np.testing.assert_array_equal(np.unique(mine) - k * UNION_ID_OFFSET, kept)
        assert set(u.labels["model"]) == {"tng-like", "eagle-like"}
        assert u.render_config == a.render_config
        # The members' particle cap carries over, for `render --like UNION_RUN`.
        assert u.particle_cap == max(a.particle_cap, b.particle_cap) is not None
    a.close()
    b.close()


def test_small_grid_end_to_end_and_cached_cells_are_reused(
    tmp_path, monkeypatch
) -> None:
    from sbi_exsitu.cli import app

    config = tmp_path / "grid.toml"
    config.write_text(GRID.format(out=tmp_path / "runs"))
    runner = CliRunner()
    res = runner.invoke(app, ["crosstest", str(config), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "cells trained: 6, reused: 0" in res.output
    root = tmp_path / "runs" / "grid"
    rows = list(csv.DictReader((root / "table.csv").open()))
    assert len(rows) == 3 * 2 * 2  # (tng, eagle, union) x 2 test models x 2 apertures
    assert {r["relation"] for r in rows} == {"fixed", "cross", "union"}
    for r in rows:
        assert 0 <= float(r["rmse"]) < 1 and r["verdict"]
        # Judged by galaxy (4 views each), the same rule as `sbi-exsitu calibrate`.
        assert int(r["n_galaxies"]) * 4 == int(r["n"]), r
        assert 0 <= float(r["flag_rate"]) <= 1
    misspec = list(csv.DictReader((root / "misspecification.csv").open()))
    assert len(misspec) == 4 and all(0 <= float(m["auc"]) <= 1 for m in misspec)
    summary = (root / "summary.md").read_text()
    assert "Best transfer" in summary and "central finding" in summary
    for fig in (
        "errors_vs_fex_ap4",
        "errors_vs_fex_ap2",
        "error_boxes",
        "fex_mstar",
        "coverage",
        "misspecification_roc",
    ):
        assert (root / "figures" / f"{fig}.png").is_file(), fig
    cell = root / "cells" / cell_name("tng-like", "mass_kinematics", 2.0)
    with MapDataset(json.loads((cell / "splits.json").read_text())["dataset"]) as d:
        assert d.render_config.aperture_re == 2.0
        assert d.render_config.channels == ("mass", "velocity", "dispersion")
    stamp = (cell / "model.json").stat().st_mtime_ns

    # A rerun must not train: fit is forbidden, every cell is reused; a deleted
    # test result (an interrupted cell) is recomputed identically.
    def no_fit(*a, **k):
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr("sbi_exsitu.training.fit.fit", no_fit)
    test_json = cell / "tests" / "eagle-like.json"
    before = json.loads(test_json.read_text())
    cal = before["calibration"]
    assert cal["n_views"] == before["n"] == 4 * cal["n_galaxies"]
    assert cal["tests"]["coverage_tolerance"]["method"] == "block_bootstrap"
    assert cal["tests"]["sbc_ks"]["n"] == cal["n_galaxies"]
    test_json.unlink()
    res = runner.invoke(app, ["crosstest", str(config), "--quiet", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "cells trained: 0, reused: 6" in res.output
    assert (cell / "model.json").stat().st_mtime_ns == stamp
    assert json.loads(test_json.read_text()) == before
    assert list(csv.DictReader((root / "table.csv").open())) == rows


def test_cli_reports_a_bad_table(tmp_path) -> None:
    from sbi_exsitu.cli import app

    config = tmp_path / "bad.toml"
    config.write_text("[crosstest]\nmodel = ['tng-like']\n")
    res = CliRunner().invoke(app, ["crosstest", str(config)])
    assert res.exit_code == 2 and "Did you mean 'models'" in res.output
