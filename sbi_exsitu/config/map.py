"""The ``[map]`` table of an experiment file: the map posterior's settings.

Read by :func:`sbi_exsitu.training.map.fit_map_posterior` and saved in the run's
``model.json``, so that :func:`sbi_exsitu.posteriors.map.posterior.load_map_posterior`
rebuilds the same networks.

Example:
    >>> MapSettings(latent_dim=8).flow_epochs
    60
"""

from __future__ import annotations

from dataclasses import dataclass

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.errors import ConfigError

__all__ = ["MODELS", "MapSettings"]

#: ``[map] model`` values.
MODELS = ("cvae", "flow_matching")


@dataclass(frozen=True)
class MapSettings:
    """The ``[map]`` table of an experiment file (all optional).

    Attributes:
        model: ``"cvae"`` (cVAE + latent flow, Angeloudi et al. 2024) or
            ``"flow_matching"`` (conditional flow matching over the whole map,
            :mod:`sbi_exsitu.posteriors.map.flow_matching`, issue #19).
        fm_width: channels at full resolution of the flow-matching U-Net.
        fm_levels: stride-2 halvings of the flow-matching U-Net.
        fm_steps: midpoint ODE steps per flow-matching draw.
        fm_global: a global-context MLP at the U-Net bottleneck
            (:class:`~sbi_exsitu.posteriors.map.flow_matching.FlowMatchingConfig`).
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
        shared_noise: after training, fit the pixel-to-pixel correlation of
            the pixel noise on the validation split
            (:func:`sbi_exsitu.posteriors.map.noise.fit_shared_noise`); False keeps the
            pixels independent, which makes the implied f_ex overconfident.
        outside_head: after the map posterior, train the outside-mask head
            (:mod:`sbi_exsitu.posteriors.map.outside`): a Gaussian for the
            f_ex of the stars outside the mask, so that summaries give the
            whole galaxy's f_ex (``f_ex_galaxy_*``) next to the in-mask one.
            Needs f_ex labels; ignored (with a warning) without them.
        outside_epochs: maximum epochs of the head (``[training]`` optimiser).
        pixel_calibration: after training, fit the scale and tail weight of
            the pixel noise on the validation split so that per-pixel
            intervals are calibrated
            (:func:`sbi_exsitu.posteriors.map.noise.fit_pixel_noise`); False
            keeps the decoder's Gaussian.
        max_train: cap on training maps (None = the whole train split).
        eval_samples: posterior draws per test map for figures and metrics.
        eval_max_obs: test maps used for figures and calibration.
        n_panels: galaxies shown in ``map_panels.png``.
    """

    model: str = "cvae"
    fm_width: int = 16
    fm_levels: int = 2
    fm_steps: int = 6
    fm_global: bool = False
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
    shared_noise: bool = True
    outside_head: bool = True
    outside_epochs: int = 30
    pixel_calibration: bool = True
    max_train: int | None = None
    eval_samples: int = 100
    eval_max_obs: int = 300
    n_panels: int = 4

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(
                f"[map] model is {self.model!r}, expected one of {list(MODELS)}"
            )

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> MapSettings:
        """Read ``cfg.extra["map"]``, refusing unknown keys."""
        from sbi_exsitu.schema import take_section

        return take_section(cfg.extra.get("map"), cls, f"{cfg.source} [map]")
