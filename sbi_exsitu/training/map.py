r"""Training of the map-valued posterior (``[posterior] kind = "map"``).

Two phases on the galaxy-grouped splits, both Adam with early stopping on the
validation split and D4 augmentation applied jointly to observations, ex-situ
maps and masks: (1) the cVAE on the negative ELBO, with a KL warm-up during
which the decoder does not see the observations; (2) the latent flow
(:mod:`sbi_exsitu.posteriors.map.latent_flow`) and its embedding net on
:math:`-\log q_\phi(z \mid s(x))` with :math:`z \sim q(z \mid y)` from the frozen
encoder, i.e. the flow learns the aggregate posterior of the latent given the
observations. Then the f_ex mass scale (:mod:`sbi_exsitu.data.exsitu_fraction`) and the
shared pixel noise (:mod:`sbi_exsitu.posteriors.map.noise`) are fitted, and the test
split
is evaluated. The trained model is
:class:`sbi_exsitu.posteriors.map.posterior.MapPosterior`.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sbi_exsitu.atomic import atomic_save, atomic_write_json, atomic_write_text
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.data.exsitu_fraction import fit_mass_scale
from sbi_exsitu.device import configure_threads, resolve_device
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig
from sbi_exsitu.posteriors.map.latent_flow import build_latent_flow
from sbi_exsitu.posteriors.map.noise import fit_shared_noise
from sbi_exsitu.posteriors.map.posterior import MapPosterior

__all__ = ["fit_map_posterior"]


# -- training ----------------------------------------------------------------------
@dataclass
class _Arrays:
    """One split held in memory as tensors."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def read(cls, dataset: MapDataset, idx: np.ndarray) -> _Arrays:
        return cls(
            torch.from_numpy(dataset.maps(idx)),
            torch.from_numpy(dataset.exsitu(idx)),
            torch.from_numpy(dataset.mask(idx)),
        )

    def __len__(self) -> int:
        return len(self.x)

    def batches(
        self,
        batch_size: int,
        order: np.ndarray | None = None,
        augment: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            i = torch.from_numpy(order[start : start + batch_size])
            x, y, m = self.x[i], self.y[i], self.mask[i]
            if augment is not None:
                from sbi_exsitu.embeddings import random_d4

                # One group element per galaxy for maps, truth and mask alike.
                stack = torch.cat([x, y[:, None], m[:, None].float()], dim=1)
                stack = random_d4(stack, augment)
                x, y, m = stack[:, :-2], stack[:, -2], stack[:, -1] > 0.5
            yield x, y, m


def _train_loop(
    params: list[nn.Parameter],
    train: _Arrays,
    val: _Arrays,
    batch_loss: Callable[
        [torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor
    ],
    modules: list[nn.Module],
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    clip: float,
    augment: bool,
    seed: int,
    desc: str,
    progress: bool,
    schedule: list[float] | None = None,
    warmup: int = 0,
    on_warmup: Callable[[bool], None] | None = None,
) -> dict[str, Any]:
    """Adam with early stopping on the validation loss; restores the best weights."""
    opt = torch.optim.Adam(params, lr=lr)
    hist: dict[str, Any] = {"train_loss": [], "val_loss": [], "best_epoch": -1}
    warmup = max(warmup, 0)
    best, best_state, since = math.inf, None, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc=desc, unit="epoch")
    t0 = time.perf_counter()
    for epoch in range(max_epochs):
        for mod in modules:
            mod.train()
        if schedule is not None:
            schedule[0] = min(1.0, (epoch + 1) / (warmup + 1)) if warmup else 1.0
            if on_warmup is not None:
                on_warmup(epoch < warmup)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = np.random.default_rng(seed + epoch).permutation(len(train))
        total, count = 0.0, 0
        for x, y, m in train.batches(batch_size, order, gen if augment else None):
            loss = batch_loss(x, y, m, gen).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            total += loss.item() * len(x)
            count += len(x)
        for mod in modules:
            mod.eval()
        if schedule is not None:
            schedule[0] = 1.0  # validate the full objective, comparable over epochs
            if on_warmup is not None:
                on_warmup(False)
        vgen = torch.Generator().manual_seed(seed)  # the same noise every epoch
        with torch.no_grad():
            vloss = sum(
                batch_loss(x, y, m, vgen).sum().item() for x, y, m in val.batches(256)
            ) / len(val)
        hist["train_loss"].append(total / count)
        hist["val_loss"].append(vloss)
        if vloss < best:
            best, since, hist["best_epoch"] = vloss, 0, epoch
            best_state = [copy.deepcopy(mod.state_dict()) for mod in modules]
        else:
            since += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{total / count:.3g}", val=f"{vloss:.3g}")
        if since >= patience:
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        for mod, state in zip(modules, best_state, strict=True):
            mod.load_state_dict(state)
    hist["seconds"] = time.perf_counter() - t0
    hist["best_val"] = best
    return hist


def _ensure_dataset(cfg: ExperimentConfig) -> None:
    # Convenience for the quickstart configs: simulate a missing training set.
    if cfg.train_path.exists() or not cfg.simulate:
        return
    from sbi_exsitu.data.simulate import simulate

    simulate(cfg.simulation_config(), cfg.train_path, workers=1, progress=False)


def fit_map_posterior(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
) -> Any:
    """Train the map posterior of ``cfg`` and write its run directory.

    The run directory gets the files of a scalar run (``config.json``,
    ``render_config.json``, ``splits.json``, ``model.json`` last,
    ``weights/``, ``history.json``, ``metrics.json``) plus the evaluation
    figures of :func:`sbi_exsitu.evaluation.map_evaluation.evaluate_map_posterior`. A
    finished cVAE phase (``weights/cvae.pt``) is reused when the job is re-run.

    Args:
        cfg: an experiment with ``[posterior] kind = "map"`` and an optional
            ``[map]`` table (:class:`MapSettings`).
        overwrite: discard an existing run of another configuration.
        progress: progress bars.
        evaluate: residuals, figures and calibration on the test split.

    Returns:
        :class:`sbi_exsitu.training.fit.FitResult`.
    """
    from sbi_exsitu.embeddings import EMBEDDINGS
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.result import FitResult

    settings = MapSettings.from_config(cfg)
    configure_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    if device.type != "cpu":
        warnings.warn(
            "the map posterior trains on CPU tensors; device ignored", stacklevel=2
        )
    _ensure_dataset(cfg)
    dataset = MapDataset(cfg.train_path)
    run_dir = RunDirectory(cfg.run_dir).prepare(cfg.to_dict(), overwrite)
    atomic_write_text(run_dir / "render_config.json", dataset.render_config.to_json())
    splits = dataset.splits(seed=cfg.data.split_seed)
    if min(len(v) for v in splits.values()) == 0:
        raise DatasetError(f"{dataset.path}: too few galaxies for a split by galaxy")
    atomic_write_json(
        run_dir / "splits.json",
        {k: v.tolist() for k, v in splits.items()}
        | {"dataset": str(dataset.path), "seed": cfg.data.split_seed},
    )
    train_idx = subsample(splits["train"], settings.max_train, cfg.run.seed)
    train = _Arrays.read(dataset, train_idx)
    val = _Arrays.read(dataset, splits["validation"])
    if not (torch.isfinite(train.y).all() and torch.isfinite(val.y).all()):
        raise DatasetError(
            f"{dataset.path}: ex-situ maps contain NaN (data without "
            "ex-situ flags cannot train the map posterior)"
        )
    c, h, _ = dataset.shape
    tr = cfg.training
    torch.manual_seed(cfg.run.seed)
    cvae = ConditionalVAE(
        CVAEConfig(
            in_channels=c,
            image_size=h,
            latent_dim=settings.latent_dim,
            width=settings.width,
            beta=settings.beta,
            encoder_sees_obs=settings.encoder_sees_obs,
        )
    )
    p = cfg.posterior
    if p.embedding not in EMBEDDINGS:
        raise ValueError(
            f"{cfg.source} [posterior]: unknown embedding "
            f"{p.embedding!r}; known: {sorted(EMBEDDINGS)}"
        )
    embedding_config = {
        "name": p.embedding,
        "in_channels": c,
        "image_size": h,
        "out_features": p.embedding_features,
        "invariant": p.invariant,
        **p.embedding_kwargs,
    }
    flow = build_latent_flow(embedding_config, settings)
    common = dict(
        batch_size=tr.batch_size,
        patience=tr.patience,
        clip=tr.clip_grad_norm,
        augment=tr.augment == "d4",
        progress=progress,
    )
    t0 = time.perf_counter()
    cvae_file = run_dir / "weights" / "cvae.pt"
    hist_file = run_dir / "checkpoints" / "cvae.history.json"
    if cvae_file.exists() and hist_file.exists():
        cvae.load_state_dict(torch.load(cvae_file, weights_only=True))
        hist_cvae = json.loads(hist_file.read_text())
    else:
        warm = [1.0]  # the KL weight factor, set per epoch by the loop
        hist_cvae = _train_loop(
            list(cvae.parameters()),
            train,
            val,
            lambda x, y, m, g: (
                cvae.loss(y, x, m, generator=g, kl_scale=warm[0]) / h / h
            ),
            [cvae],
            lr=tr.learning_rate,
            max_epochs=tr.max_epochs,
            seed=cfg.run.seed,
            desc="cVAE",
            schedule=warm,
            warmup=settings.kl_warmup,
            on_warmup=lambda on: setattr(cvae, "condition_scale", 0.0 if on else 1.0),
            **common,
        )
        state = {k: v.detach() for k, v in cvae.state_dict().items()}
        atomic_save(cvae_file, lambda q: torch.save(state, q))
        atomic_write_json(hist_file, hist_cvae)
    cvae.eval()
    with torch.no_grad():
        enc = [cvae.encode(y, x, m) for x, y, m in train.batches(256)]
    flow.standardize(torch.cat([e[0] for e in enc]), torch.cat([e[1] for e in enc]))

    def flow_loss(
        x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        mean, std = cvae.encode(y, x, m)
        z = mean + std * torch.randn(mean.shape, generator=g)
        return -flow.log_prob(z, x)

    torch.manual_seed(cfg.run.seed + 1)
    hist_flow = _train_loop(
        list(flow.parameters()),
        train,
        val,
        flow_loss,
        [flow],
        lr=tr.learning_rate,
        max_epochs=settings.flow_epochs,
        seed=cfg.run.seed + 1,
        desc="latent flow",
        **(common | {"patience": settings.flow_patience}),
    )
    train_seconds = time.perf_counter() - t0
    atomic_write_json(run_dir / "history.json", {"cvae": hist_cvae, "flow": hist_flow})

    mass_scale = (
        fit_mass_scale(
            train.y.numpy(),
            train.x.numpy(),
            train.mask.numpy(),
            dataset.labels["f_ex"][train_idx],
            dataset.render_config,
        )
        if dataset.has_labels
        else None
    )
    posterior = MapPosterior(
        cvae,
        flow,
        dataset.render_config,
        embedding_config,
        settings,
        mass_scale=mass_scale,
        metadata={
            "train_dataset": str(dataset.path),
            "train_seconds": train_seconds,
            "n_train": len(train_idx),
        },
    )
    if settings.shared_noise:
        val_idx = subsample(
            splits["validation"], settings.eval_max_obs, cfg.run.seed + 2
        )
        posterior.noise_rho, noise_table = fit_shared_noise(
            posterior,
            dataset,
            val_idx,
            num_samples=settings.eval_samples,
            seed=cfg.run.seed,
        )
    metrics: dict[str, Any] = {
        "kind": "map",
        "n_train": len(train_idx),
        "n_validation": len(splits["validation"]),
        "n_test": len(splits["test"]),
        "train_seconds": train_seconds,
        "cvae_epochs": len(hist_cvae["train_loss"]),
        "flow_epochs": len(hist_flow["train_loss"]),
        "mass_scale": mass_scale,
        "noise_rho": posterior.noise_rho,
    }
    if settings.shared_noise:
        metrics["shared_noise_fit"] = noise_table
    from sbi_exsitu.evaluation.map_coverage import map_calibration
    from sbi_exsitu.evaluation.map_evaluation import (
        evaluate_map_posterior,
        plot_map_training,
    )
    from sbi_exsitu.figures import save_figure

    save_figure(plot_map_training(hist_cvae, hist_flow), run_dir / "training_curves")
    if evaluate:
        test = subsample(splits["test"], settings.eval_max_obs, cfg.run.seed)
        ev = evaluate_map_posterior(
            posterior,
            dataset,
            test,
            run_dir,
            num_samples=settings.eval_samples,
            seed=cfg.run.seed,
            n_panels=settings.n_panels,
        )
        metrics["test"] = ev["metrics"]
        metrics["test"]["indices"] = test.tolist()
        metrics["calibration"] = map_calibration(
            posterior,
            dataset,
            test,
            num_samples=settings.eval_samples,
            seed=cfg.run.seed,
            out_dir=run_dir,
            samples=ev["samples"]["flow"],
        )
    atomic_write_json(run_dir / "metrics.json", metrics)
    posterior.save(run_dir)  # model.json last: its presence marks a finished run
    return FitResult(run_dir=run_dir, posterior=posterior, metrics=metrics)  # type: ignore[arg-type]
