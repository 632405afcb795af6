"""One galaxy's views for ``simulate``: its seed, its camera count, its rendering.

Split out of :mod:`sbi_exsitu.data.simulate` (which configures and writes whole
datasets). :func:`simulate_galaxy` draws galaxy ``index`` of a dataset and renders
its views, idealised or through the observation stage, optionally each view from
its own random subset of the particles (``particle_subsample``). It is
module-level so worker processes can pickle it.

Example:
    >>> views_for_fex(0.05), views_for_fex(0.95)
    (4, 20)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sbi_exsitu.data.cameras import polyhedron_vertices
from sbi_exsitu.data.mock import FormationModel
from sbi_exsitu.data.particles import Particles, subsample
from sbi_exsitu.data.render import (
    RenderConfig,
    RenderedViews,
    RenderError,
    render_views,
)
from sbi_exsitu.errors import SimulationError
from sbi_exsitu.seeding import derive_seed

__all__ = ["GalaxyViews", "galaxy_seed", "simulate_galaxy", "views_for_fex"]


def galaxy_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of galaxy ``index``: independent of worker count and order."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


def views_for_fex(
    f_ex: float,
    edges: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8),
    views: tuple[int, ...] = (4, 6, 8, 12, 20),
) -> int:
    """Number of cameras for a galaxy of ex-situ fraction ``f_ex`` (001 sec. 2.5.1).

    Example:
        >>> views_for_fex(0.05), views_for_fex(0.5), views_for_fex(0.95)
        (4, 8, 20)
    """
    return int(views[int(np.searchsorted(edges, f_ex, side="right"))])


@dataclass(frozen=True)
class GalaxyViews:
    """A galaxy's rendered views, its draw info and the views skipped."""

    index: int
    views: RenderedViews
    info: dict[str, Any]
    skipped: tuple[int, ...] = ()


def _render(
    particles: Particles,
    render: RenderConfig,
    directions: np.ndarray | int,
    seed: int,
    index: int,
    first_view: int = 0,
) -> RenderedViews:
    if render.observe is None:
        return render_views(particles, render, directions, first_view)
    from sbi_exsitu.data.observe.stage import render_observed_views

    # Observed views that keep too few valid pixels are skipped and counted (the
    # result's view_ids), not fatal: one small galaxy must not abort a survey run.
    return render_observed_views(
        particles,
        render,
        render.observe,
        directions,
        seed,
        index,
        first_view,
        skip_unobservable=True,
    )


def _subsampled_views(
    particles: Particles,
    render: RenderConfig,
    n_views: int,
    seed: int,
    index: int,
    fractions: tuple[float, float],
) -> RenderedViews:
    """Every view rendered from its own random subset of the particles."""
    directions = polyhedron_vertices(n_views)
    lo, hi = np.log(fractions[0]), np.log(fractions[1])
    parts, kept = [], []
    for k, d in enumerate(directions):
        rng = np.random.default_rng(derive_seed(seed, "subsample", index, k))
        n_keep = int(round(np.exp(rng.uniform(lo, hi)) * len(particles)))
        n_keep = min(max(n_keep, 1), len(particles))
        sub = subsample(particles, n_keep, int(rng.integers(2**63)))
        try:
            part = _render(sub, render, d[None], seed, index, first_view=k)
        except RenderError as err:
            raise type(err)(f"{err} (keeping {n_keep} particles)") from None
        parts.append(part)
        kept += [k] if part.view_ids is None else [k + int(i) for i in part.view_ids]
    return RenderedViews(
        maps=np.concatenate([p.maps for p in parts]),
        exsitu=np.concatenate([p.exsitu for p in parts]),
        mask=np.concatenate([p.mask for p in parts]),
        directions=directions[kept],
        view_ids=None if render.observe is None else np.asarray(kept, dtype=np.int64),
    )


def simulate_galaxy(
    index: int,
    *,
    model: FormationModel,
    render: RenderConfig,
    seed: int,
    views: str | int,
    edges: tuple[float, ...],
    counts: tuple[int, ...],
    particle_subsample: tuple[float, float] | None = None,
) -> GalaxyViews:
    """Draw and render galaxy ``index``; module-level so workers can pickle it."""
    particles, info = model.draw(galaxy_seed(seed, index))
    n_views = int(
        views_for_fex(particles.f_ex, edges, counts) if views == "balanced" else views
    )
    try:
        if particle_subsample is None:
            rendered = _render(particles, render, n_views, seed, index)
        else:
            rendered = _subsampled_views(
                particles, render, n_views, seed, index, particle_subsample
            )
    except RenderError as err:
        # The render error already names the observation's fixes when observed.
        hint = (
            "; raise 'min_particles' in [model] or lower 'resolution' in [render]"
            if render.observe is None
            else ""
        )
        if particle_subsample is not None:
            hint += " or raise the lower end of [simulate] 'particle_subsample'"
        raise SimulationError(
            f"galaxy {index} (seed {seed}, log M* = {info['log_mstar']:.2f}, "
            f"{len(particles)} particles) cannot be rendered: {err}{hint}"
        ) from None
    kept = set(range(int(n_views)) if rendered.view_ids is None else rendered.view_ids)
    skipped = tuple(k for k in range(int(n_views)) if k not in kept)
    return GalaxyViews(index=index, views=rendered, info=info, skipped=skipped)
