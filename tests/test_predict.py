"""``predict`` tables, and the fit/predict CLI on the toy run."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
from conftest import write_toy_dataset
from typer.testing import CliRunner

from sbi_exsitu.cli import app
from sbi_exsitu.studies.predict import predict, write_table


def test_write_table_csv_and_hdf5(tmp_path) -> None:
    cols = {
        "a": np.arange(3),
        "b": np.array([0.5, 0.25, 0.125]),
        "m": np.array(["x", "y", "z"]),
    }
    rows = list(csv.DictReader(write_table(cols, tmp_path / "t.csv").open()))
    assert [r["m"] for r in rows] == ["x", "y", "z"]
    assert float(rows[2]["b"]) == 0.125
    with h5py.File(
        write_table(cols, tmp_path / "t.h5", samples=np.zeros((3, 4, 1))), "r"
    ) as h5:
        np.testing.assert_array_equal(h5["table/a"][:], np.arange(3))
        assert h5["samples"].shape == (3, 4, 1)
    with pytest.raises(ValueError, match="suffix|end in"):
        write_table(cols, tmp_path / "t.txt")


def test_predict_writes_one_row_per_observation(toy_run, tmp_path) -> None:
    _, _, result = toy_run
    obs = write_toy_dataset(tmp_path / "obs.h5", 5, seed=11)
    out = predict(
        result.run_dir,
        obs,
        tmp_path / "p.h5",
        num_samples=100,
        save_samples=True,
        progress=False,
    )
    with h5py.File(out, "r") as h5:
        t = h5["table"]
        assert len(t["f_ex_median"]) == 10
        assert np.all(t["f_ex_hdi68_low"][:] <= t["f_ex_median"][:])
        assert np.abs(t["f_ex_median"][:] - t["f_ex_true"][:]).mean() < 0.1
        assert h5["samples"].shape == (10, 100, 1)


def test_cli_predict_and_its_errors(toy_run, tmp_path) -> None:
    _, _, result = toy_run
    obs = write_toy_dataset(tmp_path / "obs.h5", 3, seed=12)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "predict",
            str(result.run_dir),
            str(obs),
            "-o",
            str(tmp_path / "p.csv"),
            "--num-samples",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(list(csv.DictReader((tmp_path / "p.csv").open()))) == 6
    res = runner.invoke(
        app,
        ["predict", str(tmp_path / "no-run"), str(obs), "-o", str(tmp_path / "q.csv")],
    )
    assert res.exit_code == 2 and "model.json" in res.output
    res = runner.invoke(
        app,
        [
            "predict",
            str(result.run_dir),
            str(obs),
            "-o",
            str(tmp_path / "q.csv"),
            "--samples",
        ],
    )
    assert res.exit_code == 2 and ".h5" in res.output


def test_cli_fit_reports_bad_config(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ntrain = "missing.h5"\n')
    res = CliRunner().invoke(app, ["fit", str(cfg)])
    assert res.exit_code == 2 and "missing.h5" in res.output
