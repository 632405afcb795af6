"""The flow-matching map posterior end to end on the toy problem of conftest.

Toy: the ex-situ map is the constant f_ex ~ U(0, 1) and every observation
pixel is f_ex + N(0, 0.64^2), so the observations pin the map down to ~0.04;
a model that ignored them would be off by ~0.25 on average.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RES, write_toy_dataset

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.posteriors.map.flow_matching import FlowMatchingConfig, MapFlowMatching
from sbi_exsitu.posteriors.map.fm_posterior import FlowMatchingMapPosterior


def _config(tmp: Path, data: Path) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "run": {"name": "fmtoy", "out_dir": str(tmp / "runs"), "seed": 0},
            "data": {"train": str(data)},
            "posterior": {"kind": "map"},
            "training": {
                "batch_size": 16,
                "learning_rate": 2e-3,
                "max_epochs": 80,
                "patience": 80,
            },
            "map": {
                "model": "flow_matching",
                "fm_width": 8,
                "fm_levels": 1,
                "fm_steps": 4,
                # The toy map is one level over the whole image: the global
                # context reads it off all pixels at once.
                "fm_global": True,
                "eval_samples": 10,
                "eval_max_obs": 12,
                "n_panels": 2,
            },
        }
    )


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory: pytest.TempPathFactory):
    from sbi_exsitu.training.fit import fit

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("fmtoy")
    data = write_toy_dataset(tmp / "toy.h5", n_galaxies=60, seed=3)
    return data, fit(_config(tmp, data), progress=False)


def test_fit_learns_the_map_from_the_observations(fm_run) -> None:
    _, result = fm_run
    run = result.run_dir
    for name in ("model.json", "weights/flow_matching.pt", "map_calibration.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert (meta["kind"], meta["model"]) == ("map", "flow_matching")
    test = result.metrics["test"]
    assert set(test) >= {"flow"} and "prior" not in test
    # Guessing without the observations is off by E|f - 0.5| = 0.25.
    assert test["flow"]["mean_abs_residual"] < 0.15
    joint = result.metrics["calibration"]["joint"]
    assert {"tarp", "fex_sbc", "n_galaxies"} <= set(joint)


def test_load_reproduces_draws_and_refuses_latent_methods(fm_run) -> None:
    from sbi_exsitu.posteriors import load_posterior

    data, result = fm_run
    post = load_posterior(result.run_dir)
    assert isinstance(post, FlowMatchingMapPosterior)
    x = MapDataset(data).maps([0, 1])
    mask = np.ones((2, RES, RES), bool)
    mask[:, :2] = False
    s = post.sample(x, 10, seed=1, mask=mask)
    assert s.shape == (2, 10, RES, RES) and s.min() >= 0 and s.max() <= 1
    assert np.all(s[:, :, :2] == 0)
    assert np.array_equal(s, result.posterior.sample(x, 10, seed=1, mask=mask))
    assert not np.array_equal(s, post.sample(x, 10, seed=2, mask=mask))
    with pytest.raises(ValueError, match="method='flow'"):
        post.sample(x, 2, method="prior")
    assert post.summarize(x, 10, mask=mask).f_ex_hdi68.shape == (2, 2)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="divisible"):
        FlowMatchingConfig(in_channels=1, image_size=20, patch=2, levels=2)
    # The last layer starts at zero: an untrained field does not move the noise.
    cfm = MapFlowMatching(FlowMatchingConfig(in_channels=2, image_size=8, levels=1))
    u = torch.randn(3, 8, 8)
    feats = cfm.net.condition(
        torch.randn(3, 2, 8, 8), torch.ones(3, 8, 8, dtype=torch.bool)
    )
    assert torch.count_nonzero(cfm.net(u, torch.rand(3), feats)) == 0
