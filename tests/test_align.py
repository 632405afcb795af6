"""Domain alignment of the embedding during training (issue #17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbi_exsitu.config.experiment import TrainingSection
from sbi_exsitu.training.align import EmbeddingAlignment, weighted_mmd2


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_weighted_mmd_sees_shifts_and_weights() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    y = torch.randn(200, 2, generator=g)
    assert weighted_mmd2(x, y) < 0.1 * weighted_mmd2(x, y + 2.0)
    # Weighting the source towards its positive half matches a target there.
    y_pos = y[y[:, 0] > 0]
    w = (x[:, 0] > 0).float() + 1e-6
    assert weighted_mmd2(x, y_pos, w) < 0.5 * weighted_mmd2(x, y_pos)


class _Toy(torch.nn.Module):
    """A stand-in estimator: a linear embedding and a Gaussian 'posterior'."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding_net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(4, 2)
        )

    def sample(self, shape, condition):
        return torch.rand(*shape, len(condition), 1) * 0.5  # f_ex in [0, 0.5)


def test_alignment_reweights_by_the_em_target_prior() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(64, 1, 2, 2)).astype(np.float32)
    theta = rng.uniform(0, 1, size=(500, 1))
    al = EmbeddingAlignment(target, 2.0, theta, prior="em", seed=1, bins=2)
    toy = _Toy()
    al.start_epoch(toy, 0)
    assert torch.allclose(al.ratio, torch.ones(2))  # untrained: no correction
    al.start_epoch(toy, 1)
    # The toy posterior puts all target mass below 0.5: the low bin is up-weighted.
    assert al.ratio[0] > 1.5 and al.ratio[1] < 0.1
    x = torch.as_tensor(rng.normal(size=(16, 1, 2, 2)), dtype=torch.float32)
    loss = al.loss(toy, x, torch.as_tensor(theta[:16], dtype=torch.float32))
    assert loss.ndim == 0 and loss > 0
    loss.backward()  # the MMD trains the embedding
    assert toy.embedding_net[1].weight.grad.abs().sum() > 0
    # Resumable: the same (seed, epoch, step) draws the same target batch.
    al.start_epoch(toy, 1)
    again = al.loss(toy, x, torch.as_tensor(theta[:16], dtype=torch.float32))
    torch.testing.assert_close(again, loss.detach())
    with pytest.raises(ValueError, match="align_prior"):
        EmbeddingAlignment(target, 1.0, theta, prior="oracle")


def test_training_section_validates_alignment() -> None:
    with pytest.raises(ValueError, match="align_data"):
        TrainingSection(align_weight=1.0)
    with pytest.raises(ValueError, match="align_prior"):
        TrainingSection(align_prior="x", align_data="t.h5", align_weight=1.0)
    assert TrainingSection(align_weight=1.0, align_data="t.h5").align_prior == "em"


def test_fit_with_alignment_trains_and_is_recorded_in_the_run(tmp_path) -> None:
    """End to end: ``[training] align_*`` keys reach the loop and the run config."""
    import json

    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.simulate import SimulationConfig, simulate
    from sbi_exsitu.training.fit import fit

    def sim(path, model):
        cfg = SimulationConfig.from_dict(
            {
                "simulate": {"model": model, "n_galaxies": 40, "seed": 3, "views": 4},
                "model": {"max_particles": 3000, "min_particles": 3000},
                "render": {"resolution": 16, "channels": ["metallicity"]},
            }
        )
        return simulate(cfg, path, progress=False)

    src, tgt = sim(tmp_path / "s.h5", "tng-like"), sim(tmp_path / "t.h5", "eagle-like")
    doc = {
        "run": {"name": "a", "out_dir": str(tmp_path / "runs"), "threads": 1},
        "data": {"train": str(src)},
        "posterior": {"ensemble_size": 1, "embedding_features": 4,
                      "hidden_features": 8, "num_transforms": 1},
        "training": {"max_epochs": 2, "min_epochs": 1, "batch_size": 32,
                     "align_data": str(tgt), "align_weight": 1.0},
    }  # fmt: skip
    result = fit(ExperimentConfig.from_dict(doc), progress=False, evaluate=False)
    stored = json.loads((result.run_dir / "config.json").read_text())["training"]
    assert stored["align_weight"] == 1.0 and stored["align_prior"] == "em"
    plain = ExperimentConfig.from_dict(doc | {"training": {"max_epochs": 2}})
    assert "align_weight" not in plain.to_dict()["training"]  # old runs still match
