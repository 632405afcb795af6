"""Scalar posterior vs the paper's MDN-CNN and the bare f_ex-M* relation.

Usage: ``python benchmarks/scalar.py [CONFIG] [--draw-obs 1000]``

Simulates the config's mock set if needed, trains our posterior (``fit``) and the
baselines on the same galaxy-grouped split, and measures amortised sampling speed.
Prints a table and, as the LAST line, one JSON object with per-method ``bias``,
``scatter``, ``rmse``, ``nlpd``, ``train_s`` and the run-wide ``peak_rss_gb`` and
``posterior_samples_per_s`` (1,000 draws on each of ``--draw-obs`` observations).
Baseline settings come from the flags (the paper's: 5 members, Adam 1e-3); a
finished run of the same config is reused (``fit`` resumes), its recorded
training time is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]


def peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux: the peak of this process over its lifetime.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    from sbi_exsitu.baselines.run import BaselineConfig, run_baselines
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.data.simulate import simulate
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.studies.quickstart import _simulation
    from sbi_exsitu.training.fit import fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs/quickstart.toml"))
    ap.add_argument("--draw-obs", type=int, default=1000)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--mdn-members", type=int, default=5)
    ap.add_argument("--mdn-epochs", type=int, default=30)
    ap.add_argument("--mdn-patience", type=int, default=8)
    args = ap.parse_args()

    configure_threads()
    cfg = ExperimentConfig.from_toml(args.config)
    if cfg.simulate and not cfg.train_path.exists():
        simulate(_simulation(cfg), cfg.train_path, progress=False)
    t0 = time.perf_counter()
    result = fit(cfg, progress=False)
    ours_s = time.perf_counter() - t0
    test = result.metrics["test"]["f_ex"]["overall"]
    methods = {
        "ours": {k: test[k] for k in ("bias", "scatter", "rmse", "nlpd")}
        | {"train_s": result.metrics["train_seconds"], "fit_total_s": ours_s}
    }

    dataset = MapDataset(cfg.train_path)
    splits = dataset.splits(seed=cfg.data.split_seed)
    if not args.skip_baselines:
        bcfg = BaselineConfig(
            ensemble_size=args.mdn_members,
            max_epochs=args.mdn_epochs,
            patience=args.mdn_patience,
            seed=cfg.run.seed,
        )
        base = run_baselines(
            dataset,
            splits,
            config=bcfg,
            progress=False,
            save_dir=result.run_dir / "baselines",
        )
        for name, rep in base.items():
            o = rep["overall"]
            methods[name] = {k: o.get(k) for k in ("bias", "scatter", "rmse", "nlpd")}
            methods[name]["train_s"] = rep.get("train_s")

    # Amortised inference: 1,000 draws on each of N observations, vectorised.
    n_obs = args.draw_obs
    idx = np.resize(np.arange(len(dataset)), n_obs)
    maps = dataset.maps(idx)
    post = result.posterior
    post.sample(maps[:8], 100, seed=0)  # warm-up
    t = time.perf_counter()
    post.sample(maps, 1000, seed=1)
    dt = time.perf_counter() - t
    rate = n_obs * 1000 / dt

    print(
        f"{'method':<15}{'bias':>9}{'scatter':>9}{'rmse':>9}{'nlpd':>9}{'train_s':>10}"
    )
    for name, m in methods.items():
        print(
            f"{name:<15}"
            + "".join(
                f"{m[k]:>9.4f}" if isinstance(m.get(k), float) else f"{'-':>9}"
                for k in ("bias", "scatter", "rmse", "nlpd")
            )
            + f"{m.get('train_s') or 0:>10.1f}"
        )
    print(
        f"sampling: {rate:,.0f} draws/s -> 1000 draws x 10,000 galaxies in "
        f"{1e7 / rate:.1f} s"
    )
    print(
        json.dumps(
            {
                "config": str(args.config),
                "n_train": result.metrics["n_train"],
                "n_test": result.metrics["n_test"],
                "resolution": dataset.render_config.resolution,
                "methods": methods,
                "peak_rss_gb": round(peak_rss_gb(), 3),
                "posterior_samples_per_s": round(rate),
                "seconds_1000_draws_10000_galaxies": round(1e7 / rate, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
