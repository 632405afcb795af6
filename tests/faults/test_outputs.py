"""Nothing lost: output paths are checked before the work, writes are atomic,
concurrent writers are refused and killed jobs leave no orphans (issue #14).

Each test reproduces one failure of the code before the fix; the concurrency and
SIGKILL ones run the real CLI in subprocesses, with timeouts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_toy_dataset
from typer.testing import CliRunner

from sbi_exsitu.atomic import OutputPathError, check_output_path
from sbi_exsitu.cli import app
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import DatasetError, DatasetWriter, MapDataset
from sbi_exsitu.data.render import RenderConfig, RenderedViews

RUNNER = CliRunner()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sim_config(tmp: Path, n_galaxies: int) -> Path:
    config = tmp / f"sim{n_galaxies}.toml"
    config.write_text(
        f'[simulate]\nmodel = "tng-like"\nn_galaxies = {n_galaxies}\nseed = 1\n'
        "views = 4\n[model]\nmax_particles = 3000\nmin_particles = 3000\n"
        "[render]\nresolution = 16\n"
    )
    return config


def _cli(*args: str, timeout: float = 60) -> subprocess.Popen:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "sbi_exsitu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run fitted for two epochs (fast) and a dataset of its observations."""
    from sbi_exsitu.training.fit import fit

    tmp = tmp_path_factory.mktemp("tiny")
    data = write_toy_dataset(tmp / "toy.h5", n_galaxies=60, seed=1)
    obs = write_toy_dataset(tmp / "obs.h5", n_galaxies=3, seed=2)
    cfg = ExperimentConfig.from_dict(
        {
            "run": {"name": "tiny", "out_dir": str(tmp / "runs"), "seed": 0},
            "data": {"train": str(data)},
            "posterior": {
                "embedding": "default",
                "embedding_features": 4,
                "hidden_features": 8,
                "num_transforms": 1,
                "ensemble_size": 1,
            },
            "training": {"batch_size": 32, "max_epochs": 2, "patience": 2},
        }
    )
    result = fit(cfg, progress=False, num_eval_samples=10)
    return Path(result.run_dir), obs


# -- item 1: predict -o <the input dataset> -------------------------------------


@pytest.mark.parametrize("via_symlink", [False, True])
def test_predict_refuses_to_overwrite_its_input(tiny_run, tmp_path, via_symlink):
    run_dir, obs = tiny_run
    before = _digest(obs)
    out = obs
    if via_symlink:
        out = tmp_path / "link.h5"
        out.symlink_to(obs)
    result = RUNNER.invoke(
        app, ["predict", str(run_dir), str(obs), "-o", str(out), "--num-samples", "5"]
    )
    assert result.exit_code != 0
    assert "also an input" in result.output and "choose another -o" in result.output
    assert _digest(obs) == before and len(MapDataset(obs)) == 6


def test_predict_refuses_a_file_of_the_run(tiny_run):
    run_dir, obs = tiny_run
    target = next(p for p in run_dir.rglob("*") if p.suffix in (".h5", ".csv"))
    with pytest.raises(OutputPathError, match="also an input"):
        from sbi_exsitu.studies.predict import predict

        predict(run_dir, obs, target, num_samples=5, progress=False)


# -- item 2: show data.png -o data.png ------------------------------------------


