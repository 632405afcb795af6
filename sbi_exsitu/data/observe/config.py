"""Every switch of the mock observation stage: :class:`ObserveConfig`.

Stored with every observed dataset (like
:class:`~sbi_exsitu.data.render.RenderConfig`) and checked by a posterior, so
maps observed one way are never fed to a posterior trained on another. Optional
steps are switched off with ``None`` (``false`` in TOML files). The defaults
follow MaNGA:

* spaxels of 0.5 arcsec and a PSF of 2.5 arcsec FWHM (Law et al. 2016, sec. 9:
  median reconstructed g-band FWHM 2.5 arcsec);
* the Primary sample's radial coverage, 1.5 r_e (Wake et al. 2017; the
  Secondary sample reaches 2.5 r_e), with the smallest of the five hexagonal
  bundles (19 to 127 fibres, 12.5 to 32.5 arcsec across; Drory et al. 2015)
  that covers it;
* redshift 0.03, the median of the Primary sample (Wake et al. 2017; the
  survey spans 0.01-0.15); a ``[lo, hi]`` pair draws each galaxy's redshift
  uniformly in that range, or, with ``size_matched``, picks it from the
  galaxy's size (below);
* spatially correlated noise with a Gaussian correlation of sigma = 1.92
  spaxels, and the covariance correction n_covar / n_nocovar = 1 + 1.62
  log10(N) for a bin of N spaxels (Law et al. 2016, sec. 9.3 and eq. 16);
* an instrumental dispersion of 70 km/s (R ~ 2000; Westfall et al. 2019);
* Voronoi binning to S/N = 10 (the DAP's VOR10/HYB10 products, Westfall et
  al. 2019; Cappellari & Copin 2003) and spaxels below S/N = 1 excluded, as
  the DAP excludes them before binning.

The S/N model is a parameterisation, not a MaNGA measurement: per spaxel,
S/N = snr_at_re * (Sigma / Sigma(r_e)) ** snr_slope, Sigma the PSF-convolved
surface density and Sigma(r_e) its mean on the r_e ring. ``snr_slope = 0.5`` is
the photon-limited case (S/N ~ sqrt(flux)); 1 is the sky-limited one. The
default ``snr_at_re = 15`` per spaxel is an order of magnitude: MaNGA reaches
S/N ~ 5-10 per angstrom per fibre at 1.5 r_e (Bundy et al. 2015, sec. 5), so
outer spaxels need binning, as in the real data. Errors on age and metallicity
are fractional, ``*_error`` at S/N = 10 and scaling as 1/(S/N).

``size_matched = true`` imitates MaNGA's selection instead of drawing the
redshift independently of size: MaNGA picks, per luminosity, the redshift
range in which ``coverage_re`` r_e fills a bundle (Wake et al. 2017, sec. 3),
so a large galaxy sits far away and a small one nearby, and every footprint
is large enough by construction. Here each galaxy draws a bundle with the
survey's per-plate allocation (:data:`BUNDLE_ALLOCATION`: 2 x 19, 4 x 37,
4 x 61, 2 x 91 and 5 x 127 fibres of the 17 science bundles; Drory et al.
2015) and is put at the redshift where that bundle's radius is exactly
``coverage_re`` r_e, clipped to the ``[lo, hi]`` redshift range (galaxies too
small or too large for every bundle in that range are then covered more or
less far, as the survey's own outliers are).

Example:
    >>> cfg = ObserveConfig.from_dict({"redshift": [0.01, 0.15], "psf_fwhm_arcsec": 0})
    >>> cfg.redshift, cfg.psf_fwhm_arcsec
    ((0.01, 0.15), None)
    >>> ObserveConfig.from_json(cfg.to_json()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sbi_exsitu.errors import ObservationError

__all__ = ["BUNDLES", "BUNDLE_ALLOCATION", "ObserveConfig"]

#: MaNGA's hexagonal fibre bundles: (fibres, full width across in arcsec).
BUNDLES: tuple[tuple[int, float], ...] = (
    (19, 12.5),
    (37, 17.5),
    (61, 22.5),
    (91, 27.5),
    (127, 32.5),
)
#: Bundles of each size on one MaNGA plate, in :data:`BUNDLES` order (17 in all;
#: Drory et al. 2015): the weights of the size-matched bundle draw.
BUNDLE_ALLOCATION: tuple[int, ...] = (2, 4, 4, 2, 5)


@dataclass(frozen=True)
class ObserveConfig:
    """How a mock galaxy is observed (see the module docstring for the sources).

    Attributes:
        redshift: one redshift for every galaxy, or ``(lo, hi)`` to draw each
            galaxy's uniformly (with ``size_matched``: the range to clip to).
        size_matched: choose each galaxy's redshift so that a bundle drawn
            as MaNGA allocates them covers exactly ``coverage_re`` r_e
            (module docstring; needs a ``(lo, hi)`` redshift and a coverage).
        spaxel_arcsec: spaxel side.
        psf_fwhm_arcsec: Gaussian PSF FWHM (None or 0 = off).
        coverage_re: radius in r_e the bundle must reach; the smallest of
            :data:`BUNDLES` that does is used (the largest if none does);
            None = no footprint.
        snr_at_re: S/N per spaxel at r_e (None = noiseless: no noise, no
            binning, no S/N mask).
        snr_slope: exponent of the S/N-surface-density relation.
        noise_correlation: sigma of the Gaussian noise correlation, spaxels.
        sigma_inst: instrumental dispersion, km/s.
        age_error: fractional age error at S/N = 10.
        metallicity_error: fractional metallicity error at S/N = 10.
        target_snr: Voronoi-binning target S/N (None = unbinned).
        min_snr: spaxels (and bins) below this S/N are masked.
        seed: None = noise and redshifts follow the dataset's seed; an int
            re-observes the same galaxies with independent noise.
    """

    redshift: float | tuple[float, float] = 0.03
    size_matched: bool = False
    spaxel_arcsec: float = field(default=0.5, metadata={"gt": 0})
    psf_fwhm_arcsec: float | None = 2.5
    coverage_re: float | None = 1.5
    snr_at_re: float | None = 15.0
    snr_slope: float = field(default=0.5, metadata={"gt": 0})
    noise_correlation: float = field(default=1.92, metadata={"min": 0})
    sigma_inst: float = field(default=70.0, metadata={"min": 0})
    age_error: float = field(default=0.15, metadata={"min": 0})
    metallicity_error: float = field(default=0.15, metadata={"min": 0})
    target_snr: float | None = 10.0
    min_snr: float = field(default=1.0, metadata={"min": 0})
    seed: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for key in ("psf_fwhm_arcsec", "coverage_re", "snr_at_re", "target_snr"):
            value = getattr(self, key)
            if value is False or value == 0:
                set_(self, key, None)
            elif value is not None and not value > 0:
                raise ObservationError(
                    f"observe config: '{key}' is {value!r}, expected > 0 (or "
                    "false to switch it off)"
                )
        if self.seed is False:
            set_(self, "seed", None)
        z = self.redshift
        if isinstance(z, (list, tuple)):
            z = tuple(float(v) for v in z)
            set_(self, "redshift", z)
            ok = len(z) == 2 and 0.001 <= z[0] < z[1] <= 2.0
        else:
            ok = isinstance(z, (int, float)) and 0.001 <= z <= 2.0
            set_(self, "redshift", float(z))
        if not ok:
            raise ObservationError(
                f"observe config: 'redshift' is {self.redshift!r}, expected a "
                "number or [lo, hi] with 0.001 <= lo < hi <= 2 (MaNGA: 0.01-0.15)"
            )
        if self.size_matched and (
            not isinstance(self.redshift, tuple) or self.coverage_re is None
        ):
            raise ObservationError(
                "observe config: 'size_matched' puts each galaxy where a bundle "
                "covers 'coverage_re' r_e, clipped to a redshift range; set "
                "redshift = [lo, hi] (MaNGA: [0.01, 0.15]) and coverage_re"
            )
        if self.target_snr is not None and self.snr_at_re is None:
            raise ObservationError(
                "observe config: 'target_snr' bins to a S/N, but 'snr_at_re' is "
                "false (no noise model); set snr_at_re or target_snr = false"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists, None stays None)."""
        out = dataclasses.asdict(self)
        if isinstance(out["redshift"], tuple):
            out["redshift"] = list(out["redshift"])
        if not out["size_matched"]:
            # Absent when off, so configs stored before the switch keep their JSON.
            del out["size_matched"]
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], where: str = "observe config"
    ) -> ObserveConfig:
        """Build from a TOML ``[observe]`` table or :meth:`to_dict` output.

        Raises:
            ObservationError: unknown key (with the closest known one), a value
                of the wrong type, or a bad value.
        """
        from sbi_exsitu.schema import ConfigError, check_keys, check_types

        # JSON writes an off switch as null, TOML as false: one meaning.
        data = {k: False if v is None else v for k, v in data.items()}
        try:
            check_keys(data, [f.name for f in dataclasses.fields(cls)], where)
            data = check_types(data, cls, where)
        except ConfigError as err:
            raise ObservationError(str(err)) from None
        try:
            return cls(**data)
        except ObservationError as err:
            raise ObservationError(f"{where}: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> ObserveConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def diff(self, other: ObserveConfig) -> list[str]:
        """Human-readable differences, e.g. ``["psf_fwhm_arcsec: 2.5 != None"]``."""
        a, b = self.to_dict(), other.to_dict()
        for d in (a, b):
            d.setdefault("size_matched", False)
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
