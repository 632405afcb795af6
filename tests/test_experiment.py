"""Experiment TOML validation."""

from __future__ import annotations

import pytest

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.schema import ConfigError


def test_defaults_and_round_trip() -> None:
    cfg = ExperimentConfig.from_dict({"data": {"train": "x.h5"}})
    assert cfg.posterior.targets == ("f_ex",)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_unknown_key_suggests_the_closest(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[training]\nmax_epoch = 3\n")
    with pytest.raises(ConfigError, match=r"\[training\].*'max_epoch'.*max_epochs"):
        ExperimentConfig.from_toml(path)


def test_unknown_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="'trainng'.*'training'"):
        ExperimentConfig.from_dict({"trainng": {}})


@pytest.mark.parametrize(
    "posterior, match",
    [
        ({"targets": ["mass"]}, "targets"),
        ({"estimator": "nsf"}, "zuko"),
        ({"estimator": "zuko_maf"}, "Gaussian in 1-D"),
        ({"kind": "image"}, "kind"),
        ({"ensemble_size": 0}, "ensemble_size"),
    ],
)
def test_bad_posterior_values(posterior, match) -> None:
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig.from_dict({"posterior": posterior})


def test_missing_dataset_path_is_named() -> None:
    cfg = ExperimentConfig.from_dict({})
    with pytest.raises(ConfigError, match="'train'"):
        cfg.train_path  # noqa: B018
