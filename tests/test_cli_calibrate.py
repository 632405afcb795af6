"""``sbi-exsitu calibrate`` on the toy run (library tests: test_calibration)."""

from __future__ import annotations

import json

from conftest import write_toy_dataset
from typer.testing import CliRunner

from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import DatasetWriter, MapDataset
from sbi_exsitu.data.render import RenderedViews


def test_calibrate_the_test_split_and_another_dataset(toy_run, tmp_path) -> None:
    _, _, result = toy_run
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "calibrate",
            str(result.run_dir),
            "--num-samples",
            "200",
            "--quiet",
            "-o",
            str(tmp_path / "cal"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    # The verdict itself moves with the toy's training trajectory from machine to
    # machine, so assert what is stable: a valid verdict, and a coverage curve that
    # the near-exact toy posterior keeps close to the diagonal.
    from sbi_exsitu.evaluation.calibration import VERDICTS

    assert report["verdict"] in VERDICTS, report["verdict"]
    # The toy has two identical-label views per galaxy: the tests count galaxies.
    assert report["n_views"] == 2 * report["n_galaxies"], report["n_galaxies"]
    assert report["tests"]["sbc_ks"]["n"] == report["n_galaxies"]
    assert report["tests"]["coverage_tolerance"]["method"] == "block_bootstrap"
    assert report["max_abs_coverage_error"] < 0.2, report["max_abs_coverage_error"]
    assert (tmp_path / "cal" / "coverage.png").stat().st_size > 0
    other = write_toy_dataset(tmp_path / "other.h5", 30, seed=5)
    res = runner.invoke(
        app,
        [
            "calibrate",
            str(result.run_dir),
            "--data",
            str(other),
            "--num-samples",
            "100",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (result.run_dir / "calibration-other" / "calibration.json").exists()


def test_calibrate_refuses_unlabelled_data(toy_run, tmp_path) -> None:
    _, data, result = toy_run
    with MapDataset(data) as ds:
        cfg, maps = ds.render_config, ds.maps([0, 1])
    path = tmp_path / "unlabelled.h5"
    with DatasetWriter(path, cfg) as w:
        w.add_galaxy(
            RenderedViews(
                maps=maps,
                exsitu=maps[:, 0] * float("nan"),
                mask=maps[:, 0] != 0,
                directions=[[0, 0, 1]] * 2,
            ),
            galaxy_id=0,
            f_ex=float("nan"),
            log_mstar=11.0,
            half_mass_radius=1.0,
            model="real",
        )
    res = CliRunner().invoke(
        app, ["calibrate", str(result.run_dir), "--data", str(path), "--quiet"]
    )
    assert res.exit_code == 2
    assert "unlabelled" in res.output
