"""MaNGA files -> a dataset on a run's grid (ingest), and predict on a MAPS file."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.ingest import expected_daptypes, ingest_manga
from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.data.readers.manga_fixtures import write_manga_galaxy
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import ReaderError, RenderConfigMismatch
from sbi_exsitu.runs import RunDirectory

runner = CliRunner()
OBSERVED = RenderConfig(resolution=16, min_pixels=4, observe=ObserveConfig())


def test_ingest_writes_an_unlabelled_dataset_on_the_run_grid(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path)
    s = ingest_manga([fx.maps], tmp_path / "o.h5", config=OBSERVED, pipe3d=[fx.pipe3d])
    assert s.n_galaxies == 1
    with MapDataset(tmp_path / "o.h5") as ds:
        assert ds.render_config == OBSERVED
        assert len(ds) == 1 and not ds.has_labels
        x = ds.maps(np.arange(1))
        assert x.shape == (1, OBSERVED.n_channels, 16, 16)
        assert np.isfinite(x).all() and np.abs(x).max() > 0
        assert math.isnan(ds.labels["f_ex"][0])
        assert ds.labels["model"][0] == "MaNGA"


def test_daptype_follows_the_observation_binning() -> None:
    assert expected_daptypes(OBSERVED) == ("VOR10", "HYB10")
    unbinned = RenderConfig(observe=ObserveConfig(target_snr=None))
    assert expected_daptypes(unbinned) == ("SPX",)
    with pytest.raises(RenderConfigMismatch, match="idealised maps.*\\[observe\\]"):
        expected_daptypes(RenderConfig(), "runs/x")


def test_wrong_daptype_and_idealised_run_are_refused(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path, daptype="SPX-MILESHC-MASTARSSP")
    with pytest.raises(ReaderError, match="DAPTYPE is 'SPX-.*'VOR10' or 'HYB10'"):
        ingest_manga([fx.maps], tmp_path / "o.h5", config=OBSERVED)
    with pytest.raises(RenderConfigMismatch, match="idealised"):
        ingest_manga([fx.maps], tmp_path / "o.h5", config=RenderConfig())
    assert not list(tmp_path.glob("o.h5*"))


def test_a_bad_file_leaves_no_half_written_dataset(tmp_path: Path) -> None:
    good = write_manga_galaxy(tmp_path / "a")
    bad = write_manga_galaxy(tmp_path / "b", plateifu="1-2", mask_all=True)
    with pytest.raises(ReaderError, match="1-2.*every spaxel is masked"):
        ingest_manga(
            [good.maps, bad.maps],
            tmp_path / "o.h5",
            config=OBSERVED,
            pipe3d=[good.pipe3d, bad.pipe3d],
        )
    assert not list(tmp_path.glob("o.h5*"))


def test_cli_ingest_like_a_run(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    RunDirectory(run).write_render_config(OBSERVED.to_json())
    res = runner.invoke(
        app,
        ["ingest", str(fx.maps), "--pipe3d", str(fx.pipe3d), "--like", str(run),
         "-o", str(tmp_path / "o.h5")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote 1 galaxies" in res.output and "valid pixels" in res.output
    res = runner.invoke(app, ["ingest", str(fx.maps), "-o", str(tmp_path / "p.h5")])
    assert res.exit_code == 2 and "--like RUN" in res.output


def test_predict_on_a_maps_file_refuses_an_idealised_run(toy_run, tmp_path) -> None:
    _, _, result = toy_run
    fx = write_manga_galaxy(tmp_path)
    res = runner.invoke(
        app,
        ["predict", str(result.run_dir), str(fx.maps), "--pipe3d", str(fx.pipe3d),
         "-o", str(tmp_path / "p.csv")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "idealised maps" in res.output and str(result.run_dir) in res.output
    assert not (tmp_path / "p.csv").exists()


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scalar run trained on maps rendered like MaNGA ingests them."""
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.dataset import DatasetWriter
    from sbi_exsitu.data.render import RenderedViews
    from sbi_exsitu.training.fit import fit

    tmp = tmp_path_factory.mktemp("observed")
    config = RenderConfig(resolution=16, channels=("mass",), min_pixels=4,
                          observe=ObserveConfig())  # fmt: skip
    rng = np.random.default_rng(3)
    with DatasetWriter(tmp / "train.h5", config) as writer:
        for g in range(120):
            f_ex = rng.uniform(0, 1)
            writer.add_galaxy(
                RenderedViews(
                    maps=(f_ex + rng.normal(size=(2, 1, 16, 16))).astype(np.float32),
                    exsitu=np.full((2, 16, 16), f_ex, np.float32),
                    mask=np.ones((2, 16, 16), bool),
                    directions=np.eye(3)[:2],
                ),
                galaxy_id=g, f_ex=f_ex, log_mstar=11.0, half_mass_radius=1.0,
                model="toy",
            )  # fmt: skip
    cfg = ExperimentConfig.from_dict(
        {
            "run": {"name": "obs", "out_dir": str(tmp / "runs"), "seed": 0},
            "data": {"train": str(tmp / "train.h5")},
            "posterior": {"embedding_features": 8, "hidden_features": 16,
                          "num_transforms": 1, "ensemble_size": 1},
            "training": {"batch_size": 64, "max_epochs": 3, "patience": 3},
        }
    )  # fmt: skip
    return fit(cfg, progress=False, num_eval_samples=20).run_dir


def test_predict_accepts_a_maps_file(observed_run: Path, tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path, daptype="VOR10-MILESHC-MASTARSSP")
    out = tmp_path / "p.csv"
    res = runner.invoke(
        app,
        ["predict", str(observed_run), str(fx.maps), "--pipe3d", str(fx.pipe3d),
         "-o", str(out), "--num-samples", "20"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1
    assert 0 <= float(rows[0]["f_ex_median"]) <= 1
    assert rows[0]["misspec_flag"] in {"0", "1"}
    assert "observations flagged as unlike the training set" in res.output
