"""The outside-mask head: learns delta = label - f_in(true map) from the maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from sbi_exsitu.errors import DatasetError
from sbi_exsitu.posteriors.map.outside import OutsideMaskHead, galaxy_fex
from sbi_exsitu.training.map_outside import fit_outside_head, outside_delta


class _Unweighted:
    """The mass weights of a map posterior, here uniform over the mask."""

    def mass_weights(self, maps, mask, mass=None):  # noqa: ANN001, ANN201
        return mask.astype(np.float64), "unweighted"


@dataclass
class _Data:
    x: np.ndarray
    y: np.ndarray
    m: np.ndarray
    labels: dict
    path: Path = Path("toy.h5")

    def maps(self, idx):  # noqa: ANN001, ANN201
        return self.x[idx]

    def exsitu(self, idx):  # noqa: ANN001, ANN201
        return self.y[idx]

    def mask(self, idx):  # noqa: ANN001, ANN201
        return self.m[idx]


@dataclass
class _Training:
    batch_size: int = 32
    learning_rate: float = 3e-3
    max_epochs: int = 40
    patience: int = 40
    min_epochs: int = 1
    clip_grad_norm: float = 5.0
    weight_decay: float = 0.0


def _toy(n: int = 400, seed: int = 0) -> _Data:
    rng = np.random.default_rng(seed)
    level = rng.uniform(-1, 1, n)  # what the observations say about the outskirts
    x = rng.normal(0, 0.3, (n, 2, 8, 8)) + level[:, None, None, None]
    y = rng.uniform(0, 1, (n, 8, 8))
    m = np.ones((n, 8, 8), bool)
    f_in = y.mean(axis=(1, 2))
    f_ex = np.clip(f_in + 0.1 * level + rng.normal(0, 0.005, n), 0, 1)
    return _Data(x.astype(np.float32), y.astype(np.float32), m, {"f_ex": f_ex})


def test_head_learns_delta_and_galaxy_fex_uses_it() -> None:
    data = _toy()
    post = _Unweighted()
    torch.manual_seed(0)
    emb = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 16))
    head = OutsideMaskHead(emb, 16, hidden=32)
    history = fit_outside_head(
        post, data, np.arange(300), np.arange(300, 350), head, _Training(), seed=0
    )
    assert len(history["val_loss"]) >= 2
    test = np.arange(350, 400)
    x, delta = outside_delta(post, data, test)
    with torch.inference_mode():
        mean, std = head(torch.from_numpy(x))
    err = mean.numpy() - delta
    # delta spreads by 0.058; the head must explain nearly all of it.
    assert delta.std() > 0.05
    assert err.std() < 0.3 * delta.std()
    assert float(std.mean()) < 0.5 * delta.std()
    # galaxy_fex: map draws (here the truth repeated) plus delta draws.
    samples = np.repeat(data.y[test][:, None], 20, axis=1)
    f = galaxy_fex(post, head, x, data.m[test], samples, seed=1)
    assert f.shape == (50, 20)
    assert np.all((f >= 0) & (f <= 1))
    label_err = np.median(f, axis=1) - data.labels["f_ex"][test]
    in_mask_err = samples.mean(axis=(2, 3))[:, 0] - data.labels["f_ex"][test]
    assert label_err.std() < 0.3 * in_mask_err.std()


def test_outside_delta_needs_labels() -> None:
    data = _toy(10)
    data.labels = {}
    with pytest.raises(DatasetError, match="f_ex"):
        outside_delta(_Unweighted(), data, np.arange(5))
