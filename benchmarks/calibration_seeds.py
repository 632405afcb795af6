"""Does the quickstart's calibration verdict hold on every training seed?

Usage: ``python benchmarks/calibration_seeds.py [CONFIG] --seeds 0 1 2``

Per seed: the config's fit (``[run] seed`` = the seed, run name
``<name>-seed<k>`` so runs do not collide; the dataset is simulated once from
``[simulate]`` if missing and shared) and a calibration on the run's held-out
test split (:func:`~sbi_exsitu.evaluation.calibration.calibrate_dataset`, the
galaxy-aware statistics of ``sbi-exsitu calibrate``). The same is done for each
ensemble member on its own (the evidence for mixing vs one member), and the
validation-optimal stacking weights of the members are reported (EM on the
members' validation log densities). ``--baseline-seeds`` re-runs the given seeds
with the pre-#15 quickstart (2 members, constant rate, 40 epochs, patience 15)
and ``--compare-ensemble`` runs every seed with other ensemble sizes too (default
2), in the same invocation. Finished runs are reused (``fit`` resumes); their
recorded training seconds are reported.

Prints a table and, as the LAST line, one JSON object with ``settings`` (the
``[training]`` table of each variant) and a ``runs`` list: variant, seed,
verdict, max coverage error, tolerance, min SBC p (galaxy-aware), PIT z,
test-split scatter and bias, fit seconds, epochs / best epoch per member, the
members' own verdicts and the stacking weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

# The quickstart before #15: 2 members, constant rate, stopped by the epoch cap.
BASELINE = {
    "training": {"lr_schedule": "constant", "max_epochs": 40, "patience": 15},
    "posterior": {"ensemble_size": 2},
}


def stacking_weights(member_lp: np.ndarray, iters: int = 200) -> np.ndarray:
    """Mixture weights maximising the mean log density of ``(K, n)`` log probs (EM)."""
    k = member_lp.shape[0]
    w = np.full(k, 1.0 / k)
    shift = member_lp.max(axis=0)
    dens = np.exp(member_lp - shift)
    for _ in range(iters):
        resp = w[:, None] * dens
        resp /= resp.sum(axis=0, keepdims=True)
        w = resp.mean(axis=1)
    return w


def _calibration(post: Any, dataset: Any, idx: np.ndarray, seed: int) -> dict:
    from sbi_exsitu.evaluation.calibration import calibrate_dataset

    rep = calibrate_dataset(post, dataset, idx, seed=seed, progress=False)
    return {
        "verdict": rep.verdict,
        "max_coverage_error": round(float(rep.max_abs_coverage_error), 4),
        "tolerance": round(float(rep.coverage_tolerance), 4),
        "coverage_area": round(float(rep.coverage_area), 4),
        "min_sbc_p": float(np.min(rep.sbc_ks_pvalues)),
        "pit_z": round(float(np.ravel(rep.pit_bias_z)[0]), 3),
        "n_galaxies": int(rep.n_galaxies),
    }


def _accuracy(post: Any, dataset: Any, idx: np.ndarray, seed: int) -> dict:
    from sbi_exsitu.evaluation.accuracy import evaluate

    maps = dataset.maps(idx)
    truth = np.asarray(dataset.labels["f_ex"])[idx]
    samples = post.sample(maps, 1000, seed=seed)
    median = post.summarize(maps, samples=samples).median[:, 0]
    o = evaluate(median, truth, dataset.labels["log_mstar"][idx])["overall"]
    return {"scatter": round(o["scatter"], 5), "bias": round(o["bias"], 5)}


def one_run(cfg: Any, variant: str, seed: int) -> dict[str, Any]:
    """Fit (or reuse) and calibrate one seed of one variant."""
    from sbi_exsitu.posteriors.scalar import ExSituPosterior
    from sbi_exsitu.training.fit import fit
    from sbi_exsitu.training.torchdata import target_array

    t0 = time.perf_counter()
    result = fit(cfg, progress=False)
    wall = time.perf_counter() - t0
    test = result.metrics["test"]["f_ex"]["overall"]
    post = ExSituPosterior.load(result.run_dir)
    dataset, idx = post.test_split()
    row: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "ensemble_size": cfg.posterior.ensemble_size,
        "run_dir": str(result.run_dir),
        **_calibration(post, dataset, idx, seed),
        "scatter": round(test["scatter"], 5),
        "bias": round(test["bias"], 5),
        "fit_seconds": round(result.metrics["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "members": result.metrics["members"],
    }
    members = post.members
    if len(members) > 1:
        row["member_calibration"] = [
            _calibration(m, dataset, idx, seed) | _accuracy(m, dataset, idx, seed)
            for m in members
        ]
        splits = json.loads((result.run_dir / "splits.json").read_text())
        val = np.asarray(splits["validation"])
        theta = target_array(dataset, post.param_names, val)
        lp = post.member_log_probs(theta, dataset.maps(val))
        row["stacking_weights"] = [round(float(w), 3) for w in stacking_weights(lp)]
    return row


def _variant(cfg: Any, variant: str, seed: int, changes: dict[str, dict]) -> Any:
    """``cfg`` with ``[run] seed``, a run name per (variant, seed) and ``changes``."""
    name = f"{cfg.run.name}-{variant}-seed{seed}"
    sections = {"run": dataclasses.replace(cfg.run, seed=seed, name=name)}
    for section, values in changes.items():
        sections[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **sections)


def _print_row(r: dict[str, Any]) -> None:
    epochs = ",".join(f"{m['best_epoch'] + 1}/{m['epochs']}" for m in r["members"])
    own = ",".join(m["verdict"] for m in r.get("member_calibration", []))
    print(
        f"{r['variant']:<10}{r['seed']:>5}  {r['verdict']:<13}"
        f"{r['max_coverage_error']:>7.3f}{r['tolerance']:>7.3f}{r['min_sbc_p']:>9.2g}"
        f"{r['pit_z']:>7.2f}{r['scatter']:>9.4f}{r['bias']:>9.4f}"
        f"{r['fit_seconds']:>8.0f}  {epochs:<13}{own}",
        flush=True,
    )


def main() -> None:
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.simulate import simulate
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.studies.quickstart import _simulation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs/quickstart.toml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--baseline-seeds",
        type=int,
        nargs="*",
        default=[0],
        help="seeds re-run with the pre-#15 quickstart settings (none: skip)",
    )
    ap.add_argument(
        "--compare-ensemble",
        type=int,
        nargs="*",
        default=[2],
        help="also run every seed with these ensemble sizes (none: skip)",
    )
    args = ap.parse_args()

    configure_threads()
    cfg = ExperimentConfig.from_toml(args.config)
    if cfg.simulate:
        # resume=True reuses a complete file but refuses one simulated with other
        # model parameters (a stale dataset from older code); an existence check
        # silently benchmarked an old world.
        from sbi_exsitu.errors import OutputBusyError

        for _ in range(360):  # parallel invocations share one dataset: wait for it
            try:
                simulate(_simulation(cfg), cfg.train_path, resume=True, progress=False)
                break
            except OutputBusyError:
                time.sleep(5)
    print(
        f"{'variant':<10}{'seed':>5}  {'verdict':<13}{'maxerr':>7}{'tol':>7}"
        f"{'min SBC p':>9}{'PIT z':>7}{'scatter':>9}{'bias':>9}{'fit_s':>8}"
        f"  {'best/epochs':<13}members alone",
        flush=True,
    )
    jobs: list[tuple[str, int, dict]] = []
    for s in args.seeds:
        jobs.append(("config", s, {}))
        jobs += [
            (f"k{k}", s, {"posterior": {"ensemble_size": k}})
            for k in args.compare_ensemble
            if k != cfg.posterior.ensemble_size
        ]
    jobs += [("baseline", s, BASELINE) for s in args.baseline_seeds]
    runs = []
    for variant, seed, training in jobs:
        runs.append(one_run(_variant(cfg, variant, seed, training), variant, seed))
        _print_row(runs[-1])
    settings = {
        variant: {
            "training": dataclasses.asdict(c.training),
            "ensemble_size": c.posterior.ensemble_size,
        }
        for variant, c in ((v, _variant(cfg, v, 0, ch)) for v, _, ch in jobs)
    }
    print(
        json.dumps(
            {
                "config": str(args.config),
                "settings": settings,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
