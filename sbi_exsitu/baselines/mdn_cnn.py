"""The paper's MDN-CNN baseline: a Gaussian mixture-density CNN ensemble.

Angeloudi et al. (2023, sec. 3.1, table A2): the table-A2 CNN with a one-Gaussian
head, negative log-likelihood, Adam 1e-3, random flips, 5-member ensembles mixed
with equal weights. Split out of :mod:`sbi_exsitu.baselines.run`, which re-exports it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sbi_exsitu.baselines.gaussian_mixture import GaussianMixture
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.device import resolve_device
from sbi_exsitu.embeddings.paper_cnn import PaperCNN
from sbi_exsitu.runs import load_state_dict, save_state_dict
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.loop import train_loop
from sbi_exsitu.training.torchdata import MapBatches, target_array

__all__ = ["GaussianMixture", "MDNNet", "MDNEnsemble", "random_flips", "fit_mdn_cnn"]

_FORMAT = "sbi-exsitu/mdn-ensemble"
_VERSION = 1
_CONFIG_FILE = "mdn_ensemble.json"


# --------------------------------------------------------------------------- MDN-CNN


class MDNNet(nn.Module):
    r"""The paper's MDN-CNN: :class:`PaperCNN` with a 2-unit Normal head.

    Arguments:
        in_channels: Number of input maps C.
        image_size: Side length of the square maps.
        dropout: Dropout rate of :class:`PaperCNN`.
        hidden_features: Width of its dense layer (512 in the paper).
        min_scale: Floor added to the softplus scale, so the likelihood cannot
            collapse onto a training point.

    Example:
        >>> net = MDNNet(in_channels=1, image_size=16)
        >>> loc, scale = net.eval()(torch.randn(3, 1, 16, 16))
        >>> loc.shape, bool(torch.all(scale > 0))
        (torch.Size([3]), True)
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        dropout: float = 0.2,
        hidden_features: int = 512,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.cnn = PaperCNN(
            in_channels=in_channels,
            image_size=image_size,
            out_features=2,
            hidden_features=hidden_features,
            dropout=dropout,
        )
        self.min_scale = min_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) means and (B,) standard deviations of the Normal per map."""
        out = self.cnn(x)
        return out[:, 0], F.softplus(out[:, 1]) + self.min_scale

    def loss(self, x: Tensor, theta: Tensor) -> Tensor:
        """Mean negative log-likelihood of ``theta`` (B,) (paper eq. 1)."""
        loc, scale = self(x)
        return -torch.distributions.Normal(loc, scale).log_prob(theta).mean()


def random_flips(x: Tensor, generator: torch.Generator) -> Tensor:
    """Flip every map of a (B, C, H, W) batch up/down and left/right at random.

    Each map gets its own two coin tosses (paper sec. 3.2.4; Keras ``RandomFlip``).

    Example:
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> random_flips(x, g).shape
        torch.Size([1, 1, 2, 2])
    """
    toss = torch.rand(2, x.shape[0], generator=generator).to(x.device) < 0.5
    ud, lr = (t[:, None, None, None] for t in toss)
    x = torch.where(ud, x.flip(-2), x)
    return torch.where(lr, x.flip(-1), x)


def _as_tensor(maps: Any) -> Tensor:
    return torch.as_tensor(
        np.asarray(maps) if not torch.is_tensor(maps) else maps, dtype=torch.float32
    )


class MDNEnsemble:
    r"""An ensemble of trained :class:`MDNNet` members and its mixture posterior.

    Arguments:
        members: The trained nets (all with the same architecture).
        config: JSON-serialisable architecture, seeds, training history and the
            render config of the training maps (see :func:`fit_mdn_cnn`).

    Example:
        >>> cfg = {"in_channels": 1, "image_size": 16, "dropout": 0.2,
        ...        "hidden_features": 16, "min_scale": 1e-3}
        >>> ens = MDNEnsemble([MDNNet(1, 16, hidden_features=16) for _ in range(2)],
        ...                   cfg)
        >>> mean, std = ens.predict(np.zeros((3, 1, 16, 16), np.float32))
        >>> ens.sample(np.zeros((3, 1, 16, 16), np.float32), 10, seed=0).shape
        (3, 10, 1)
    """

    def __init__(self, members: Sequence[MDNNet], config: dict[str, Any]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.config = dict(config)
        for net in self.members:
            net.eval()

    def __len__(self) -> int:
        return len(self.members)

    @property
    def render_config(self) -> RenderConfig | None:
        """The render config of the training maps, if it was recorded."""
        text = self.config.get("render_config")
        return None if text is None else RenderConfig.from_json(text)

    @torch.no_grad()
    def mixture(self, maps: Any, batch_size: int = 256) -> GaussianMixture:
        """The mixture posterior of every map in a (n, C, H, W) array or tensor."""
        x = _as_tensor(maps)
        device = next(self.members[0].parameters()).device
        locs, scales = [], []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            out = [net(xb) for net in self.members]
            locs.append(torch.stack([o[0] for o in out], 1).double().cpu())
            scales.append(torch.stack([o[1] for o in out], 1).double().cpu())
        k = len(self.members)
        if not locs:
            return GaussianMixture(np.empty((0, k)), np.empty((0, k)))
        return GaussianMixture(torch.cat(locs).numpy(), torch.cat(scales).numpy())

    def mixture_dataset(
        self, dataset: MapDataset, indices: np.ndarray, batch_size: int = 256
    ) -> GaussianMixture:
        """:meth:`mixture` of ``dataset`` samples, streamed in batches.

        Raises:
            DatasetError: the dataset was rendered with another config than the
                training maps.
        """
        if self.render_config is not None:
            dataset.check_config(self.render_config)
        parts = [
            self.mixture(m, batch_size)
            for _, m in dataset.iter_batches(np.asarray(indices), batch_size)
        ]
        k = len(self.members)
        loc = np.concatenate([p.loc for p in parts]) if parts else np.empty((0, k))
        scale = np.concatenate([p.scale for p in parts]) if parts else loc.copy()
        return GaussianMixture(loc, scale)

    def predict(self, maps: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n,) mixture means and (n,) mixture standard deviations."""
        mix = self.mixture(maps)
        return mix.mean, mix.std

    def log_prob(self, theta: Any, maps: Any) -> np.ndarray:
        """Log mixture density of ``theta`` ((n,) or (n, S)) given each map."""
        return self.mixture(maps).log_prob(theta)

    def sample(self, maps: Any, num_samples: int, seed: int = 0) -> np.ndarray:
        """(n, S, 1) draws of f_ex per map (unbounded: may leave [0, 1])."""
        return self.mixture(maps).sample(num_samples, seed)

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """The members' weights, keyed ``member_<k>``."""
        return {f"member_{k}": net.state_dict() for k, net in enumerate(self.members)}

    def save(self, directory: str | Path) -> Path:
        """Write ``mdn_ensemble.json`` and one ``member_<k>.pt`` per member."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "ensemble_size": len(self),
            **self.config,
        }
        for name, state in self.state_dict().items():
            save_state_dict(directory / f"{name}.pt", state)
        # JSON last: its presence marks a complete save.
        (directory / _CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> MDNEnsemble:
        """Rebuild an ensemble written by :meth:`save` (no unpickling of code)."""
        directory = Path(directory)
        path = directory / _CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no MDN ensemble saved here")
        meta = json.loads(path.read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(
                f"{path}: format {meta.get('format')!r} version "
                f"{meta.get('version')!r}, expected {_FORMAT!r} version {_VERSION}"
            )
        dev = resolve_device(device)
        members = []
        for k in range(meta["ensemble_size"]):
            net = _build_net(meta)
            path = directory / f"member_{k}.pt"
            net.load_state_dict(load_state_dict(path, dev, f"member {k} weights"))
            members.append(net.to(dev))
        config = {
            key: v
            for key, v in meta.items()
            if key not in ("format", "version", "ensemble_size")
        }
        return cls(members, config)


def _build_net(config: dict[str, Any]) -> MDNNet:
    return MDNNet(
        in_channels=config["in_channels"],
        image_size=config["image_size"],
        dropout=config["dropout"],
        hidden_features=config["hidden_features"],
        min_scale=config["min_scale"],
    )


def _validation_loss(net: MDNNet, loader: MapBatches, device: torch.device) -> float:
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            loss = net.loss(x.to(device), y[:, 0].to(device))
            total += loss.item() * len(x)
            count += len(x)
    return total / count


def _nll(device: torch.device) -> Any:
    """The loss of :func:`train_loop`: per-map negative log-likelihood."""

    def loss(net: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        loc, scale = net(x.to(device))
        return -torch.distributions.Normal(loc, scale).log_prob(y[:, 0].to(device))

    return loss


def _member_batches(
    train: MapBatches, device: torch.device, flips: bool, seed: int
) -> Any:
    """``epoch -> batches`` with random flips seeded by ``(seed, epoch)``."""

    def batches(epoch: int) -> Any:
        train.epoch = epoch
        gen = torch.Generator().manual_seed(derive_seed(seed, "flips", epoch))
        for x, y in train:
            x = x.to(device)
            yield (random_flips(x, gen) if flips else x), y

    return batches


def fit_mdn_cnn(
    dataset: MapDataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    ensemble_size: int = 5,
    max_epochs: int = 500,
    patience: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    dropout: float = 0.2,
    hidden_features: int = 512,
    min_scale: float = 1e-3,
    flips: bool = True,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> MDNEnsemble:
    """Train the paper's MDN-CNN ensemble on f_ex.

    Member ``k`` is seeded with ``derive_seed(seed, "member", k)`` (weights,
    dropout, shuffling, flips); the caller's global torch random state is left
    untouched. Training is :func:`sbi_exsitu.training.loop.train_loop` (no weight
    decay, no gradient clipping, no minimum number of epochs, as in the paper).

    Args:
        dataset: maps and labels.
        train_idx: indices of the training maps.
        val_idx: indices of the validation maps (early stopping).
        ensemble_size: number of members (the paper: 5).
        max_epochs: epoch limit (the paper: 500).
        patience: stop after this many epochs without a lower validation loss,
            then restore the best weights.
        batch_size: training batch size.
        lr: Adam learning rate (the paper: 1e-3).
        dropout: dropout rate of the CNN (not given in the paper).
        hidden_features: width of the dense layer (the paper: 512).
        min_scale: floor of the predicted standard deviation.
        flips: random up/down and left/right flips of training maps.
        seed: base seed.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        progress: show a progress bar per member.

    Returns:
        The trained ensemble; ``config["history"]`` holds per-member losses.
    """
    if len(val_idx) == 0:
        raise ValueError("early stopping needs a non-empty validation split")
    dev = resolve_device(device)
    c, h, w = dataset.shape
    if h != w:
        raise ValueError(f"{dataset.path}: maps must be square, got {h}x{w}")
    config: dict[str, Any] = {
        "in_channels": c,
        "image_size": h,
        "dropout": dropout,
        "hidden_features": hidden_features,
        "min_scale": min_scale,
        "targets": ["f_ex"],
        "render_config": dataset.render_config.to_json(),
        "training": {
            "max_epochs": max_epochs,
            "patience": patience,
            "batch_size": batch_size,
            "lr": lr,
            "flips": flips,
            "seed": seed,
            "n_train": len(train_idx),
            "n_val": len(val_idx),
        },
        "history": [],
    }
    train = MapBatches(
        dataset,
        train_idx,
        target_array(dataset, ["f_ex"], train_idx),
        batch_size=batch_size,
        shuffle=True,
    )
    val = MapBatches(
        dataset, val_idx, target_array(dataset, ["f_ex"], val_idx), batch_size=256
    )
    settings = SimpleNamespace(
        learning_rate=lr,
        weight_decay=0.0,
        max_epochs=max_epochs,
        patience=patience,
        min_epochs=0,
        clip_grad_norm=None,  # the paper's Keras setup does not clip
    )
    members = []
    for k in range(ensemble_size):
        member_seed = derive_seed(seed, "member", k)
        train.seed = member_seed  # reuse the in-memory cache
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed)
            net = _build_net(config).to(dev)
            hist = train_loop(
                net,
                _nll(dev),
                _member_batches(train, dev, flips, member_seed),
                val,
                settings,
                seed=member_seed,
                name=f"MDN-CNN {k + 1}/{ensemble_size}",
                progress=progress,
            )
        config["history"].append(
            {
                "seed": member_seed,
                "train": hist.train_loss,
                "val": hist.val_loss,
                "best_epoch": hist.best_epoch,
                "best_val": hist.best_val,
            }
        )
        members.append(net.eval())
    return MDNEnsemble(members, config)
