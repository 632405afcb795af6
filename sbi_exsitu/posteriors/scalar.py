"""The scalar ex-situ posterior: an equal-weight ensemble of sbi posteriors.

:class:`ExSituPosterior` wraps K trained ``sbi`` density estimators (one zuko
flow + embedding net each) and adds what an astronomer needs on top: sampling
batched over many observations, ``log_prob`` of the ensemble mixture, summaries
with highest-density intervals (arviz), render-config checks, and safe saving
and loading (``state_dict`` + JSON, never pickle).

The ensemble is the uniform mixture p(θ|x) = (1/K) Σ_k p_k(θ|x), the same
density as sbi's ``EnsemblePosterior`` with equal weights; we mix by hand
because the members' flows vectorise over observations and the ensemble class
does not. Draws come from each flow directly, without sbi's rejection step: the
flow ends in a sigmoid onto the prior box, so there is nothing to reject, and
rejection waited forever on NaN draws (see :meth:`ExSituPosterior.sample`).

Example:
    >>> import sbi_exsitu as sx                                  # doctest: +SKIP
    >>> post = sx.load_posterior("runs/quickstart")              # doctest: +SKIP
    >>> draws = post.sample(maps, num_samples=1000)              # doctest: +SKIP
    >>> post.summarize(maps).median                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.data.compatibility import (
    RenderConfigMismatch,
    as_observation_maps,
    check_sampling_size,
    iter_observations,
)
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.device import resolve_device
from sbi_exsitu.errors import (
    SamplingError,  # noqa: F401  (re-exported)
)
from sbi_exsitu.posteriors.base import Posterior
from sbi_exsitu.posteriors.estimator import EstimatorSpec, build_estimator
from sbi_exsitu.posteriors.summary import PosteriorSummary, highest_density_intervals
from sbi_exsitu.runs import RunDirectory

__all__ = [
    "ExSituPosterior",
    "PosteriorSummary",
    "RenderConfigMismatch",
    "SamplingError",
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
        self.device = resolve_device(device)
        self.spec = spec
        self.render_config = render_config
        self.run_dir = run_dir
        self.metadata = dict(metadata or {})
        self.estimators = [e.to(self.device).eval() for e in estimators]

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
        for _, x in iter_observations(maps, batch_size):
            yield torch.from_numpy(x)

    def _check_draws(self, d: torch.Tensor, x: torch.Tensor, start: int) -> None:
        """Refuse (B, S, D) draws that are NaN/inf or outside the prior box."""
        low, high = (b.to(d.device) for b in self.spec.bounds)
        ok = (torch.isfinite(d) & (d >= low) & (d <= high)).flatten(1).all(dim=1)
        if not bool(ok.all()):
            i = int(torch.nonzero(~ok)[0, 0])
            box = zip(self.param_names, low.tolist(), high.tolist(), strict=True)
            box = ", ".join(f"{n} in [{lo:g}, {hi:g}]" for n, lo, hi in box)
            raise SamplingError(
                f"posterior draws for observation {start + i} are NaN, infinite "
                f"or outside the prior box ({box}): its "
                f"maps (max |value| {float(x[i].abs().max()):.3g}) are far outside "
                "what this run was trained on, or its weights are broken; check "
                "the maps' units and normalisation"
            )

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

        Raises:
            ObservationError: no maps, integer maps, or NaN/inf in a map (named
                by its index, also when streamed from a dataset).
            SamplingLimitError: ``num_samples`` < 1, or the draws cannot fit in
                memory.
            SamplingError: the flow returned NaN or out-of-box draws (maps far
                outside the training range, e.g. a map x 1e30).

        The flow draws directly from each member's density estimator, without
        sbi's rejection step: with ``z_score_theta="transform_to_unconstrained"``
        the flow ends in a sigmoid onto the prior box, so every draw is already
        inside it and rejection only waited forever on NaN draws (issue #14).
        Extreme but finite maps are not refused up front: the flow's answer is
        checked instead, and ``predict``'s misspecification flag says how unlike
        the training maps they are.
        """
        maps = self._as_maps(maps, render_config)
        check_sampling_size(
            len(maps),
            num_samples,
            len(self.param_names),
            hint="sample the observations in parts",
        )
        k = len(self.estimators)
        counts = [num_samples // k + (i < num_samples % k) for i in range(k)]
        out = []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            batches = iter_observations(maps, batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(
                    batches,
                    total=math.ceil(len(maps) / batch_size),
                    desc="sampling",
                    unit="batch",
                )
            for start, arr in batches:
                x = torch.from_numpy(arr).to(self.device)
                draws = [
                    est.sample((c,), condition=x)  # (c, B, D)
                    for est, c in zip(self.estimators, counts, strict=True)
                    if c
                ]
                d = torch.cat(draws, dim=0).transpose(0, 1)  # (B, S, D)
                self._check_draws(d, x, start)
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
        re-runs the CNN once per theta (4-7x slower, measured with sbi 0.27).
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
        misspecification: Any = "auto",
    ) -> PosteriorSummary:
        """Median, mean, std and 68%/95% highest-density intervals per observation.

        Pass ``samples`` (n, S, D) to summarise draws you already have. Every
        observation also gets a novelty score, a p-value against in-distribution
        maps and a flag ("unlike the training set"; ``misspec_*`` columns), see
        :mod:`sbi_exsitu.evaluation.misspecification`: by default (``"auto"``)
        from the run's detector, left out with a warning when the posterior has
        no run directory or the detector can be neither loaded nor fitted.
        ``True`` requires the flags, a ``MisspecificationDetector`` uses that
        one, ``False`` turns them off (no detector is fitted).

        Raises:
            DetectorUnavailableError: ``misspecification=True`` and the run
                has no detector and no training data to fit one.
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
        detector = self._summary_detector(misspecification)
        if detector is not None:
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

    def _summary_detector(self, misspecification: Any) -> Any:
        """The detector :meth:`summarize` uses, or None (see its docstring)."""
        if misspecification is False or misspecification is None:
            return None
        if misspecification is True:
            return self.misspecification_detector()
        if misspecification != "auto":
            return misspecification  # a detector
        import warnings

        from sbi_exsitu.errors import DetectorUnavailableError

        if self.run_dir is None:
            warnings.warn(
                "no misspecification flags: this posterior has no run directory "
                "(save it, or pass misspecification=False to silence this)",
                stacklevel=3,
            )
            return None
        try:
            return self.misspecification_detector()
        except DetectorUnavailableError as err:
            warnings.warn(
                f"no misspecification flags: {err} (misspecification=False "
                "silences this)",
                stacklevel=3,
            )
            return None

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
        run = RunDirectory(run_dir)
        for k, est in enumerate(self.estimators):
            run.save_weights(f"member_{k}", est.state_dict())
        run.write_model(
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
            StateFileError: a weights file is missing or truncated.
            WeightsMismatchError: a weights file of another architecture.
            CorruptWeightsError: a weights file holds NaN or inf (re-train).
        """
        run_dir = Path(run_dir)
        run = RunDirectory(run_dir)
        meta = run.read_model()
        spec = EstimatorSpec.from_dict(meta["spec"])
        render_config = RenderConfig.from_dict(meta["render_config"])
        dev = resolve_device(device)
        estimators = []
        for k in range(int(meta["ensemble_size"])):
            est = run.load_into(build_estimator(spec), f"member_{k}", dev)
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
