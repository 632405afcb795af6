"""Issue #14: calibration and predict refuse bad input before sampling, not after."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_exsitu.data.compatibility import ObservationError, SamplingLimitError
from sbi_exsitu.evaluation.calibration import calibrate, calibrate_dataset
from sbi_exsitu.studies.predict import predict

from .conftest import no_hang, write_empty, write_maps


class _Recorder:
    """A posterior that fails the test if anything samples from it."""

    param_names = ["f_ex"]
    members: list = []

    def __init__(self) -> None:
        self.members = [self]

    def sample(self, *args, **kwargs):
        raise AssertionError("sampled before the input was checked")

    log_prob = sample


class _ShortLabels:
    """A dataset-like object whose labels miss the last map."""

    path = "short.h5"
    labels = {"f_ex": np.full(4, 0.5)}

    def __len__(self) -> int:
        return 5

    def maps(self, idx):
        return np.zeros((len(idx), 1, 16, 16), np.float32)


def test_unlabelled_truths_are_refused_before_sampling() -> None:
    truths = np.array([0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="first: observation 1"):
        calibrate(_Recorder(), np.zeros((3, 1, 16, 16)), truths, progress=False)


def test_labels_shorter_than_the_maps_are_refused_before_sampling() -> None:
    with pytest.raises(ValueError, match="'f_ex' has 4 values for 5 maps"):
        calibrate_dataset(_Recorder(), _ShortLabels(), progress=False)


@pytest.fixture
def run(scalar_post, tmp_path):
    return scalar_post.save(tmp_path / "run")


def test_predict_refuses_an_empty_dataset(run, tmp_path) -> None:
    empty = write_empty(tmp_path / "empty.h5")
    with pytest.raises(ObservationError, match="empty.h5: the dataset holds no"):
        predict(run, empty, tmp_path / "o.csv", progress=False, misspecification=False)


@pytest.mark.parametrize("n", [0, 10**13])
def test_predict_checks_num_samples_up_front(run, maps, tmp_path, n) -> None:
    data = write_maps(tmp_path / "d.h5", maps)
    with no_hang(30), pytest.raises(SamplingLimitError):
        predict(
            run,
            data,
            tmp_path / "o.h5",
            num_samples=n,
            save_samples=True,
            progress=False,
            misspecification=False,
        )


def test_predict_names_the_nan_sample_of_the_file(run, maps, tmp_path) -> None:
    maps[5, 0, 2, 2] = np.nan
    data = write_maps(tmp_path / "d.h5", maps)
    with no_hang(60), pytest.raises(ObservationError, match=r"d\.h5: sample 5 "):
        predict(
            run,
            data,
            tmp_path / "o.csv",
            num_samples=10,
            batch_size=2,
            progress=False,
            misspecification=False,
        )


def test_predict_on_clean_maps_still_works(run, maps, tmp_path) -> None:
    data = write_maps(tmp_path / "d.h5", maps)
    out = predict(
        run,
        data,
        tmp_path / "o.csv",
        num_samples=50,
        batch_size=4,
        progress=False,
        misspecification=False,
    )
    assert len(out.read_text().splitlines()) == 1 + len(maps)
