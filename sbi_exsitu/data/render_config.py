"""How particles become maps: :class:`RenderConfig`, stored with every map.

Split from :mod:`sbi_exsitu.data.render` (which re-exports it) so the config can
be read without the renderer. An observed config carries an
:class:`~sbi_exsitu.data.observe.config.ObserveConfig` in ``observe``: the
observation is part of how the maps were made, so it is stored, compared and
refused exactly like the rest (an idealised posterior refuses observed maps and
vice versa).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sbi_exsitu.errors import RenderError

__all__ = ["CHANNELS", "RenderConfig"]

CHANNELS: tuple[str, ...] = ("mass", "velocity", "dispersion", "age", "metallicity")
_WEIGHTINGS = ("mass", "none")


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how particles become maps; stored with every map.

    Optional steps are switched off with ``None`` (``false`` in TOML files).

    Attributes:
        resolution: pixels per side (H = W).
        fov_re: field of view, full width, in stellar half-mass radii.
        channels: which maps to produce, a subset of :data:`CHANNELS`, in order.
        weighting: ``"mass"`` for mass-weighted means and dispersions, ``"none"``
            for plain particle averages (the paper's choice).
        min_count: pixels with fewer particles are masked.
        min_density_re: if set, replaces the ``min_count`` cut by a
            count-robust one: pixels holding no particle, or less stellar mass
            than this fraction of the mean pixel mass on the ring at one r_e,
            are masked. A count cut is a surface-density cut in units of the
            particle mass, so it moves with the number of particles (at 32 px
            and ~12,000 particles, keeping 1/4 of them shrank the ``min_count
            = 3`` mask to 41% of its area); this one is in units of the
            galaxy's own surface density at r_e, as the S/N mask of observed
            maps is. ``None`` (the default, and every dataset written before
            this field) uses ``min_count``.
        keep_top_fraction: if set, keep at most this fraction of all pixels,
            the most populated ones (the paper: 0.25); pixels tied at the
            threshold are kept or dropped together.
        log_mass: log10 of the mass map.
        log_metallicity: log10(Z / z_solar) for the metallicity map.
        z_solar: solar metal mass fraction (the paper: 0.0127).
        clip_velocity: clip |v| to this value (km/s).
        clip_dispersion: clip sigma to at most this value (km/s).
        clip_log_metallicity: (low, high) clip of log10(Z / z_solar).
        smooth_sigma: Gaussian filter width in pixels (0 = off).
        standardize: standardise each map to zero mean and unit variance over
            the unmasked pixels.
        aperture_re: diameter of a circular aperture in half-mass radii.
        min_pixels: fewer unmasked pixels than this is an error (too few
            particles for the resolution).
        exsitu_smooth_sigma: Gaussian width in pixels of the ex-situ target:
            the stored ex-situ map is smooth(ex-situ mass) / smooth(total mass)
            (:mod:`sbi_exsitu.data.exsitu_target`), a fraction above the particle
            shot noise. 0 (the default, and the meaning of every dataset
            written before this field) stores the raw per-pixel ratio, of which
            about half the unmasked pixels are exactly 0 or 1.
        observe: None for idealised maps, or the
            :class:`~sbi_exsitu.data.observe.config.ObserveConfig` (or its dict)
            of observed ones (the ``[observe]`` table of a config file).
    """

    resolution: int = 128
    fov_re: float = 4.0
    channels: tuple[str, ...] = CHANNELS
    weighting: str = "mass"
    min_count: int = 3
    min_density_re: float | None = None
    keep_top_fraction: float | None = None
    log_mass: bool = True
    log_metallicity: bool = True
    z_solar: float = 0.0127
    clip_velocity: float | None = 250.0
    clip_dispersion: float | None = 350.0
    clip_log_metallicity: tuple[float, float] | None = (-1.0, 1.0)
    smooth_sigma: float = 0.6
    standardize: bool = True
    aperture_re: float | None = None
    min_pixels: int = 16
    exsitu_smooth_sigma: float = 0.0
    # Any, not ObserveConfig: the observation stage imports this module.
    observe: Any = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.observe is False:
            set_(self, "observe", None)
        if self.observe is not None:
            from sbi_exsitu.data.observe.config import ObserveConfig
            from sbi_exsitu.errors import ObservationError

            if isinstance(self.observe, dict):
                try:
                    observe = ObserveConfig.from_dict(self.observe, "[observe]")
                except ObservationError as err:
                    raise RenderError(str(err)) from None
                set_(self, "observe", observe)
            elif not isinstance(self.observe, ObserveConfig):
                raise RenderError(
                    f"render config: 'observe' is {self.observe!r}, expected an "
                    "[observe] table (ObserveConfig) or false"
                )
        for key in (
            "keep_top_fraction",
            "clip_velocity",
            "clip_dispersion",
            "clip_log_metallicity",
            "aperture_re",
            "min_density_re",
        ):
            if getattr(self, key) is False:
                set_(self, key, None)
        set_(self, "channels", tuple(self.channels))
        if self.clip_log_metallicity is not None:
            set_(
                self,
                "clip_log_metallicity",
                tuple(float(c) for c in self.clip_log_metallicity),
            )
        if not isinstance(self.resolution, int) or self.resolution < 8:
            raise RenderError(
                f"render config: 'resolution' is {self.resolution!r}, "
                "expected an integer >= 8"
            )
        if not self.fov_re > 0:
            raise RenderError(f"render config: 'fov_re' is {self.fov_re}, expected > 0")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if (
            unknown
            or not self.channels
            or len(set(self.channels)) != len(self.channels)
        ):
            raise RenderError(
                f"render config: 'channels' is {list(self.channels)}, expected a "
                f"non-empty list without repeats drawn from {list(CHANNELS)}"
            )
        if self.weighting not in _WEIGHTINGS:
            raise RenderError(
                f"render config: 'weighting' is {self.weighting!r}, expected one "
                f"of {list(_WEIGHTINGS)}"
            )
        if not self.exsitu_smooth_sigma >= 0:
            raise RenderError(
                f"render config: 'exsitu_smooth_sigma' is {self.exsitu_smooth_sigma}"
                ", expected a kernel width >= 0 pixels (0 = raw per-pixel ratio)"
            )
        if self.min_count < 0:
            raise RenderError("render config: 'min_count' must be >= 0")
        if self.min_density_re is not None and not self.min_density_re > 0:
            raise RenderError(
                f"render config: 'min_density_re' is {self.min_density_re}, "
                "expected a fraction > 0 of the surface density at r_e, or false "
                "for the 'min_count' cut"
            )
        if self.keep_top_fraction is not None and not 0 < self.keep_top_fraction <= 1:
            raise RenderError(
                f"render config: 'keep_top_fraction' is {self.keep_top_fraction}, "
                "expected a fraction in (0, 1]"
            )
        if self.smooth_sigma < 0:
            raise RenderError("render config: 'smooth_sigma' must be >= 0")
        if self.aperture_re is not None:
            if not 0 < self.aperture_re <= self.fov_re:
                raise RenderError(
                    f"render config: 'aperture_re' is {self.aperture_re}, expected a "
                    f"diameter in (0, fov_re={self.fov_re}] half-mass radii: the "
                    "aperture cannot be larger than the field of view"
                )
        clip = self.clip_log_metallicity
        if clip is not None and (len(clip) != 2 or clip[0] >= clip[1]):
            raise RenderError(
                f"render config: 'clip_log_metallicity' is {clip}, expected [low, high]"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RenderConfig:
        """A named configuration: ``"default"`` or ``"paper"`` (Angeloudi+2023).

        Args:
            name: the preset.
            **overrides: fields to change, e.g. ``resolution=64``.
        """
        presets = {
            "default": {},
            "paper": {"weighting": "none", "min_count": 1, "keep_top_fraction": 0.25},
        }
        if name not in presets:
            raise RenderError(
                f"unknown render preset {name!r}; known: {sorted(presets)}"
            )
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists).

        ``observe`` appears only for observed maps, ``exsitu_smooth_sigma``
        only when it is not 0 and ``min_density_re`` only when set, so other
        configs keep the JSON (and the run-directory files) they had before
        these keys existed.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        if not out["exsitu_smooth_sigma"]:
            del out["exsitu_smooth_sigma"]
        if out["min_density_re"] is None:
            del out["min_density_re"]
        observe = out.pop("observe")
        if observe is not None:
            out["observe"] = observe.to_dict()
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], where: str = "render config"
    ) -> RenderConfig:
        """Build from a dict (a TOML table or :meth:`to_dict` output).

        A ``preset`` key selects :meth:`preset` and the other keys override it.

        Raises:
            RenderError: unknown key (with the closest known one), a value of
                the wrong type, or a bad value.
        """
        from sbi_exsitu.schema import ConfigError, check_keys, check_types

        data = dict(data)
        preset = data.pop("preset", "default")
        names = [f.name for f in dataclasses.fields(cls)]
        try:
            check_keys(data, names, where)
            data = check_types(data, cls, where)
        except ConfigError as err:
            raise RenderError(str(err)) from None
        return cls.preset(preset, **data)

    @classmethod
    def from_json(cls, text: str) -> RenderConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def diff(self, other: RenderConfig) -> list[str]:
        """Human-readable differences, e.g. ``["resolution: 64 != 128"]``."""
        a, b = self.to_dict(), other.to_dict()
        oa, ob = a.pop("observe", None), b.pop("observe", None)
        for d in (a, b):
            d.setdefault("exsitu_smooth_sigma", 0.0)
            d.setdefault("min_density_re", None)
        out = [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
        if (oa is None) != (ob is None):
            kinds = ("observed", "idealised")
            mine, theirs = kinds if ob is None else kinds[::-1]
            out.append(
                f"observe: {mine} maps != {theirs} maps (a posterior "
                "trained on idealised maps cannot read observed ones, nor the "
                "reverse: train on maps made with the same [observe] table)"
            )
        elif oa is not None:
            out += [f"observe.{d}" for d in self.observe.diff(other.observe)]
        return out

    @property
    def n_channels(self) -> int:
        return len(self.channels)
