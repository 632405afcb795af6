"""``sbi-exsitu crosstest``: the cross-simulator study (001 sec. 4.2-5).

Train on one formation model, test on every model, over a grid of channel subsets
and circular apertures, and measure how much accuracy and calibration survive the
change of simulator -- and whether a per-galaxy misspecification flag notices it.

The grid is declared in the ``[crosstest]`` table of an experiment file; the other
tables say how to simulate, what to fit and how to train (as for ``quickstart``)::

    [run]        name, out_dir, seed, threads      -> output in <out_dir>/<name>/
    [data]       split_seed                        (train/validation/test by galaxy)
    [simulate]   n_galaxies, seed, views           (the model is set per grid row)
    [model]      overrides applied to every formation model (e.g. max_particles)
    [render]     resolution, ...                   (channels/aperture set per cell)
    [posterior], [training]                        every cell's posterior
    [crosstest]
    models = ["tng-like", "eagle-like"]   # train on each, test on each
    union = true                          # also train on their union
    apertures = [4.0, 2.0, 1.0]           # aperture DIAMETERS in r_e (false = none)
    num_samples = 500                     # posterior draws per test map
    alpha = 0.05                          # misspecification flag: p < alpha
    highlight = [["all", 4.0], ["mass_kinematics", 1.0]]   # figs. 10-11 rows
    [crosstest.channels]                  # name = channel subset
    all = ["mass", "velocity", "dispersion", "age", "metallicity"]
    mass_kinematics = ["mass", "velocity", "dispersion"]
    age_metallicity = ["age", "metallicity"]

Data, exactly and cheaply. Each model is simulated once per aperture with all five
channels (``simulate`` with the same seed, so every aperture shows the same galaxies
and views). A channel subset is then the same maps with the other channels
dropped: :func:`~sbi_exsitu.render.preprocess` computes, smooths and standardises
each channel on its own over a mask that does not depend on the channels, so the
slice equals what ``RenderConfig(channels=subset, aperture_re=a)`` renders (the
stored render config says exactly that; ``tests/test_crosstest.py`` checks it).
An aperture is *not* sliced from a wider map: the renderer standardises and
smooths over the pixels inside the aperture, so each aperture is re-rendered.

The union training set holds the training and validation galaxies of every model
(the test galaxies of every model are left out, so the union posterior is tested
on the same held-out galaxies as the single-model posteriors, never on its own
training maps); the galaxy ids of model ``k`` are offset by ``k * 10**6`` so they
cannot collide. ``fit`` splits it 75/10/15 by galaxy as usual, so it trains on
about 0.85 x 0.75 = 64% of each model's galaxies (1.7x a single-model cell).

Layout of ``<out_dir>/<name>/``::

    data/<model>__<channels>__ap<a>.h5     datasets (base = channels "all")
    data/union__<channels>__ap<a>.h5
    cells/<train>__<channels>__ap<a>/      a ``fit`` run dir (model.json = trained)
        misspecification/                  the detector (.npy + JSON)
        tests/<test model>.json|.csv       metrics (JSON = finished) and per-map rows
    table.csv, table.md                    one row per (train, test, channels, aperture)
    misspecification.csv                   flag rates and ROC AUC per cell
    summary.md, crosstest.json, figures/

Every step resumes: datasets, trained cells and finished tests are reused.

References:
    | ERGO-ML: towards a robust machine learning model for inferring the fraction
      of accreted stars in galaxies from integral-field spectroscopic maps
      (Angeloudi et al., 2023, MNRAS), sec. 4.2, 5, 6, figs. 7-11 and 14

Example:
    >>> sec = CrosstestSection.from_dict({"apertures": [2.0, False]})
    >>> [cell_name("tng-like", "all", a) for a in sec.apertures]
    ['tng-like__all__ap2', 'tng-like__all__apfull']
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import atomic_write_json, atomic_write_text
from sbi_exsitu.config import ConfigError, check_keys
from sbi_exsitu.dataset import DatasetWriter, MapDataset
from sbi_exsitu.experiment import ExperimentConfig
from sbi_exsitu.render import CHANNELS, RenderedViews

__all__ = [
    "CrosstestSection",
    "CrosstestResult",
    "crosstest",
    "cell_name",
    "derive_channels",
    "union_dataset",
    "UNION",
    "UNION_ID_OFFSET",
]

#: Name of the union training set in tables and paths.
UNION = "union"
#: Galaxy-id offset per model in the union dataset (model k: ids + k * offset).
UNION_ID_OFFSET = 1_000_000

_DEFAULT_CHANNELS = {
    "all": list(CHANNELS),
    "mass_kinematics": ["mass", "velocity", "dispersion"],
    "age_metallicity": ["age", "metallicity"],
}


@dataclass(frozen=True)
class CrosstestSection:
    """The ``[crosstest]`` table (see the module docstring).

    Attributes:
        models: formation models; each is a training set and a test set.
        union: also train on the union of the models' training sets.
        channels: name -> channel subset.
        apertures: aperture diameters in half-mass radii (``None`` = no aperture).
        num_samples: posterior draws per test observation.
        alpha: misspecification flag threshold on the conformal p-value.
        method: misspecification score, ``"knn"`` or ``"mmd"`` (the other one's
            ROC AUC is reported alongside).
        max_reference: training maps in the detector's reference set.
        n_shuffle: permutations of sbi's set-level MMD test.
        highlight: ``(channels, aperture)`` pairs shown in the f_ex-M* and
            coverage figures (default: the first and second channel sets at the
            first and last aperture, i.e. all@4 and mass+kinematics@1).
    """

    models: tuple[str, ...] = ("tng-like", "eagle-like")
    union: bool = True
    channels: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {k: tuple(v) for k, v in _DEFAULT_CHANNELS.items()}
    )
    apertures: tuple[float | None, ...] = (4.0, 2.0, 1.0)
    num_samples: int = 500
    alpha: float = 0.05
    method: str = "knn"
    max_reference: int = 2000
    n_shuffle: int = 1000
    highlight: tuple[tuple[str, float | None], ...] = ()

    @classmethod
    def from_dict(
        cls, doc: dict[str, Any] | None, where: str = "[crosstest]"
    ) -> CrosstestSection:
        """Validate a parsed ``[crosstest]`` table.

        Raises:
            ConfigError: unknown key (with the closest known one) or bad value.
        """
        doc = dict(doc or {})
        check_keys(doc, [f.name for f in dataclasses.fields(cls)], where)
        kw: dict[str, Any] = {}
        if "models" in doc:
            kw["models"] = tuple(doc["models"])
        if "channels" in doc:
            kw["channels"] = {str(k): tuple(v) for k, v in doc["channels"].items()}
        if "apertures" in doc:
            kw["apertures"] = tuple(
                None if a is False or a is None else float(a) for a in doc["apertures"]
            )
        if "highlight" in doc:
            kw["highlight"] = tuple(
                (str(c), None if a is False or a is None else float(a))
                for c, a in doc["highlight"]
            )
        for key in (
            "union",
            "num_samples",
            "alpha",
            "method",
            "max_reference",
            "n_shuffle",
        ):
            if key in doc:
                kw[key] = doc[key]
        try:
            return cls(**kw)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None

    def __post_init__(self) -> None:
        from sbi_exsitu.mock import available_models

        known = available_models()
        bad = [m for m in self.models if m not in known]
        if bad or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(
                f"'models' is {list(self.models)}, expected distinct names from {known}"
            )
        if UNION in self.models:
            raise ValueError(f"'{UNION}' is reserved for the union training set")
        if not self.channels:
            raise ValueError("'channels' must name at least one channel subset")
        for name, chans in self.channels.items():
            if (
                not chans
                or any(c not in CHANNELS for c in chans)
                or len(set(chans)) != len(chans)
            ):
                raise ValueError(
                    f"channels '{name}' is {list(chans)}, expected a "
                    f"non-empty subset of {list(CHANNELS)}"
                )
            if "__" in name or "/" in name:
                raise ValueError(
                    f"channel-set name {name!r} may not contain '__' or '/'"
                )
        if not self.apertures or len(set(self.apertures)) != len(self.apertures):
            raise ValueError(
                f"'apertures' is {list(self.apertures)}, expected distinct values"
            )
        if self.num_samples < 10 or not 0 < self.alpha < 1:
            raise ValueError("need num_samples >= 10 and 0 < alpha < 1")
        if self.method not in ("mmd", "knn"):
            raise ValueError(f"'method' is {self.method!r}, expected 'mmd' or 'knn'")
        for c, a in self.highlight:
            if c not in self.channels or a not in self.apertures:
                raise ValueError(f"highlight ({c!r}, {a}) is not a grid cell")

    @property
    def train_sets(self) -> list[str]:
        """The formation models, then ``"union"`` if enabled."""
        return [*self.models, *([UNION] if self.union and len(self.models) > 1 else [])]

    def highlighted(self) -> list[tuple[str, float | None]]:
        """The configured highlight cells, or the paper's two (all@4, mk@1)."""
        if self.highlight:
            return list(self.highlight)
        names = list(self.channels)
        first = (names[0], self.apertures[0])
        second = (names[min(1, len(names) - 1)], self.apertures[-1])
        return [first] if first == second else [first, second]


