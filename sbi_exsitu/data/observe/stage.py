"""The mock observation stage: particles -> PSF -> footprint -> noise -> binning.

One view of a mock galaxy becomes :class:`SpaxelMaps`, the product survey readers
also give, in these steps (the switches and their literature sources are in
:mod:`sbi_exsitu.data.observe.config`):

1. redshift -> angular scale (Planck18) -> r_e in arcsec and the spaxel size
   in kpc; the bundle that reaches ``coverage_re`` r_e sets the footprint;
2. particles are binned on the spaxel grid as mass-weighted moment sums
   (Sigma, Sigma v, Sigma v^2, Sigma age, Sigma Z;
   :func:`sbi_exsitu.data.projection.moment_maps`);
3. each moment map is convolved with the Gaussian PSF, and only then are the
   ratios formed (v = Sigma v / Sigma, ...): a telescope blurs light, not
   ratio maps;
4. S/N per spaxel from the surface density; spaxels below ``min_snr`` or
   outside the footprint are dropped, the rest Voronoi-binned to
   ``target_snr`` (:mod:`~sbi_exsitu.data.observe.binning`);
5. bin values are moment-weighted over the bin's spaxels, then perturbed by
   spatially correlated noise (:mod:`~sbi_exsitu.data.observe.noise`) with
   errors from the bin's covariance-corrected S/N: v and the raw dispersion
   sigma_obs = sqrt(sigma^2 + sigma_inst^2) get sigma_obs / (S/N), mass 1/(S/N)
   fractional, age and Z their fractional errors. As the DAP does, the
   dispersion is corrected afterwards, sigma^2 = sigma_obs^2 - sigma_inst^2,
   and masked where that is not positive.

Every random step draws from ``derive_seed(seed, "observe", galaxy, view)`` (the
redshift from ``derive_seed(seed, "redshift", galaxy)``): the same seed gives the
same maps whatever the order or the number of workers.

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.particles import Particles
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> rng = np.random.default_rng(0)
    >>> n = 20_000
    >>> p = Particles(pos=rng.normal(0, 2, (n, 3)), vel=rng.normal(0, 80, (n, 3)),
    ...               mass=np.full(n, 1e5), age=rng.uniform(1, 12, n),
    ...               metallicity=np.full(n, 0.02), ex_situ=rng.random(n) < 0.3)
    >>> obs = ObserveConfig()
    >>> views = render_observed_views(p, RenderConfig(resolution=16), obs, 4, seed=0)
    >>> views.maps.shape, bool(views.mask.any())
    ((4, 5, 16, 16), True)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sbi_exsitu.data.cameras import polyhedron_vertices
from sbi_exsitu.data.exsitu_target import smoothed_exsitu_fraction
from sbi_exsitu.data.observe.binning import bin_spaxels, binned_snr
from sbi_exsitu.data.observe.config import BUNDLE_ALLOCATION, BUNDLES, ObserveConfig
from sbi_exsitu.data.observe.distance import kpc_per_arcsec
from sbi_exsitu.data.observe.footprint import (
    choose_bundle,
    hexagon_mask,
    matched_redshift,
)
from sbi_exsitu.data.observe.grid import to_posterior_grid
from sbi_exsitu.data.observe.noise import correlated_noise, covariance_factor
from sbi_exsitu.data.observe.spaxels import SpaxelMaps
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.projection import moment_maps
from sbi_exsitu.data.render import (
    RenderConfig,
    RenderedViews,
    RenderError,
    TooFewPixelsError,
    check_observed,
    pixel_statistics,
    preprocess,
)
from sbi_exsitu.errors import ObservationError
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "galaxy_redshift",
    "observe_view",
    "observe_views",
    "render_observed_views",
]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def galaxy_redshift(
    config: ObserveConfig, seed: int, galaxy: int, r_e_kpc: float | None = None
) -> float:
    """The redshift galaxy ``galaxy`` is observed at (fixed, drawn or size-matched).

    ``r_e_kpc`` (the galaxy's half-mass radius) is needed with
    ``config.size_matched``: a bundle is drawn with MaNGA's allocation and the
    galaxy put where it reaches ``coverage_re`` r_e
    (:func:`~sbi_exsitu.data.observe.footprint.matched_redshift`).
    """
    if not isinstance(config.redshift, tuple):
        return config.redshift
    lo, hi = config.redshift
    rng = np.random.default_rng(derive_seed(seed, "redshift", galaxy))
    if not config.size_matched:
        return float(rng.uniform(lo, hi))
    if r_e_kpc is None:
        raise ObservationError("size_matched redshifts need the galaxy's r_e_kpc")
    weights = np.asarray(BUNDLE_ALLOCATION, dtype=np.float64)
    across = BUNDLES[rng.choice(len(BUNDLES), p=weights / weights.sum())][1]
    return matched_redshift(r_e_kpc, config.coverage_re, across, lo, hi)


def _grid_size(
    r_e_arcsec: float, render: RenderConfig, config: ObserveConfig
) -> tuple[int, float | None]:
    """Spaxels per side and the bundle width (arcsec, None = no footprint)."""
    across = None
    if config.coverage_re is not None:
        across = choose_bundle(r_e_arcsec, config.coverage_re)[1]
        width = across
    else:
        width = render.fov_re * r_e_arcsec
    # A margin of two PSF FWHM each side, so light the PSF scatters inwards from
    # outside the field is binned too.
    width += 4.0 * (config.psf_fwhm_arcsec or 0.0)
    n = 2 * math.ceil(0.5 * width / config.spaxel_arcsec)
    return max(n, 8), across


def _psf(moments: np.ndarray, config: ObserveConfig) -> np.ndarray:
    if config.psf_fwhm_arcsec is None:
        return moments
    s = config.psf_fwhm_arcsec / config.spaxel_arcsec * _FWHM_TO_SIGMA
    # mode="constant": light scattered off the grid is lost, as off a detector.
    return ndimage.gaussian_filter(moments, (0, s, s), mode="constant", truncate=4)


def _snr(
    mass: np.ndarray, r_spax: np.ndarray, r_e_spax: float, config: ObserveConfig
) -> np.ndarray:
    """S/N per spaxel = snr_at_re * (Sigma / Sigma(r_e)) ** snr_slope."""
    ring = np.abs(r_spax - r_e_spax) <= max(0.1 * r_e_spax, 0.75)
    sigma_re = mass[ring].mean() if ring.any() else mass.max()
    if not sigma_re > 0:
        return np.zeros_like(mass)
    return config.snr_at_re * (np.maximum(mass, 0.0) / sigma_re) ** config.snr_slope


def observe_view(
    particles: Particles,
    direction: np.ndarray,
    render: RenderConfig,
    config: ObserveConfig,
    *,
    redshift: float,
    rng: np.random.Generator,
    name: str = "",
) -> SpaxelMaps:
    """One view of ``particles`` as an IFU sees it (steps in the module docstring).

    Args:
        particles: the galaxy, centred; positions in kpc.
        direction: (3,) camera direction.
        render: the posterior's render config (its ``fov_re`` sets the grid
            when there is no footprint).
        config: the observation.
        redshift: the galaxy's redshift.
        rng: the view's random stream (used only with noise on).
        name: for messages.
    """
    scale = kpc_per_arcsec(redshift)
    r_e_arcsec = particles.half_mass_radius / scale
    n, across = _grid_size(r_e_arcsec, render, config)
    spaxel_kpc = config.spaxel_arcsec * scale
    moments = _psf(moment_maps(particles, direction, n, 0.5 * n * spaxel_kpc), config)
    centre = (0.5 * n, 0.5 * n)
    c = np.arange(n) + 0.5 - 0.5 * n
    r_spax = np.hypot(c[None, :], c[:, None])
    use = moments[0] > 0
    if across is not None:
        use &= hexagon_mask((n, n), centre, across / config.spaxel_arcsec)
    sn = None
    if config.snr_at_re is not None:
        sn = _snr(moments[0], r_spax, r_e_arcsec / config.spaxel_arcsec, config)
        use &= sn >= config.min_snr
    flat = np.flatnonzero(use.ravel())
    bin_id = np.full(n * n, -1, dtype=np.intp)
    if sn is not None and config.target_snr is not None and flat.size:
        xy = np.c_[flat % n, flat // n].astype(np.float64)
        bin_id[flat] = bin_spaxels(xy, sn.ravel()[flat], config.target_snr)
    else:
        bin_id[flat] = np.arange(flat.size)
    values, valid, error = _bin_values(moments, bin_id, sn, config, rng)
    return SpaxelMaps(
        name=name or particles.name,
        values={k: v.reshape(n, n) for k, v in values.items()},
        valid={k: v.reshape(n, n) for k, v in valid.items()},
        spaxel_arcsec=config.spaxel_arcsec,
        centre=centre,
        r_e_arcsec=float(r_e_arcsec),
        redshift=float(redshift),
        bin_id=bin_id.reshape(n, n) if config.target_snr is not None else None,
        error={k: v.reshape(n, n) for k, v in error.items()},
    )


def _bin_values(
    moments: np.ndarray,
    bin_id: np.ndarray,
    sn: np.ndarray | None,
    config: ObserveConfig,
    rng: np.random.Generator,
) -> tuple[dict, dict, dict]:
    """Moment-weighted bin values with noise, spread back to the spaxels (flat)."""
    size = bin_id.size
    inbin = bin_id >= 0
    ids = bin_id[inbin]
    nbin = int(ids.max()) + 1 if ids.size else 0
    mom = moments.reshape(len(moments), size)[:, inbin]
    sums = np.stack([np.bincount(ids, weights=m, minlength=nbin) for m in mom])
    npix = np.bincount(ids, minlength=nbin).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m0 = sums[0]
        v = sums[1] / m0
        b = {
            "mass": m0 / npix,
            "velocity": v,
            "dispersion": np.sqrt(np.maximum(sums[2] / m0 - v * v, 0.0)),
            "age": sums[3] / m0,
            "metallicity": sums[4] / m0,
        }
    ok = {k: m0 > 0 for k in b}
    err: dict[str, np.ndarray] = {}
    if sn is not None:
        snb = binned_snr(sn.ravel()[inbin], ids) if nbin else np.zeros(0)
        # Unit-variance noise per bin: the correlated field summed over the
        # bin, divided by its standard deviation sqrt(N) f(N), so one field
        # drives single spaxels and bins alike.
        shape = moments.shape[1:]
        field = correlated_noise(rng, (5, *shape), config.noise_correlation)
        field = field.reshape(5, size)[:, inbin]
        z = np.stack([np.bincount(ids, weights=f, minlength=nbin) for f in field])
        z /= np.sqrt(np.maximum(npix, 1.0)) * covariance_factor(npix)
        b, ok, err = _add_noise(b, ok, snb, z, config)

    def spread(a: np.ndarray, fill: float | bool) -> np.ndarray:
        out = np.full(size, fill, dtype=a.dtype)
        out[inbin] = a[ids]
        return out

    values = {k: spread(a, np.nan) for k, a in b.items()}
    valid = {k: spread(a, False) for k, a in ok.items()}
    errors = {k: spread(a, np.nan) for k, a in err.items()}
    return values, valid, errors


def _add_noise(
    b: dict[str, np.ndarray],
    ok: dict[str, np.ndarray],
    snb: np.ndarray,
    z: np.ndarray,
    config: ObserveConfig,
) -> tuple[dict, dict, dict]:
    """Noisy bin values, validity and 1-sigma errors (module docstring, step 5)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_sn = np.where(snb > 0, 1.0 / snb, np.inf)
        s_obs = np.sqrt(b["dispersion"] ** 2 + config.sigma_inst**2)
        err = {
            "mass": b["mass"] * inv_sn,
            "velocity": s_obs * inv_sn,
            "dispersion": s_obs * inv_sn,
            "age": b["age"] * config.age_error * 10.0 * inv_sn,
            "metallicity": b["metallicity"] * config.metallicity_error * 10.0 * inv_sn,
        }
        out = {k: b[k] + z[i] * err[k] for i, k in enumerate(b) if k != "dispersion"}
        # The DAP's correction: the noise sits on the raw (instrument-broadened)
        # dispersion; sigma*^2 = sigma_obs^2 - sigma_inst^2 may then go negative.
        s_noisy = s_obs + z[2] * err["dispersion"]
        corrected = s_noisy**2 - config.sigma_inst**2
        out["dispersion"] = np.sqrt(np.maximum(corrected, 0.0))
    good = ok["mass"] & (snb >= config.min_snr)
    ok = {k: good & np.isfinite(out[k]) for k in out}
    for k in ("mass", "age", "metallicity"):
        ok[k] &= out[k] > 0
    ok["dispersion"] &= (s_noisy > 0) & (corrected > 0)
    return {k: out[k] for k in b}, ok, err


