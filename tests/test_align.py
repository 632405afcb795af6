"""Domain alignment of the embedding during training (issue #17)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sbi_exsitu.config.experiment import TrainingSection
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.align import (
    EmbeddingAlignment,
    dann_ramp,
    reverse_gradient,
    weighted_domain_loss,
    weighted_mmd2,
)


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
    with pytest.raises(ValueError, match="align_method"):
        TrainingSection(align_method="coral")


def test_fit_with_alignment_trains_and_is_recorded_in_the_run(tmp_path) -> None:
    """End to end: ``[training] align_*`` keys reach the loop and the run config."""
    import json

    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.dataset import MapDataset
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
    assert "align_method" not in stored  # MMD runs made before DANN still match
    plain = ExperimentConfig.from_dict(doc | {"training": {"max_epochs": 2}})
    assert "align_weight" not in plain.to_dict()["training"]  # old runs still match
    # DANN: the classifier trains with the estimator; the saved posterior is the
    # estimator's state alone (it loads like any other run's).
    from sbi_exsitu.posteriors import load_posterior

    doc["run"]["name"] = "d"
    doc["training"] |= {"align_method": "dann", "align_ramp_epochs": 1}
    result = fit(ExperimentConfig.from_dict(doc), progress=False, evaluate=False)
    stored = json.loads((result.run_dir / "config.json").read_text())["training"]
    assert stored["align_method"] == "dann" and stored["align_ramp_epochs"] == 1
    history = json.loads(
        (result.run_dir / "checkpoints" / "member_0.history.json").read_text()
    )
    assert all(np.isfinite(history["train_loss"])) and history["best_epoch"] >= 0
    post = load_posterior(result.run_dir)
    with MapDataset(tgt) as ds:
        draws = post.sample(ds.maps(np.arange(3)), 20, seed=0)
    assert draws.shape[:2] == (3, 20) and np.isfinite(draws).all()


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    y = reverse_gradient(x, 0.7)
    torch.testing.assert_close(y, x)  # identity forward
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * torch.arange(3.0).expand(5, 3))
    assert dann_ramp(0.0) == 0.0 and 0.98 < dann_ramp(1.0) == dann_ramp(5.0) < 1.0


def test_domain_loss_weights_the_source_side() -> None:
    src, tgt = torch.tensor([2.0, -2.0]), torch.tensor([0.0, 0.0])
    bce = torch.nn.functional.softplus  # BCE(s, label 0) = softplus(s)
    plain = weighted_domain_loss(src, tgt)
    torch.testing.assert_close(plain, 0.5 * (bce(src).mean() + bce(-tgt).mean()))
    # All weight on the confidently wrong source map: a larger loss; the
    # weights' overall scale does not matter (normalised to mean 1).
    heavy = weighted_domain_loss(src, tgt, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(heavy, 0.5 * (2 * bce(src[0]) / 2 + bce(-tgt).mean()))
    torch.testing.assert_close(
        heavy, weighted_domain_loss(src, tgt, torch.tensor([5.0, 0.0]))
    )
    assert heavy > plain


def test_dann_trains_the_classifier_against_the_embedding() -> None:
    """The classifier descends the domain loss, the embedding ascends it."""
    rng = np.random.default_rng(0)
    target = (rng.normal(size=(64, 1, 2, 2)) + 1.0).astype(np.float32)
    theta = rng.uniform(0, 1, size=(500, 1))
    al = EmbeddingAlignment(
        target, 0.5, theta, prior="none", method="dann", seed=1, ramp_epochs=0
    )
    toy = _Toy()
    critic = al.attach(toy)
    assert al.attach(toy) is critic  # built once
    al.start_epoch(toy, 1)
    x = torch.as_tensor(rng.normal(size=(16, 1, 2, 2)), dtype=torch.float32)
    th = torch.as_tensor(theta[:16], dtype=torch.float32)
    al.loss(toy, x, th).backward()
    emb_grad = toy.embedding_net[1].weight.grad.clone()
    critic_grad = critic.net[0].weight.grad.clone()
    # The same loss (same target batch) without the reversal: the embedding's
    # gradient is -0.5 times it (align_weight), the classifier's the same.
    toy.zero_grad(), critic.zero_grad()
    gen = torch.Generator().manual_seed(derive_seed(1, "align", 1, 0))
    xt = al.target[torch.randint(len(target), (16,), generator=gen)]
    logits = critic(toy.embedding_net(torch.cat([x, xt])))
    weighted_domain_loss(logits[:16], logits[16:]).backward()
    assert emb_grad.abs().sum() > 0
    torch.testing.assert_close(-0.5 * toy.embedding_net[1].weight.grad, emb_grad)
    torch.testing.assert_close(critic.net[0].weight.grad, critic_grad)
    # Ramp: at epoch 0 of a 10-epoch ramp the embedding gets no gradient.
    al0 = EmbeddingAlignment(target, 1.0, theta, method="dann", seed=1)
    al0.attach(toy)
    toy.zero_grad()
    al0.start_epoch(toy, 0)
    al0.loss(toy, x, th).backward()
    assert toy.embedding_net[1].weight.grad.abs().sum() == 0
    assert EmbeddingAlignment(target, 1.0, theta).attach(toy) is None  # MMD
    with pytest.raises(ValueError, match="align_method"):
        EmbeddingAlignment(target, 1.0, theta, method="coral")


def test_confusion_trains_the_classifier_and_pulls_the_embedding_to_5050() -> None:
    rng = np.random.default_rng(0)
    target = (rng.normal(size=(64, 1, 2, 2)) + 1.0).astype(np.float32)
    theta = rng.uniform(0, 1, size=(500, 1))
    kw = {"prior": "none", "seed": 1, "ramp_epochs": 0}
    conf = EmbeddingAlignment(target, 0.5, theta, method="confusion", **kw)
    toy = _Toy()
    critic = conf.attach(toy)
    conf.start_epoch(toy, 1)
    x = torch.as_tensor(rng.normal(size=(16, 1, 2, 2)), dtype=torch.float32)
    th = torch.as_tensor(theta[:16], dtype=torch.float32)
    conf.loss(toy, x, th).backward()
    gen = torch.Generator().manual_seed(derive_seed(1, "align", 1, 0))
    xt = conf.target[torch.randint(len(target), (16,), generator=gen)]
    z = toy.embedding_net(torch.cat([x, xt]))
    # The classifier: the plain domain loss on detached embeddings.
    ref = copy.deepcopy(critic)
    lg = ref(z.detach())
    weighted_domain_loss(lg[:16], lg[16:]).backward()
    torch.testing.assert_close(critic.net[0].weight.grad, ref.net[0].weight.grad)
    # The embedding: 0.5 x the gradient of the confusion loss, nothing else.
    emb = toy.embedding_net[1].weight
    lg = ref(z)
    confusion = weighted_domain_loss(lg[:16], lg[16:], labels=(0.5, 0.5))
    (grad,) = torch.autograd.grad(confusion, emb)
    torch.testing.assert_close(emb.grad, 0.5 * grad)
    # Bounded below by log 2 (no reward for swapping the domains), reached at 0.
    logits = torch.randn(100) * 5
    assert weighted_domain_loss(logits, -logits, labels=(0.5, 0.5)) >= np.log(2)
    torch.testing.assert_close(
        weighted_domain_loss(torch.zeros(3), torch.zeros(3), labels=(0.5, 0.5)),
        torch.tensor(np.log(2), dtype=torch.float32),
    )