@dataclass
class CrosstestResult:
    """What :func:`crosstest` produced.

    Attributes:
        out_dir: the study directory.
        rows: one dict per (train, test, channels, aperture) (the table).
        misspecification: one dict per cell: false-alarm and detection rates, AUC.
        summary: the generated summary (Markdown).
        files: table, summary and figure paths.
        trained, reused: cell names trained in this call / found finished.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    misspecification: list[dict[str, Any]]
    summary: str
    files: list[Path] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def _ap(aperture: float | None) -> str:
    return "full" if aperture is None else f"{aperture:g}"


def cell_name(train: str, channels: str, aperture: float | None) -> str:
    """Directory name of a grid cell (also used for its datasets)."""
    return f"{train}__{channels}__ap{_ap(aperture)}"


# -- data ---------------------------------------------------------------------------
def _simulation(
    cfg: ExperimentConfig, model: str, model_index: int, aperture: float | None
) -> Any:
    from sbi_exsitu.simulate import SimulationConfig

    sim = dict(cfg.simulate) | {"model": model}
    # Independent galaxies per model (as TNG and EAGLE are), the same galaxies
    # for every aperture of one model.
    sim["seed"] = int(sim.get("seed", 0)) + 1000 * model_index
    render = dict(cfg.render) | {
        "channels": list(CHANNELS),
        "aperture_re": aperture if aperture is not None else False,
    }
    return SimulationConfig.from_dict(
        {"simulate": sim, "model": dict(cfg.model), "render": render},
        where=f"{cfg.source} (crosstest {model}, aperture {_ap(aperture)})",
    )


def derive_channels(base: MapDataset, channels: tuple[str, ...], out: Path) -> Path:
    """Write the ``channels`` slice of an all-channel dataset (exact, see module doc).

    The stored render config is the base config with ``channels`` replaced, i.e.
    what rendering with those channels would store. Reuses a finished ``out``.
    """
    if out.exists():
        return out
    cfg = base.render_config
    missing = [c for c in channels if c not in cfg.channels]
    if missing:
        raise ValueError(f"{base.path} has no channel(s) {missing}")
    pick = [cfg.channels.index(c) for c in channels]
    new_cfg = dataclasses.replace(cfg, channels=tuple(channels))
    attrs = base.attrs
    attrs = {
        k: v
        for k, v in attrs.items()
        if k not in ("schema_version", "render_config", "n_complete")
    }
    attrs["derived_from"] = {"path": str(base.path), "channels": list(channels)}
    _copy_galaxies(
        base, np.arange(len(base)), out, new_cfg, attrs, transform=lambda m: m[:, pick]
    )
    return out


def _copy_galaxies(
    src: MapDataset,
    indices: np.ndarray,
    out: Path,
    render_config: Any,
    attrs: dict[str, Any],
    *,
    transform: Callable | None = None,
    id_offset: int = 0,
    writer: DatasetWriter | None = None,
) -> None:
    gid = src.labels["galaxy_id"][indices]
    # Samples of one galaxy are contiguous (written whole): cut at id changes.
    cuts = np.flatnonzero(np.diff(gid)) + 1
    own = writer is None
    # Not `writer or ...`: a DatasetWriter with no samples yet has len 0 (falsy).
    w = (
        writer
        if writer is not None
        else DatasetWriter(out, render_config, overwrite=True, attrs=attrs)
    )
    try:
        for group in np.split(indices, cuts):
            maps = src.maps(group)
            if transform is not None:
                maps = transform(maps)
            lab = {k: v[group] for k, v in src.labels.items()}
            views = RenderedViews(
                maps=np.ascontiguousarray(maps),
                exsitu=src.exsitu(group),
                mask=src.mask(group),
                directions=np.zeros((len(group), 3)),
            )
            w.add_galaxy(
                views,
                galaxy_id=int(lab["galaxy_id"][0]) + id_offset,
                f_ex=float(lab["f_ex"][0]),
                log_mstar=float(lab["log_mstar"][0]),
                half_mass_radius=float(lab["half_mass_radius"][0]),
                model=str(lab["model"][0]),
                view_ids=lab["view_id"],
            )
    except BaseException:
        if own:
            w.close(finalize=False)
        raise
    if own:
        w.close()


def union_dataset(sources: list[MapDataset], split_seed: int, out: Path) -> Path:
    """Training + validation galaxies of every source, ids offset per source.

    The sources' test galaxies (``split_by_galaxy`` with ``split_seed``) are left
    out so the union posterior can be tested on them. Reuses a finished ``out``.
    """
    if out.exists():
        return out
    cfg = sources[0].render_config
    for s in sources[1:]:
        s.check_config(cfg)
    attrs = {
        "source": "crosstest-union",
        "members": [str(s.path) for s in sources],
        "id_offset": UNION_ID_OFFSET,
        "split_seed": split_seed,
    }
    with DatasetWriter(out, cfg, overwrite=True, attrs=attrs) as writer:
        for k, src in enumerate(sources):
            sp = src.splits(seed=split_seed)
            keep = np.sort(np.r_[sp["train"], sp["validation"]])
            _copy_galaxies(
                src, keep, out, cfg, attrs, writer=writer, id_offset=k * UNION_ID_OFFSET
            )
    return out


def _prepare_data(
    cfg: ExperimentConfig,
    sec: CrosstestSection,
    data_dir: Path,
    progress: bool,
    say: Callable,
) -> dict[tuple[str, str, Any], Path]:
    from sbi_exsitu.simulate import simulate

    paths: dict[tuple[str, str, Any], Path] = {}
    for a in sec.apertures:
        for k, model in enumerate(sec.models):
            base = data_dir / f"{model}__all5__ap{_ap(a)}.h5"
            if not base.exists():
                say(f"simulating {model}, aperture {_ap(a)} -> {base}")
            simulate(
                _simulation(cfg, model, k, a),
                base,
                resume=base.exists() or base.with_name(base.name + ".partial").exists(),
                progress=progress,
            )
            with MapDataset(base) as ds:
                for cname, chans in sec.channels.items():
                    out = data_dir / f"{cell_name(model, cname, a)}.h5"
                    if tuple(chans) == tuple(CHANNELS):
                        out = base
                    paths[(model, cname, a)] = derive_channels(ds, tuple(chans), out)
        if UNION in sec.train_sets:
            for cname in sec.channels:
                out = data_dir / f"{cell_name(UNION, cname, a)}.h5"
                srcs = [MapDataset(paths[(m, cname, a)]) for m in sec.models]
                try:
                    paths[(UNION, cname, a)] = union_dataset(
                        srcs, cfg.data.split_seed, out
                    )
                finally:
                    for s in srcs:
                        s.close()
    return paths


# -- cells ----------------------------------------------------------------------------
def _cell_config(
    cfg: ExperimentConfig, cells_dir: Path, name: str, data: Path
) -> ExperimentConfig:
    run = dataclasses.replace(cfg.run, name=name, out_dir=str(cells_dir))
    return ExperimentConfig(
        run=run,
        data=dataclasses.replace(cfg.data, train=str(data)),
        posterior=cfg.posterior,
        training=cfg.training,
        source=cfg.source,
    )


def _train_cell(cell_cfg: ExperimentConfig, progress: bool) -> tuple[Any, bool]:
    """(posterior, trained_now): load a finished run or fit (resuming) it."""
    from sbi_exsitu.fit import RunExistsError, fit
    from sbi_exsitu.posterior import load_posterior

    run_dir = cell_cfg.run_dir
    stored = run_dir / "config.json"
    if (run_dir / "model.json").is_file() and stored.is_file():
        if json.loads(stored.read_text()) != json.loads(json.dumps(cell_cfg.to_dict())):
            raise RunExistsError(
                f"{run_dir} was trained with another configuration; delete it or "
                "change [run] name"
            )
        return load_posterior(run_dir), False
    return fit(cell_cfg, progress=progress, evaluate=False).posterior, True


def _test_cell(
    posterior: Any,
    detector: Any,
    data: Path,
    split_seed: int,
    sec: CrosstestSection,
    seed: int,
    out: Path,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Metrics, calibration and misspecification flags on one model's test split."""
    from sbi_exsitu.calibration import CalibrationReport
    from sbi_exsitu.metrics import evaluate
    from sbi_exsitu.misspecification import embed
    from sbi_exsitu.predict import write_table

    json_path = out.with_suffix(".json")
    if json_path.is_file():
        return json.loads(json_path.read_text())
    with MapDataset(data) as ds:
        idx = ds.splits(seed=split_seed)["test"]
        maps = ds.maps(idx)
        labels = {k: v[idx] for k, v in ds.labels.items()}
    names = posterior.param_names
    truth = np.stack([labels[n] for n in names], axis=1)
    samples = posterior.sample(maps, sec.num_samples, seed=seed)
    lp_s = posterior.log_prob(samples, maps)
    lp_t = posterior.log_prob(truth, maps)
    summary = posterior.summarize(maps, samples=samples)
    report = CalibrationReport.from_arrays(
        samples, truth, lp_s, lp_t, param_names=names, seed=seed
    )
    d = names.index("f_ex")
    metrics = evaluate(
        summary.median[:, d],
        truth[:, d],
        labels["log_mstar"],
        log_prob=lp_t if len(names) == 1 else None,
    )
    emb = embed(posterior, maps)
    flags = detector.score_embeddings(emb)
    # The other score on the same embeddings, for the ROC comparison of methods.
    other = "knn" if detector.method == "mmd" else "mmd"
    other_score = detector.with_method(other).score_embeddings(emb).score
    set_test = detector.set_test(emb, n_shuffle=sec.n_shuffle, seed=seed)
    cols = {
        "index": idx,
        "galaxy_id": labels["galaxy_id"],
        "view_id": labels["view_id"],
        "log_mstar": labels["log_mstar"],
        "f_ex_true": labels["f_ex"],
    }
    cols |= summary.to_columns()
    cols |= {"log_prob_truth": lp_t, "credibility": report.credibility}
    cols |= flags.to_columns() | {f"misspec_score_{other}": other_score}
    write_table(cols, out.with_suffix(".csv"))
    cal = report.to_dict()
    result = meta | {
        "n": len(idx),
        "metrics": metrics,
        "calibration": {
            k: cal[k]
            for k in (
                "verdict",
                "max_abs_coverage_error",
                "coverage_area",
                "sbc_min_pvalue",
                "coverage_tolerance",
                "coverage_curve",
                "tarp_atc",
            )
        },
        "misspecification": {
            "alpha": detector.alpha,
            "flag_rate": float(flags.flag.mean()),
            "median_pvalue": float(np.median(flags.p_value)),
            "set_test": set_test,
        },
    }
    atomic_write_json(json_path, result)  # written last: its presence = finished
    return result


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


