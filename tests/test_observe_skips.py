"""Observed views with too few valid pixels are skipped and counted, not fatal."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import sbi_exsitu.data.simulate as sim
from sbi_exsitu.cli import app
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.data.observe.distance import kpc_per_arcsec
from sbi_exsitu.data.observe.footprint import choose_bundle
from sbi_exsitu.data.observe.stage import galaxy_redshift
from sbi_exsitu.data.simulate import SimulationConfig, draw_galaxy, simulate
from sbi_exsitu.data.skips import SKIPPED, keep_mask
from sbi_exsitu.data.splits import split_by_galaxy
from sbi_exsitu.errors import ObservationError, SimulationError
from tests._h5 import assert_same_h5

N_GALAXIES, N_VIEWS = 6, 4


def _doc(min_pixels: int, **simulate) -> dict:
    return {
        "simulate": {"n_galaxies": N_GALAXIES, "views": N_VIEWS, "seed": 5} | simulate,
        "model": {"max_particles": 3000, "min_particles": 3000},
        "render": {"resolution": 16, "min_pixels": min_pixels},
        "observe": {"redshift": [0.02, 0.1]},
    }


def _config(min_pixels: int, **simulate) -> SimulationConfig:
    return SimulationConfig.from_dict(_doc(min_pixels, **simulate))


@pytest.fixture(scope="module")
def valid_pixels() -> np.ndarray:
    """(galaxy, view) valid-pixel counts with nothing skipped (min_pixels = 1)."""
    from sbi_exsitu.data.observe.stage import render_observed_views

    cfg = _config(1)
    out = np.empty((N_GALAXIES, N_VIEWS), np.int64)
    for i in range(N_GALAXIES):
        p, _ = draw_galaxy(cfg, i)
        v = render_observed_views(p, cfg.render, cfg.render.observe, N_VIEWS, 5, i)
        out[i] = v.mask.sum(axis=(1, 2))
    return out


@pytest.fixture(scope="module")
def min_pixels(valid_pixels: np.ndarray) -> int:
    """A threshold that drops some galaxies whole and skips some views only."""
    lowest = valid_pixels.min(axis=1)
    for m in np.unique(valid_pixels) + 1:
        gone = valid_pixels < m
        some = gone.any(axis=1) & ~gone.all(axis=1)
        if gone.all(axis=1).any() and some.any() and gone.mean() < 0.7:
            return int(m)
    pytest.skip(f"no threshold gives both kinds of skip: {lowest}")


@pytest.fixture(scope="module")
def full(tmp_path_factory, min_pixels: int) -> Path:
    out = tmp_path_factory.mktemp("skips") / "d.h5"
    return simulate(_config(min_pixels, max_skipped_fraction=0.9), out, progress=False)


def test_skips_are_counted_and_the_dataset_is_usable(
    full: Path, valid_pixels: np.ndarray, min_pixels: int
) -> None:
    gone = valid_pixels < min_pixels
    with MapDataset(full) as ds:
        want = {tuple(r) for r in np.argwhere(gone).tolist()}
        assert {tuple(r) for r in ds.skipped_views.tolist()} == want
        summary = ds.skip_summary()
        assert summary.n_views_skipped == gone.sum()
        assert summary.n_views_attempted == N_GALAXIES * N_VIEWS
        dropped = tuple(np.flatnonzero(gone.all(axis=1)).tolist())
        assert summary.dropped_galaxies == dropped
        assert ds.attrs["n_skipped"] == gone.sum()
        assert ds.attrs["n_dropped"] == len(dropped)
        # The kept views are exactly the others, each with its own mask.
        assert len(ds) == (~gone).sum()
        pairs = np.c_[ds.labels["galaxy_id"], ds.labels["view_id"]].tolist()
        kept = {tuple(r) for r in pairs}
        assert kept == {tuple(r) for r in np.argwhere(~gone).tolist()}
        counts = ds.mask(np.arange(len(ds))).sum(axis=(1, 2))
        g, v = ds.labels["galaxy_id"], ds.labels["view_id"]
        np.testing.assert_array_equal(counts, valid_pixels[g, v])
        assert np.all(counts >= min_pixels)


def test_kept_views_are_the_maps_a_run_without_skips_makes(
    full: Path, tmp_path: Path
) -> None:
    every = simulate(_config(1), tmp_path / "all.h5", progress=False)
    with MapDataset(full) as ds, MapDataset(every) as ref:
        assert len(ref.skipped_views) == 0
        with h5py.File(every) as h5:  # no skip: no table, no attributes
            assert SKIPPED not in h5 and "n_skipped" not in h5.attrs
        sel = np.flatnonzero(
            keep_mask(ref.labels["galaxy_id"], ref.labels["view_id"], ds.skipped_views)
        )
        assert len(sel) == len(ds)
        # min_pixels differs, so only the masks and targets can be compared
        # exactly; the preprocessing of the kept pixels is the same.
        np.testing.assert_array_equal(ref.mask(sel), ds.mask(np.arange(len(ds))))
        np.testing.assert_array_equal(ref.exsitu(sel), ds.exsitu(np.arange(len(ds))))
        np.testing.assert_array_equal(ref.maps(sel), ds.maps(np.arange(len(ds))))


def test_dropped_galaxies_move_no_other_galaxy_to_another_split(full: Path) -> None:
    ids = np.arange(N_GALAXIES)
    with MapDataset(full) as ds:
        assert ds.skip_summary().dropped_galaxies
        for seed in range(5):
            ref = split_by_galaxy(ids, seed=seed)
            side = {int(ids[i]): k for k, idx in ref.items() for i in idx}
            for name, idx in ds.splits(seed=seed).items():
                galaxies = set(ds.labels["galaxy_id"][idx].tolist())
                assert all(side[g] == name for g in galaxies), (seed, name)


def test_too_many_skips_fail_early_and_resume_with_a_higher_threshold(
    full: Path, tmp_path: Path, min_pixels: int
) -> None:
    out = tmp_path / "d.h5"
    with pytest.raises(SimulationError) as err:
        simulate(_config(min_pixels, max_skipped_fraction=0.05), out, progress=False)
    msg = str(err.value)
    assert "max_skipped_fraction = 0.05" in msg and "dropped" in msg
    assert "size_matched" in msg and "snr_at_re" in msg and "--resume" in msg
    assert not out.exists()
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial) as h5:
        done = set(h5["labels/galaxy_id"][:].tolist()) | set(h5[SKIPPED][:, 0])
    assert done and len(done) < N_GALAXIES  # stopped before the end
    cfg = _config(min_pixels, max_skipped_fraction=0.9)
    simulate(cfg, out, resume=True, progress=False)
    assert_same_h5(full, out)


def test_resume_after_interruption_keeps_the_skip_records(
    full: Path,
    tmp_path: Path,
    min_pixels: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = sim._simulate_galaxy

    def crash_at_last(index, **kwargs):
        if index == N_GALAXIES - 1:
            raise KeyboardInterrupt
        return real(index, **kwargs)

    out = tmp_path / "d.h5"
    cfg = _config(min_pixels, max_skipped_fraction=0.9)
    monkeypatch.setattr(sim, "_simulate_galaxy", crash_at_last)
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, out, progress=False)
    monkeypatch.setattr(sim, "_simulate_galaxy", real)
    calls = []
    monkeypatch.setattr(
        sim, "_simulate_galaxy", lambda i, **kw: calls.append(i) or real(i, **kw)
    )
    simulate(cfg, out, resume=True, progress=False)
    assert calls == [N_GALAXIES - 1]  # dropped galaxies are not redone
    assert_same_h5(full, out)


def test_idealised_too_few_pixels_is_still_an_error(tmp_path: Path) -> None:
    doc = _doc(2000)
    del doc["observe"]
    with pytest.raises(SimulationError, match="galaxy 0.*min_particles"):
        simulate(SimulationConfig.from_dict(doc), tmp_path / "d.h5", progress=False)


def test_idealised_files_carry_no_skip_records(tmp_path: Path) -> None:
    doc = _doc(16)
    del doc["observe"]
    out = simulate(SimulationConfig.from_dict(doc), tmp_path / "d.h5", progress=False)
    with h5py.File(out) as h5:
        assert SKIPPED not in h5 and "n_skipped" not in h5.attrs
        assert "max_skipped_fraction" not in h5.attrs["simulation"]


def test_cli_prints_the_skip_count(tmp_path: Path, min_pixels: int) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f"[simulate]\nn_galaxies = {N_GALAXIES}\nviews = {N_VIEWS}\nseed = 5\n"
        "max_skipped_fraction = 0.9\n"
        "[model]\nmax_particles = 3000\nmin_particles = 3000\n"
        f"[render]\nresolution = 16\nmin_pixels = {min_pixels}\n"
        "[observe]\nredshift = [0.02, 0.1]\n"
    )
    out = tmp_path / "d.h5"
    result = CliRunner().invoke(
        app, ["simulate", str(config), "-o", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    with MapDataset(out) as ds:
        n = ds.skip_summary().n_views_skipped
    assert f"skipped {n} of {N_GALAXIES * N_VIEWS} views" in result.output


def test_max_skipped_fraction_is_checked() -> None:
    with pytest.raises(Exception, match="max_skipped_fraction"):
        _config(16, max_skipped_fraction=1.5)


def test_size_matched_redshift_fits_the_drawn_bundle() -> None:
    cfg = ObserveConfig(redshift=(0.01, 0.15), size_matched=True, coverage_re=1.5)
    assert "size_matched" not in ObserveConfig().to_dict()  # old JSON unchanged
    assert ObserveConfig.from_json(cfg.to_json()) == cfg
    for r_e in (1.5, 4.0, 9.0):
        bundles = set()
        for galaxy in range(40):
            z = galaxy_redshift(cfg, 0, galaxy, r_e)
            assert 0.01 <= z <= 0.15
            assert z == galaxy_redshift(cfg, 0, galaxy, r_e)  # seeded
            r_e_arcsec = r_e / kpc_per_arcsec(z)
            n, across = choose_bundle(r_e_arcsec, 1.5)
            bundles.add(n)
            if 0.01 < z < 0.15:  # not clipped: the bundle reaches 1.5 r_e exactly
                assert 0.5 * across == pytest.approx(1.5 * r_e_arcsec, rel=1e-3)
        assert len(bundles) > 1  # bundles are drawn, not always the largest
    with pytest.raises(ObservationError, match="size_matched"):
        ObserveConfig(redshift=0.03, size_matched=True)


def test_size_matched_from_toml_and_through_simulate(tmp_path: Path) -> None:
    doc = _doc(16)
    doc["observe"] = {"redshift": [0.01, 0.15], "size_matched": True}
    cfg = SimulationConfig.from_dict(doc)
    assert cfg.render.observe.size_matched is True
    out = simulate(cfg, tmp_path / "d.h5", progress=False)
    with MapDataset(out) as ds:
        assert ds.render_config.observe == cfg.render.observe
        assert len(ds) + len(ds.skipped_views) == N_GALAXIES * N_VIEWS
    with pytest.raises(Exception, match="size_matched"):
        SimulationConfig.from_dict(_doc(16) | {"observe": {"size_matched": True}})


def test_subsampled_observed_views_are_skipped_and_counted_too(
    tmp_path: Path, valid_pixels: np.ndarray
) -> None:
    # particle_subsample renders one view at a time: the skip bookkeeping must
    # name each view by its own number, not by its place in the kept list.
    cfg = _config(
        int(np.median(valid_pixels)),
        max_skipped_fraction=0.95,
        particle_subsample=[0.5, 1.0],
    )
    out = simulate(cfg, tmp_path / "sub.h5", progress=False)
    with MapDataset(out) as ds:
        skipped = {tuple(r) for r in ds.skipped_views.tolist()}
        pairs = np.c_[ds.labels["galaxy_id"], ds.labels["view_id"]].tolist()
        kept = {tuple(r) for r in pairs}
        assert skipped and kept
        assert not skipped & kept
        every = {(g, v) for g in range(N_GALAXIES) for v in range(N_VIEWS)}
        assert skipped | kept == every
        assert ds.skip_summary().n_views_skipped == len(skipped)
        counts = ds.mask(np.arange(len(ds))).sum(axis=(1, 2))
        assert np.all(counts >= cfg.render.min_pixels)