def observe_views(
    particles: Particles,
    directions: np.ndarray | int,
    render: RenderConfig,
    config: ObserveConfig,
    seed: int,
    galaxy: int = 0,
    first_view: int = 0,
) -> list[SpaxelMaps]:
    """Every view of one galaxy as :class:`SpaxelMaps`.

    Args:
        particles: the galaxy, centred.
        directions: (V, 3) camera directions or a polyhedron vertex count.
        render: the posterior's render config.
        config: the observation.
        seed: the dataset's seed (``config.seed`` replaces it when set).
        galaxy: the galaxy's index, for the seeds.
        first_view: the index of the first direction among the galaxy's views,
            for the seeds (views rendered one at a time, e.g. each from its own
            particle subset, keep the streams of a whole-galaxy call).
    """
    if isinstance(directions, (int, np.integer)):
        directions = polyhedron_vertices(int(directions))
    directions = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    seed = seed if config.seed is None else config.seed
    z = galaxy_redshift(config, seed, galaxy, particles.half_mass_radius)
    return [
        observe_view(
            particles,
            d,
            render,
            config,
            redshift=z,
            rng=np.random.default_rng(derive_seed(seed, "observe", galaxy, k)),
            name=f"{particles.name}, view {k}",
        )
        for k, d in enumerate(directions, start=first_view)
    ]


