"""Tests of sbi_exsitu.data.render_files and the ``sbi-exsitu render`` command."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.readers.fixtures import (
    symmetric_galaxy,
    write_eagle_file,
    write_insitu_flags,
    write_offsets,
    write_subhalo_json,
    write_tng_cutout,
)
from sbi_exsitu.data.render import RenderConfig, render_views
from sbi_exsitu.data.render_files import render_files

CONFIG = RenderConfig(resolution=16, min_pixels=4)


def galaxy(seed: int, **kw):
    return symmetric_galaxy(1500, seed=seed, half_mass_radius=3.0, max_age=9.0, **kw)


def test_fixture_renders_like_the_particles_themselves(tmp_path: Path) -> None:
    p = galaxy(0, centre=(500.0, 20.0, 30.0), systemic_velocity=(50.0, 0.0, 0.0))
    fx = write_tng_cutout(tmp_path / "cutout_0.hdf5", p, n_wind=20)
    write_subhalo_json(tmp_path / "cutout_0.json", p)
    write_insitu_flags(tmp_path / "cutout_0_flags.hdf5", fx.insitu, fx.particle_ids)
    s = render_files(
        [fx.path],
        tmp_path / "maps.h5",
        config=CONFIG,
        views=6,
        flags=str(tmp_path / "{stem}_flags.hdf5"),
    )
    assert (s.n_galaxies, s.n_views, s.n_labelled, s.failures) == (1, 6, 1, [])
    direct = render_views(p, CONFIG, 6)
    with MapDataset(tmp_path / "maps.h5") as ds:
        np.testing.assert_array_equal(ds.mask(slice(None)), direct.mask)
        np.testing.assert_allclose(ds.maps(slice(None)), direct.maps, atol=1e-4)
        np.testing.assert_allclose(ds.exsitu(slice(None)), direct.exsitu, atol=1e-6)
        assert ds.labels["f_ex"] == pytest.approx(np.full(6, p.f_ex), rel=1e-6)
        assert ds.labels["log_mstar"] == pytest.approx(np.full(6, p.log_mstar))
        assert ds.labels["half_mass_radius"] == pytest.approx(np.full(6, 3.0))
        assert set(ds.labels["model"].tolist()) == {"TNG"}


def test_bad_files_are_reported_and_skipped(tmp_path: Path) -> None:
    good = write_tng_cutout(tmp_path / "cutout_1.hdf5", galaxy(1)).path
    (tmp_path / "broken.hdf5").write_text("not an HDF5 file")
    windy = galaxy(2)
    write_tng_cutout(tmp_path / "cutout_2.hdf5", windy)
    with h5py.File(tmp_path / "cutout_2.hdf5", "a") as f:
        f["PartType4/GFM_StellarFormationTime"][...] = -0.5  # only wind cells
    write_eagle_file(tmp_path / "eagle.hdf5", galaxy(3, exsitu_fraction=None))
    paths = [
        good,
        tmp_path / "broken.hdf5",
        tmp_path / "cutout_2.hdf5",
        tmp_path / "eagle.hdf5",
    ]
    s = render_files(paths, tmp_path / "maps.h5", config=CONFIG, views=4)
    assert (s.n_galaxies, s.n_views, s.n_labelled) == (2, 8, 0)
    failed = {Path(f.path).name: f.error for f in s.failures}
    assert set(failed) == {"broken.hdf5", "cutout_2.hdf5"}
    assert "cannot open as HDF5" in failed["broken.hdf5"]
    assert "GFM_StellarFormationTime" in failed["cutout_2.hdf5"]
    with MapDataset(tmp_path / "maps.h5") as ds:
        assert ds.labels["galaxy_id"].tolist() == [0] * 4 + [3] * 4
        assert ds.labels["model"].tolist() == ["TNG"] * 4 + ["EAGLE"] * 4
        # Unlabelled observations: no f_ex and no ex-situ map.
        assert np.isnan(ds.labels["f_ex"]).all() and not ds.has_labels
        assert np.isnan(ds.exsitu(slice(None))).all()
        assert ds.attrs["files"] == [str(p) for p in paths]


def test_offsets_workers_and_resume(tmp_path: Path) -> None:
    gals = [galaxy(k) for k in range(3)]
    fixtures, start, offsets = [], 0, []
    for k, g in enumerate(gals):
        fx = write_tng_cutout(
            tmp_path / f"cutout_{k}.hdf5", g, cutout_id=k, n_wind=5, first_id=start + 1
        )
        fixtures.append(fx)
        offsets.append([0, 0, 0, 0, start, 0])
        start += len(fx.insitu)
    stars = write_insitu_flags(
        tmp_path / "stars_099.hdf5",
        np.concatenate([f.insitu for f in fixtures]),
        np.concatenate([f.particle_ids for f in fixtures]),
    )
    off = write_offsets(tmp_path / "offsets_099.hdf5", np.array(offsets))
    paths = [f.path for f in fixtures]
    kw = dict(config=CONFIG, views=4, flags=stars, offsets=off)
    s = render_files(paths[:2], tmp_path / "a.h5", **kw)
    assert s.n_labelled == 2
    # Resume with the full list of files: only the third one is rendered.
    with pytest.raises(Exception, match="cannot resume, attribute 'files'"):
        render_files(paths, tmp_path / "a.h5", resume=True, **kw)
    s2 = render_files(paths, tmp_path / "b.h5", workers=2, **kw)
    assert s2.n_galaxies == 3
    with MapDataset(tmp_path / "a.h5") as a, MapDataset(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a.maps(slice(None)), b.maps(slice(0, 8)))
        f_ex = b.labels["f_ex"][::4]
        np.testing.assert_allclose(f_ex, [g.f_ex for g in gals], rtol=1e-6)


def test_resume_skips_finished_galaxies(tmp_path: Path) -> None:
    paths = [
        write_tng_cutout(tmp_path / f"cutout_{k}.hdf5", galaxy(k)).path
        for k in range(2)
    ]
    render_files(paths, tmp_path / "m.h5", config=CONFIG, views=4)
    s = render_files(paths, tmp_path / "m.h5", config=CONFIG, views=4, resume=True)
    assert (s.n_resumed, s.n_galaxies) == (2, 0)
    with pytest.raises(ValueError, match="views is 5"):
        render_files(paths, tmp_path / "x.h5", views=5)


def test_cli_render(tmp_path: Path) -> None:
    from sbi_exsitu.cli import app

    good = write_tng_cutout(tmp_path / "cutout_1.hdf5", galaxy(1)).path
    (tmp_path / "bad.hdf5").write_text("junk")
    (tmp_path / "render.toml").write_text("[render]\nresolution = 16\nmin_pixels = 4\n")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "render",
            str(good),
            str(tmp_path / "bad.hdf5"),
            "-o",
            str(tmp_path / "d.h5"),
            "--views",
            "4",
            "--config",
            str(tmp_path / "render.toml"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "skipped" in res.output and "bad.hdf5" in res.output
    assert "wrote 1 galaxies (4 views, 0 labelled, 1 unlabelled)" in res.output
    with MapDataset(tmp_path / "d.h5") as ds:
        assert ds.shape[-1] == 16 and len(ds) == 4
    res = runner.invoke(
        app, ["render", str(good), "-o", str(tmp_path / "e.h5"), "--offsets", "o.hdf5"]
    )
    assert res.exit_code == 2 and "--offsets needs --flags" in res.output
    (tmp_path / "typo.toml").write_text("[render]\nresolutoin = 16\n")
    res = runner.invoke(
        app,
        [
            "render",
            str(good),
            "-o",
            str(tmp_path / "e.h5"),
            "--config",
            str(tmp_path / "typo.toml"),
        ],
    )
    assert res.exit_code == 2 and "resolution" in res.output


def test_max_particles_caps_each_galaxy_keeping_its_labels(tmp_path: Path) -> None:
    p = galaxy(5)  # 3,001 particles with ex-situ flags
    fx = write_tng_cutout(tmp_path / "cutout_5.hdf5", p)
    write_insitu_flags(tmp_path / "cutout_5_flags.hdf5", fx.insitu, fx.particle_ids)
    kw = dict(config=CONFIG, views=4, flags=str(tmp_path / "{stem}_flags.hdf5"))
    full = render_files([fx.path], tmp_path / "full.h5", **kw)
    a = render_files([fx.path], tmp_path / "a.h5", max_particles=750, **kw)
    again = render_files([fx.path], tmp_path / "again.h5", max_particles=750, **kw)
    other = render_files([fx.path], tmp_path / "b.h5", max_particles=750, seed=1, **kw)
    assert a.provenance[str(fx.path)]["particles"] == f"{len(p)} -> 750 (max_particles)"
    assert "particles" not in full.provenance[str(fx.path)]
    with (
        MapDataset(tmp_path / "full.h5") as f,
        MapDataset(tmp_path / "a.h5") as d,
        MapDataset(tmp_path / "again.h5") as e,
        MapDataset(tmp_path / "b.h5") as o,
    ):
        assert (f.particle_cap, d.particle_cap) == (None, 750)
        # The labels are the full galaxy's: the cap changes the maps only.
        for key in ("f_ex", "log_mstar", "half_mass_radius"):
            np.testing.assert_array_equal(d.labels[key], f.labels[key])
        assert not np.allclose(d.maps(slice(None)), f.maps(slice(None)))
        np.testing.assert_array_equal(d.maps(slice(None)), e.maps(slice(None)))
        assert not np.array_equal(d.maps(slice(None)), o.maps(slice(None)))
    assert (again.n_galaxies, other.n_galaxies) == (1, 1)
    with pytest.raises(ValueError, match="max_particles is 0"):
        render_files([fx.path], tmp_path / "c.h5", max_particles=0, **kw)


def test_particle_cap_warning_names_the_fix(tmp_path: Path) -> None:
    from sbi_exsitu.data.compatibility import particle_cap_warning

    fx = write_tng_cutout(tmp_path / "cutout_6.hdf5", galaxy(6))
    render_files([fx.path], tmp_path / "raw.h5", config=CONFIG, views=4)
    render_files(
        [fx.path], tmp_path / "cap.h5", config=CONFIG, views=4, max_particles=1000
    )
    with MapDataset(tmp_path / "raw.h5") as raw, MapDataset(tmp_path / "cap.h5") as cap:
        msg = particle_cap_warning(1000, raw, "runs/x")
        assert "no particle cap" in msg and "--like runs/x" in msg
        assert particle_cap_warning(1000, cap) is None
        assert "a cap of 1000" in particle_cap_warning(500, cap)
        assert particle_cap_warning(None, raw) is None  # the run had no cap
