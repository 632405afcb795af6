r"""The implied scalar f_ex of an ex-situ fraction map: mass weights.

The implied scalar f_ex is the mass-weighted mean of an ex-situ fraction map,
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

Exact weights would not bring the implied f_ex closer to the f_ex *label*:
the label counts the whole galaxy, the map only the pixels in the mask, and
even the raw particle mass per pixel gives a scatter of 0.057 against the
labels on ``map-quickstart`` (fitted scale: 0.054; ``docs/map-posterior.md``).

Example:
    >>> import numpy as np
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> cfg = RenderConfig(resolution=8, channels=("velocity",), min_pixels=1)
    >>> maps, mask = np.ones((1, 1, 8, 8)), np.ones((1, 8, 8), bool)
    >>> w, kind = mass_weights(maps, mask, cfg)
    >>> draws = np.full((1, 3, 8, 8), 0.25)
    >>> kind, implied_fex(draws, w).round(2).tolist()
    ('uniform', [[0.25, 0.25, 0.25]])
"""

from __future__ import annotations

import numpy as np

from sbi_exsitu.data.render import RenderConfig

__all__ = ["fit_mass_scale", "implied_fex", "mass_weights"]


def mass_weights(
    maps: np.ndarray,
    mask: np.ndarray,
    render_config: RenderConfig,
    *,
    mass: np.ndarray | None = None,
    mass_scale: float | None = None,
) -> tuple[np.ndarray, str]:
    """(n, H, W) non-negative pixel weights for the implied f_ex, and their kind.

    The module docstring gives the order of the cases.
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
    errors = []
    for s in grid:
        w, _ = mass_weights(maps, mask, render_config, mass_scale=float(s))
        pred = implied_fex(np.asarray(exsitu)[:, None], w)[:, 0]
        errors.append(np.sqrt(np.mean((pred - f_ex) ** 2)))
    return float(grid[int(np.argmin(errors))])
