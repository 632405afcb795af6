r"""The map-valued posterior p(ex-situ fraction map | observation maps).

Angeloudi et al. (2024, arXiv:2410.24069): a conditional VAE (Sohn et al. 2015;
:mod:`sbi_exsitu.cvae`) whose decoder turns a latent vector and the observation
maps into an ex-situ fraction map, and a conditional normalising flow over the
latent, :math:`q(z \mid x)`, conditioned on an :mod:`embeddings` summary of the
observations and used at inference instead of the standard normal prior. A
posterior draw is

.. math:: z \sim q_\phi(z \mid s(x)), \qquad
          y = \mathrm{clip}(\mu_\theta(z, x) + \sigma_\theta(z, x)\,\epsilon, 0, 1),

so draws are in [0, 1] and 0 outside the galaxy mask.

Training (:func:`sbi_exsitu.map_training.fit_map_posterior`, run by
``sbi-exsitu fit`` when the TOML has ``[posterior] kind = "map"``) has two
phases on the galaxy-grouped splits, both with early stopping on the validation
split and D4 augmentation applied jointly to observations, ex-situ maps and
masks: (1) the cVAE on the negative ELBO;
(2) the latent flow (zuko NSF, coupling ``passes=2``: ~10x faster to sample than
autoregressive) and its embedding net on :math:`-\log q_\phi(z \mid s(x))` with
:math:`z \sim q(z \mid y, x)` from the frozen encoder, i.e. the flow learns the
aggregate posterior of the latent given the observations.

The implied scalar f_ex is the mass-weighted mean of a sampled map,
:math:`\sum_p w_p y_p / \sum_p w_p` over the unmasked pixels. The observed mass
map is log10 and standardised per map by default, which loses the per-map
log-mass scale :math:`s` (the offset cancels in the ratio, the scale does not:
:math:`w_p \propto 10^{s z_p}`). The weights are therefore, in order:

1. ``mass=`` given by the caller -- the linear stellar mass per pixel (any units);
2. render config with a ``mass`` channel and ``standardize = false``:
   ``10**mass`` (or ``mass`` when ``log_mass = false``) -- exact;
3. standardised log-mass channel: :math:`10^{\hat s z_p}` with one effective
   scale :math:`\hat s` fitted on the training split so that the *true* maps
   reproduce the f_ex labels best (``mass_scale`` in ``model.json``) -- an
   approximation, which also absorbs on average the mass outside the mask;
4. no usable mass channel: the unweighted mean over the mask.

A dataset that stored the per-map mean and std of the log-mass channel before
standardisation would make case 3 exact (see ``docs/map-posterior.md``).

Example:
    >>> import sbi_exsitu as sx                                    # doctest: +SKIP
    >>> post = sx.load_posterior("runs/map-quickstart")            # doctest: +SKIP
    >>> maps.shape                                                 # doctest: +SKIP
    (10, 5, 32, 32)
    >>> post.sample(maps, 100).shape                               # doctest: +SKIP
    (10, 100, 32, 32)
    >>> s = post.summarize(maps)                                   # doctest: +SKIP
    >>> s.mean.shape, s.f_ex_hdi68.shape                           # doctest: +SKIP
    ((10, 32, 32), (10, 2))
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import zuko

from sbi_exsitu.atomic import atomic_save, atomic_write_json
from sbi_exsitu.cvae import ConditionalVAE, CVAEConfig
from sbi_exsitu.dataset import MapDataset
from sbi_exsitu.device import resolve_device
from sbi_exsitu.experiment import ExperimentConfig
from sbi_exsitu.render import RenderConfig

__all__ = [
    "LatentFlow",
    "MapPosterior",
    "MapSettings",
    "MapSummary",
    "fit_mass_scale",
    "load_map_posterior",
]

MODEL_FILE = "model.json"
METHODS = ("flow", "prior", "reconstruction")


@dataclass(frozen=True)
class MapSettings:
    """The ``[map]`` table of an experiment file (all optional).

    Attributes:
        latent_dim: size of the cVAE latent.
        width: channels of the first cVAE stage.
        beta: KL weight of the ELBO (1 = the ELBO).
        encoder_sees_obs: the encoder sees the observations too (the seed's
            design; off by default: the latent then collapses and the flow
            adds nothing, see docs/map-posterior.md).
        kl_warmup: epochs over which the KL weight rises linearly from 0 to
            ``beta``; without it the decoder learns to read the map off the
            observations before the latent carries anything, and ignores the
            latent for good (posterior collapse; Bowman et al. 2016).
        flow_transforms: NSF transforms of the latent flow.
        flow_hidden: hidden units per layer of the flow.
        flow_bins: spline bins.
        flow_epochs: maximum epochs of the flow phase.
        flow_patience: early-stopping patience of the flow phase.
        max_train: cap on training maps (None = the whole train split).
        eval_samples: posterior draws per test map for figures and metrics.
        eval_max_obs: test maps used for figures and calibration.
        n_panels: galaxies shown in ``map_panels.png``.
    """

    latent_dim: int = 16
    width: int = 16
    beta: float = 1.0
    encoder_sees_obs: bool = False
    kl_warmup: int = 5
    flow_transforms: int = 3
    flow_hidden: int = 64
    flow_bins: int = 8
    flow_epochs: int = 60
    flow_patience: int = 10
    max_train: int | None = None
    eval_samples: int = 100
    eval_max_obs: int = 300
    n_panels: int = 4

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> MapSettings:
        """Read ``cfg.extra["map"]``, refusing unknown keys."""
        from sbi_exsitu.config import take_section

        return take_section(cfg.extra.get("map"), cls, f"{cfg.source} [map]")


class LatentFlow(nn.Module):
    """q(z | x): a zuko NSF over the latent conditioned on an embedding of x.

    Args:
        embedding: (B, C, H, W) -> (B, E) net from :mod:`embeddings`.
        latent_dim: size of z.
        context: E.
        transforms, hidden, bins: flow size.
    """

    def __init__(
        self,
        embedding: nn.Module,
        latent_dim: int,
        context: int,
        transforms: int = 3,
        hidden: int = 64,
        bins: int = 8,
    ):
        super().__init__()
        self.embedding = embedding
        self.flow = zuko.flows.NSF(
            features=latent_dim,
            context=context,
            transforms=transforms,
            bins=bins,
            hidden_features=(hidden, hidden),
            passes=2,  # coupling: one pass to sample (SBI_NOTES: ~10x faster)
        )

    def forward(self, x: torch.Tensor) -> torch.distributions.Distribution:
        return self.flow(self.embedding(x))

    def log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self(x).log_prob(z)


@dataclass
class MapSummary:
    """Per-observation summaries of the map posterior.

    Attributes:
        mean, std: (n, H, W) pixel-wise posterior mean and std (0 outside mask).
        mask: (n, H, W) the pixels summarised.
        f_ex_median, f_ex_mean, f_ex_std: (n,) implied scalar f_ex.
        f_ex_hdi68, f_ex_hdi95: (n, 2) highest-density intervals of f_ex.
        weighting: how the mass weights of f_ex were obtained.
    """

    mean: np.ndarray
    std: np.ndarray
    mask: np.ndarray
    f_ex_median: np.ndarray
    f_ex_mean: np.ndarray
    f_ex_std: np.ndarray
    f_ex_hdi68: np.ndarray
    f_ex_hdi95: np.ndarray
    weighting: str

    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat ``{column: (n,) array}`` of the scalar summaries."""
        return {
            "f_ex_median": self.f_ex_median,
            "f_ex_mean": self.f_ex_mean,
            "f_ex_std": self.f_ex_std,
            "f_ex_hdi68_low": self.f_ex_hdi68[:, 0],
            "f_ex_hdi68_high": self.f_ex_hdi68[:, 1],
            "f_ex_hdi95_low": self.f_ex_hdi95[:, 0],
            "f_ex_hdi95_high": self.f_ex_hdi95[:, 1],
        }


