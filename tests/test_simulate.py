"""Tests for sbi_exsitu.data.simulate and the ``sbi-exsitu simulate`` command."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import sbi_exsitu.data.simulate as sim
from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import OPTIONAL_LABELS, DatasetError, MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate, views_for_fex
from sbi_exsitu.schema import ConfigError
from tests._h5 import assert_same_h5

SMALL = {
    "simulate": {"model": "tng-like", "n_galaxies": 5, "seed": 3},
    "model": {"max_particles": 3000, "min_particles": 3000},
    "render": {"resolution": 16},
}


def _config(**simulate_overrides) -> SimulationConfig:
    doc = {k: dict(v) for k, v in SMALL.items()}
    doc["simulate"].update(simulate_overrides)
    return SimulationConfig.from_dict(doc, where="test.toml")


@pytest.fixture(scope="module")
def serial_file(tmp_path_factory) -> Path:
    return simulate(
        _config(), tmp_path_factory.mktemp("serial") / "d.h5", progress=False
    )


def test_dataset_has_balanced_views_and_exact_labels(serial_file: Path) -> None:
    cfg = _config()
    with MapDataset(serial_file) as ds:
        gid = ds.labels["galaxy_id"]
        assert list(np.unique(gid)) == list(range(5))
        assert np.all(np.diff(gid) >= 0)  # written in index order
        for g in range(5):
            sel = gid == g
            f_ex = ds.labels["f_ex"][sel][0]
            assert sel.sum() == views_for_fex(f_ex)
            particles, info = sim.draw_galaxy(cfg, g)
            assert f_ex == info["f_ex"] == pytest.approx(particles.f_ex, abs=1e-12)
            assert ds.labels["log_mstar"][sel][0] == pytest.approx(particles.log_mstar)
            for key in OPTIONAL_LABELS:  # the merger-history summaries
                assert np.all(ds.labels[key][sel] == info[key]), key
        assert set(ds.labels["model"]) == {"tng-like"}
        assert ds.attrs["simulation"]["simulate"]["seed"] == 3
        assert ds.render_config == cfg.render


def test_views_for_fex_balances_towards_high_fex() -> None:
    counts = [views_for_fex(f) for f in np.linspace(0, 1, 11)]
    assert counts == sorted(counts) and counts[0] == 4 and counts[-1] == 20
    assert views_for_fex(0.5, edges=(0.5,), views=(6, 12)) == 12


def test_fixed_views(tmp_path: Path) -> None:
    out = simulate(_config(views=6, n_galaxies=2), tmp_path / "d.h5", progress=False)
    with MapDataset(out) as ds:
        assert len(ds) == 12 and list(ds.labels["view_id"][:6]) == list(range(6))


def test_workers_give_identical_file(serial_file: Path, tmp_path: Path) -> None:
    out = simulate(_config(), tmp_path / "d.h5", workers=2, progress=False)
    assert_same_h5(serial_file, out)


def test_dask_local_cluster_gives_identical_file(
    serial_file: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        out = simulate(
            _config(),
            tmp_path / "d.h5",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert_same_h5(serial_file, out)


def test_resume_after_interruption_gives_identical_file(
    serial_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sim._simulate_galaxy

    def crash_at_3(index, **kwargs):
        if index == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C
        return real(index, **kwargs)

    out = tmp_path / "d.h5"
    monkeypatch.setattr(sim, "_simulate_galaxy", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        simulate(_config(), out, progress=False)
    monkeypatch.setattr(sim, "_simulate_galaxy", real)
    assert not out.exists()
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial, "r") as h5:
        assert set(h5["labels/galaxy_id"][:]) == {0, 1, 2}
    with pytest.raises(DatasetError, match="resume"):
        simulate(_config(), out, progress=False)
    simulate(_config(), out, resume=True, progress=False)
    assert_same_h5(serial_file, out)


def test_resume_can_extend_and_refuses_other_settings(
    serial_file: Path, tmp_path: Path
) -> None:
    out = simulate(_config(n_galaxies=2), tmp_path / "d.h5", progress=False)
    with pytest.raises(DatasetError, match="differs"):
        simulate(_config(seed=4), out, resume=True, progress=False)
    simulate(_config(n_galaxies=5), out, resume=True, progress=False)
    assert_same_h5(serial_file, out)


def test_existing_output_is_never_overwritten_silently(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    out.write_bytes(b"precious")
    with pytest.raises(DatasetError, match=r"overwrite=True") as err:
        simulate(_config(n_galaxies=1), out, progress=False)
    assert "--overwrite" in err.value.cli_message  # the CLI's own wording
    assert out.read_bytes() == b"precious"
    simulate(_config(n_galaxies=1), out, overwrite=True, progress=False)
    assert len(MapDataset(out)) > 0


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"simulat": {}}, r"unknown key 'simulat'.*'simulate'"),
        ({"simulate": {"n_galaxy": 3}}, r"\[simulate\].*'n_galaxy'.*'n_galaxies'"),
        ({"simulate": {"model": "tng"}}, r"unknown formation model 'tng'.*eagle-like"),
        ({"model": {"particle_mas": 1e6}}, r"\[model\].*'particle_mas'.*particle_mass"),
        ({"model": {"particle_mass": -5.0}}, r"\[model\].*particle_mass.*range"),
        ({"render": {"resolutin": 64}}, r"\[render\].*'resolutin'.*'resolution'"),
        ({"simulate": {"views": 5}}, r"'views' is 5"),
        ({"simulate": {"n_galaxies": 0}}, r"'n_galaxies' is 0"),
        ({"simulate": {"balance_views": [4, 6]}}, r"balance_views"),
    ],
)
def test_config_errors_name_the_key(doc, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SimulationConfig.from_dict(doc, where="x.toml")


def test_unrenderable_galaxy_names_the_galaxy(tmp_path: Path) -> None:
    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"n_galaxies": 1, "views": 4},
            "model": {"max_particles": 200, "min_particles": 200},
            "render": {"resolution": 128, "min_pixels": 2000},
        }
    )
    with pytest.raises(sim.SimulationError, match="galaxy 0.*min_particles"):
        simulate(cfg, tmp_path / "d.h5", progress=False)


def test_cli_simulate(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[simulate]\nmodel = "eagle-like"\nn_galaxies = 2\nseed = 1\n'
        "[model]\nmax_particles = 3000\n[render]\nresolution = 16\n"
    )
    out = tmp_path / "d.h5"
    runner = CliRunner()
    result = runner.invoke(
        app, ["simulate", str(config), "-o", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 galaxies" in result.output and out.exists()
    again = runner.invoke(app, ["simulate", str(config), "-o", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[simulate]\nmodle = "tng-like"\n')
    result = runner.invoke(app, ["simulate", str(bad), "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 2 and "did you mean 'model'" in result.output.lower()


def test_a_finished_dataset_is_reused_read_only(tmp_path) -> None:
    # Parallel jobs sharing a training set: the reuse must neither rename nor lock
    # the file (a resume of a finished file moves it to .partial while it runs).
    import os

    cfg = SimulationConfig.from_dict(
        {
            "simulate": {"n_galaxies": 2, "views": 4, "seed": 3},
            "model": {"max_particles": 2000, "min_particles": 2000},
            "render": {"resolution": 8, "min_pixels": 1},
        }
    )
    out = simulate(cfg, tmp_path / "d.h5", progress=False)
    before = os.stat(out)
    with h5py.File(out, "r"):  # another reader holds it open
        assert simulate(cfg, out, resume=True, progress=False) == out
    after = os.stat(out)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    other = SimulationConfig.from_dict(
        {**cfg.to_dict(), "model": {"max_particles": 2000, "min_particles": 1999}}
    )
    with pytest.raises(DatasetError, match="differs"):
        simulate(other, out, resume=True, progress=False)
    assert out.exists() and not out.with_name(out.name + ".partial").exists()


def test_a_file_with_variable_length_model_labels_still_resumes(tmp_path) -> None:
    # Files written before the fixed-length "model" label (a SIGKILL could corrupt
    # the variable-length strings' heap) keep their dtype when extended.
    def cfg(n: int) -> SimulationConfig:
        return SimulationConfig.from_dict(
            {
                "simulate": {"n_galaxies": n, "views": 4, "seed": 3},
                "model": {"max_particles": 2000, "min_particles": 2000},
                "render": {"resolution": 8, "min_pixels": 1},
            }
        )

    out = simulate(cfg(2), tmp_path / "d.h5", progress=False)
    with h5py.File(out, "a") as h5:
        names = h5["labels/model"][:]
        del h5["labels/model"]
        h5.create_dataset(
            "labels/model",
            data=names.astype(object),
            dtype=h5py.string_dtype(),
            maxshape=(None,),
            chunks=(4096,),
        )
    simulate(cfg(3), out, resume=True, progress=False)
    with MapDataset(out) as ds:
        assert set(ds.labels["model"].tolist()) == {"tng-like"}
        assert sorted(set(ds.labels["galaxy_id"].tolist())) == [0, 1, 2]
    with h5py.File(out, "r") as h5:
        assert h5["labels/model"].dtype.kind == "O"


def test_stored_simulation_redraws_exactly_under_later_defaults(tmp_path) -> None:
    from sbi_exsitu.data.simulate import stored_simulation
    from sbi_exsitu.schema import ConfigError

    cfg = sim.SimulationConfig.from_dict(
        {
            "simulate": {"n_galaxies": 2, "seed": 4, "views": 4},
            "model": {"max_particles": 3000, "debris_tracers": 256},
            "render": {"resolution": 16},
        }
    )
    path = sim.simulate(cfg, tmp_path / "d.h5", progress=False)
    with MapDataset(path) as ds:
        attrs = ds.attrs
        r_e = ds.labels["half_mass_radius"][ds.labels["galaxy_id"] == 1][0]
    again = stored_simulation(attrs)
    assert again.model_params["debris_scheme"] == 2
    assert sim.draw_galaxy(again, 1)[1]["half_mass_radius"] == r_e
    # A dataset from before `debris_scheme` existed re-draws with scheme 1.
    params = dict(attrs["model_params"])
    params.pop("debris_scheme")
    old = stored_simulation({**attrs, "model_params": params})
    assert old.model_params["debris_scheme"] == 1
    with pytest.raises(ConfigError, match="no 'simulation' config"):
        stored_simulation({})
