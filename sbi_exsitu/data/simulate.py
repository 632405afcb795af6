"""Mock galaxies to a rendered map dataset: the ``sbi-exsitu simulate`` pipeline.

Galaxy ``i`` is drawn from a registered formation model (:mod:`sbi_exsitu.data.mock`)
with the seed ``SeedSequence(seed, spawn_key=(i,))``, rendered from the vertices
of a regular polyhedron (:mod:`sbi_exsitu.data.cameras`) and appended to a
:class:`~sbi_exsitu.data.dataset.DatasetWriter` file in index order. Every galaxy
depends only on ``(seed, i)``, so the file is the same whatever the number of
workers, the scheduler or how often the run was interrupted and resumed; a resumed
run may also ask for more galaxies than the first one to extend the dataset.

Views per galaxy: an int (every galaxy, a polyhedron vertex count) or
``"balanced"``, which picks the polyhedron from the galaxy's f_ex as 001 sec.
2.5.1 does — more projections for the rarer high-f_ex galaxies (default: 4, 6, 8,
12, 20 views for f_ex below 0.2, 0.4, 0.6, 0.8 and above). That suits a
regression net, but a posterior trained on every view learns under the training
prior ``n_views(f_ex) p(f_ex)``, not the galaxy population's ``p(f_ex)``: on the
debris world the quickstart's posterior sat high for low-f_ex galaxies (mean PIT
0.26 on test galaxies with f_ex < 0.1, even 0.30 on its training maps); six
fixed views of the same galaxies took its mean-PIT z-score from -5.5 to -3.0
(docs/calibration.md). The quickstart and the study configs use a fixed count.

Config file (TOML)::

    [simulate]
    model = "tng-like"        # a registered formation model
    n_galaxies = 3600
    seed = 0
    views = "balanced"        # or 4, 6, 8, 12, 20
    balance_edges = [0.2, 0.4, 0.6, 0.8]
    balance_views = [4, 6, 8, 12, 20]
    particle_subsample = [0.25, 1.0]   # optional, off by default (see below)

    [model]                   # overrides of the model's parameters
    max_particles = 30000

    [render]                  # RenderConfig fields (or preset = "paper")
    resolution = 128

    [observe]                 # optional: observe the mocks as MaNGA would
    redshift = [0.01, 0.15]   # ObserveConfig fields (sbi_exsitu.data.observe)

Particle-count augmentation (``particle_subsample = [lo, hi]``, off by default):
each view keeps its own random subset of the galaxy's particles, a fraction
drawn log-uniform in ``[lo, hi]``, with masses scaled up so M* is unchanged
(:func:`sbi_exsitu.data.particles.subsample`; both draws seeded by
``derive_seed(seed, "subsample", galaxy, view)``). A posterior trained on one
particle count learns that count's shot noise: keeping 1/2 or 1/4 of a test
galaxy's particles moved the quickstart posterior median by a median 1.82
posterior std without it, 0.44 with ``[0.1, 1.0]``, and 0.33 with
``[0.25, 1.0]`` and the count-robust ``[render] min_density_re = 0.25`` mask
(``benchmarks/particle_resampling.py``, 40 galaxies; docs/simulate.md). The
labels (f_ex, log M*, r_e, assembly) stay those of the full galaxy, the
physical truth; the ex-situ target map is binned from the view's own subset,
so it is consistent with that view's stellar maps and mask. The default pixel
mask (``min_count`` particles per pixel) is left as it is: a coarser view keeps
fewer outer pixels, exactly as a coarser test galaxy would, and the posterior
learns to marginalise over that; ``min_density_re`` removes most of that
signal instead.

With ``[observe]`` every view goes through the mock observation stage
(:func:`sbi_exsitu.data.observe.stage.render_observed_views`, seeded per
dataset seed, galaxy and view) and the observation is stored in the dataset's
render config, so a posterior trained on these maps refuses idealised ones.

An observed view that keeps fewer than ``render.min_pixels`` valid pixels is
skipped and recorded, and a galaxy that loses every view is dropped
(:mod:`sbi_exsitu.data.skips`): one unobservable galaxy no longer aborts the
run. Skipping is a selection effect (small and faint galaxies are
under-represented), so more than ``max_skipped_fraction`` of the views (default
0.2, in ``[simulate]``) is an error that names the observation settings to
change. Idealised views are never skipped: too few pixels there is an error.

Example:
    >>> import tempfile, pathlib
    >>> cfg = SimulationConfig.from_dict({
    ...     "simulate": {"n_galaxies": 2, "views": 4},
    ...     "model": {"max_particles": 4000, "min_particles": 4000},
    ...     "render": {"resolution": 16}})
    >>> out = simulate(cfg, pathlib.Path(tempfile.mkdtemp()) / "d.h5",
    ...                progress=False)
    >>> from sbi_exsitu.data.dataset import MapDataset
    >>> len(MapDataset(out))
    8
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sbi_exsitu.atomic import check_output_path
from sbi_exsitu.data.cameras import VIEW_COUNTS
from sbi_exsitu.data.dataset import OPTIONAL_LABELS, DatasetWriter
from sbi_exsitu.data.galaxy_views import GalaxyViews, galaxy_seed, views_for_fex
from sbi_exsitu.data.galaxy_views import simulate_galaxy as _simulate_galaxy
from sbi_exsitu.data.map_dataset import partial_path
from sbi_exsitu.data.mock import FormationModel, ModelError, get_model
from sbi_exsitu.data.parallel import parallel_map
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.render import (
    RenderConfig,
    RenderError,
)
from sbi_exsitu.data.skips import SkipSummary
from sbi_exsitu.errors import SimulationError
from sbi_exsitu.schema import ConfigError, check_keys, load_toml, take_section

__all__ = [
    "SimulationConfig",
    "SimulationError",
    "galaxy_seed",
    "draw_galaxy",
    "stored_simulation",
    "views_for_fex",
    "simulate",
]

_SECTIONS = ("simulate", "model", "render", "observe")


@dataclass(frozen=True)
class _SimulateSection:
    model: str = "tng-like"
    n_galaxies: int = 100
    seed: int = 0
    views: str | int = "balanced"
    balance_edges: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    balance_views: tuple[int, ...] = (4, 6, 8, 12, 20)
    particle_subsample: tuple[float, float] | None = None
    max_skipped_fraction: float = 0.2


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that decides a simulated dataset.

    Attributes:
        model: registered formation model name.
        n_galaxies: galaxies to draw (ids 0 .. n_galaxies - 1).
        seed: master seed; galaxy ``i`` uses :func:`galaxy_seed`.
        views: ``"balanced"`` or a polyhedron vertex count (4, 6, 8, 12, 20).
        balance_edges: increasing f_ex edges of the balanced policy.
        balance_views: views per f_ex bin (one more than ``balance_edges``).
        particle_subsample: ``(lo, hi)`` with ``0 < lo <= hi <= 1``: each view
            keeps a log-uniform fraction in that range of the particles (the
            module docstring); ``None`` (default) keeps them all.
        max_skipped_fraction: observed runs fail when more than this share of
            the views is unobservable (too few valid pixels) and skipped.
        model_params: overrides of the model's parameters.
        render: the render configuration.

    Raises:
        SimulationError: a value is out of range (the message names the key).
    """

    model: str = "tng-like"
    n_galaxies: int = 100
    seed: int = 0
    views: str | int = "balanced"
    balance_edges: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    balance_views: tuple[int, ...] = (4, 6, 8, 12, 20)
    particle_subsample: tuple[float, float] | None = None
    max_skipped_fraction: float = 0.2
    model_params: dict[str, Any] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)

    def __post_init__(self) -> None:
        _check_int("n_galaxies", self.n_galaxies, low=1)
        _check_int("seed", self.seed, low=0)
        if not 0 <= self.max_skipped_fraction <= 1:
            raise SimulationError(
                f"'max_skipped_fraction' is {self.max_skipped_fraction!r}, expected "
                "a share of the views in [0, 1]"
            )
        if self.views != "balanced" and self.views not in VIEW_COUNTS:
            raise SimulationError(
                f"'views' is {self.views!r}, expected \"balanced\" or one of "
                f"{list(VIEW_COUNTS)}"
            )
        edges, counts = tuple(self.balance_edges), tuple(self.balance_views)
        object.__setattr__(self, "balance_edges", edges)
        object.__setattr__(self, "balance_views", counts)
        if len(counts) != len(edges) + 1 or any(v not in VIEW_COUNTS for v in counts):
            raise SimulationError(
                f"'balance_views' is {list(counts)}, expected {len(edges) + 1} "
                f"values (one more than 'balance_edges') from {list(VIEW_COUNTS)}"
            )
        if any(not 0 < e < 1 for e in edges) or list(edges) != sorted(set(edges)):
            raise SimulationError(
                f"'balance_edges' is {list(edges)}, expected increasing values "
                "in (0, 1)"
            )
        sub = self.particle_subsample
        if sub is False:  # TOML has no null: false switches it off
            sub = None
        if sub is not None:
            sub = tuple(sub) if isinstance(sub, (list, tuple)) else (sub,)
            if (
                len(sub) != 2
                or not all(isinstance(x, (int, float)) for x in sub)
                or not 0 < sub[0] <= sub[1] <= 1
            ):
                raise SimulationError(
                    f"'particle_subsample' is {self.particle_subsample!r}, expected "
                    "[lo, hi] with 0 < lo <= hi <= 1 (the fraction of particles "
                    "each view keeps, e.g. [0.1, 1.0]), or false to keep them all"
                )
            sub = (float(sub[0]), float(sub[1]))
        object.__setattr__(self, "particle_subsample", sub)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "config") -> SimulationConfig:
        """Build from a parsed TOML document with the tables of the module docstring.

        Raises:
            ConfigError: unknown table or key (with the closest known one), unknown
                model (listing the known ones) or a value outside its range.
        """
        check_keys(doc, _SECTIONS, where)
        sim = take_section(doc.get("simulate"), _SimulateSection, f"{where} [simulate]")
        params = dict(doc.get("model", {}))
        try:
            get_model(sim.model, **params)  # validate names and ranges now
        except ModelError as err:
            raise ConfigError(f"{where} [model]: {err}") from None
        render_doc = dict(doc.get("render", {}))
        if doc.get("observe"):
            render_doc["observe"] = dict(doc["observe"])
        try:
            render = RenderConfig.from_dict(render_doc, f"{where} [render]")
        except RenderError as err:
            raise ConfigError(str(err)) from None
        try:
            return cls(**dataclasses.asdict(sim), model_params=params, render=render)
        except SimulationError as err:
            raise ConfigError(f"{where} [simulate]: {err}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> SimulationConfig:
        """Read a config file (see the module docstring)."""
        return cls.from_dict(load_toml(path), where=str(path))

    def formation_model(self) -> FormationModel:
        """The configured formation model."""
        return get_model(self.model, **self.model_params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the same layout as the TOML file."""
        sim = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(_SimulateSection)
        }
        sim = {k: list(v) if isinstance(v, tuple) else v for k, v in sim.items()}
        if sim["particle_subsample"] is None:
            # Off: left out, so datasets made before the option existed keep
            # their exact attributes and still resume.
            sim.pop("particle_subsample")
        return {
            "simulate": sim,
            "model": {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in self.model_params.items()
            },
            "render": self.render.to_dict(),
        }


def draw_galaxy(
    config: SimulationConfig, index: int
) -> tuple[Particles, dict[str, Any]]:
    """Re-draw galaxy ``index`` of a simulation (the particles behind its maps)."""
    return config.formation_model().draw(galaxy_seed(config.seed, index))


def stored_simulation(attrs: dict[str, Any]) -> SimulationConfig:
    """The simulation config of a ``simulate`` dataset (its decoded attributes).

    The model table is the dataset's full stored ``model_params`` rather than the
    config's overrides, so :func:`draw_galaxy` re-draws its galaxies exactly even
    after a later version changed a default. Datasets written before the
    ``debris_scheme`` parameter existed re-draw with scheme 1, their debris.

    Raises:
        ConfigError: the attributes hold no simulation config.
    """
    if "simulation" not in attrs:
        raise ConfigError(
            "dataset attributes: no 'simulation' config (not written by "
            "`sbi-exsitu simulate`)"
        )
    doc = dict(attrs["simulation"])
    params = attrs.get("model_params")
    if params is not None:
        doc["model"] = {"debris_scheme": 1, **params}
    return SimulationConfig.from_dict(doc, where="dataset attributes")


def simulate(
    config: SimulationConfig,
    out: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """Draw, render and write ``config.n_galaxies`` mock galaxies.

    Args:
        config: the simulation configuration.
        out: the HDF5 dataset to write (atomically, via ``<out>.partial``).
        workers: local worker processes (1 = in this process).
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        resume: continue an interrupted (or finished) file, skipping the galaxies
            it holds; the stored settings must match.
        overwrite: replace an existing file.
        progress: show a tqdm bar (galaxies, rate, ETA, views written).
        inputs: files the run reads (e.g. the config file); ``out`` must be
            none of them.

    Returns:
        The path of the finished dataset.

    Raises:
        OutputPathError: ``out`` cannot be written (checked before any work).
        OutputBusyError: another process is writing ``out``.
        DatasetError: ``out`` exists without ``resume``/``overwrite``, or resume
            with different settings.
        SimulationError: a galaxy cannot be rendered, or an observed run skips
            more than ``config.max_skipped_fraction`` of its views (the
            ``.partial`` file is kept: resume it with a higher threshold).
    """
    # An existing out is refused by DatasetWriter, naming --resume and --overwrite.
    out = check_output_path(out, inputs=inputs, overwrite=True)
    model = config.formation_model()
    doc = config.to_dict()
    # n_galaxies is left out so that a resumed run may extend the dataset, and
    # max_skipped_fraction so that a refused run can resume with a higher one
    # (it decides whether the run fails, not what it writes).
    doc["simulate"].pop("n_galaxies")
    doc["simulate"].pop("max_skipped_fraction")
    attrs = {"source": "simulate", "simulation": doc, "model_params": model.params()}
    work = functools.partial(
        _simulate_galaxy,
        model=model,
        render=config.render,
        seed=config.seed,
        views=config.views,
        edges=config.balance_edges,
        counts=config.balance_views,
        particle_subsample=config.particle_subsample,
    )
    if resume and not overwrite and out.exists() and not partial_path(out).exists():
        # A finished file with every galaxy: reuse it read-only (no rename, no
        # lock), so parallel jobs sharing one training set do not collide.
        done = DatasetWriter.finished_galaxies(out, config.render, attrs)
        if done.issuperset(range(config.n_galaxies)):
            return out
    with DatasetWriter(
        out, config.render, resume=resume, overwrite=overwrite, attrs=attrs
    ) as writer:
        done = writer.completed_galaxies()
        todo = [i for i in range(config.n_galaxies) if i not in done]
        bar = tqdm(
            total=config.n_galaxies,
            initial=config.n_galaxies - len(todo),
            unit="galaxy",
            desc=f"simulate {config.model}",
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            results = parallel_map(work, todo, workers=workers, scheduler=scheduler)
            _write_all(writer, results, len(todo), config, model.name, bar)
        _check_skips(writer.skip_summary(), config)
    return out


def _write_all(
    writer: DatasetWriter,
    results: Iterable[GalaxyViews],
    n_todo: int,
    config: SimulationConfig,
    model_name: str,
    bar: tqdm,
) -> None:
    """Append each galaxy as it arrives; stop once the skip limit cannot hold."""
    skips = writer.skip_summary()
    n_skipped, n_tried, n_views = skips.n_views_skipped, skips.n_views_attempted, 0
    most = max(config.balance_views) if config.views == "balanced" else config.views
    for n_done, result in enumerate(results):
        info = result.info
        writer.add_galaxy(
            result.views,
            galaxy_id=result.index,
            f_ex=info["f_ex"],
            log_mstar=info["log_mstar"],
            half_mass_radius=info["half_mass_radius"],
            model=model_name,
            assembly={k: info[k] for k in OPTIONAL_LABELS if k in info},
            skipped_views=result.skipped,
        )
        n_views += len(result.views)
        n_skipped += len(result.skipped)
        n_tried += len(result.views) + len(result.skipped)
        bar.update(1)
        bar.set_postfix(views=n_views, skipped=n_skipped, refresh=False)
        # Stop as soon as the limit cannot be met even if every remaining
        # galaxy keeps every view.
        left = n_todo - 1 - n_done
        if n_skipped > config.max_skipped_fraction * (n_tried + left * most):
            _check_skips(writer.skip_summary(), config, early=True)


def _check_skips(
    summary: SkipSummary, config: SimulationConfig, early: bool = False
) -> None:
    """Refuse a run that lost more than ``max_skipped_fraction`` of its views."""
    limit = config.max_skipped_fraction
    if summary.n_views_skipped <= limit * summary.n_views_attempted:
        return
    render = config.render
    keys = ("redshift", "size_matched", "coverage_re", "snr_at_re", "min_snr")
    observe = render.observe.to_dict()
    settings = ", ".join(f"{k} = {observe[k]!r}" for k in keys if k in observe)
    raise SimulationError(
        f"{summary.describe()}{' so far' if early else ''}: more than "
        f"max_skipped_fraction = {limit} of the views. Training on the rest "
        "would under-represent small and faint galaxies. The observation causes "
        f"it ([observe] {settings}; [render] fov_re = {render.fov_re}, "
        f"min_pixels = {render.min_pixels}): set [observe] size_matched = true "
        "or raise its redshift floor, raise 'snr_at_re' or lower 'min_snr', or "
        "lower 'fov_re' / 'min_pixels'; to accept the loss, raise [simulate] "
        "max_skipped_fraction and run again with --resume"
    )


def _check_int(key: str, value: Any, low: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise SimulationError(f"'{key}' is {value!r}, expected an integer >= {low}")