def render_observed_views(
    particles: Particles,
    render: RenderConfig,
    config: ObserveConfig,
    directions: np.ndarray | int,
    seed: int,
    galaxy: int = 0,
    first_view: int = 0,
    *,
    skip_unobservable: bool = False,
) -> RenderedViews:
    """:func:`~sbi_exsitu.data.render.render_views` through the observation stage.

    The maps are observed, resampled onto the posterior grid
    (:func:`~sbi_exsitu.data.observe.grid.to_posterior_grid`) and preprocessed
    with the observed valid mask; the ex-situ target stays intrinsic (binned
    from the particles on the same grid) and is masked by that mask.
    ``seed``, ``galaxy`` and ``first_view`` (the number of the first direction,
    for views rendered one at a time) seed each view as in :func:`observe_views`.

    Args:
        particles: the galaxy, centred.
        render: the posterior's render config.
        config: the observation.
        directions: (V, 3) camera directions or a polyhedron vertex count.
        seed: the dataset's seed.
        galaxy: the galaxy's index, for the seeds.
        skip_unobservable: leave out the views that keep fewer than
            ``render.min_pixels`` valid pixels instead of raising; the result's
            ``view_ids`` names the views kept (possibly none). Every view keeps
            its own seed, so the kept views are the same maps either way.

    Raises:
        RenderError: a setting observed maps cannot honour.
        TooFewPixelsError: without ``skip_unobservable``, a view keeps fewer
            than ``render.min_pixels`` valid pixels.
    """
    check_observed(render)
    spaxels = observe_views(
        particles, directions, render, config, seed, galaxy, first_view
    )
    if isinstance(directions, (int, np.integer)):
        directions = polyhedron_vertices(int(directions))
    directions = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    n, v = render.resolution, len(directions)
    maps = np.empty((v, render.n_channels, n, n), dtype=np.float32)
    exsitu = np.empty((v, n, n), dtype=np.float32)
    mask = np.empty((v, n, n), dtype=bool)
    kept = np.ones(v, dtype=bool)
    for k, (d, sm) in enumerate(zip(directions, spaxels, strict=True)):
        stats, valid = to_posterior_grid(sm, render)
        try:
            maps[k], mask[k] = preprocess(stats, render, valid=valid)
        except TooFewPixelsError as err:
            if skip_unobservable:
                kept[k] = False
                continue
            raise TooFewPixelsError(f"{sm.name}: {err}") from None
        except RenderError as err:
            raise RenderError(f"{sm.name}: {err}") from None
        if particles.ex_situ is None:
            exsitu[k] = np.nan
        else:
            exsitu[k] = _intrinsic_exsitu(particles, d, render, mask[k])
    return RenderedViews(
        maps=maps[kept],
        exsitu=exsitu[kept],
        mask=mask[kept],
        directions=directions[kept],
        view_ids=np.flatnonzero(kept),
    )


