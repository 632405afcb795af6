"""False-alarm rate of the default misspecification detector, per galaxy (#17).

Goal of issue #17: false alarms within alpha +- 0.01 on in-model maps. The test
splits hold ~75 galaxies (a binomial standard error of ~0.025 on a 5 % rate), so
this benchmark scores one view of each of 1,500 fresh in-model galaxies (never
seen by the detector; views of one galaxy are correlated, so n counts galaxies)
and gives a Clopper-Pearson 95 % interval, for detectors fitted on five
different train/validation splits of the same 500-galaxy training set, each:

* ``weighted``: the package default, validation maps weighted 1 / n_views of
  their galaxy (``views = "balanced"`` gives 4-20 views by f_ex);
* ``per_view``: the same detector with unweighted validation ranks (the
  calibration before this benchmark);
* ``recalibrated``: the same detector calibrated on 500 further fresh galaxies
  (``MisspecificationDetector.calibrate``), the remedy for a small validation
  split;

and, on the 500 further fresh galaxies (balanced views), the per-galaxy rate on
one view each (``weighted_b`` / ``per_view_b``: a second independent test set)
and the per-view rate on all their views (``far_views``); ``weighted_c`` /
``per_view_c``: one view of each of 1,500 more fresh galaxies simulated with
balanced views (the first view), a third test set; ``recalibrated_c``: the
detector calibrated on all views of those 1,500 galaxies instead, tested on the
first set. ``sd_expected`` =
sqrt(alpha (1 - alpha) / n_validation_galaxies): the scatter of one fitted
detector's rate predicted by conditional conformal validity (Vovk, 2012).

Usage::

    python benchmarks/false_alarm.py [--out runs/bench-misspec] [--models ...]

Datasets are shared with ``benchmarks/misspecification.py`` (same ``--out``).
Prints one line per detector, then as the LAST line one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "study"]

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    """benchmarks/misspecification.py (its datasets and helpers), by path."""
    path = ROOT / "benchmarks" / "misspecification.py"
    spec = importlib.util.spec_from_file_location("bench_misspecification", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rate(flags: np.ndarray) -> dict[str, Any]:
    from scipy.stats import binomtest

    k, n = int(np.sum(flags)), len(flags)
    ci = binomtest(k, n).proportion_ci(0.95)
    return {"far": round(k / n, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def study(
    ds: Any, fresh: Any, fresh1: Any, alpha: float, splits: int, fresh2: Any = None
) -> list:
    """One row per split seed (see the module doc)."""
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector

    bench = _bench()
    one = bench.H.one_view_per_galaxy(fresh1)
    rows = []
    for split in range(splits):
        sp = ds.splits(seed=split)
        # The default detector (profiles + flow) reads no posterior.
        det = MisspecificationDetector.fit(
            None, ds, sp["train"], sp["validation"], alpha=alpha, seed=split
        )
        n_val_gal = len(np.unique(ds.labels["galaxy_id"][sp["validation"]]))
        z1 = det.represent(None, fresh1, one)
        zf = det.represent(None, fresh)
        variants = {
            "weighted": det,
            "per_view": replace(det, calibration_weights=None),
            "recalibrated": det.calibrate(zf, fresh.labels["galaxy_id"]),
        }
        row: dict[str, Any] = {
            "split_seed": split,
            "n_validation_galaxies": n_val_gal,
            "n_validation_maps": len(sp["validation"]),
            "sd_expected": round(float(np.sqrt(alpha * (1 - alpha) / n_val_gal)), 4),
            "n_galaxies": len(one),
        }
        for name, d in variants.items():
            row[name] = _rate(d.score_embeddings(z1).flag)
        # The second fresh set: one view per galaxy, then all views (per view).
        one_b = bench.H.one_view_per_galaxy(fresh)
        row["weighted_b"] = _rate(det.score_embeddings(zf[one_b]).flag)
        pv = variants["per_view"]
        row["per_view_b"] = _rate(pv.score_embeddings(zf[one_b]).flag)
        if fresh2 is not None:
            one_c = bench.H.one_view_per_galaxy(fresh2)
            z2 = det.represent(None, fresh2, one_c)
            row["weighted_c"] = _rate(det.score_embeddings(z2).flag)
            row["per_view_c"] = _rate(pv.score_embeddings(z2).flag)
            big = det.calibrate(det.represent(None, fresh2), fresh2.labels["galaxy_id"])
            row["recalibrated_c"] = _rate(big.score_embeddings(z1).flag)
        row["far_views"] = round(float(det.score_embeddings(zf).flag.mean()), 4)
        row["n_views"] = len(zf)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.device import configure_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-misspec"))
    ap.add_argument("--galaxies", type=int, default=500)
    ap.add_argument("--models", nargs="*", default=["tng-like", "eagle-like"])
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args(argv)

    configure_threads(1)  # 2 cores shared by several engineers
    bench = _bench()
    sets = ("", "-fresh", "-fresh1", "-fresh2")
    keys = [f"{m}{s}" for m in args.models for s in sets]
    paths = bench.simulate_all(Path(args.out), args.galaxies, keys)
    all5 = bench.ALL
    table = {}
    for m in args.models:
        with (
            MapDataset(paths[(m, all5)]) as ds,
            MapDataset(paths[(f"{m}-fresh", all5)]) as fresh,
            MapDataset(paths[(f"{m}-fresh1", all5)]) as fresh1,
            MapDataset(paths[(f"{m}-fresh2", all5)]) as fresh2,
        ):
            table[m] = study(ds, fresh, fresh1, args.alpha, args.splits, fresh2)
        names = ("weighted", "per_view", "recalibrated", "weighted_b", "per_view_b")
        names += ("weighted_c", "per_view_c", "recalibrated_c")
        for name in names:
            far = np.array([r[name]["far"] for r in table[m]])
            print(f"{m} {name}: mean {far.mean():.4f}, sd {far.std(ddof=1):.4f}")
    summary = {
        "models": table,
        "alpha": args.alpha,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
