"""The flow-matching map posterior (``[map] model = "flow_matching"``, issue #19).

Same interface as the cVAE :class:`~sbi_exsitu.posteriors.map.posterior.MapPosterior`
(``sample``, ``summarize``, implied f_ex, ``save``/``load`` in a run directory of
kind ``"map"``), with the draws from
:class:`~sbi_exsitu.posteriors.map.flow_matching.MapFlowMatching`: a model of the
joint field, so there are no latent methods ("prior", "reconstruction") and no
shared-noise correlation to fit. Trained by
:func:`sbi_exsitu.training.map_fm.fit_flow_matching_map`.

Example:
    >>> import sbi_exsitu as sx                                    # doctest: +SKIP
    >>> post = sx.load_posterior("runs/map-fm")                    # doctest: +SKIP
    >>> post.sample(maps, 100).shape  # maps: (10, 5, 32, 32)       # doctest: +SKIP
    (10, 100, 32, 32)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.config.map import MapSettings
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.device import resolve_device
from sbi_exsitu.posteriors.map.flow_matching import FlowMatchingConfig, MapFlowMatching
from sbi_exsitu.posteriors.map.io import read_map_run, restore_common, save_map_run
from sbi_exsitu.posteriors.map.posterior import MapPosterior

__all__ = ["FlowMatchingMapPosterior"]


class FlowMatchingMapPosterior(MapPosterior):
    """p(ex-situ map | observation maps) by conditional flow matching.

    Args:
        model: the trained :class:`MapFlowMatching`.
        render_config: how the training maps were rendered.
        settings: the ``[map]`` settings used in training.
        mass_scale: fitted log-mass scale for the implied f_ex (or None).
        device: where to evaluate.
        run_dir: the run directory, if loaded from one.
        metadata: free-form JSON (training set, times).
    """

    #: The only way to draw: the flow-matching ODE ("flow" keeps the cVAE's name
    #: for the posterior proper, so metrics and tables line up).
    methods = ("flow",)

    def __init__(  # noqa: D107 - documented on the class
        self,
        model: MapFlowMatching,
        render_config: RenderConfig,
        settings: MapSettings,
        *,
        mass_scale: float | None = None,
        device: str | torch.device = "cpu",
        run_dir: Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.render_config = render_config
        self.embedding_config: dict[str, Any] = {}
        self.settings = settings
        self.mass_scale = mass_scale
        self.noise_rho = 0.0
        self.run_dir = run_dir
        self.metadata = dict(metadata or {})

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
        if method not in self.methods:
            raise ValueError(
                f"method is {method!r}; the flow-matching map posterior draws only "
                "with method='flow' (it has no latent to reconstruct or to draw "
                "from a prior)"
            )
        y = self.model.sample_maps(
            x, mask, num_samples, generator=generator, chunk=chunk
        )
        return y.cpu().numpy()

    def pixel_likelihood(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: flow matching has no per-pixel likelihood."""
        raise NotImplementedError(
            "the flow-matching map posterior models the joint field; it has no "
            "per-pixel (mu, sigma)"
        )

    def save(self, run_dir: str | Path) -> Path:
        """Write ``weights/flow_matching.pt`` (``outside.pt``) and ``model.json``."""
        return save_map_run(
            self,
            run_dir,
            "flow_matching",
            {"flow_matching": self.model},
            {"flow_matching": self.model.cfg.to_dict()},
        )

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> FlowMatchingMapPosterior:
        """Rebuild from a run directory, without unpickling.

        Raises:
            RunError: ``model.json`` is not a flow-matching map run.
            StateFileError: the weights file is missing or truncated.
            WeightsMismatchError: a weights file of another architecture.
        """
        run, meta = read_map_run(run_dir, "flow_matching")
        dev = resolve_device(device)
        model = MapFlowMatching(FlowMatchingConfig.from_dict(meta["flow_matching"]))
        run.load_into(model, "flow_matching", dev)
        post = cls(
            model,
            RenderConfig.from_dict(meta["render_config"]),
            MapSettings(**meta["settings"]),
            mass_scale=meta.get("mass_scale"),
            device=dev,
            run_dir=Path(run_dir),
            metadata=meta.get("metadata"),
        )
        return restore_common(post, run, meta)

    def __repr__(self) -> str:
        cfg = self.model.cfg
        return (
            f"FlowMatchingMapPosterior(x_shape={self.x_shape}, width={cfg.width}, "
            f"levels={cfg.levels}, steps={cfg.steps}, mass_scale={self.mass_scale})"
        )