# -- aggregation ---------------------------------------------------------------------
def _relation(train: str, test: str) -> str:
    return "union" if train == UNION else ("fixed" if train == test else "cross")


_TABLE_COLUMNS = (
    "train",
    "test",
    "relation",
    "channels",
    "aperture",
    "n",
    "bias",
    "scatter",
    "rmse",
    "nlpd",
    "coverage_error",
    "coverage_area",
    "verdict",
    "flag_rate",
    "auc",
    "set_mmd_pvalue",
)


def _row(res: dict[str, Any], auc: float) -> dict[str, Any]:
    o = res["metrics"]["overall"]
    cal, ms = res["calibration"], res["misspecification"]
    return {
        "train": res["train"],
        "test": res["test"],
        "relation": _relation(res["train"], res["test"]),
        "channels": res["channels"],
        "aperture": _ap(res["aperture"]),
        "n": res["n"],
        "bias": o["bias"],
        "scatter": o["scatter"],
        "rmse": o["rmse"],
        "nlpd": o.get("nlpd"),
        "coverage_error": cal["max_abs_coverage_error"],
        "coverage_area": cal["coverage_area"],
        "verdict": cal["verdict"],
        "flag_rate": ms["flag_rate"],
        "auc": auc,
        "set_mmd_pvalue": ms["set_test"]["p_value"],
    }


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _markdown(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(
    rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path
) -> Path:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                ""
                if r.get(c) is None
                else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                for c in columns
            ]
        )
    atomic_write_text(path, buf.getvalue())
    return path


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def summarize_grid(
    rows: list[dict[str, Any]], misspec: list[dict[str, Any]], sec: CrosstestSection
) -> str:
    """The generated Markdown summary: best transfer, the paper's test, the flag."""
    configs = [(c, _ap(a)) for a in sec.apertures for c in sec.channels]
    per: dict[tuple[str, str], dict[str, float]] = {}
    for c, a in configs:
        sel = [r for r in rows if r["channels"] == c and r["aperture"] == a]
        per[(c, a)] = {
            rel: _mean([r["rmse"] for r in sel if r["relation"] == rel])
            for rel in ("fixed", "cross", "union")
        } | {
            "cross_cov": _mean(
                [r["coverage_error"] for r in sel if r["relation"] == "cross"]
            ),
            "fixed_cov": _mean(
                [r["coverage_error"] for r in sel if r["relation"] == "fixed"]
            ),
        }
    lines = ["# Cross-simulator study: summary (generated)", ""]
    ranked = sorted(
        (k for k in per if np.isfinite(per[k]["cross"])), key=lambda k: per[k]["cross"]
    )
    if ranked:
        best, worst = ranked[0], ranked[-1]
        b, w = per[best], per[worst]
        lines += [
            f"- **Best transfer**: {best[0]} within {best[1]} r_e — cross-model "
            f"RMSE {b['cross']:.3f} (in-model {b['fixed']:.3f}; gap "
            f"{b['cross'] - b['fixed']:+.3f}), max coverage error across models "
            f"{b['cross_cov']:.3f}.",
            f"- **Worst transfer**: {worst[0]} within {worst[1]} r_e — cross RMSE "
            f"{w['cross']:.3f} (in-model {w['fixed']:.3f}; gap "
            f"{w['cross'] - w['fixed']:+.3f}), coverage error {w['cross_cov']:.3f}.",
            f"- The best configuration's cross-model RMSE is "
            f"{w['cross'] - b['cross']:.3f} lower ({w['cross'] / b['cross']:.2f}x) "
            "than the worst one's.",
        ]
        gaps = sorted(ranked, key=lambda k: per[k]["cross"] - per[k]["fixed"])
        lo, hi = gaps[0], gaps[-1]
        lines.append(
            f"- Transfer loss (cross − in-model RMSE) is smallest for {lo[0]} within "
            f"{lo[1]} r_e ({per[lo]['cross'] - per[lo]['fixed']:+.3f}) and largest "
            f"for {hi[0]} within {hi[1]} r_e "
            f"({per[hi]['cross'] - per[hi]['fixed']:+.3f})."
        )
        fixed_best = min(per, key=lambda k: per[k]["fixed"])
        lines.append(
            f"- Best in-model accuracy: {fixed_best[0]} within "
            f"{fixed_best[1]} r_e (RMSE {per[fixed_best]['fixed']:.3f})."
        )
    hl = sec.highlighted()
    if len(hl) >= 2:
        (c0, a0), (c1, a1) = hl[0], hl[1]
        p0, p1 = per[(c0, _ap(a0))], per[(c1, _ap(a1))]
        holds = p1["cross"] < p0["cross"] and p1["cross_cov"] < p0["cross_cov"]
        lines += [
            "",
            "## The paper's central finding",
            "",
            f"{c1} within {_ap(a1)} r_e vs {c0} within {_ap(a0)} r_e: cross "
            f"RMSE {p1['cross']:.3f} vs {p0['cross']:.3f}, cross coverage "
            f"error {p1['cross_cov']:.3f} vs {p0['cross_cov']:.3f}, in-model "
            f"RMSE {p1['fixed']:.3f} vs {p0['fixed']:.3f} (transfer loss "
            f"{p1['cross'] - p1['fixed']:+.3f} vs {p0['cross'] - p0['fixed']:+.3f}). "
            + (
                "**Holds** on these mocks: the restricted configuration "
                "transfers better in both accuracy and calibration."
                if holds
                else "**Does not hold** here (at least one of "
                "cross-model accuracy and calibration is not better)."
            ),
        ]
    if misspec:
        fa = _mean([m["false_alarm_rate"] for m in misspec])
        det = _mean([m["detection_rate"] for m in misspec])
        auc = _mean([m["auc"] for m in misspec])
        top = max(
            (m for m in misspec if m.get("auc") is not None and np.isfinite(m["auc"])),
            key=lambda m: m["auc"],
            default=None,
        )
        lines += [
            "",
            "## Misspecification flag",
            "",
            f"Averaged over single-model cells: false-alarm rate {fa:.3f} "
            f"(alpha = {sec.alpha}), detection rate on the other model's test "
            f"set {det:.3f}, ROC AUC {auc:.3f}"
            + "".join(
                f" ({key[4:]} score: AUC {_mean([m[key] for m in misspec]):.3f})"
                for key in misspec[0]
                if key.startswith("auc_")
            )
            + ".",
        ]
        if top is not None:
            lines.append(
                f"Most detectable shift: train {top['train']}, "
                f"{top['channels']} within {top['aperture']} r_e "
                f"(AUC {top['auc']:.3f}, detection "
                f"{top['detection_rate']:.3f})."
            )
    return "\n".join(lines) + "\n"