def test_show_refuses_to_overwrite_the_dataset(tmp_path):
    data = write_toy_dataset(tmp_path / "data.png", n_galaxies=2, seed=0)
    before = _digest(data)
    result = RUNNER.invoke(app, ["show", str(data), "-o", str(data)])
    assert result.exit_code != 0 and "also an input" in result.output
    assert _digest(data) == before
    ok = RUNNER.invoke(app, ["show", str(data), "-o", str(tmp_path / "s.png")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


# -- item 3: render cutout -o cutout --overwrite --------------------------------


def test_render_refuses_to_overwrite_an_input_cutout(tmp_path):
    from sbi_exsitu.data.particles import Particles
    from sbi_exsitu.data.readers.fixtures import write_tng_cutout

    rng = np.random.default_rng(0)
    p = Particles(
        pos=rng.normal(size=(3000, 3)),
        vel=rng.normal(size=(3000, 3)),
        mass=np.full(3000, 1e6),
        age=np.full(3000, 5.0),
        metallicity=np.full(3000, 0.01),
    )
    cutout = tmp_path / "cutout_1.hdf5"
    write_tng_cutout(cutout, p)
    before = _digest(cutout)
    result = RUNNER.invoke(
        app, ["render", str(cutout), "-o", str(cutout), "--overwrite"]
    )
    assert result.exit_code != 0 and "also an input" in result.output
    assert _digest(cutout) == before


# -- item 4: bad outputs fail before the work -----------------------------------


def _bad_outputs(tmp: Path, monkeypatch) -> dict[str, tuple[Path, str]]:
    a_file = tmp / "a_file"
    a_file.write_text("x")
    folder = tmp / "existing.csv"
    folder.mkdir()
    read_only = tmp / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make os.access say no
        real = os.access
        monkeypatch.setattr(
            "sbi_exsitu.atomic.os.access",
            lambda p, mode: False if Path(p) == read_only else real(p, mode),
        )
    return {
        "folder": (folder, "is a folder, not a file"),
        "under a file": (a_file / "out.csv", "a_file is a file, not a folder"),
        "read-only": (read_only / "out.csv", "is read-only"),
    }


@pytest.mark.parametrize("case", ["folder", "under a file", "read-only"])
def test_bad_outputs_fail_before_any_work(tmp_path, monkeypatch, case):
    import sbi_exsitu.posteriors
    from sbi_exsitu.data import simulate as sim
    from sbi_exsitu.studies.predict import predict

    out, message = _bad_outputs(tmp_path, monkeypatch)[case]

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(sim, "parallel_map", no_work)
    monkeypatch.setattr(sbi_exsitu.posteriors, "load_posterior", no_work)
    cfg = sim.SimulationConfig.from_toml(_sim_config(tmp_path, 2))
    with pytest.raises(OutputPathError, match=message):
        sim.simulate(cfg, out, progress=False, overwrite=True)
    with pytest.raises(OutputPathError, match=message):
        predict(tmp_path, tmp_path / "obs.h5", out)
    with pytest.raises(OutputPathError, match=message):
        from sbi_exsitu.tables import write_table

        write_table({"a": np.arange(2)}, out)


def test_calibration_out_dir_checked_before_sampling(tmp_path):
    from sbi_exsitu.evaluation.calibration import calibrate_dataset

    class NoSampling:
        param_names = ["f_ex"]

        def sample(self, *args, **kwargs):
            raise AssertionError("sampled before checking the output folder")

    data = write_toy_dataset(tmp_path / "d.h5", n_galaxies=2, seed=0)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with MapDataset(data) as ds:
        with pytest.raises(OutputPathError, match="also an input"):
            calibrate_dataset(NoSampling(), ds, out_dir=data)
        with pytest.raises(OutputPathError, match="is a file, not a folder"):
            calibrate_dataset(NoSampling(), ds, out_dir=a_file)


def test_check_output_path_messages(tmp_path):
    existing = tmp_path / "t.csv"
    existing.write_text("a\n")
    with pytest.raises(OutputPathError, match="pass --overwrite"):
        check_output_path(existing)
    assert check_output_path(existing, overwrite=True) == existing
    assert check_output_path(tmp_path / "new" / "deeper" / "t.csv").name == "t.csv"
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_path(existing, kind="dir")


# -- item 5: concurrent writers; overwrite replaces only when complete ----------


def test_second_writer_fails_at_once_and_leaves_the_first_alone(tmp_path):
    config = _sim_config(tmp_path, 200)
    out = tmp_path / "d.h5"
    old = _sim_config(tmp_path, 2)
    first = subprocess.run(
        [sys.executable, "-m", "sbi_exsitu", "simulate", str(old), "-o", str(out)],
        capture_output=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    args = ("simulate", str(config), "-o", str(out), "--overwrite", "--no-progress")
    winner = _cli(*args)
    try:
        partial = out.with_name(out.name + ".partial")
        _wait_for(partial.exists, 30, "the first writer's .partial")
        time.sleep(0.5)
        # While the new dataset is written, the old one is still whole.
        with MapDataset(out) as ds:
            assert len(ds) == 8
        loser = subprocess.run(
            [sys.executable, "-m", "sbi_exsitu", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        winner_out, winner_err = winner.communicate(timeout=90)
    finally:
        winner.kill()
    assert loser.returncode != 0
    assert "Traceback" not in loser.stderr, loser.stderr
    assert "another process (pid" in loser.stdout + loser.stderr
    assert winner.returncode == 0, winner_err
    with MapDataset(out) as ds:
        assert len(set(ds.labels["galaxy_id"].tolist())) == 200
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("d.h5")) == [
        "d.h5"
    ]


def test_overwrite_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    cfg = RenderConfig(resolution=8, channels=("mass",), min_pixels=1)
    views = RenderedViews(
        maps=np.zeros((2, 1, 8, 8), np.float32),
        exsitu=np.zeros((2, 8, 8), np.float32),
        mask=np.ones((2, 8, 8), bool),
        directions=np.eye(3)[:2],
    )
    labels = dict(f_ex=0.3, log_mstar=10.0, half_mass_radius=1.0, model="toy")
    out = tmp_path / "d.h5"
    with DatasetWriter(out, cfg) as w:
        w.add_galaxy(views, galaxy_id=0, **labels)
    before = _digest(out)
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(out, cfg, overwrite=True) as w:
            w.add_galaxy(views, galaxy_id=0, **labels)
            assert _digest(out) == before  # still the old, readable file
            raise RuntimeError("boom")
    assert _digest(out) == before


# -- interrupted jobs leave only resumable state --------------------------------


def test_a_job_that_wrote_nothing_leaves_nothing_that_blocks(tmp_path):
    bad = tmp_path / "broken.hdf5"
    bad.write_text("not hdf5")
    out = tmp_path / "maps.h5"
    result = RUNNER.invoke(app, ["render", str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert not out.exists() and not out.with_name("maps.h5.partial").exists()
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(out, RenderConfig(resolution=8)):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [bad]
    with pytest.raises(DatasetError, match="file not found"):
        MapDataset(out)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_leaves_no_orphans_and_a_resumable_partial(tmp_path):
    config = _sim_config(tmp_path, 400)
    out = tmp_path / "d.h5"
    args = ("simulate", str(config), "-o", str(out), "--workers", "2")
    parent = _cli(*args, "--no-progress")
    partial = out.with_name(out.name + ".partial")
    try:
        _wait_for(partial.exists, 40, "the .partial of simulate --workers 2")
        _wait_for(lambda: len(_children(parent.pid)) >= 2, 30, "two workers")
        time.sleep(1.5)  # let the workers be busy with galaxies
        workers = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: not any(_alive(p) for p in workers), 10, "orphans to exit")
    finally:
        parent.kill()
    assert not out.exists() and partial.exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "sbi_exsitu", *args, "--resume", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert resumed.returncode == 0, resumed.stderr
    with MapDataset(out) as ds:
        assert sorted(set(ds.labels["galaxy_id"].tolist())) == list(range(400))
