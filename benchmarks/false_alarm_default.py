"""False-alarm rate of the flag as a run computes it with ``[misspecification]
calibration_galaxies = N`` (#17), and the flag's scoring cost per map.

For each model and run seed, a run directory on the 500-galaxy training set of
``benchmarks/misspecification.py`` (its train/validation split seeded by the run
seed) gets the detector from :meth:`MisspecificationDetector.for_run` exactly as
``fit`` does: profiles + flow fitted on the training split, calibrated on N
fresh galaxies simulated like the training set from
``calibration_seed(run seed, 1 + offset)`` (a hashed 63-bit seed; the test sets
below use seeds 7001-10001, so no test galaxy is a calibration or training
galaxy). The FAR is measured per galaxy, on the first view of each of the 3,000
fresh galaxies of the ``-fresh1`` (4 views) and ``-fresh2`` (balanced views)
sets, with its binomial standard error ``sqrt(p (1 - p) / n)``; ``validation``
is the same detector calibrated on the run's validation split (as before).
Scoring cost: seconds per map of ``det.score`` (radial profiles, flow
typicality, conformal p-value, neighbour f_ex) on 2,000 maps in memory, one
thread.

Usage::

    python benchmarks/false_alarm_default.py [--out runs/bench-misspec] \
        [--calibration-galaxies 1500] [--runs 4]
    python benchmarks/false_alarm_default.py --cost-config configs/quickstart.toml

Prints one JSON line per run, then a summary per model, then as the LAST line
one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["main", "one_run"]

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    """benchmarks/misspecification.py (its datasets and helpers), by path."""
    path = ROOT / "benchmarks" / "misspecification.py"
    spec = importlib.util.spec_from_file_location("bench_misspecification", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_dir(out: Path, data: Path, name: str, seed: int, n_cal: int) -> Any:
    """A run directory (config.json, splits.json) and a stand-in posterior: the
    default detector reads the maps' profiles, not the posterior."""
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.runs import RunDirectory

    doc = {
        "run": {"name": name, "out_dir": str(out), "seed": seed, "threads": 1},
        "data": {"train": str(data), "split_seed": seed},
    }
    if n_cal:
        doc["misspecification"] = {"calibration_galaxies": n_cal}
    cfg = ExperimentConfig.from_dict(doc)
    run = RunDirectory(cfg.run_dir)
    with MapDataset(data) as ds:
        sp = ds.splits(seed=seed)
        run.prepare(cfg.to_dict(), False, dataset=ds, splits=sp, split_seed=seed)
        return run, SimpleNamespace(render_config=ds.render_config, run_dir=run.path)


def _far(flags: np.ndarray) -> dict[str, Any]:
    p, n = float(np.mean(flags)), len(flags)
    return {"far": round(p, 4), "n": n, "se": round(np.sqrt(p * (1 - p) / n), 4)}