def _intrinsic_exsitu(
    particles: Particles, direction: np.ndarray, render: RenderConfig, mask: np.ndarray
) -> np.ndarray:
    """The particles' ex-situ mass fraction on the posterior grid, 0 off ``mask``.

    The PSF spreads light into pixels that hold no particle (14% of the valid
    pixels of configs/manga-like.toml at 12,000 particles); their fraction is
    the ratio of Gaussian-smoothed ex-situ and total mass around them (1 px,
    widened to 3 px if that is still empty), so the target stays intrinsic (no
    PSF) where particles are and is defined on every valid pixel.
    """
    stats = pixel_statistics(particles, direction, render)
    # The same target definition as idealised maps (render.exsitu_smooth_sigma).
    frac = smoothed_exsitu_fraction(
        stats.mass, stats.exsitu_fraction, render.exsitu_smooth_sigma
    )
    empty = mask & ~np.isfinite(frac)
    if empty.any():
        for width in (1.0, 3.0):
            fill = smoothed_exsitu_fraction(stats.mass, stats.exsitu_fraction, width)
            frac = np.where(empty, fill, frac)
            empty = mask & ~np.isfinite(frac)
            if not empty.any():
                break
        frac = np.where(empty, particles.f_ex, frac)
    return np.where(mask, frac, 0.0).astype(np.float32)
