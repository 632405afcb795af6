"""Benchmark the map-valued posterior (issue #7) against the seed's numbers.

Trains the map posterior of CONFIG (``[posterior] kind = "map"``; the dataset is
simulated first if missing and the config has ``[simulate]``), or reuses a
finished run with ``--reuse``, and measures on the evaluation subset of the
test split (``[map] eval_max_obs`` galaxy views, ``eval_samples`` draws each):

* mean absolute per-pixel residual of the mean of the draws, for latents from
  the encoder given the truth (reconstruction), from the prior and from the
  flow (Angeloudi et al. 2024, arXiv:2410.24069, fig. 3; goal: flow <= 0.10
  and flow < prior);
* per-pixel coverage error (empirical - nominal) of central 68% and 95%
  intervals (goal: |68% error| <= 0.05), an atom of the posterior at a truth of
  exactly 0 or 1 counting by its share inside the central band; also with the
  closed intervals of the draws, which over-cover at atoms (see
  ``sbi_exsitu.evaluation.map_coverage``), and the coverage of the implied f_ex with
  the fitted shared pixel noise (``sbi_exsitu.posteriors.map.noise``);
* the implied f_ex's scatter against the f_ex labels, next to that of a scalar
  posterior trained on the same split (``sbi_exsitu.training.fit.fit`` on a
  ``kind = "scalar"`` copy of CONFIG with one ensemble member) or read from
  ``--scalar-run``;
* train times.

Usage::

    python benchmarks/map_posterior.py configs/map-quickstart.toml [--reuse]
        [--scalar-run runs/x] [--threads 1]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sbi_exsitu.config.experiment import ExperimentConfig  # noqa: E402
from sbi_exsitu.data.dataset import MapDataset  # noqa: E402


def _scatter(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    d = pred - truth
    return {
        "bias": float(d.mean()),
        "scatter": float(d.std()),
        "rmse": float(np.sqrt(np.mean(d**2))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="use the finished run of CONFIG instead of training",
    )
    ap.add_argument(
        "--scalar-run",
        type=Path,
        default=None,
        help="a finished scalar run on the same dataset",
    )
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    cfg = ExperimentConfig.from_toml(args.config)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cfg = cfg.replace(run=dataclasses.replace(cfg.run, threads=args.threads))
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.training.fit import fit

    t0 = time.perf_counter()
    if args.reuse and (cfg.run_dir / "model.json").is_file():
        post = load_posterior(cfg.run_dir)
        metrics = json.loads((cfg.run_dir / "metrics.json").read_text())
    else:
        result = fit(cfg, overwrite=True, progress=sys.stderr.isatty())
        post, metrics = result.posterior, result.metrics
    map_wall = time.perf_counter() - t0
    test, cal = metrics["test"], metrics["calibration"]
    idx = np.asarray(test["indices"], dtype=np.int64)
    dataset = MapDataset(cfg.train_path)
    labels = dataset.labels["f_ex"][idx]

    # The scalar posterior on the same data and split, for the f_ex comparison.
    t1 = time.perf_counter()
    if args.scalar_run is not None:
        scalar = load_posterior(args.scalar_run)
        scalar_train = scalar.metadata.get("train_seconds")
    else:
        scfg = cfg.replace(
            run=dataclasses.replace(cfg.run, name=cfg.run.name + "-scalar"),
            posterior=dataclasses.replace(
                cfg.posterior, kind="scalar", ensemble_size=1
            ),
        )
        sres = fit(scfg, overwrite=True, progress=sys.stderr.isatty(), evaluate=False)
        scalar, scalar_train = sres.posterior, sres.metrics["train_seconds"]
    draws = scalar.sample(dataset.maps(idx), 1000, seed=cfg.run.seed)[..., 0]
    scalar_wall = time.perf_counter() - t1

    summ = post.summarize(
        dataset.maps(idx),
        test["num_samples"],
        mask=dataset.mask(idx),
        seed=cfg.run.seed,
    )
    out = {
        "config": str(args.config),
        "dataset": str(cfg.train_path),
        "resolution": dataset.render_config.resolution,
        "n_train": metrics["n_train"],
        "n_eval": len(idx),
        "num_samples": test["num_samples"],
        "mean_abs_pixel_residual": {
            m: test[m]["mean_abs_residual"] for m in ("reconstruction", "prior", "flow")
        },
        "mean_pixel_residual": {
            m: test[m]["mean_residual"] for m in ("reconstruction", "prior", "flow")
        },
        "flow_mean_pixel_std": test["flow"]["mean_pixel_std"],
        "pixel_coverage_error_68": cal["pixel_coverage_error_68"],
        "pixel_coverage_error_95": cal["pixel_coverage_error_95"],
        "pixel_closed_coverage_error_68": cal["pixel_closed_coverage_error_68"],
        "pixel_closed_coverage_error_95": cal["pixel_closed_coverage_error_95"],
        "pixel_interior_coverage_error_68": cal["pixel_interior_coverage_error_68"],
        "pixel_interior_fraction": cal.get("pixel_interior_fraction"),
        "fex_coverage_error_68": {
            "vs_true_map": cal["fex_coverage_error_68"],
            "vs_label": cal.get("fex_label_coverage_error_68"),
        },
        "fex_coverage_error_95": {
            "vs_true_map": cal["fex_coverage_error_95"],
            "vs_label": cal.get("fex_label_coverage_error_95"),
        },
        "noise_rho": post.noise_rho,
        "fex_weighting": summ.weighting,
        "mass_scale": metrics.get("mass_scale"),
        "implied_fex_vs_label": _scatter(summ.f_ex_median, labels),
        "true_map_fex_vs_label": test["f_ex"].get("true_map_vs_label"),
        "scalar_fex_vs_label": _scatter(np.median(draws, axis=1), labels),
        "train_seconds": {"map": metrics["train_seconds"], "scalar": scalar_train},
        "wall_seconds": {"map": map_wall, "scalar": scalar_wall},
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    goals = out["mean_abs_pixel_residual"]
    out["goals"] = {
        "flow_le_0.10": goals["flow"] <= 0.10,
        "flow_lt_prior": goals["flow"] < goals["prior"],
        "pixel_coverage68_within_0.05": abs(out["pixel_coverage_error_68"]) <= 0.05,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
