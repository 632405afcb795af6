"""Issue #14 at the entry to sampling: nothing hangs, nothing is silently wrong.

Every fault below hung or returned NaN/shifted answers before the fix; each call
runs under :func:`no_hang`, so a regression fails instead of hanging CI.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sbi_exsitu.data.compatibility import ObservationError, SamplingLimitError
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.posteriors.scalar import SamplingError

from .conftest import no_hang, write_empty, write_maps


# -- 1. NaN in a streamed dataset --------------------------------------------------
@pytest.mark.parametrize("call", ["sample", "summarize", "log_prob"])
def test_nan_pixel_in_a_dataset_is_named_not_hung(
    scalar_post, maps, tmp_path, call
) -> None:
    maps[4, 0, 3, 7] = np.nan
    ds = MapDataset(write_maps(tmp_path / "nan.h5", maps))
    with no_hang(60), pytest.raises(ObservationError, match=r"nan\.h5: sample 4 "):
        if call == "log_prob":
            scalar_post.log_prob(np.full((len(maps), 1), 0.5), ds, batch_size=2)
        else:
            getattr(scalar_post, call)(ds, 10, batch_size=2)


def test_nan_in_an_array_names_the_sample(scalar_post, map_post, maps) -> None:
    maps[2, 0, 0, 0] = np.inf
    for post in (scalar_post, map_post):
        with no_hang(60), pytest.raises(ObservationError, match="sample 2 has 1 NaN"):
            post.sample(maps, 4)


def test_map_posterior_names_a_nan_sample_of_a_dataset(
    map_post, maps, tmp_path
) -> None:
    maps[5, 0, 1, 1] = np.nan
    ds = MapDataset(write_maps(tmp_path / "nan.h5", maps))
    with no_hang(60), pytest.raises(ObservationError, match="sample 5 "):
        map_post.sample(ds, 4)


# -- 2. extreme but finite maps ----------------------------------------------------
def test_extreme_maps_raise_instead_of_hanging(scalar_post, maps) -> None:
    # x 1e30 makes the untrained flow's draws NaN: sbi's rejection waited forever.
    maps[1] *= 1e30
    with (
        no_hang(60),
        pytest.raises(SamplingError, match=r"observation 1 .*f_ex in \[0, 1\].*e\+30"),
    ):
        scalar_post.sample(maps, 20, seed=0)


def test_extreme_maps_on_a_trained_run_do_not_hang(toy_run) -> None:
    from sbi_exsitu.posteriors import load_posterior

    _, data, result = toy_run
    post = load_posterior(result.run_dir)
    x = MapDataset(data).maps(np.arange(3))
    x[0] *= 1e20
    with no_hang(120):
        try:
            s = post.sample(x, 200, seed=0)
        except SamplingError:
            return  # named, fine
    assert s.shape == (3, 200, 1)
    assert np.all((s >= 0) & (s <= 1))


def test_direct_draws_have_the_law_of_rejection_sampling(scalar_post, maps) -> None:
    """The flow ends in a sigmoid onto the prior box: rejection never rejected."""
    x = torch.from_numpy(maps[:2])
    new = scalar_post.sample(maps[:2], 4000, seed=1)
    from sbi.inference import DirectPosterior

    from sbi_exsitu.posteriors.estimator import build_prior

    rejection = DirectPosterior(
        scalar_post.estimators[0], build_prior(scalar_post.spec)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        old = rejection.sample_batched((4000,), x=x, show_progress_bars=False)
    old = old.transpose(0, 1).numpy()
    assert new.shape == old.shape == (2, 4000, 1)
    for i in range(2):
        assert stats.ks_2samp(new[i, :, 0], old[i, :, 0]).pvalue > 1e-3
    # seeded: the same draws again, the global RNG untouched
    state = torch.random.get_rng_state()
    np.testing.assert_array_equal(new, scalar_post.sample(maps[:2], 4000, seed=1))
    assert torch.equal(state, torch.random.get_rng_state())


# -- 4. numeric limits, before any sampling -----------------------------------------
@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_non_positive_num_samples_is_refused(scalar_post, map_post, maps, n) -> None:
    for post in (scalar_post, map_post):
        with pytest.raises(SamplingLimitError, match="expected a positive integer"):
            post.sample(maps, n)


def test_draws_that_cannot_fit_in_memory_are_refused(
    scalar_post, map_post, maps
) -> None:
    for post in (scalar_post, map_post):
        with no_hang(30), pytest.raises(SamplingLimitError, match="GiB.*available"):
            post.sample(maps, 10**13)


def test_empty_input_is_refused(scalar_post, map_post, tmp_path) -> None:
    empty = MapDataset(write_empty(tmp_path / "empty.h5"))
    for post in (scalar_post, map_post):
        with pytest.raises(ObservationError, match="empty.h5: the dataset holds no"):
            post.sample(empty, 10)
        with pytest.raises(ObservationError, match="no observations"):
            post.sample(np.zeros((0, 1, 16, 16), np.float32), 10)


def test_integer_maps_are_refused(scalar_post, map_post, maps) -> None:
    ints = np.round(maps * 40 + 128).astype(np.uint8)
    for post in (scalar_post, map_post):
        with pytest.raises(ObservationError, match="dtype uint8, expected floating"):
            post.sample(ints, 10)
    # float64 maps are the same numbers: accepted
    assert scalar_post.sample(maps.astype(np.float64), 3, seed=0).shape == (6, 3, 1)
