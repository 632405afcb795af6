"""Tests for :mod:`sbi_exsitu.data.dataset`."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sbi_exsitu.data.dataset import (
    LABELS,
    SCHEMA_VERSION,
    DatasetError,
    DatasetWriter,
    MapDataset,
    split_by_galaxy,
)
from sbi_exsitu.data.render import RenderConfig, RenderedViews

CONFIG = RenderConfig(resolution=8, min_pixels=1)


def views(galaxy_id: int, n_views: int = 3, config: RenderConfig = CONFIG):
    """Deterministic fake views: every value encodes galaxy and view."""
    rng = np.random.default_rng(galaxy_id)
    n, c = config.resolution, config.n_channels
    return RenderedViews(
        maps=rng.normal(size=(n_views, c, n, n)).astype(np.float32),
        exsitu=rng.uniform(size=(n_views, n, n)).astype(np.float32),
        mask=rng.random((n_views, n, n)) < 0.7,
        directions=np.eye(3)[:n_views] if n_views <= 3 else np.ones((n_views, 3)),
    )


def labels(galaxy_id: int) -> dict:
    return {
        "galaxy_id": galaxy_id,
        "f_ex": galaxy_id / 10,
        "log_mstar": 10 + galaxy_id / 100,
        "half_mass_radius": 1.0 + galaxy_id,
        "model": f"model-{galaxy_id % 2}",
    }


def write(path, ids, **kw):
    with DatasetWriter(path, CONFIG, **kw) as w:
        for g in ids:
            w.add_galaxy(views(g), **labels(g))


def contents(path) -> dict:
    with h5py.File(path, "r") as h5:
        out = {k: h5[k][:] for k in ("maps", "exsitu", "mask")}
        out.update({k: h5[f"labels/{k}"][:] for k in LABELS})
        out.update({f"attr:{k}": v for k, v in h5.attrs.items()})
    return out


def assert_same_file(a, b):
    ca, cb = contents(a), contents(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)


def test_round_trip(tmp_path):
    path = tmp_path / "d.h5"
    with DatasetWriter(path, CONFIG, attrs={"simulate": {"n": 4}}) as w:
        for g in range(4):
            w.add_galaxy(views(g, n_views=2 + g), **labels(g))
        assert len(w) == 2 + 3 + 4 + 5
    assert not (tmp_path / "d.h5.partial").exists()
    ds = MapDataset(path, expect_config=CONFIG)
    assert len(ds) == 14 and ds.shape == (5, 8, 8)
    assert ds.render_config == CONFIG
    assert ds.attrs["simulate"] == {"n": 4} and ds.attrs["schema_version"] == 1
    assert ds.has_labels
    start = 0
    for g in range(4):
        v = views(g, n_views=2 + g)
        sl = slice(start, start + len(v))
        np.testing.assert_array_equal(ds.maps(sl), v.maps)
        np.testing.assert_array_equal(ds.exsitu(sl), v.exsitu)
        np.testing.assert_array_equal(ds.mask(sl), v.mask)
        for key, value in labels(g).items():
            assert np.all(ds.labels[key][sl] == value), key
        np.testing.assert_array_equal(ds.labels["view_id"][sl], np.arange(len(v)))
        start += len(v)
    assert ds.labels["model"].dtype.kind == "U"
    assert "n=14" in repr(ds)
    ds.close()


def test_reader_streams_any_order(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(5))
    with MapDataset(path) as ds:
        everything = ds.maps(slice(None))
        for order in ([3, 1, 3, 0], [14, 0, 7], np.array([2, 2, 2]), []):
            got = ds.maps(order)
            assert got.shape == (len(order), 5, 8, 8)
            np.testing.assert_array_equal(got, everything[np.asarray(order, int)])
        np.testing.assert_array_equal(ds.exsitu([4, 1]), ds.exsitu(slice(None))[[4, 1]])
        seen = np.concatenate([idx for idx, _ in ds.iter_batches(batch_size=4)])
        np.testing.assert_array_equal(seen, np.arange(15))
        batches = list(ds.iter_batches(np.array([9, 2, 5]), batch_size=2))
        np.testing.assert_array_equal(batches[0][1], everything[[9, 2]])
        with pytest.raises(IndexError, match=r"d\.h5: index out of range \[0, 15\)"):
            ds.maps([15])
        # One sample per chunk: reading one sample never decompresses others.
        assert ds._h5["maps"].chunks == (1, 5, 8, 8)


def test_resume_after_a_crash(tmp_path):
    reference = tmp_path / "ref.h5"
    write(reference, range(5))
    path = tmp_path / "d.h5"
    partial = tmp_path / "d.h5.partial"
    with pytest.raises(RuntimeError, match="killed"):
        with DatasetWriter(path, CONFIG) as w:
            for g in range(2):
                w.add_galaxy(views(g), **labels(g))
            # Half a galaxy lands on disk before the crash.
            w._h5["maps"].resize(8, axis=0)
            raise RuntimeError("killed")
    assert partial.exists() and not path.exists()
    with pytest.raises(DatasetError, match="interrupted .partial"):
        MapDataset(path)
    with DatasetWriter(path, CONFIG, resume=True) as w:
        assert len(w) == 6
        done = w.completed_galaxies()
        assert done == {0, 1}
        for g in range(5):
            if g not in done:
                w.add_galaxy(views(g), **labels(g))
    assert path.exists() and not partial.exists()
    assert_same_file(path, reference)


def test_resume_a_finished_file_appends(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(2))
    write(path, range(2, 5), resume=True)
    reference = tmp_path / "ref.h5"
    write(reference, range(5))
    assert_same_file(path, reference)


def test_existing_file_needs_resume_or_overwrite(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(2))
    with pytest.raises(DatasetError, match=r"d\.h5 exists; resume it"):
        DatasetWriter(path, CONFIG)
    write(path, [7], overwrite=True)
    with MapDataset(path) as ds:
        assert set(ds.labels["galaxy_id"]) == {7}


def test_resume_with_another_config_names_the_field(tmp_path):
    path = tmp_path / "d.h5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, CONFIG) as w:
            w.add_galaxy(views(0), **labels(0))
            raise RuntimeError
    other = RenderConfig(resolution=8, min_pixels=1, smooth_sigma=1.0)
    with pytest.raises(DatasetError, match="smooth_sigma: 1.0 != 0.6"):
        DatasetWriter(path, other, resume=True)
    seeded = tmp_path / "seeded.h5"
    w = DatasetWriter(seeded, CONFIG, attrs={"seed": 1})
    w.add_galaxy(views(0), **labels(0))  # an empty .partial is removed on close
    w.close(finalize=False)
    with pytest.raises(DatasetError, match="attribute 'seed' differs"):
        DatasetWriter(seeded, CONFIG, resume=True, attrs={"seed": 2})
    DatasetWriter(seeded, CONFIG, resume=True, attrs={"seed": 1}).close()


def test_refused_resume_keeps_the_finished_file(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(2))
    other = RenderConfig(resolution=8, min_pixels=1, weighting="none")
    with pytest.raises(DatasetError, match="weighting"):
        DatasetWriter(path, other, resume=True)
    assert path.exists() and not (tmp_path / "d.h5.partial").exists()
    assert len(MapDataset(path)) == 6


def test_truncated_file(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(5))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"d\.h5: not a readable HDF5 file"):
        MapDataset(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetError, match=r"d\.h5"):
        MapDataset(path)


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(2))
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(DatasetError, match="'schema_version' is 2, expected 1"):
        MapDataset(path)
    with pytest.raises(DatasetError, match="schema_version"):
        DatasetWriter(path, CONFIG, resume=True)


def test_missing_dataset_and_missing_file(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(1))
    with h5py.File(path, "a") as h5:
        del h5["labels/f_ex"]
    with pytest.raises(DatasetError, match="'/labels/f_ex' is missing"):
        MapDataset(path)
    with pytest.raises(DatasetError, match="nope.h5: file not found"):
        MapDataset(tmp_path / "nope.h5")


def test_expect_config_names_the_field(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(1))
    other = RenderConfig(resolution=8, min_pixels=1, aperture_re=2.0)
    with pytest.raises(DatasetError, match="aperture_re: None != 2.0"):
        MapDataset(path, expect_config=other)


def test_wrong_map_shape_is_refused(tmp_path):
    with DatasetWriter(tmp_path / "d.h5", CONFIG) as w:
        bad = views(0, config=RenderConfig(resolution=16, min_pixels=1))
        with pytest.raises(DatasetError, match=r"expected \(5, 8, 8\)"):
            w.add_galaxy(bad, **labels(0))


def test_splits_by_galaxy():
    rng = np.random.default_rng(0)
    n_gal = 200
    gids = np.repeat(rng.permutation(10 * n_gal)[:n_gal], rng.integers(4, 21, n_gal))
    splits = split_by_galaxy(gids, seed=3)
    assert list(splits) == ["train", "validation", "test"]
    n_galaxies = {k: len(np.unique(gids[v])) for k, v in splits.items()}
    assert n_galaxies == {"train": 150, "validation": 20, "test": 30}
    every = np.concatenate(list(splits.values()))
    np.testing.assert_array_equal(np.sort(every), np.arange(len(gids)))
    sets = [set(gids[v]) for v in splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    again = split_by_galaxy(gids, seed=3)
    other = split_by_galaxy(gids, seed=4)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    assert not np.array_equal(splits["test"], other["test"])
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_galaxy(gids, fractions=(0.5, 0.2, 0.2))


def test_dataset_splits_match_function(tmp_path):
    path = tmp_path / "d.h5"
    write(path, range(20))
    with MapDataset(path) as ds:
        splits = ds.splits(seed=1)
        expected = split_by_galaxy(ds.labels["galaxy_id"], seed=1)
        assert all(np.array_equal(splits[k], expected[k]) for k in splits)
        assert sum(len(v) for v in splits.values()) == len(ds)


def test_assembly_labels_are_written_and_optional_on_read(tmp_path) -> None:
    """Assembly labels round-trip; files without them (older ones) still load."""
    from sbi_exsitu.data.dataset import OPTIONAL_LABELS

    cfg = RenderConfig(resolution=8, min_pixels=1)
    views = RenderedViews(
        maps=np.zeros((2, cfg.n_channels, 8, 8), np.float32),
        exsitu=np.zeros((2, 8, 8), np.float32),
        mask=np.ones((2, 8, 8), bool),
        directions=np.zeros((2, 3)),
    )
    out = tmp_path / "a.h5"
    common = {"f_ex": 0.3, "log_mstar": 10.5, "half_mass_radius": 3.0, "model": "m"}
    with DatasetWriter(out, cfg) as w:
        w.add_galaxy(views, galaxy_id=0, assembly={"last_major_mu": 0.4}, **common)
        with pytest.raises(DatasetError, match="unknown assembly labels"):
            w.add_galaxy(views, galaxy_id=1, assembly={"bogus": 1.0}, **common)
    with MapDataset(out) as ds:
        np.testing.assert_array_equal(ds.labels["last_major_mu"], [0.4, 0.4])
        assert np.isnan(ds.labels["n_accretion_events"]).all()
    with h5py.File(out, "a") as h5:  # what a file written before them looks like
        for key in OPTIONAL_LABELS:
            del h5[f"labels/{key}"]
    with MapDataset(out) as ds:
        assert len(ds) == 2 and "last_major_mu" not in ds.labels


@pytest.mark.parametrize("name", ["x" * 65, "", "modèle"])
def test_a_model_name_that_cannot_be_stored_is_refused(tmp_path, name) -> None:
    cfg = RenderConfig(resolution=8, channels=("mass",), min_pixels=1)
    views = RenderedViews(
        maps=np.zeros((1, 1, 8, 8), np.float32),
        exsitu=np.zeros((1, 8, 8), np.float32),
        mask=np.ones((1, 8, 8), bool),
        directions=np.eye(3)[:1],
    )
    with DatasetWriter(tmp_path / "d.h5", cfg) as writer:
        with pytest.raises(DatasetError, match="1-64 ASCII characters"):
            writer.add_galaxy(
                views, galaxy_id=0, f_ex=0.1, log_mstar=10.0,
                half_mass_radius=1.0, model=name,
            )  # fmt: skip