def mass_weights(
    maps: np.ndarray,
    mask: np.ndarray,
    render_config: RenderConfig,
    *,
    mass: np.ndarray | None = None,
    mass_scale: float | None = None,
) -> tuple[np.ndarray, str]:
    """(n, H, W) non-negative pixel weights for the implied f_ex, and their kind.

    See the module docstring for the order of the cases.
    """
    m = mask.astype(np.float64)
    if mass is not None:
        mass = np.asarray(mass, dtype=np.float64)
        if mass.shape != mask.shape or np.any(mass[mask] < 0):
            raise ValueError(
                f"mass must be (n, H, W) = {mask.shape} and >= 0, got {mass.shape}"
            )
        return np.where(mask, mass, 0.0), "mass"
    cfg = render_config
    if "mass" in cfg.channels:
        ch = maps[:, cfg.channels.index("mass")].astype(np.float64)
        if not cfg.standardize:
            if cfg.log_mass:
                # Subtract the per-map maximum: the ratio is unchanged, no overflow.
                peak = np.where(mask, ch, -np.inf).max(axis=(1, 2), keepdims=True)
                return m * 10.0 ** np.where(mask, ch - peak, -np.inf), "mass_channel"
            return m * np.maximum(ch, 0.0), "mass_channel"
        if cfg.log_mass and mass_scale is not None:
            return m * 10.0 ** (mass_scale * np.where(mask, ch, 0.0)), "fitted_scale"
    return m, "uniform"


