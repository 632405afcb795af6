"""The frictions a new user met on the real-data path (render -> predict), fixed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import DatasetWriter, MapDataset
from sbi_exsitu.data.readers.fixtures import (
    symmetric_galaxy,
    write_subhalo_json,
    write_tng_cutout,
)
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import DatasetError, RenderConfigMismatch
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.studies.predict import training_particle_cap

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _fake_run(path: Path, config: RenderConfig) -> Path:
    RunDirectory(path).path.mkdir(parents=True, exist_ok=True)
    RunDirectory(path).write_render_config(config.to_json())
    return path


def _render(*args: str):
    return runner.invoke(app, ["render", *args, "--views", "4", "--no-progress"])


def _small(tmp_path: Path) -> list[str]:
    return ["--config", _toml(tmp_path)]


def test_docs_name_only_config_files_that_exist() -> None:
    import re

    text = (ROOT / "docs" / "real-data.md").read_text()
    for name in set(re.findall(r"configs/[\w.-]+\.toml", text)):
        assert (ROOT / name).is_file(), f"docs/real-data.md names {name}"


def test_render_like_a_run_gives_maps_the_run_accepts(tmp_path: Path) -> None:
    cutout = write_tng_cutout(tmp_path / "cutout_1.hdf5", symmetric_galaxy(800)).path
    trained = RenderConfig(resolution=12, min_pixels=1)
    run = _fake_run(tmp_path / "run", trained)
    res = _render(str(cutout), "-o", str(tmp_path / "a.h5"), "--like", str(run))
    assert res.exit_code == 0, res.output
    with MapDataset(tmp_path / "a.h5") as ds:
        assert ds.render_config == trained
    # The run's own render_config.json is accepted by --config too.
    config = RunDirectory(run).render_config_file
    res = _render(str(cutout), "-o", str(tmp_path / "b.h5"), "--config", str(config))
    assert res.exit_code == 0, res.output
    with MapDataset(tmp_path / "b.h5") as ds:
        assert ds.render_config == trained
    res = _render(str(cutout), "-o", str(tmp_path / "c.h5"), "--like", str(tmp_path))
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_mismatch_error_names_the_fix(tmp_path: Path) -> None:
    from sbi_exsitu.data.compatibility import check_render_config

    with pytest.raises(RenderConfigMismatch, match=r"resolution.*--like runs/x"):
        check_render_config(
            RenderConfig(resolution=32), RenderConfig(resolution=128), run_dir="runs/x"
        )


def test_render_reports_catalogue_centre_and_wind_cells(tmp_path: Path) -> None:
    p = symmetric_galaxy(800, centre=(100.0, 200.0, 300.0), half_mass_radius=2.5)
    cutout = write_tng_cutout(tmp_path / "cutout_7.hdf5", p, n_wind=13).path
    res = _render(str(cutout), "-o", str(tmp_path / "a.h5"), *_small(tmp_path))
    assert res.exit_code == 0, res.output
    assert "wind cells dropped: 13" in res.output
    assert "catalogue: none (no cutout_7.json next to the file" in res.output
    assert "centre: lowest-Potential star" in res.output
    # A catalogue under another name is found only when pointed at.
    (tmp_path / "cats").mkdir()
    write_subhalo_json(tmp_path / "cats" / "sub_cutout_7.json", p)
    template = str(tmp_path / "cats" / "sub_{stem}.json")
    res = _render(
        str(cutout), "-o", str(tmp_path / "b.h5"), "--catalogue", template,
        *_small(tmp_path),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "sub_cutout_7.json" in res.output and "catalogue SubhaloPos" in res.output
    assert "r_e: catalogue halfmassrad_stars" in res.output
    with MapDataset(tmp_path / "b.h5") as ds:
        assert ds.labels["half_mass_radius"] == pytest.approx(np.full(4, 2.5))
    res = _render(
        str(cutout), "-o", str(tmp_path / "c.h5"), "--catalogue", "nowhere/{stem}.json"
    )
    assert res.exit_code == 2 and "nowhere/cutout_7.json does not exist" in res.output


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("render", ["TOML with a [render] table", "--like"]),
        ("predict", ["[default: 1000; 100", "misspec_flag", "--no-misspec"]),
    ],
)
def test_help_text_keeps_brackets(command: str, words: list[str]) -> None:
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    flat = " ".join(res.output.split())
    for w in words:
        assert w in flat, f"{command} --help lost {w!r}:\n{res.output}"


def test_existing_output_message_uses_cli_words(tmp_path: Path) -> None:
    cutout = write_tng_cutout(tmp_path / "cutout_1.hdf5", symmetric_galaxy(800)).path
    out = tmp_path / "a.h5"
    assert (
        _render(str(cutout), "-o", str(out), "--config", _toml(tmp_path)).exit_code == 0
    )
    res = _render(str(cutout), "-o", str(out), "--config", _toml(tmp_path))
    assert res.exit_code == 2
    assert "--resume" in res.output and "resume=True" not in res.output
    with pytest.raises(DatasetError, match=r"resume=True") as err:
        DatasetWriter(out, RenderConfig()).__enter__()
    assert "--resume" not in str(err.value)


def _toml(tmp_path: Path) -> str:
    path = tmp_path / "r.toml"
    path.write_text("[render]\nresolution = 12\nmin_pixels = 1\n")
    return str(path)


def test_old_run_with_relative_split_path_works_from_another_cwd(
    toy_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, data, result = toy_run
    run = RunDirectory(result.run_dir)
    splits = run.read_splits()
    # An old run: the dataset path relative to the directory `fit` ran in,
    # which was the run's parent's parent here (tmp/runs/toy -> tmp/toy.h5).
    old = dict(splits, dataset=os.path.relpath(data, tmp))
    copy = tmp_path / "runs" / "toy"
    copy.mkdir(parents=True)
    for f in result.run_dir.rglob("*"):
        if f.is_file() and "misspecification" not in f.parts:
            dest = copy / f.relative_to(result.run_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
    (copy / "splits.json").write_text(json.dumps(old))
    (tmp_path / "toy.h5").symlink_to(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert RunDirectory(copy).training_data().resolve() == data.resolve()


def test_summarize_flags_by_default(toy_run, tmp_path: Path) -> None:
    from conftest import write_toy_dataset

    from sbi_exsitu.posteriors import load_posterior

    _, _, result = toy_run
    post = load_posterior(result.run_dir)
    obs = write_toy_dataset(tmp_path / "obs.h5", 2, seed=5)
    with MapDataset(obs) as ds:
        maps = ds.maps(np.arange(len(ds)))
    cols = post.summarize(maps, 50).to_columns()
    assert {"misspec_score", "misspec_pvalue", "misspec_flag"} <= set(cols)
    off = post.summarize(maps, 50, misspecification=False).to_columns()
    assert not any(k.startswith("misspec") for k in off)


def test_render_like_a_run_caps_particles_at_its_training_cap(tmp_path: Path) -> None:
    cutout = write_tng_cutout(tmp_path / "cutout_1.hdf5", symmetric_galaxy(1500)).path
    run = _fake_run(tmp_path / "run", RenderConfig(resolution=12, min_pixels=1))
    (run / "data.json").write_text(json.dumps({"max_particles": 1000}))
    assert training_particle_cap(run) == 1000
    res = _render(str(cutout), "-o", str(tmp_path / "a.h5"), "--like", str(run))
    assert res.exit_code == 0, res.output
    assert "capping galaxies at 1000 particles" in res.output
    assert "particles: 3001 -> 1000 (max_particles)" in res.output
    res = _render(
        str(cutout), "-o", str(tmp_path / "b.h5"), "--like", str(run),
        "--max-particles", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with MapDataset(tmp_path / "a.h5") as a, MapDataset(tmp_path / "b.h5") as b:
        assert (a.particle_cap, b.particle_cap) == (1000, None)
    res = _render(str(cutout), "-o", str(tmp_path / "c.h5"), "--max-particles", "-1")
    assert res.exit_code != 0 and "--max-particles is -1" in res.output
