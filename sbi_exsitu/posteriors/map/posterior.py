r"""The map-valued posterior p(ex-situ fraction map | observation maps).

Angeloudi et al. (2024, arXiv:2410.24069): a conditional VAE (Sohn et al. 2015;
:mod:`sbi_exsitu.posteriors.map.cvae`) whose decoder turns a latent vector and the
observation
maps into an ex-situ fraction map, and a conditional normalising flow over the
latent, :math:`q(z \mid x)`, conditioned on an :mod:`embeddings` summary of the
observations and used at inference instead of the standard normal prior. A
posterior draw is

.. math:: z \sim q_\phi(z \mid s(x)), \qquad
          y = \mathrm{clip}(\mu_\theta(z, x) + \sigma_\theta(z, x)\,\epsilon, 0, 1),

so draws are in [0, 1] and 0 outside the galaxy mask. The pixel noise
:math:`\epsilon` is N(0, 1) per pixel with correlation ``noise_rho`` between the
pixels of a draw (:mod:`sbi_exsitu.posteriors.map.noise`), fitted on the validation
split
after training.

Training: :func:`sbi_exsitu.training.map.fit_map_posterior` (``sbi-exsitu fit``
with ``[posterior] kind = "map"``), first the cVAE, then the latent flow
(:mod:`sbi_exsitu.posteriors.map.latent_flow`) on latents from the frozen encoder.

The implied scalar f_ex of a draw is its mass-weighted mean over the mask,
with the weights of :mod:`sbi_exsitu.data.exsitu_fraction`.

Example:
    >>> import sbi_exsitu as sx                                    # doctest: +SKIP
    >>> post = sx.load_posterior("runs/map-quickstart")            # doctest: +SKIP
    >>> post.sample(maps, 100).shape  # maps: (10, 5, 32, 32)       # doctest: +SKIP
    (10, 100, 32, 32)
    >>> s = post.summarize(maps)                                   # doctest: +SKIP
    >>> s.mean.shape, s.f_ex_hdi68.shape                           # doctest: +SKIP
    ((10, 32, 32), (10, 2))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data import compatibility as compat
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.exsitu_fraction import implied_fex, mass_weights
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.device import resolve_device
from sbi_exsitu.posteriors.base import Posterior
from sbi_exsitu.posteriors.map.cvae import (
    ConditionalVAE,
    CVAEConfig,
    censored_gaussian_mean,
    sample_censored_gaussian,
)
from sbi_exsitu.posteriors.map.fast_decoder import FastDecoder
from sbi_exsitu.posteriors.map.io import read_map_run, restore_common, save_map_run
from sbi_exsitu.posteriors.map.latent_flow import LatentFlow, build_latent_flow
from sbi_exsitu.posteriors.map.outside import OutsideMaskHead, galaxy_fex
from sbi_exsitu.posteriors.map.summary import MapSummary
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "LatentFlow",
    "MapPosterior",
    "MapSettings",
    "MapSummary",
    "load_map_posterior",
]

METHODS = ("flow", "prior", "reconstruction")
# Pixels per decoder pass (16 maps at 64 px, 64 at 32 px): the activations then
# stay in cache. 100 draws at 64 px, 1 thread: 204 ms per galaxy with 16 maps
# per pass, 255 ms with 64, 352 ms with 256 (measured, FastDecoder, loaded host).
_CHUNK_PIXELS = 16 * 64 * 64


def _tile(
    s: int, x: torch.Tensor, mask: torch.Tensor, feats: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Decoder inputs for s latents per observation, latent-major: (s * B, ...)."""
    tiled = [t.repeat(s, *[1] * (t.dim() - 1)) for t in (x, mask, *feats)]
    return tiled[0], tiled[1], tiled[2:]


def _untile(maps: torch.Tensor, s: int) -> torch.Tensor:
    """(s * B, H, W) decoder output back to (B, s, H, W)."""
    return maps.view(s, -1, *maps.shape[1:]).transpose(0, 1)


def _infer_mask(maps: np.ndarray) -> np.ndarray:
    # The renderer sets every channel to exactly 0 outside the mask.
    return np.any(maps != 0, axis=1)