def one_run(
    out: Path, data: Path, tests: list, model: str, seed: int, n_cal: int, alpha: float
) -> dict[str, Any]:
    """One run seed: the default-calibrated detector's FAR on the test galaxies."""
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

    bench = _bench()
    name = f"far-default-{model}-s{seed}-n{n_cal}"
    run, post = _run_dir(out / "runs", data, name, seed, n_cal)
    t0 = time.perf_counter()
    det = MisspecificationDetector.for_run(post, alpha=alpha, seed=seed)
    seconds = time.perf_counter() - t0
    with MapDataset(data) as ds:
        val = ds.splits(seed=seed)["validation"]
        z_val = det.represent(None, ds, val)
        on_val = det.calibrate(z_val, ds.labels["galaxy_id"][val])
    flags, flags_val = [], []
    for path in tests:
        with MapDataset(path) as t:
            z = det.represent(None, t, bench.H.one_view_per_galaxy(t))
        flags.append(det.score_embeddings(z).flag)
        flags_val.append(on_val.score_embeddings(z).flag)
    row = {
        "model": model,
        "run_seed": seed,
        "calibration": det.meta["calibration"],
        "default": _far(np.concatenate(flags)),
        "validation": _far(np.concatenate(flags_val)),
        "n_validation_galaxies": len(np.unique(ds.labels["galaxy_id"][val])),
        "for_run_seconds": round(seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def scoring_cost(data: Path, det: Any, n: int = 2000) -> float:
    """Seconds per map of ``det.score`` on ``n`` maps held in memory."""
    from sbi_exsitu.data.dataset import MapDataset

    with MapDataset(data) as ds:
        maps = ds.maps(np.arange(min(n, len(ds))))
    det.score(None, maps[:50])  # warm up (imports, allocations)
    t0 = time.perf_counter()
    det.score(None, maps)
    return (time.perf_counter() - t0) / len(maps)


def calibration_cost(config: Path, out: Path, n_cal: int) -> dict[str, float]:
    """Seconds ``[misspecification] calibration_galaxies = n_cal`` adds to the
    detector of a run of ``config`` (its [simulate]/[model]/[render]; a 300-galaxy
    training set stands in for the run's: the cost is the n_cal new galaxies).
    """
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.simulate import simulate
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

    cfg = ExperimentConfig.from_toml(config)
    data = out / "data" / f"cost-{config.stem}__n300.h5"
    if not data.exists():
        simulate(cfg.simulation_config({"n_galaxies": 300}), data, progress=False)
    times = {}
    for n in (0, n_cal):
        run, post = _run_dir(out / "runs", data, f"cost-{config.stem}-n{n}", 0, n)
        for f in (run.path / "misspecification").glob("*"):
            f.unlink()  # time the whole work, not a cached detector
        t0 = time.perf_counter()
        MisspecificationDetector.for_run(post)
        times[f"for_run_seconds_n{n}"] = round(time.perf_counter() - t0, 1)
    times["added_seconds"] = round(
        times[f"for_run_seconds_n{n_cal}"] - times["for_run_seconds_n0"], 1
    )
    times["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(f"{config}: {json.dumps(times)}", flush=True)
    return times


def main(argv: list[str] | None = None) -> dict:
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-misspec"))
    ap.add_argument("--galaxies", type=int, default=500)
    ap.add_argument("--models", nargs="*", default=["tng-like", "eagle-like"])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--calibration-galaxies", type=int, default=1500)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--cost-config", nargs="*", default=[], type=Path)
    args = ap.parse_args(argv)

    configure_threads(1)  # 2 cores shared by several engineers
    if args.cost_config:
        return {
            str(c): calibration_cost(c, Path(args.out), args.calibration_galaxies)
            for c in args.cost_config
        }
    bench = _bench()
    out = Path(args.out)
    keys = [f"{m}{s}" for m in args.models for s in ("", "-fresh1", "-fresh2")]
    paths = bench.simulate_all(out, args.galaxies, keys)
    table: dict[str, Any] = {}
    for m in args.models:
        data = paths[(m, bench.ALL)]
        tests = [paths[(f"{m}-fresh{i}", bench.ALL)] for i in (1, 2)]
        rows = [
            one_run(out, data, tests, m, s, args.calibration_galaxies, args.alpha)
            for s in range(args.runs)
        ]
        summary = {}
        for name in ("default", "validation"):
            far = np.array([r[name]["far"] for r in rows])
            summary[name] = {
                "mean": round(float(far.mean()), 4),
                "sd_between_runs": round(float(far.std(ddof=1)), 4),
                "max_abs_error": round(float(np.abs(far - args.alpha).max()), 4),
            }
            print(f"{m} {name}: {json.dumps(summary[name])}", flush=True)
        # The first run's detector, loaded from its run directory.
        name = f"far-default-{m}-s0-n{args.calibration_galaxies}"
        post = SimpleNamespace(run_dir=out / "runs" / name, render_config=None)
        det = MisspecificationDetector.load(post.run_dir)
        summary["score_ms_per_map"] = round(1e3 * scoring_cost(tests[0], det), 3)
        print(f"{m} scoring: {summary['score_ms_per_map']} ms per map", flush=True)
        table[m] = {"runs": rows, "summary": summary}
    result = {
        "models": table,
        "alpha": args.alpha,
        "calibration_galaxies": args.calibration_galaxies,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
