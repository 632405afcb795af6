r"""Training of the map-valued posterior (``[posterior] kind = "map"``).

Two phases on the galaxy-grouped splits, both Adam with early stopping on the
validation split and D4 augmentation applied jointly to observations, ex-situ
maps and masks: (1) the cVAE on the negative ELBO, with a KL warm-up during
which the decoder does not see the observations; (2) the latent flow
(:mod:`sbi_exsitu.posteriors.map.latent_flow`) and its embedding net on
:math:`-\log q_\phi(z \mid s(x))` with :math:`z \sim q(z \mid y)` from the frozen
encoder, i.e. the flow learns the aggregate posterior of the latent given the
observations. Then the f_ex mass scale (:mod:`sbi_exsitu.data.exsitu_fraction`),
the pixel-noise scale and tail (:mod:`sbi_exsitu.posteriors.map.pixel_noise`) and
the shared pixel noise (:mod:`sbi_exsitu.posteriors.map.noise`) are fitted on the
validation split, the outside-mask head is trained
(:mod:`sbi_exsitu.training.map_run`), and the test split is evaluated. The
trained model is :class:`sbi_exsitu.posteriors.map.posterior.MapPosterior`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.device import configure_threads, resolve_device
from sbi_exsitu.errors import ConfigError
from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig
from sbi_exsitu.posteriors.map.latent_flow import build_latent_flow
from sbi_exsitu.posteriors.map.noise import fit_shared_noise
from sbi_exsitu.posteriors.map.pixel_noise import fit_pixel_noise
from sbi_exsitu.posteriors.map.posterior import MapPosterior
from sbi_exsitu.runs import RunDirectory
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.training.loop import discard_checkpoint, train_loop
from sbi_exsitu.training.map_run import (
    Batch,
    MapArrays,
    embedding_config,
    ensure_dataset,
    finish_map_run,
    fit_run_mass_scale,
    read_arrays,
    train_batches,
    validation_batches,
)
from sbi_exsitu.training.result import prepare_run

__all__ = ["KLWarmup", "fit_map_posterior"]


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
    train: MapArrays,
    val: MapArrays,
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
        train_batches(
            train, cfg.training.batch_size, seed, cfg.training.augment == "d4"
        ),
        validation_batches(val, seed),
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
    train: MapArrays,
    val: MapArrays,
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
        train_batches(train, tr.batch_size, seed, tr.augment == "d4"),
        validation_batches(val, seed),
        dataclasses.replace(
            tr, max_epochs=settings.flow_epochs, patience=settings.flow_patience
        ),
        seed=seed,
        name="latent flow",
        progress=progress,
    )
    return history.to_dict()


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
    emb = embedding_config(cfg, shape)
    return cvae, build_latent_flow(emb, settings), emb


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
    ensure_dataset(cfg)
    run, dataset, splits = prepare_run(cfg, overwrite)
    train_idx = subsample(splits["train"], settings.max_train, cfg.run.seed)
    train, val = read_arrays(dataset, train_idx, splits["validation"])
    cvae, flow, emb_config = _build_models(cfg, settings, dataset.shape)
    t0 = time.perf_counter()
    hist_cvae = _train_cvae(cvae, train, val, cfg, settings, run, progress)
    hist_flow = _train_flow(flow, cvae, train, val, cfg, settings, progress)
    train_seconds = time.perf_counter() - t0
    posterior = _assemble(
        cvae,
        flow,
        dataset,
        train,
        train_idx,
        emb_config,
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
    val_idx = subsample(
        splits["validation"],
        settings.eval_max_obs,
        derive_seed(cfg.run.seed, "noise"),
    )
    if settings.pixel_calibration:
        # Marginals first: the rho fit below draws with the calibrated noise.
        scale, tail, metrics["pixel_noise_fit"] = fit_pixel_noise(
            posterior,
            dataset,
            val_idx,
            num_samples=settings.eval_samples,
            seed=cfg.run.seed,
        )
        posterior.noise_scale, posterior.noise_tail = scale, tail
        metrics |= {"noise_scale": scale, "noise_tail": tail}
    if settings.shared_noise:
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
        {"cvae": hist_cvae, "flow": hist_flow}, train_idx=train_idx,
        evaluate=evaluate, num_eval_samples=num_eval_samples, progress=progress,
    )  # fmt: skip


def _assemble(
    cvae: ConditionalVAE,
    flow: nn.Module,
    dataset: MapDataset,
    train: MapArrays,
    train_idx: np.ndarray,
    embedding_config: dict[str, Any],
    settings: MapSettings,
    metadata: dict[str, Any],
) -> MapPosterior:
    """The posterior of the trained modules, with the f_ex mass scale fitted."""
    mass_scale = fit_run_mass_scale(dataset, train, train_idx)
    return MapPosterior(
        cvae,
        flow,
        dataset.render_config,
        embedding_config,
        settings,
        mass_scale=mass_scale,
        metadata={"train_dataset": str(dataset.path), **metadata},
    )
