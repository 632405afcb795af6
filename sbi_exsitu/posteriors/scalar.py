"""The scalar ex-situ posterior: an equal-weight ensemble of sbi posteriors.

:class:`ExSituPosterior` wraps K ``sbi`` ``DirectPosterior`` members (one zuko
flow + embedding net each) and adds what an astronomer needs on top: sampling
batched over many observations, ``log_prob`` of the ensemble mixture, summaries
with highest-density intervals (arviz), render-config checks, and safe saving
and loading (``state_dict`` + JSON, never pickle).

The ensemble is the uniform mixture p(θ|x) = (1/K) Σ_k p_k(θ|x), the same
density as sbi's ``EnsemblePosterior`` with equal weights; we mix by hand
because the members' ``sample_batched``/``log_prob_batched`` vectorise over
observations and the ensemble class does not.

Example:
    >>> import sbi_exsitu as sx                                  # doctest: +SKIP
    >>> post = sx.load_posterior("runs/quickstart")              # doctest: +SKIP
    >>> draws = post.sample(maps, num_samples=1000)              # doctest: +SKIP
    >>> post.summarize(maps).median                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.atomic import atomic_save, atomic_write_json
from sbi_exsitu.data.compatibility import (
    RenderConfigMismatch,
    as_observation_maps,
)
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.device import resolve_device
from sbi_exsitu.errors import RunError
from sbi_exsitu.posteriors.base import Posterior
from sbi_exsitu.posteriors.estimator import EstimatorSpec, build_estimator, build_prior
from sbi_exsitu.posteriors.summary import PosteriorSummary, highest_density_intervals
from sbi_exsitu.runs import RunDirectory

__all__ = [
    "ExSituPosterior",
    "PosteriorSummary",
    "RenderConfigMismatch",
    "highest_density_intervals",
]


class ExSituPosterior(Posterior):
    """An ensemble posterior p(targets | maps).

    Args:
        estimators: trained sbi density estimators (one per member).
        spec: their architecture.
        render_config: how the training maps were rendered.
        device: where to evaluate.
        run_dir: the run directory, if loaded from one.
    """

    kind = "scalar"

    def __init__(
        self,
        estimators: Sequence[torch.nn.Module],
        spec: EstimatorSpec,
        render_config: RenderConfig,
        *,
        device: str | torch.device = "cpu",
        run_dir: Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        from sbi.inference import DirectPosterior

        self.device = resolve_device(device)
        self.spec = spec
        self.render_config = render_config
        self.run_dir = run_dir
        self.metadata = dict(metadata or {})
        self.estimators = [e.to(self.device).eval() for e in estimators]
        prior = build_prior(spec)
        self._posteriors = [
            DirectPosterior(e, prior, device=str(self.device)) for e in self.estimators
        ]

    # -- the PosteriorLike protocol used by calibration --------------------------
    @property
    def param_names(self) -> list[str]:
        return list(self.spec.targets)

    @property
    def members(self) -> list[ExSituPosterior]:
        """Each ensemble member as a posterior of its own."""
        if len(self.estimators) == 1:
            return [self]
        return [
            ExSituPosterior(
                [e],
                self.spec,
                self.render_config,
                device=self.device,
                run_dir=self.run_dir,
            )
            for e in self.estimators
        ]

    def _as_maps(
        self, maps: Any, render_config: RenderConfig | None = None
    ) -> np.ndarray | MapDataset:
        return as_observation_maps(
            maps, self.render_config, tuple(self.spec.x_shape), render_config
        )

    def _batches(self, maps: np.ndarray | MapDataset, batch_size: int):
        if isinstance(maps, MapDataset):
            for _, x in maps.iter_batches(batch_size=batch_size):
                yield torch.from_numpy(x)
        else:
            for start in range(0, len(maps), batch_size):
                yield torch.from_numpy(maps[start : start + batch_size])

    @torch.no_grad()
    def sample(
        self,
        maps: np.ndarray | MapDataset,
        num_samples: int = 1000,
        *,
        seed: int | None = None,
        batch_size: int = 512,
        progress: bool = False,
        render_config: RenderConfig | None = None,
    ) -> np.ndarray:
        """Posterior draws for every observation.

        Args:
            maps: (n, C, H, W) array or a :class:`MapDataset`.
            num_samples: draws per observation (split evenly over the members).
            seed: makes the draws reproducible (the global torch RNG is left
                untouched).
            batch_size: observations per vectorised call.
            progress: show a progress bar over batches.
            render_config: the config the array was rendered with, to check.

        Returns:
            (n, num_samples, D) array; every draw lies inside the prior box.
        """
        maps = self._as_maps(maps, render_config)
        k = len(self._posteriors)
        counts = [num_samples // k + (i < num_samples % k) for i in range(k)]
        out = []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            batches = self._batches(maps, batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(
                    batches,
                    total=math.ceil(len(maps) / batch_size),
                    desc="sampling",
                    unit="batch",
                )
            for x in batches:
                x = x.to(self.device)
                with warnings.catch_warnings():
                    # sbi caps its internal batch to bound memory and says so.
                    warnings.filterwarnings("ignore", message="Capping max_sampling")
                    draws = [
                        post.sample_batched((c,), x=x, show_progress_bars=False)
                        for post, c in zip(self._posteriors, counts, strict=True)
                        if c
                    ]
                d = torch.cat(draws, dim=0).transpose(0, 1)  # (B, S, D)
                if k > 1:  # interleave members so any prefix of draws is a mixture
                    d = d[:, torch.randperm(num_samples)]
                out.append(d.cpu().numpy())
        return np.concatenate(out, axis=0)

    @torch.no_grad()
    def log_prob(
        self,
        theta: np.ndarray,
        maps: np.ndarray | MapDataset,
        *,
        batch_size: int = 512,
        render_config: RenderConfig | None = None,
    ) -> np.ndarray:
        """Log density of the ensemble mixture.

        Args:
            theta: (n, S, D) or (n, D) parameter values.
            maps: the n observations.

        Returns:
            (n, S) or (n,) log densities (-inf outside the prior box).
        """
        lps = self.member_log_probs(
            theta, maps, batch_size=batch_size, render_config=render_config
        )
        k = lps.shape[0]
        with np.errstate(divide="ignore"):
            out = np.logaddexp.reduce(lps, axis=0) - math.log(k) if k > 1 else lps[0]
        return out

    @torch.no_grad()
    def member_log_probs(
        self,
        theta: np.ndarray,
        maps: np.ndarray | MapDataset,
        *,
        batch_size: int = 512,
        render_config: RenderConfig | None = None,
    ) -> np.ndarray:
        """Log density of every ensemble member: (K, n, S), or (K, n) for (n, D) theta.

        Each map is embedded once and the flow evaluated on all its theta values,
        through the estimator's public ``embedding_net`` and ``net``: the same
        numbers as sbi's ``log_prob_batched(..., norm_posterior=False)``, which
        re-runs the CNN once per theta (4-7x slower; shared/SBI_NOTES.md).
        """
        maps = self._as_maps(maps, render_config)
        theta = np.asarray(theta, dtype=np.float32)
        squeeze = theta.ndim == 2
        if squeeze:
            theta = theta[:, None, :]
        out = []
        start = 0
        for x in self._batches(maps, batch_size):
            th = torch.from_numpy(theta[start : start + len(x)]).to(self.device)
            start += len(x)
            th_sb = th.transpose(0, 1)  # flows broadcast (S, B, D) against (B, E)
            inside = self._inside(th_sb)
            safe = torch.where(inside[..., None], th_sb, self._centre(th_sb))
            x = x.to(self.device)
            lps = []
            for est in self.estimators:
                dist = est.net(est.embedding_net(x))
                lp = dist.log_prob(safe)
                lps.append(torch.where(inside, lp, torch.full_like(lp, -math.inf)))
            out.append(torch.stack(lps).transpose(1, 2).cpu().numpy())  # (K, B, S)
        result = np.concatenate(out, axis=1)
        return result[..., 0] if squeeze else result

    def _inside(self, theta: torch.Tensor) -> torch.Tensor:
        low, high = (b.to(theta.device) for b in self.spec.bounds)
        return ((theta > low) & (theta < high)).all(dim=-1)

    def _centre(self, theta: torch.Tensor) -> torch.Tensor:
        low, high = (b.to(theta.device) for b in self.spec.bounds)
        return ((low + high) / 2).expand_as(theta)

    def summarize(
        self,
        maps: np.ndarray | MapDataset,
        num_samples: int = 1000,
        *,
        seed: int | None = 0,
        batch_size: int = 512,
        progress: bool = False,
        render_config: RenderConfig | None = None,
        samples: np.ndarray | None = None,
        misspecification: Any = False,
    ) -> PosteriorSummary:
        """Median, mean, std and 68%/95% highest-density intervals per observation.

        Pass ``samples`` (n, S, D) to summarise draws you already have. With
        ``misspecification=True`` (or a ``MisspecificationDetector``) every
        observation also gets a novelty score, a p-value against in-distribution
        maps and a flag ("unlike the training set"), see
        :mod:`sbi_exsitu.evaluation.misspecification`.
        """
        if samples is None:
            samples = self.sample(
                maps,
                num_samples,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
                render_config=render_config,
            )
        hdi68, hdi95 = highest_density_intervals(samples)
        scores = None
        if misspecification is not False and misspecification is not None:
            detector = misspecification
            if detector is True:
                detector = self.misspecification_detector()
            scores = detector.score(self, self._as_maps(maps, render_config))
        return PosteriorSummary(
            misspecification=scores,
            param_names=self.param_names,
            median=np.median(samples, axis=1),
            mean=samples.mean(axis=1),
            std=samples.std(axis=1),
            hdi68=hdi68,
            hdi95=hdi95,
        )

    def misspecification_detector(self) -> Any:
        """The run's misspecification detector (fitted on first use, then cached)."""
        from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

        if getattr(self, "_detector", None) is None:
            self._detector = MisspecificationDetector.for_run(self)
        return self._detector

    # -- persistence ---------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write ``model.json`` and a ``weights/member_k.pt`` state_dict per member."""
        run_dir = Path(run_dir)
        for k, est in enumerate(self.estimators):
            state = {key: v.detach().cpu() for key, v in est.state_dict().items()}
            atomic_save(
                RunDirectory(run_dir).weights(f"member_{k}"),
                lambda p, s=state: torch.save(s, p),
            )
        atomic_write_json(
            RunDirectory(run_dir).model_file,
            {
                "format": 1,
                "kind": self.kind,
                "spec": self.spec.to_dict(),
                "render_config": self.render_config.to_dict(),
                "ensemble_size": len(self.estimators),
                "metadata": self.metadata,
            },
        )
        self.run_dir = run_dir
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> ExSituPosterior:
        """Rebuild a posterior from a run directory without unpickling anything.

        The architecture comes from ``model.json``; the weights from
        ``torch.load(..., weights_only=True)`` state dicts.

        Raises:
            FileNotFoundError: the run has no ``model.json`` (not trained, or
                training was interrupted: re-run ``fit`` to resume).
        """
        run_dir = Path(run_dir)
        model_file = RunDirectory(run_dir).model_file
        if not model_file.is_file():
            raise RunError(
                f"{model_file} not found: '{run_dir}' is not a finished run "
                "(run or resume `sbi-exsitu fit CONFIG`)"
            )
        meta = json.loads(model_file.read_text())
        spec = EstimatorSpec.from_dict(meta["spec"])
        render_config = RenderConfig.from_dict(meta["render_config"])
        dev = resolve_device(device)
        estimators = []
        for k in range(int(meta["ensemble_size"])):
            path = RunDirectory(run_dir).weights(f"member_{k}")
            if not path.is_file():
                raise RunError(f"{path}: weights of ensemble member {k} missing")
            est = build_estimator(spec)
            est.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
            estimators.append(est)
        return cls(
            estimators,
            spec,
            render_config,
            device=dev,
            run_dir=run_dir,
            metadata=meta.get("metadata"),
        )

    def __repr__(self) -> str:
        return (
            f"ExSituPosterior(targets={self.param_names}, members="
            f"{len(self.estimators)}, x_shape={tuple(self.spec.x_shape)})"
        )
