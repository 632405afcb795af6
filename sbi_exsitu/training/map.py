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

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.data.exsitu_fraction import fit_mass_scale
from sbi_exsitu.device import configure_threads, resolve_device
from sbi_exsitu.errors import ConfigError, DatasetError
from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig
from sbi_exsitu.posteriors.map.latent_flow import build_latent_flow
from sbi_exsitu.posteriors.map.noise import fit_shared_noise
from sbi_exsitu.posteriors.map.posterior import MapPosterior
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.loop import discard_checkpoint, train_loop
from sbi_exsitu.training.result import FitResult, prepare_run

__all__ = ["KLWarmup", "finish_map_run", "fit_map_posterior"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]


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


def _train_batches(
    data: _Arrays, batch_size: int, seed: int, augment: bool
) -> Callable[[int], Iterator[Batch]]:
    """``epoch -> batches``: order and augmentation seeded by ``(seed, epoch)``."""

    def batches(epoch: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        order = np.random.default_rng(derive_seed(seed, "order", epoch))
        perm = order.permutation(len(data))
        for x, y, m in data.batches(batch_size, perm, gen if augment else None):
            yield x, y, m, gen

    return batches


def _validation_batches(data: _Arrays, seed: int) -> Callable[[], Iterator[Batch]]:
    """The validation batches, with the same noise every epoch (comparable)."""

    def batches() -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(derive_seed(seed, "validation"))
        for x, y, m in data.batches(256):
            yield x, y, m, gen

    return batches


class KLWarmup:
    """The cVAE's KL warm-up (an :class:`~sbi_exsitu.training.loop.EpochSchedule`).

    During the first ``epochs`` epochs the KL weight rises linearly to 1 and the
    decoder does not see the observations; validation always uses the full
    objective, so that validation losses compare over epochs.
    """

    def __init__(self, cvae: ConditionalVAE, epochs: int) -> None:
        self.cvae, self.epochs, self.kl_scale = cvae, max(epochs, 0), 1.0

    def train(self, epoch: int) -> None:
        w = self.epochs
        self.kl_scale = min(1.0, (epoch + 1) / (w + 1)) if w else 1.0
        self.cvae.condition_scale = 0.0 if epoch < w else 1.0

    def validate(self) -> None:
        self.kl_scale, self.cvae.condition_scale = 1.0, 1.0


def _train_cvae(
    cvae: ConditionalVAE,
    train: _Arrays,
    val: _Arrays,
    cfg: ExperimentConfig,
    settings: MapSettings,
    run: RunDirectory,
    progress: bool,
) -> dict[str, Any]:
    """Train the cVAE on the negative ELBO per pixel, or load a finished one."""
    hist_file = run.checkpoint("cvae").with_suffix(".history.json")
    if run.weights("cvae").exists() and hist_file.exists():
        run.load_into(cvae, "cvae")
        return json.loads(hist_file.read_text())
    warmup = KLWarmup(cvae, settings.kl_warmup)
    pixels = cvae.cfg.image_size**2

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, m, g = batch
        return model.loss(y, x, m, generator=g, kl_scale=warmup.kl_scale) / pixels

    seed = derive_seed(cfg.run.seed, "cvae")
    history = train_loop(
        cvae,
        loss,
        _train_batches(
            train, cfg.training.batch_size, seed, cfg.training.augment == "d4"
        ),
        _validation_batches(val, seed),
        cfg.training,
        checkpoint=run.checkpoint("cvae"),
        seed=seed,
        name="cVAE",
        schedule=warmup,
        progress=progress,
    )
    run.save_weights("cvae", cvae.state_dict())
    atomic_write_json(hist_file, history.to_dict())
    discard_checkpoint(run.checkpoint("cvae"))
    return history.to_dict()


def _train_flow(
    flow: nn.Module,
    cvae: ConditionalVAE,
    train: _Arrays,
    val: _Arrays,
    cfg: ExperimentConfig,
    settings: MapSettings,
    progress: bool,
) -> dict[str, Any]:
    """Train the latent flow on z ~ q(z | y) of the frozen encoder."""
    cvae.eval()
    with torch.no_grad():
        enc = [cvae.encode(y, x, m) for x, y, m in train.batches(256)]
    flow.standardize(torch.cat([e[0] for e in enc]), torch.cat([e[1] for e in enc]))

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y, m, g = batch
        with torch.no_grad():  # the encoder is frozen
            mean, std = cvae.encode(y, x, m)
        z = mean + std * torch.randn(mean.shape, generator=g)
        return -model.log_prob(z, x)

    tr = cfg.training
    seed = derive_seed(cfg.run.seed, "flow")
    history = train_loop(
        flow,
        loss,
        _train_batches(train, tr.batch_size, seed, tr.augment == "d4"),
        _validation_batches(val, seed),
        dataclasses.replace(
            tr, max_epochs=settings.flow_epochs, patience=settings.flow_patience
        ),
        seed=seed,
        name="latent flow",
        progress=progress,
    )
    return history.to_dict()


def _ensure_dataset(cfg: ExperimentConfig) -> None:
    # Convenience for the quickstart configs: simulate a missing training set.
    if cfg.train_path.exists() or not cfg.simulate:
        return
    from sbi_exsitu.data.simulate import simulate

    simulate(cfg.simulation_config(), cfg.train_path, workers=1, progress=False)


def _build_models(
    cfg: ExperimentConfig, settings: MapSettings, shape: tuple[int, int, int]
) -> tuple[ConditionalVAE, nn.Module, dict[str, Any]]:
    """(cVAE, latent flow, embedding config), initialised from ``cfg.run.seed``."""
    from sbi_exsitu.embeddings import EMBEDDINGS

    c, h, _ = shape
    p = cfg.posterior
    if p.embedding not in EMBEDDINGS:
        raise ConfigError(
            f"{cfg.source} [posterior]: unknown embedding "
            f"{p.embedding!r}; known: {sorted(EMBEDDINGS)}"
        )
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
    embedding_config = {
        "name": p.embedding,
        "in_channels": c,
        "image_size": h,
        "out_features": p.embedding_features,
        "invariant": p.invariant,
        **p.embedding_kwargs,
    }
    return cvae, build_latent_flow(embedding_config, settings), embedding_config


def _read_arrays(
    dataset: MapDataset, train_idx: np.ndarray, val_idx: np.ndarray
) -> tuple[_Arrays, _Arrays]:
    train, val = _Arrays.read(dataset, train_idx), _Arrays.read(dataset, val_idx)
    if not (torch.isfinite(train.y).all() and torch.isfinite(val.y).all()):
        raise DatasetError(
            f"{dataset.path}: ex-situ maps contain NaN (data without "
            "ex-situ flags cannot train the map posterior)"
        )
    return train, val


def _evaluate(
    posterior: MapPosterior,
    dataset: MapDataset,
    test: np.ndarray,
    out_dir: Path,
    *,
    num_samples: int,
    seed: int,
    n_panels: int,
) -> dict[str, Any]:
    """Residuals, figures and the implied-f_ex calibration on the test maps."""
    from sbi_exsitu.evaluation.map_coverage import map_calibration
    from sbi_exsitu.evaluation.map_evaluation import evaluate_map_posterior

    ev = evaluate_map_posterior(
        posterior,
        dataset,
        test,
        out_dir,
        num_samples=num_samples,
        seed=seed,
        n_panels=n_panels,
    )
    metrics = {"test": ev["metrics"] | {"indices": test.tolist()}}
    metrics["calibration"] = map_calibration(
        posterior,
        dataset,
        test,
        num_samples=num_samples,
        seed=seed,
        out_dir=out_dir,
        samples=ev["samples"]["flow"],
    )
    return metrics


def finish_map_run(
    posterior: Any,
    dataset: MapDataset,
    splits: dict[str, np.ndarray],
    run: RunDirectory,
    cfg: ExperimentConfig,
    settings: MapSettings,
    metrics: dict[str, Any],
    *,
    evaluate: bool,
    num_eval_samples: int | None,
) -> FitResult:
    """The last steps of every map model's fit: evaluate, write metrics, save.

    Shared by the cVAE and the flow-matching trainers, so a finished run looks
    the same whichever model made it; ``model.json`` is written last.
    """
    if evaluate:
        test = subsample(splits["test"], settings.eval_max_obs, cfg.run.seed)
        metrics |= _evaluate(
            posterior,
            dataset,
            test,
            run.path,
            num_samples=num_eval_samples or settings.eval_samples,
            seed=cfg.run.seed,
            n_panels=settings.n_panels,
        )
    run.write_metrics(metrics)
    posterior.save(run.path)  # model.json last: its presence marks a finished run
    return FitResult(run_dir=run.path, posterior=posterior, metrics=metrics)


def fit_map_posterior(
    cfg: ExperimentConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    num_eval_samples: int | None = None,
) -> Any:
    """Train the map posterior of ``cfg`` and write its run directory.

    The run directory gets the files of a scalar run (``config.json``,
    ``render_config.json``, ``splits.json``, ``model.json`` last,
    ``weights/``, ``history.json``, ``metrics.json``) plus the evaluation
    figures of :func:`sbi_exsitu.evaluation.map_evaluation.evaluate_map_posterior`. A
    finished cVAE phase (``weights/cvae.pt``) is reused when the job is re-run,
    an interrupted one resumes from its checkpoint.

    Args:
        cfg: an experiment with ``[posterior] kind = "map"`` and an optional
            ``[map]`` table (:class:`MapSettings`).
        overwrite: discard an existing run of another configuration.
        progress: progress bars.
        evaluate: residuals, figures and calibration on the test split.
        num_eval_samples: posterior draws per test map (default
            ``[map] eval_samples``).

    Returns:
        :class:`sbi_exsitu.training.fit.FitResult`.

    Raises:
        TrainingDivergedError: a loss became NaN or infinite.
    """

    settings = MapSettings.from_config(cfg)
    if settings.model != "cvae":
        raise ConfigError(
            f"{cfg.source} [map]: model is {settings.model!r}; this trains the "
            "cVAE (train any map model with sbi_exsitu.training.fit.fit)"
        )
    configure_threads(cfg.run.threads)
    if resolve_device(cfg.run.device).type != "cpu":
        warnings.warn(
            "the map posterior trains on CPU tensors; device ignored", stacklevel=2
        )
    _ensure_dataset(cfg)
    run, dataset, splits = prepare_run(cfg, overwrite)
    train_idx = subsample(splits["train"], settings.max_train, cfg.run.seed)
    train, val = _read_arrays(dataset, train_idx, splits["validation"])
    cvae, flow, embedding_config = _build_models(cfg, settings, dataset.shape)
    t0 = time.perf_counter()
    hist_cvae = _train_cvae(cvae, train, val, cfg, settings, run, progress)
    hist_flow = _train_flow(flow, cvae, train, val, cfg, settings, progress)
    train_seconds = time.perf_counter() - t0
    run.write_history({"cvae": hist_cvae, "flow": hist_flow})
    posterior = _assemble(
        cvae,
        flow,
        dataset,
        train,
        train_idx,
        embedding_config,
        settings,
        {"train_seconds": train_seconds, "n_train": len(train_idx)},
    )
    metrics: dict[str, Any] = {
        "kind": "map",
        "n_train": len(train_idx),
        "n_validation": len(splits["validation"]),
        "n_test": len(splits["test"]),
        "train_seconds": train_seconds,
        "cvae_epochs": len(hist_cvae["train_loss"]),
        "flow_epochs": len(hist_flow["train_loss"]),
        "mass_scale": posterior.mass_scale,
        "noise_rho": posterior.noise_rho,
    }
    if settings.shared_noise:
        val_idx = subsample(
            splits["validation"],
            settings.eval_max_obs,
            derive_seed(cfg.run.seed, "noise"),
        )
        posterior.noise_rho, metrics["shared_noise_fit"] = fit_shared_noise(
            posterior,
            dataset,
            val_idx,
            num_samples=settings.eval_samples,
            seed=cfg.run.seed,
        )
        metrics["noise_rho"] = posterior.noise_rho
    from sbi_exsitu.evaluation.map_evaluation import plot_map_training
    from sbi_exsitu.figures import save_figure

    save_figure(plot_map_training(hist_cvae, hist_flow), run / "training_curves")
    return finish_map_run(
        posterior, dataset, splits, run, cfg, settings, metrics,
        evaluate=evaluate, num_eval_samples=num_eval_samples,
    )  # fmt: skip


def _assemble(
    cvae: ConditionalVAE,
    flow: nn.Module,
    dataset: MapDataset,
    train: _Arrays,
    train_idx: np.ndarray,
    embedding_config: dict[str, Any],
    settings: MapSettings,
    metadata: dict[str, Any],
) -> MapPosterior:
    """The posterior of the trained modules, with the f_ex mass scale fitted."""
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
    return MapPosterior(
        cvae,
        flow,
        dataset.render_config,
        embedding_config,
        settings,
        mass_scale=mass_scale,
        metadata={"train_dataset": str(dataset.path), **metadata},
    )
