"""The shared training loop: stopping rules, weight decay, resume, divergence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sbi_exsitu.training.loop import (
    TrainingDivergedError,
    TrainingHistory,
    train_loop,
)


def _settings(**kw: object) -> SimpleNamespace:
    base = dict(
        learning_rate=0.05,
        weight_decay=0.0,
        max_epochs=6,
        patience=100,
        min_epochs=0,
        clip_grad_norm=5.0,
    )
    return SimpleNamespace(**(base | kw))


def _data(seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)
    train = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]
    return train, [(x[48:], y[48:])]


def _mse(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
    x, y = batch
    return (model(x)[:, 0] - y) ** 2


class _Noisy(torch.nn.Module):
    """Linear with dropout, so that the per-epoch torch seed matters."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x))


def _shuffled(train: list):
    def batches(epoch: int) -> list:
        order = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(epoch)
        )
        return [train[i] for i in order]

    return batches


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _Noisy()


def test_best_weights_are_restored() -> None:
    train, val = _data()
    net = _net()
    hist = train_loop(net, _mse, lambda e: train, val, _settings(max_epochs=8))
    assert hist.best_val == min(hist.val_loss)
    with torch.no_grad():
        again = float(_mse(net.eval(), val[0]).mean())
    assert again == pytest.approx(hist.best_val, rel=1e-6)
    assert not net.training


def test_early_stopping_after_patience_epochs() -> None:
    train, val = _data()
    # lr 0 never improves on epoch 0: stop once patience epochs passed.
    hist = train_loop(
        _net(),
        _mse,
        lambda e: train,
        val,
        _settings(learning_rate=1e-12, patience=2, max_epochs=50),
    )
    assert hist.stopped_early
    assert hist.best_epoch == 0 or len(hist.val_loss) - 1 - hist.best_epoch == 2
    assert len(hist.val_loss) < 50


def test_min_epochs_delays_early_stopping() -> None:
    train, val = _data()
    settings = _settings(learning_rate=1e-12, patience=1, max_epochs=50, min_epochs=7)
    hist = train_loop(_net(), _mse, lambda e: train, val, settings)
    assert hist.stopped_early
    assert len(hist.val_loss) == 7


