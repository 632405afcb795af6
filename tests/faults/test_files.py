"""Issue #14: broken files are refused when read, with the file named."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sbi_exsitu.data.dataset import DatasetError, MapDataset
from sbi_exsitu.posteriors import load_posterior
from sbi_exsitu.runs import CorruptWeightsError

from .conftest import no_hang, write_maps


def _poison(path: Path, key_index: int = 0) -> str:
    """Set one floating tensor of a saved state dict to NaN; its key."""
    state = torch.load(path, weights_only=True)
    key = [k for k, v in state.items() if v.is_floating_point()][key_index]
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, path)
    return key


# -- 3. NaN weights ----------------------------------------------------------------
def test_nan_weights_of_a_scalar_run_are_refused_at_load(
    scalar_post, maps, tmp_path
) -> None:
    run = scalar_post.save(tmp_path / "run")
    key = _poison(run / "weights" / "member_0.pt", 3)
    with no_hang(60), pytest.raises(CorruptWeightsError) as err:
        load_posterior(run).sample(maps, 10)  # hung in rejection sampling
    msg = str(err.value)
    assert "member_0.pt" in msg and key in msg
    assert "sbi-exsitu fit CONFIG --overwrite" in msg


@pytest.mark.parametrize("name", ["cvae", "flow"])
def test_nan_weights_of_a_map_run_are_refused_at_load(
    map_post, maps, tmp_path, name
) -> None:
    run = map_post.save(tmp_path / "run")
    _poison(run / "weights" / f"{name}.pt")
    with no_hang(60), pytest.raises(CorruptWeightsError, match=f"{name}.pt: tensor"):
        load_posterior(run).sample(maps, 4)  # gave NaN maps silently


def test_finite_weights_load(scalar_post, map_post, maps, tmp_path) -> None:
    for k, post in enumerate((scalar_post, map_post)):
        loaded = load_posterior(post.save(tmp_path / f"run{k}"))
        assert np.isfinite(loaded.sample(maps, 4, seed=0)).all()


# -- 5. a damaged HDF5 chunk -------------------------------------------------------
def _damage_chunk(path: Path, sample: int) -> None:
    with h5py.File(path, "r") as h5:
        info = h5["maps"].id.get_chunk_info_by_coord((sample, 0, 0, 0))
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 3)
        f.write(b"\xa5" * (info.size // 3))


def test_a_damaged_chunk_names_file_and_samples(scalar_post, maps, tmp_path) -> None:
    path = write_maps(tmp_path / "damaged.h5", maps)
    _damage_chunk(path, 3)
    ds = MapDataset(path)  # labels are intact: opening works
    np.testing.assert_array_equal(ds.maps([0, 1]), maps[:2])
    with pytest.raises(DatasetError, match=r"damaged\.h5: cannot read '/maps' of"):
        ds.maps(np.arange(6))
    with pytest.raises(DatasetError, match="samples 2..3"):
        next(b for i, b in ds.iter_batches(batch_size=2) if i[0] == 2)
    with pytest.raises(DatasetError, match="samples 2..3, the file is damaged"):
        scalar_post.sample(ds, 10, batch_size=2)
