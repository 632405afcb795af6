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
dropped: :func:`~sbi_exsitu.data.render.preprocess` computes, smooths and standardises
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

Modules: the ``[crosstest]`` table and cell names are in
:mod:`~sbi_exsitu.studies.crosstest.grid`, the datasets in
:mod:`~sbi_exsitu.studies.crosstest.data`, tables and the summary in
:mod:`~sbi_exsitu.studies.crosstest.tables`, figures in
:mod:`~sbi_exsitu.studies.crosstest.plots`; this module trains and tests the cells.

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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.runs import CONFIG_FILE, RunDirectory
from sbi_exsitu.schema import ConfigError
from sbi_exsitu.studies.crosstest.data import (
    derive_channels,
    prepare_data,
    union_dataset,
)
from sbi_exsitu.studies.crosstest.grid import (
    UNION,
    UNION_ID_OFFSET,
    CrosstestSection,
    cell_name,
)
from sbi_exsitu.studies.crosstest.tables import (
    grid_rows,
    read_csv,
    write_grid_tables,
)

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

logger = logging.getLogger(__name__)


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
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.training.fit import RunExistsError, fit

    run = RunDirectory(cell_cfg.run_dir)
    run_dir = run.path
    if run.is_finished and run.config_file.is_file():
        if not run.has_config(cell_cfg.to_dict()):
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
    from sbi_exsitu.evaluation.accuracy import evaluate
    from sbi_exsitu.evaluation.calibration import CalibrationReport
    from sbi_exsitu.tables import write_table

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
    summary = posterior.summarize(maps, samples=samples, misspecification=False)
    # Galaxy ids: views of one galaxy count once, as in `sbi-exsitu calibrate`.
    report = CalibrationReport.from_arrays(
        samples, truth, lp_s, lp_t, param_names=names, seed=seed,
        groups=labels["galaxy_id"],
    )  # fmt: skip
    d = names.index("f_ex")
    metrics = evaluate(
        summary.median[:, d],
        truth[:, d],
        labels["log_mstar"],
        log_prob=lp_t if len(names) == 1 else None,
    )
    emb = detector.represent(posterior, maps)
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
                "n_views",
                "n_galaxies",
                "tests",
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

    cfg, sec = _load_study(config_path)
    root = Path(out_dir) if out_dir is not None else cfg.run_dir
    for sub in ("data", "cells", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / CONFIG_FILE, cfg.to_dict())
    say = logger.info if progress else (lambda *a, **k: None)
    configure_threads(cfg.run.threads)
    t_start = time.perf_counter()
    paths = prepare_data(cfg, sec, root / "data", progress, say)
    results, trained, reused = _run_grid(cfg, sec, root, paths, progress, say)

    # AUC: the cell's in-model test scores are the negatives, another model's the
    # positives (the union has no out-of-model test set).
    scores = {
        (res["cell"], res["test"]): read_csv(
            root / "cells" / res["cell"] / "tests" / f"{res['test']}.csv"
        )
        for res in results
    }
    rows, misspec = grid_rows(results, scores, sec.method)
    files, summary = write_grid_tables(root, rows, misspec, sec)
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
        from sbi_exsitu.studies.crosstest.plots import plot_all

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


def _load_study(config_path: str | Path) -> tuple[ExperimentConfig, CrosstestSection]:
    """The experiment and its validated ``[crosstest]`` table."""
    cfg = ExperimentConfig.from_toml(config_path)
    sec = CrosstestSection.from_dict(
        cfg.extra.get("crosstest"), f"{config_path} [crosstest]"
    )
    if "f_ex" not in cfg.posterior.targets or cfg.posterior.kind != "scalar":
        raise ConfigError(
            f"{config_path} [posterior]: crosstest needs a scalar "
            "posterior with target 'f_ex'"
        )
    return cfg, sec


def _run_grid(
    cfg: ExperimentConfig,
    sec: CrosstestSection,
    root: Path,
    paths: dict[tuple[str, str, float | None], Path],
    progress: bool,
    say: Any,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Train (or reuse) every cell and test it on every model: (results, trained,
    reused)."""
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

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
    return results, trained, reused


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