# -- the job ---------------------------------------------------------------------------
def crosstest(
    config_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    plots: bool = True,
) -> CrosstestResult:
    """Run (or resume) the grid of an experiment file with a ``[crosstest]`` table.

    Args:
        config_path: the experiment TOML file.
        out_dir: the study directory (default ``<[run] out_dir>/<[run] name>``).
        progress: progress bars and one line per step.
        plots: write the figures.

    Returns:
        :class:`CrosstestResult`.

    Raises:
        ConfigError: a bad table or key.
        RunExistsError: a cell directory holds a run of another configuration.
    """
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.misspecification import MisspecificationDetector, roc_auc

    cfg = ExperimentConfig.from_toml(config_path)
    sec = CrosstestSection.from_dict(
        cfg.extra.get("crosstest"), f"{config_path} [crosstest]"
    )
    if "f_ex" not in cfg.posterior.targets or cfg.posterior.kind != "scalar":
        raise ConfigError(
            f"{config_path} [posterior]: crosstest needs a scalar "
            "posterior with target 'f_ex'"
        )
    root = Path(out_dir) if out_dir is not None else cfg.run_dir
    for sub in ("data", "cells", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "config.json", cfg.to_dict())
    say = print if progress else (lambda *a, **k: None)
    configure_threads(cfg.run.threads)
    t_start = time.perf_counter()
    paths = _prepare_data(cfg, sec, root / "data", progress, say)

    results: list[dict[str, Any]] = []
    trained, reused = [], []
    grid = [
        (t, c, a) for a in sec.apertures for c in sec.channels for t in sec.train_sets
    ]
    for i, (train, cname, a) in enumerate(grid):
        name = cell_name(train, cname, a)
        cell_cfg = _cell_config(cfg, root / "cells", name, paths[(train, cname, a)])
        t0 = time.perf_counter()
        posterior, now = _train_cell(cell_cfg, progress)
        (trained if now else reused).append(name)
        detector = MisspecificationDetector.for_run(
            posterior,
            run_dir=cell_cfg.run_dir,
            max_reference=sec.max_reference,
            alpha=sec.alpha,
            method=sec.method,
            seed=cfg.run.seed,
        )
        for test in sec.models:
            meta = {
                "train": train,
                "test": test,
                "channels": cname,
                "aperture": a,
                "cell": name,
            }
            results.append(
                _test_cell(
                    posterior,
                    detector,
                    paths[(test, cname, a)],
                    cfg.data.split_seed,
                    sec,
                    cfg.run.seed,
                    cell_cfg.run_dir / "tests" / test,
                    meta,
                )
            )
        say(
            f"[{i + 1}/{len(grid)}] {name}: {'trained' if now else 'reused'} "
            f"+ tested in {time.perf_counter() - t0:.0f} s"
        )

    # AUC: the cell's in-model test scores are the negatives, another model's the
    # positives (the union has no out-of-model test set).
    scores: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for res in results:
        scores[(res["cell"], res["test"])] = _read_csv(
            root / "cells" / res["cell"] / "tests" / f"{res['test']}.csv"
        )
    rows, misspec = [], []
    for res in results:
        auc = float("nan")
        rel = _relation(res["train"], res["test"])
        if rel == "cross":
            neg = scores[(res["cell"], res["train"])]["misspec_score"]
            pos = scores[(res["cell"], res["test"])]["misspec_score"]
            auc = roc_auc(neg, pos)
            other = "knn" if sec.method == "mmd" else "mmd"
            auc_other = roc_auc(
                scores[(res["cell"], res["train"])][f"misspec_score_{other}"],
                scores[(res["cell"], res["test"])][f"misspec_score_{other}"],
            )
            fixed = next(
                r
                for r in results
                if r["cell"] == res["cell"] and r["test"] == res["train"]
            )
            misspec.append(
                {
                    "train": res["train"],
                    "test": res["test"],
                    "channels": res["channels"],
                    "aperture": _ap(res["aperture"]),
                    "false_alarm_rate": fixed["misspecification"]["flag_rate"],
                    "detection_rate": res["misspecification"]["flag_rate"],
                    "auc": auc,
                    f"auc_{other}": auc_other,
                    "set_pvalue_in": fixed["misspecification"]["set_test"]["p_value"],
                    "set_pvalue_cross": res["misspecification"]["set_test"]["p_value"],
                }
            )
        rows.append(_row(res, auc))
    files = [_write_csv(rows, _TABLE_COLUMNS, root / "table.csv")]
    atomic_write_text(root / "table.md", _markdown(rows, _TABLE_COLUMNS))
    other = "knn" if sec.method == "mmd" else "mmd"
    ms_cols = (
        "train",
        "test",
        "channels",
        "aperture",
        "false_alarm_rate",
        "detection_rate",
        "auc",
        f"auc_{other}",
        "set_pvalue_in",
        "set_pvalue_cross",
    )
    files += [
        root / "table.md",
        _write_csv(misspec, ms_cols, root / "misspecification.csv"),
    ]
    summary = summarize_grid(rows, misspec, sec)
    summary += "\n## Table\n\n" + _markdown(rows, _TABLE_COLUMNS)
    if misspec:
        summary += "\n## Misspecification flag per cell\n\n" + _markdown(
            misspec, ms_cols
        )
    atomic_write_text(root / "summary.md", summary)
    files.append(root / "summary.md")
    atomic_write_json(
        root / "crosstest.json",
        {
            "config": str(config_path),
            "section": _jsonable(dataclasses.asdict(sec)),
            "rows": rows,
            "misspecification": misspec,
            "trained": trained,
            "reused": reused,
            "seconds": time.perf_counter() - t_start,
        },
    )
    files.append(root / "crosstest.json")
    if plots:
        from sbi_exsitu.crosstest_plots import plot_all

        files += plot_all(results, scores, sec, root / "figures")
    return CrosstestResult(
        out_dir=root,
        rows=rows,
        misspecification=misspec,
        summary=summary,
        files=files,
        trained=trained,
        reused=reused,
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