def implied_fex(samples: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, S) weighted means of (n, S, H, W) maps with (n, H, W) weights."""
    w = weights / np.maximum(weights.sum(axis=(1, 2), keepdims=True), 1e-300)
    return np.einsum("nshw,nhw->ns", samples, w)


def fit_mass_scale(
    exsitu: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    f_ex: np.ndarray,
    render_config: RenderConfig,
    grid: np.ndarray | None = None,
) -> float | None:
    """The scale s for which 10**(s * standardised log mass) weights reproduce f_ex.

    A 1-D grid search of the RMS error of the implied f_ex of the *true* maps
    against the labels. None when the mass channel is not standardised log mass.

    Example:
        >>> cfg = RenderConfig(resolution=8, min_pixels=1)
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(50, 5, 8, 8)); mask = np.ones((50, 8, 8), bool)
        >>> y = rng.uniform(size=(50, 8, 8))
        >>> w = 10 ** (0.7 * z[:, 0]); f = (w * y).sum((1, 2)) / w.sum((1, 2))
        >>> round(fit_mass_scale(y, z, mask, f, cfg), 2)
        0.7
    """
    if not (
        "mass" in render_config.channels
        and render_config.standardize
        and render_config.log_mass
    ):
        return None
    grid = np.linspace(0.0, 3.0, 301) if grid is None else grid
    ch = np.where(mask, maps[:, render_config.channels.index("mass")], 0.0)
    errors = []
    for s in grid:
        w = mask * 10.0 ** (s * ch)
        pred = (w * exsitu).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
        errors.append(np.sqrt(np.mean((pred - f_ex) ** 2)))
    return float(grid[int(np.argmin(errors))])


def _infer_mask(maps: np.ndarray) -> np.ndarray:
    # The renderer sets every channel to exactly 0 outside the mask.
    return np.any(maps != 0, axis=1)


class MapPosterior:
    """The map-valued posterior: cVAE decoder + latent flow.

    Args:
        cvae: trained :class:`~sbi_exsitu.cvae.ConditionalVAE`.
        flow: trained :class:`LatentFlow`.
        render_config: how the training maps were rendered.
        embedding_config: the :func:`embeddings.build_embedding` arguments.
        settings: the ``[map]`` settings used in training.
        mass_scale: fitted log-mass scale for the implied f_ex (or None).
        device: where to evaluate.
        run_dir: the run directory, if loaded from one.
        metadata: free-form JSON (training set, times).
    """

    kind = "map"

    def __init__(
        self,
        cvae: ConditionalVAE,
        flow: LatentFlow,
        render_config: RenderConfig,
        embedding_config: dict[str, Any],
        settings: MapSettings,
        *,
        mass_scale: float | None = None,
        device: str | torch.device = "cpu",
        run_dir: Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cvae = cvae.to(self.device).eval()
        self.flow = flow.to(self.device).eval()
        self.render_config = render_config
        self.embedding_config = dict(embedding_config)
        self.settings = settings
        self.mass_scale = mass_scale
        self.run_dir = run_dir
        self.metadata = dict(metadata or {})

    # -- shapes and checks ---------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return ["exsitu_map"]

    @property
    def members(self) -> list[MapPosterior]:
        return [self]

    @property
    def x_shape(self) -> tuple[int, int, int]:
        n = self.render_config.resolution
        return (self.render_config.n_channels, n, n)

    def check_render_config(self, other: RenderConfig, where: str = "maps") -> None:
        """Refuse maps rendered with another configuration, naming each difference."""
        from sbi_exsitu.posterior import RenderConfigMismatch

        if other != self.render_config:
            raise RenderConfigMismatch(
                f"{where} were rendered with a different config than this posterior "
                "was trained on (given != trained): "
                + "; ".join(other.diff(self.render_config))
            )

    def _inputs(
        self,
        maps: np.ndarray | MapDataset,
        mask: np.ndarray | None,
        render_config: RenderConfig | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        from sbi_exsitu.posterior import RenderConfigMismatch

        if isinstance(maps, MapDataset):
            self.check_render_config(maps.render_config, where=str(maps.path))
            idx = np.arange(len(maps))
            return maps.maps(idx), maps.mask(idx) if mask is None else mask
        if render_config is not None:
            self.check_render_config(render_config)
        arr = np.asarray(maps, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[1:] != self.x_shape:
            raise RenderConfigMismatch(
                f"maps have shape {arr.shape[1:]} per observation, expected "
                f"{self.x_shape} (channels {list(self.render_config.channels)} at "
                f"{self.render_config.resolution} px)"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("maps contain NaN or infinite values")
        if mask is None:
            mask = _infer_mask(arr)
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != (len(arr), *self.x_shape[1:]):
            raise ValueError(
                f"mask has shape {mask.shape}, expected {(len(arr), *self.x_shape[1:])}"
            )
        return arr, mask

    # -- sampling ------------------------------------------------------------------
    def _latents(
        self,
        method: str,
        x: torch.Tensor,
        num: int,
        generator: torch.Generator,
        exsitu: torch.Tensor | None,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """(num, B, latent_dim) latents drawn the requested way."""
        b, d = len(x), self.cvae.cfg.latent_dim
        if method == "prior":
            return torch.randn((num, b, d), generator=generator)
        if method == "reconstruction":
            if exsitu is None:
                raise ValueError("method='reconstruction' needs the true exsitu maps")
            mean, std = self.cvae.encode(exsitu, x, mask)
            return mean + std * torch.randn((num, b, d), generator=generator)
        if method == "flow":
            # zuko samples from the global RNG; the caller forks and seeds it.
            return self.flow(x).sample((num,))
        raise ValueError(f"method is {method!r}, expected one of {list(METHODS)}")

    @torch.no_grad()
    def _sample_batch(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        num_samples: int,
        method: str,
        generator: torch.Generator,
        exsitu: torch.Tensor | None,
        noise: bool,
        chunk: int,
    ) -> np.ndarray:
        z = self._latents(method, x, num_samples, generator, exsitu, mask)
        feats = self.cvae.condition(x, mask)
        out = np.empty((len(x), num_samples, *x.shape[-2:]), np.float32)
        step = max(1, chunk // len(x))
        for s0 in range(0, num_samples, step):
            zs = z[s0 : s0 + step]  # (s, B, D): decode s * B maps in one pass
            s = len(zs)
            rep = [f.repeat(s, 1, 1, 1) for f in feats]
            y = self.cvae.sample_maps(
                zs.reshape(s * len(x), -1),
                x.repeat(s, 1, 1, 1),
                mask.repeat(s, 1, 1),
                noise=noise,
                generator=generator,
                feats=rep,
            )
            out[:, s0 : s0 + s] = (
                y.view(s, len(x), *y.shape[1:]).transpose(0, 1).numpy()
            )
        return out

    def sample(
        self,
        maps: np.ndarray | MapDataset,
        num_samples: int = 100,
        *,
        seed: int | None = None,
        batch_size: int = 64,
        progress: bool = False,
        render_config: RenderConfig | None = None,
        mask: np.ndarray | None = None,
        method: str = "flow",
        exsitu: np.ndarray | None = None,
        noise: bool = True,
    ) -> np.ndarray:
        """Posterior draws of the ex-situ fraction map for every observation.

        Args:
            maps: (n, C, H, W) observation maps or a :class:`MapDataset`.
            num_samples: draws per observation.
            seed: makes the draws reproducible (global torch RNG untouched).
            batch_size: observations per vectorised call.
            progress: progress bar over batches.
            render_config: the config the array was rendered with, to check.
            mask: (n, H, W) pixels holding data; default: pixels where any
                channel is non-zero (the renderer writes 0 outside the mask).
            method: ``"flow"`` (the posterior), ``"prior"`` (latent from N(0, I),
                the plain cVAE) or ``"reconstruction"`` (latent from the encoder
                given ``exsitu``, the truth: a lower bound on the error).
            exsitu: (n, H, W) true maps, for ``method="reconstruction"``.
            noise: draw the pixel likelihood (True, calibrated pixel intervals)
                or return its mean per latent draw (False).

        Returns:
            (n, num_samples, H, W) float32 maps in [0, 1], 0 outside the mask.
        """
        arr, msk = self._inputs(maps, mask, render_config)
        ex = None if exsitu is None else np.asarray(exsitu, dtype=np.float32)
        out = np.empty((len(arr), num_samples, *arr.shape[-2:]), np.float32)
        starts = range(0, len(arr), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"sampling ({method})", unit="batch")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # zuko's flow samples from the global RNG
            generator = torch.Generator().manual_seed(seed)
            for start in starts:
                sl = slice(start, start + batch_size)
                x = torch.from_numpy(arr[sl]).to(self.device)
                m = torch.from_numpy(msk[sl]).to(self.device)
                y = None if ex is None else torch.from_numpy(ex[sl]).to(self.device)
                out[sl] = self._sample_batch(
                    x, m, num_samples, method, generator, y, noise, chunk=2048
                )
        return out

    def summarize(
        self,
        maps: np.ndarray | MapDataset,
        num_samples: int = 100,
        *,
        seed: int | None = 0,
        batch_size: int = 64,
        progress: bool = False,
        render_config: RenderConfig | None = None,
        mask: np.ndarray | None = None,
        mass: np.ndarray | None = None,
        samples: np.ndarray | None = None,
    ) -> MapSummary:
        """Mean and std maps and the implied f_ex with its 68%/95% HDIs.

        Args:
            maps, num_samples, seed, batch_size, progress, render_config, mask:
                as in :meth:`sample`.
            mass: (n, H, W) linear stellar mass per pixel for the f_ex weights;
                default: from the maps (see the module docstring).
            samples: (n, S, H, W) draws you already have.
        """
        import arviz as az

        arr, msk = self._inputs(maps, mask, render_config)
        if samples is None:
            samples = self.sample(
                arr,
                num_samples,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
                mask=msk,
            )
        weights, kind = self.mass_weights(arr, msk, mass=mass)
        f = implied_fex(samples, weights)
        chain = f.T[None, :, :]  # arviz: (chain, draw, obs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdi68 = np.asarray(az.hdi(chain, hdi_prob=0.68))
            hdi95 = np.asarray(az.hdi(chain, hdi_prob=0.95))
        return MapSummary(
            mean=samples.mean(axis=1),
            std=samples.std(axis=1),
            mask=msk,
            f_ex_median=np.median(f, axis=1),
            f_ex_mean=f.mean(axis=1),
            f_ex_std=f.std(axis=1),
            f_ex_hdi68=hdi68,
            f_ex_hdi95=hdi95,
            weighting=kind,
        )

    def mass_weights(
        self, maps: np.ndarray, mask: np.ndarray, mass: np.ndarray | None = None
    ) -> tuple[np.ndarray, str]:
        """Pixel weights of the implied f_ex (see the module docstring)."""
        return mass_weights(
            maps, mask, self.render_config, mass=mass, mass_scale=self.mass_scale
        )

    def log_prob(self, theta: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """Not available: the latent-variable model has no tractable density."""
        raise NotImplementedError(
            "the map posterior is a latent-variable model without a tractable "
            "log-density; use sbi_exsitu.map_evaluation.map_calibration"
        )

    def test_split(self) -> tuple[MapDataset, np.ndarray]:
        """The training dataset and its held-out test indices (``splits.json``)."""
        from sbi_exsitu.posterior import ExSituPosterior

        return ExSituPosterior.test_split(self)  # type: ignore[arg-type]

    # -- persistence ---------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write ``weights/cvae.pt``, ``weights/flow.pt`` and ``model.json``."""
        run_dir = Path(run_dir)
        for name, module in (("cvae", self.cvae), ("flow", self.flow)):
            state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
            atomic_save(
                run_dir / "weights" / f"{name}.pt", lambda p, s=state: torch.save(s, p)
            )
        atomic_write_json(
            run_dir / MODEL_FILE,
            {
                "format": 1,
                "kind": "map",
                "cvae": self.cvae.cfg.to_dict(),
                "embedding": self.embedding_config,
                "settings": dataclasses.asdict(self.settings),
                "render_config": self.render_config.to_dict(),
                "mass_scale": self.mass_scale,
                "metadata": self.metadata,
            },
        )
        self.run_dir = run_dir
        return run_dir

    def __repr__(self) -> str:
        return (
            f"MapPosterior(x_shape={self.x_shape}, latent_dim="
            f"{self.cvae.cfg.latent_dim}, mass_scale={self.mass_scale})"
        )