def test_weight_decay_is_applied() -> None:
    train, val = _data()

    def zero(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        return 0.0 * model(batch[0]).sum() + 1.0  # no gradient from the data

    norms = {}
    for wd in (0.0, 0.5):
        net = _net()
        before = net.lin.weight.detach().clone()
        train_loop(
            net, zero, lambda e: train, val, _settings(weight_decay=wd, max_epochs=3)
        )
        # best epoch is 0 (flat loss): compare the weights after training instead
        norms[wd] = (before, net.lin.weight.detach())
    assert torch.equal(norms[0.0][0], norms[0.0][1])
    assert norms[0.5][1].norm() < norms[0.5][0].norm()


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path) -> None:
    train, val = _data()
    whole = _net()
    h_whole = train_loop(
        whole, _mse, _shuffled(train), val, _settings(max_epochs=6), seed=4
    )
    ckpt = tmp_path / "checkpoints" / "m"
    first = _net()
    train_loop(
        first,
        _mse,
        _shuffled(train),
        val,
        _settings(max_epochs=3),
        seed=4,
        checkpoint=ckpt,
    )
    assert ckpt.with_suffix(".pt").is_file() and ckpt.with_suffix(".json").is_file()
    resumed = _net(seed=99)  # "a new process": other initial weights, overwritten
    h_resumed = train_loop(
        resumed,
        _mse,
        _shuffled(train),
        val,
        _settings(max_epochs=6),
        seed=4,
        checkpoint=ckpt,
    )
    assert h_resumed.train_loss == h_whole.train_loss
    assert h_resumed.val_loss == h_whole.val_loss
    for a, b in zip(
        whole.state_dict().values(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_huge_learning_rate_raises_the_named_error() -> None:
    train, val = _data()

    def explosive(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        return torch.exp(model(batch[0])[:, 0] - batch[1])  # overflows at lr 1e4

    with pytest.raises(TrainingDivergedError, match="learning_rate") as err:
        train_loop(
            _net(),
            explosive,
            lambda e: train,
            val,
            _settings(learning_rate=1e4, clip_grad_norm=0.0, max_epochs=30),
            name="member 1/1",
        )
    assert "member 1/1" in str(err.value) and "epoch" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_nan_validation_loss_raises() -> None:
    train, val = _data()

    def loss(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        out = _mse(model, batch)
        return out if model.training else out * math.nan

    with pytest.raises(TrainingDivergedError, match="validation loss is nan"):
        train_loop(_net(), loss, lambda e: train, val, _settings())


def test_untrained_history_is_refused() -> None:
    with pytest.raises(TrainingDivergedError, match="refusing to save"):
        TrainingHistory().require_trained("member 0")


def _flat(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
    return 0.0 * model(batch[0]).sum() + 1.0  # never improves after epoch 0


def test_plateau_reduces_the_rate_then_stops() -> None:
    train, val = _data()
    settings = _settings(
        learning_rate=0.1,
        max_epochs=50,
        lr_schedule="plateau",
        lr_factor=0.5,
        lr_patience=1,
        max_lr_reductions=2,
    )
    hist = train_loop(_net(), _flat, lambda e: train, val, settings)
    # A reduction after every 2 epochs without improvement; the third plateau
    # (one more than max_lr_reductions) ends training, long before max_epochs.
    assert hist.lr == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert hist.lr_reductions == 3 and hist.stopped_early
    assert hist.best_epoch == 0


def test_constant_schedule_keeps_the_rate() -> None:
    train, val = _data()
    hist = train_loop(
        _net(), _flat, lambda e: train, val, _settings(max_epochs=6, patience=100)
    )
    assert hist.lr == [0.05] * 6 and hist.lr_reductions == 0


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", ["plateau", "cosine"])
def test_resume_with_a_schedule_matches_an_uninterrupted_run(tmp_path, kind) -> None:
    train, val = _data()
    settings = _settings(
        learning_rate=0.3,
        max_epochs=10,
        lr_schedule=kind,
        lr_factor=0.5,
        lr_patience=0,
        max_lr_reductions=100,
    )
    whole = _net()
    h_whole = train_loop(whole, _mse, _shuffled(train), val, settings, seed=4)
    assert len(set(h_whole.lr)) > 2  # the rate changed before and after epoch 4

    def stop_at_4(epoch: int, hist: TrainingHistory) -> None:
        if epoch == 4:
            raise _Interrupt

    ckpt = tmp_path / "checkpoints" / "m"
    with pytest.raises(_Interrupt):
        train_loop(
            _net(),
            _mse,
            _shuffled(train),
            val,
            settings,
            seed=4,
            checkpoint=ckpt,
            on_epoch=stop_at_4,
        )
    resumed = _net(seed=99)
    h_resumed = train_loop(
        resumed, _mse, _shuffled(train), val, settings, seed=4, checkpoint=ckpt
    )
    assert h_resumed.lr == h_whole.lr
    assert h_resumed.val_loss == h_whole.val_loss
    assert h_resumed.lr_reductions == h_whole.lr_reductions
    for a, b in zip(
        whole.state_dict().values(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_an_unknown_schedule_is_a_config_error_naming_the_key() -> None:
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.schema import ConfigError

    doc = {
        "run": {"name": "demo"},
        "data": {"train": "d.h5"},
        "training": {"lr_schedule": "exponential"},
    }
    with pytest.raises(ConfigError, match="lr_schedule.*'exponential'.*plateau"):
        ExperimentConfig.from_dict(doc, source="exp.toml")
    ok = ExperimentConfig.from_dict(
        doc | {"training": {"lr_schedule": "plateau", "lr_patience": 3}}
    )
    assert ok.training.lr_schedule == "plateau" and ok.training.lr_patience == 3
    with pytest.raises(ConfigError, match="lr_factor"):
        ExperimentConfig.from_dict(doc | {"training": {"lr_factor": 1.5}})