class MapPosterior(Posterior):
    """The map-valued posterior: cVAE decoder + latent flow.

    Args:
        cvae: trained :class:`~sbi_exsitu.posteriors.map.cvae.ConditionalVAE`.
        flow: trained :class:`LatentFlow`.
        render_config: how the training maps were rendered.
        embedding_config: the :func:`embeddings.build_embedding` arguments.
        settings: the ``[map]`` settings used in training.
        mass_scale: fitted log-mass scale for the implied f_ex (or None).
        noise_rho: correlation of the pixel noise between the pixels of a
            draw (:mod:`sbi_exsitu.posteriors.map.noise`; 0 = independent pixels).
        device: where to evaluate.
        run_dir: the run directory, if loaded from one.
        metadata: free-form JSON (training set, times).
    """

    kind = "map"
    #: The ways :meth:`sample` can draw latents (``method=``).
    methods: tuple[str, ...] = METHODS
    #: Decode draws with :class:`~sbi_exsitu.posteriors.map.fast_decoder.FastDecoder`
    #: (the same function to float32 rounding, 3-4x faster at 64 px); False
    #: uses the plain decoder (kept as the reference in the tests).
    fast_decoder: bool = True
    #: The trained outside-mask head (:mod:`sbi_exsitu.posteriors.map.outside`),
    #: or None: :meth:`summarize` then reports the in-mask f_ex only.
    outside_head: OutsideMaskHead | None = None
    #: Pixel-noise calibration (:func:`~sbi_exsitu.posteriors.map.noise.tail_noise`,
    #: fitted on the validation split): scale and tail weight of the noise.
    noise_scale: float = 1.0
    noise_tail: float = 1.0

    def __init__(
        self,
        cvae: ConditionalVAE,
        flow: LatentFlow,
        render_config: RenderConfig,
        embedding_config: dict[str, Any],
        settings: MapSettings,
        *,
        mass_scale: float | None = None,
        noise_rho: float = 0.0,
        device: str | torch.device = "cpu",
        run_dir: Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= noise_rho < 1.0:
            raise ValueError(f"noise_rho is {noise_rho}, expected 0 <= rho < 1")
        self.device = resolve_device(device)
        self.cvae = cvae.to(self.device).eval()
        self.flow = flow.to(self.device).eval()
        self.render_config = render_config
        self.embedding_config = dict(embedding_config)
        self.settings = settings
        self.mass_scale = mass_scale
        self.noise_rho = float(noise_rho)
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

    def _inputs(
        self,
        maps: np.ndarray | MapDataset,
        mask: np.ndarray | None,
        render_config: RenderConfig | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Checked (n, C, H, W) maps and their (n, H, W) mask."""
        checked = compat.as_observation_maps(
            maps, self.render_config, self.x_shape, render_config
        )
        if isinstance(checked, MapDataset):
            arr = np.concatenate([x for _, x in compat.iter_observations(checked, 256)])
            idx = np.arange(len(checked))
            return arr, checked.mask(idx) if mask is None else mask
        if mask is None:
            mask = _infer_mask(checked)
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != (len(checked), *self.x_shape[1:]):
            raise ValueError(
                f"mask has shape {mask.shape}, expected "
                f"{(len(checked), *self.x_shape[1:])}"
            )
        return checked, mask

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

    @property
    def _noise_shape(self) -> tuple[float, float]:
        return self.noise_scale, self.noise_tail

    def _decoder(self) -> FastDecoder | None:
        """The sampling-time decoder, or None for the plain one.

        Rebuilt on every call (a few small einsums) so that it never holds
        stale weights; None while the trainer holds the observations back
        (``condition_scale != 1``), which the rewrite does not model.
        """
        if not self.fast_decoder or self.cvae.condition_scale != 1.0:
            return None
        return FastDecoder(self.cvae.decoder)

    @torch.inference_mode()
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
        fast = self._decoder()
        cond = None if fast is None else fast.precompute(feats)
        out = np.empty((len(x), num_samples, *x.shape[-2:]), np.float32)
        step = max(1, chunk // len(x))
        for s0 in range(0, num_samples, step):
            zs = z[s0 : s0 + step]  # (s, B, D): decode s * B maps in one pass
            if fast is None:
                xs, ms, fs = _tile(len(zs), x, mask, feats)
                mu, sigma = self.cvae.decode(zs.flatten(0, 1), xs, ms, fs)
            else:
                mu, sigma = (t.flatten(0, 1) for t in fast(zs, cond))
            # Latent-major (s * B, H, W) either way: the same random numbers
            # go to the same pixels on both paths.
            if noise:
                y = sample_censored_gaussian(
                    mu, sigma, generator, self.noise_rho, *self._noise_shape
                )
            else:
                y = censored_gaussian_mean(mu, sigma)
            y = torch.where(mask.repeat(len(zs), 1, 1), y, torch.zeros_like(y))
            out[:, s0 : s0 + len(zs)] = _untile(y, len(zs)).cpu().numpy()
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
        compat.check_sampling_size(len(arr), num_samples, arr[0, 0].size)
        ex = None if exsitu is None else np.asarray(exsitu, dtype=np.float32)
        out = np.empty((len(arr), num_samples, *arr.shape[-2:]), np.float32)
        starts = range(0, len(arr), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"sampling ({method})", unit="batch")
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        chunk = max(1, _CHUNK_PIXELS // arr[0, 0].size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # zuko's flow samples from the global RNG
            generator = torch.Generator().manual_seed(seed)
            for start in starts:
                sl = slice(start, start + batch_size)
                x = torch.from_numpy(arr[sl]).to(self.device)
                m = torch.from_numpy(msk[sl]).to(self.device)
                y = None if ex is None else torch.from_numpy(ex[sl]).to(self.device)
                out[sl] = self._sample_batch(
                    x, m, num_samples, method, generator, y, noise, chunk=chunk
                )
        return out

    @torch.no_grad()
    def pixel_likelihood(
        self,
        maps: np.ndarray,
        num_samples: int,
        *,
        mask: np.ndarray | None = None,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the pixel likelihood for flow latents, before noise.

        Args:
            maps: (n, C, H, W) observation maps.
            num_samples: latent draws per observation.
            mask: as in :meth:`sample`.
            seed: latent sampling seed.

        Returns:
            Two (n, num_samples, H, W) float32 arrays; a draw is
            ``clip(mu + sigma * eps, 0, 1)`` inside the mask.
        """
        arr, msk = self._inputs(maps, mask, None)
        x = torch.from_numpy(arr).to(self.device)
        m = torch.from_numpy(msk).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = self._latents("flow", x, num_samples, torch.Generator(), None, m)
        feats = self.cvae.condition(x, m)
        fast = self._decoder()
        if fast is None:
            xs, ms, fs = _tile(num_samples, x, m, feats)
            mu, sigma = self.cvae.decode(z.flatten(0, 1), xs, ms, fs)
        else:
            mu, sigma = (t.flatten(0, 1) for t in fast(z, fast.precompute(feats)))
        return tuple(  # type: ignore[return-value]
            _untile(t, num_samples).cpu().numpy() for t in (mu, sigma)
        )

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
                default: from the maps (:mod:`sbi_exsitu.data.exsitu_fraction`).
            samples: (n, S, H, W) draws you already have.
        """
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
        f_gal = self.galaxy_fex(arr, msk, samples, seed=seed)
        return MapSummary.from_draws(
            samples, msk, implied_fex(samples, weights), kind, f_gal
        )

    def galaxy_fex(
        self,
        maps: np.ndarray,
        mask: np.ndarray,
        samples: np.ndarray,
        *,
        seed: int | None = 0,
    ) -> np.ndarray | None:
        """(n, S) whole-galaxy f_ex draws of (n, S, H, W) map draws, or None.

        The in-mask f_ex of every draw plus one draw of the outside-mask term
        (:func:`~sbi_exsitu.posteriors.map.outside.galaxy_fex`); None for a
        run without the head (``outside_head``).
        """
        if self.outside_head is None:
            return None
        s = None if seed is None else derive_seed(seed, "outside")
        return galaxy_fex(self, self.outside_head, maps, mask, samples, seed=s)

    def mass_weights(
        self, maps: np.ndarray, mask: np.ndarray, mass: np.ndarray | None = None
    ) -> tuple[np.ndarray, str]:
        """Pixel weights of the implied f_ex
        (:mod:`sbi_exsitu.data.exsitu_fraction`)."""
        return mass_weights(
            maps, mask, self.render_config, mass=mass, mass_scale=self.mass_scale
        )

    def log_prob(self, theta: np.ndarray, maps: Any) -> np.ndarray:
        """Not available: the latent-variable model has no tractable density."""
        raise NotImplementedError(
            "the map posterior is a latent-variable model without a tractable "
            "log-density; use sbi_exsitu.evaluation.map_coverage.map_calibration"
        )

    # -- persistence ---------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write ``weights/cvae.pt``, ``flow.pt`` (``outside.pt``), ``model.json``."""
        return save_map_run(
            self,
            run_dir,
            "cvae",
            {"cvae": self.cvae, "flow": self.flow},
            {"cvae": self.cvae.cfg.to_dict(), "embedding": self.embedding_config},
        )

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> MapPosterior:
        """Rebuild a :class:`MapPosterior` from a run directory, without unpickling.

        Raises:
            FileNotFoundError: ``model.json`` is missing.
            StateFileError: a weights file is missing or truncated.
            WeightsMismatchError: a weights file of another architecture.
            CorruptWeightsError: a weights file holds NaN or inf (re-train).
        """
        run, meta = read_map_run(run_dir, "cvae")
        dev = resolve_device(device)
        settings = MapSettings(**meta["settings"])
        cvae = ConditionalVAE(CVAEConfig.from_dict(meta["cvae"]))
        flow = build_latent_flow(meta["embedding"], settings)
        run.load_into(cvae, "cvae", dev)
        # Runs saved before the latent standardisation have no z_loc/z_scale.
        run.load_into(flow, "flow", dev, fill_missing=True)
        post = cls(
            cvae,
            flow,
            RenderConfig.from_dict(meta["render_config"]),
            meta["embedding"],
            settings,
            mass_scale=meta.get("mass_scale"),
            noise_rho=meta.get("noise_rho", 0.0),  # runs before the shared noise
            device=dev,
            run_dir=Path(run_dir),
            metadata=meta.get("metadata"),
        )
        return restore_common(post, run, meta)

    def __repr__(self) -> str:
        return (
            f"MapPosterior(x_shape={self.x_shape}, latent_dim="
            f"{self.cvae.cfg.latent_dim}, mass_scale={self.mass_scale}, "
            f"noise_rho={self.noise_rho:.3g}, "
            f"outside_head={self.outside_head is not None})"
        )


def load_map_posterior(run_dir: str | Path, device: str = "cpu") -> MapPosterior:
    """A :class:`MapPosterior` from a run directory (``MapPosterior.load``)."""
    return MapPosterior.load(run_dir, device=device)