def _build_flow(embedding_config: dict[str, Any], settings: MapSettings) -> LatentFlow:
    from embeddings import build_embedding

    net = build_embedding(**embedding_config)
    return LatentFlow(
        net,
        settings.latent_dim,
        embedding_config["out_features"],
        transforms=settings.flow_transforms,
        hidden=settings.flow_hidden,
        bins=settings.flow_bins,
    )


def load_map_posterior(run_dir: str | Path, device: str = "cpu") -> MapPosterior:
    """Rebuild a :class:`MapPosterior` from a run directory, without unpickling.

    Raises:
        FileNotFoundError: ``model.json`` or a weights file is missing.
    """
    run_dir = Path(run_dir)
    model_file = run_dir / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{model_file} not found: '{run_dir}' is not a "
            "finished run (run `sbi-exsitu fit CONFIG`)"
        )
    meta = json.loads(model_file.read_text())
    if meta.get("kind") != "map":
        raise ValueError(f"{model_file}: kind is {meta.get('kind')!r}, not 'map'")
    dev = resolve_device(device)
    settings = MapSettings(**meta["settings"])
    cvae = ConditionalVAE(CVAEConfig.from_dict(meta["cvae"]))
    flow = _build_flow(meta["embedding"], settings)
    for name, module in (("cvae", cvae), ("flow", flow)):
        path = run_dir / "weights" / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights missing")
        module.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    return MapPosterior(
        cvae,
        flow,
        RenderConfig.from_dict(meta["render_config"]),
        meta["embedding"],
        settings,
        mass_scale=meta.get("mass_scale"),
        device=dev,
        run_dir=run_dir,
        metadata=meta.get("metadata"),
    )
