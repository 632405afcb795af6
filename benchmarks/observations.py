"""What observing costs: the f_ex posterior on MaNGA-like maps (issue #16).

Trains one scalar posterior per observation setting ("cell") on mocks observed
that way, and tests it on the held-out test split of the same setting; then
applies the idealised posterior (same grid, no ``[observe]``) to the observed
test maps, the mismatch a user commits by feeding IFU maps to a posterior
trained on idealised ones. The posterior refuses that on purpose
(``RenderConfigMismatch``); the study bypasses the check by calling the
calibration on the dataset directly.

Every cell simulates the same galaxies and views (same ``[simulate]`` seed), so
the test galaxies are the same in every cell. Per (posterior, test set) it
reports: f_ex bias, scatter and RMSE of the posterior median (n = views); the
share of views whose 68% / 95% HDI holds the truth; the galaxy-aware calibration
verdict, its max coverage error and tolerance (n = galaxies); the share of
views the misspecification flag marks.

Cells (``--cells``, default all; observe overrides on top of CONFIG's
``[observe]``, render overrides on top of its ``[render]``):

* ``idealised`` -- no observation stage (the baseline);
* ``manga`` -- CONFIG as it is (MaNGA defaults);
* ``psf_only`` / ``noise_only`` -- one effect at a time;
* ``psf_4`` -- a 4 arcsec FWHM PSF; ``snr_8`` / ``snr_5`` -- S/N 8 / 5 at r_e;
* ``cov_2.5_fov3`` -- Secondary coverage (2.5 r_e) on the ``manga`` grid (3 r_e
  across): a larger bundle, so the whole grid is covered;
* ``cov_1.5`` / ``cov_2.5`` -- Primary vs Secondary coverage, on a grid 5 r_e
  across so the difference is visible (no idealised counterpart);
* ``manga_matched``, ``cov_1.5_matched``, ``cov_2.5_matched`` -- the same with
  MaNGA's size-matched redshifts (``size_matched``, z in 0.01-0.15).

Observed views with too few valid pixels are skipped and counted (column
``skipped``; :mod:`sbi_exsitu.data.skips`); a cell that skips more than
``--max-skipped-fraction`` of its views fails and is recorded as failed.

Every step resumes (datasets, trained runs, finished test JSONs are reused).

Usage::

    python benchmarks/observations.py configs/manga-like.toml \
        [--out runs/observations] [--n-galaxies 800] [--workers 2]
        [--cells manga psf_4]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from sbi_exsitu.config.experiment import ExperimentConfig  # noqa: E402
from sbi_exsitu.errors import SimulationError  # noqa: E402

# name -> (observe overrides, or None for idealised maps; render overrides)
CELLS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "idealised": (None, {}),
    "manga": ({}, {}),
    "psf_only": ({"snr_at_re": False, "target_snr": False}, {}),
    "noise_only": ({"psf_fwhm_arcsec": False}, {}),
    "psf_4": ({"psf_fwhm_arcsec": 4.0}, {}),
    "snr_8": ({"snr_at_re": 8.0}, {}),
    "snr_5": ({"snr_at_re": 5.0}, {}),
    "cov_2.5_fov3": ({"coverage_re": 2.5}, {}),
    "cov_1.5": ({"coverage_re": 1.5}, {"fov_re": 5.0}),
    "cov_2.5": ({"coverage_re": 2.5}, {"fov_re": 5.0}),
    # MaNGA's size-matched redshifts (Wake et al. 2017) over its full range.
    "manga_matched": ({"size_matched": True, "redshift": [0.01, 0.15]}, {}),
    "cov_1.5_matched": (
        {"coverage_re": 1.5, "size_matched": True, "redshift": [0.01, 0.15]},
        {"fov_re": 5.0},
    ),
    "cov_2.5_matched": (
        {"coverage_re": 2.5, "size_matched": True, "redshift": [0.01, 0.15]},
        {"fov_re": 5.0},
    ),
}


def _say(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def cell_config(
    base: ExperimentConfig,
    name: str,
    out: Path,
    n_galaxies: int,
    max_skipped_fraction: float = 0.2,
) -> ExperimentConfig:
    """The experiment of one cell: its own data file and run directory."""
    observe, render = CELLS[name]
    simulate = {"n_galaxies": n_galaxies}
    if observe is not None:
        simulate["max_skipped_fraction"] = max_skipped_fraction
    return base.replace(
        run=dataclasses.replace(base.run, name=name, out_dir=str(out / "runs")),
        data=dataclasses.replace(base.data, train=str(out / "data" / f"{name}.h5")),
        simulate=base.simulate | simulate,
        render=base.render | render,
        observe={} if observe is None else base.observe | observe,
    )


def train_cell(cfg: ExperimentConfig, workers: int = 1) -> Any:
    """Simulate (resuming) and fit (or load the finished run)."""
    from sbi_exsitu.data.simulate import simulate
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.fit import fit

    t0 = time.perf_counter()
    simulate(
        cfg.simulation_config(),
        cfg.train_path,
        workers=workers,
        resume=True,
        progress=False,
    )
    t1 = time.perf_counter()
    if RunDirectory(cfg.run_dir).is_finished:
        return load_posterior(cfg.run_dir), {}
    post = fit(cfg, progress=False, evaluate=False).posterior
    return post, {"simulate_s": t1 - t0, "fit_s": time.perf_counter() - t1}


def evaluate_cell(post: Any, data: Path, split_seed: int, seed: int, out: Path) -> dict:
    """Accuracy, interval coverage, calibration and flag rate on a test split."""
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.evaluation.accuracy import point_metrics
    from sbi_exsitu.evaluation.calibration import calibrate_dataset

    if out.is_file():
        return json.loads(out.read_text())
    with MapDataset(data) as ds:
        idx = ds.splits(seed=split_seed)["test"]
        truth = ds.labels["f_ex"][idx]
        # calibrate_dataset reads arrays: no render-config check (on purpose).
        report = calibrate_dataset(
            post, ds, idx, num_samples=500, seed=seed, progress=False, members=False
        )
        maps = ds.maps(idx)
    summary = post.summarize(
        maps, 500, seed=seed, misspecification=post.misspecification_detector()
    )
    d = post.param_names.index("f_ex")
    lo68, hi68 = summary.hdi68[:, d, 0], summary.hdi68[:, d, 1]
    lo95, hi95 = summary.hdi95[:, d, 0], summary.hdi95[:, d, 1]
    res = {
        "n_views": int(len(idx)),
        "n_galaxies": report.n_galaxies,
        **{
            k: v
            for k, v in point_metrics(summary.median[:, d], truth).items()
            if k in ("bias", "scatter", "rmse")
        },
        "in_hdi68": float(np.mean((truth >= lo68) & (truth <= hi68))),
        "in_hdi95": float(np.mean((truth >= lo95) & (truth <= hi95))),
        "posterior_std": float(np.median(summary.std[:, d])),
        "verdict": report.verdict,
        "max_coverage_error": report.max_abs_coverage_error,
        "coverage_tolerance": report.coverage_tolerance,
        "flag_rate": float(summary.misspecification.flag.mean()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    return res


def skip_counts(data: Path, split_seed: int) -> dict[str, Any]:
    """Views skipped as unobservable and galaxies dropped, overall and in test."""
    from sbi_exsitu.data.dataset import MapDataset

    with MapDataset(data) as ds:
        s = ds.skip_summary()
        test = set(ds.labels["galaxy_id"][ds.splits(seed=split_seed)["test"]])
    return {
        "views_skipped": s.n_views_skipped,
        "views_attempted": s.n_views_attempted,
        "galaxies_dropped": len(s.dropped_galaxies),
        "test_galaxies": len(test),
        "skipped": f"{s.n_views_skipped}/{s.n_views_attempted} views, "
        f"{len(s.dropped_galaxies)} gal.",
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = (
        "trained_on", "tested_on", "bias", "scatter", "in_hdi68", "in_hdi95",
        "posterior_std", "verdict", "max_coverage_error", "flag_rate", "skipped",
    )  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['trained_on']} | {r['tested_on']} | failed: "
                         f"{r['failed'][:120]} |")  # fmt: skip
            continue
        cells = [
            f"{r[c]:+.3f}" if c == "bias" else
            f"{r[c]:.3f}" if isinstance(r[c], float) else str(r.get(c, "-"))
            for c in cols
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/observations"))
    ap.add_argument("--n-galaxies", type=int, default=800)
    ap.add_argument("--workers", type=int, default=2, help="simulation processes")
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument(
        "--max-skipped-fraction",
        type=float,
        default=0.2,
        help="observed cells fail when more views than this are unobservable",
    )
    args = ap.parse_args(argv)
    base = ExperimentConfig.from_toml(args.config)
    if not base.observe:
        raise SystemExit(f"{args.config}: the study needs an [observe] table")
    cells = list(dict.fromkeys(["idealised", *args.cells]))
    rows, timings = [], {}
    posts = {}
    for name in cells:
        cfg = cell_config(
            base, name, args.out, args.n_galaxies, args.max_skipped_fraction
        )
        _say(f"[{name}] simulate + fit -> {cfg.run_dir}")
        try:
            posts[name], timings[name] = train_cell(cfg, args.workers)
        except SimulationError as err:  # e.g. a galaxy with no observable pixel
            _say(f"[{name}] FAILED: {err}")
            rows.append({"trained_on": name, "tested_on": name, "failed": str(err)})
            continue
        res = evaluate_cell(
            posts[name], cfg.train_path, cfg.data.split_seed, cfg.run.seed,
            args.out / "tests" / f"{name}__{name}.json",
        )  # fmt: skip
        res |= skip_counts(cfg.train_path, cfg.data.split_seed)
        rows.append({"trained_on": name, "tested_on": name} | res)
        _say(f"[{name}] {res}")
        if name != "idealised" and not CELLS[name][1]:
            # Same grid as the idealised run: the mismatch a user would commit.
            res = evaluate_cell(
                posts["idealised"], cfg.train_path, cfg.data.split_seed,
                cfg.run.seed, args.out / "tests" / f"idealised__{name}.json",
            )  # fmt: skip
            res |= skip_counts(cfg.train_path, cfg.data.split_seed)
            rows.append({"trained_on": "idealised", "tested_on": name} | res)
            _say(f"[idealised -> {name}] {res}")
    table = markdown(rows)
    (args.out / "table.md").write_text(table + "\n")
    print(table, file=sys.stderr)
    out = {"config": str(args.config), "n_galaxies": args.n_galaxies, "rows": rows,
           "timings_s": timings}  # fmt: skip
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
