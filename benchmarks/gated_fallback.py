"""Flag-gated fallback: flagged maps read by an invariant-channel posterior.

Issue #17 item 4, a third answer beside MMD and DANN alignment (which leave the
coverage error at 0.22-0.27 on the streams world, docs/crosstest.md): keep the
all-channel posterior for maps the default misspecification detector accepts,
and read the maps it flags (conformal p < alpha) with a posterior trained on a
channel subset whose maps the other model cannot be told apart on (mass +
kinematics, domain AUC 0.53; + age, 0.54). On the cell all @ 4 r_e, trained on
tng-like, tested on eagle-like. Goal: eagle bias < 0.01 and coverage error <
0.05 with the tng RMSE at most 10 % worse than the all-channel posterior's.

Needs the runs of ``benchmarks/alignment.py`` (same ``--out``): ``none`` on all
channels and on each ``--fallback`` subset, for every seed::

    python benchmarks/alignment.py --data runs/paper-grid/data --out runs/bench-align \\
        --settings none --seeds 0 1 2 \\
        --channels all5 mass_kinematics mass_kinematics_age
    python benchmarks/gated_fallback.py --data runs/paper-grid/data \\
        --out runs/bench-align --seeds 0 1 2

The detector is the all-channel run's default one (fitted on first use and saved
in that run, as ``predict`` does). Subset maps are the all-channel maps with the
other channels dropped, which is exact (docs/crosstest.md, "Data: exact and
cheap"). Prints one line per (fallback, alpha) with means over seeds, then as
the LAST line one JSON object; ``alpha = 0`` is the all-channel posterior (the
baseline), ``alpha = 1`` the fallback alone. Test sets: n = 120 galaxies (480
maps) per model; the coverage error counts galaxies.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

ALPHAS = (0.0, 0.02, 0.05, 0.1, 0.2, 1.0)
SPLITS = (("tng-like", "test"), ("eagle-like", "validation"), ("eagle-like", "test"))


def _helpers() -> Any:
    """``benchmarks/misspec_helpers.py``, loaded by path (``benchmarks/`` is not a
    package)."""
    spec = importlib.util.spec_from_file_location(
        "misspec_helpers", Path(__file__).resolve().parent / "misspec_helpers.py"
    )
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers


def gate(main: Any, fallback: Any, detector: Any, path: Path, split: str, seed: int):
    """Per alpha, the quality of the gated posterior on one split of ``path``."""
    from sbi_exsitu.data.dataset import MapDataset

    with MapDataset(path) as ds:
        idx = ds.splits(seed=0)[split]
        maps = ds.maps(idx)
        labels = {k: ds.labels[k][idx] for k in ("f_ex", "galaxy_id", "log_mstar")}
    channels = list(main.render_config.channels)
    sub = maps[:, [channels.index(c) for c in fallback.render_config.channels]]
    truth = labels["f_ex"][:, None]
    p = detector.score(main, maps).p_value
    draws = {}
    for name, post, x in (("main", main, maps), ("fallback", fallback, sub)):
        s = post.sample(x, 500, seed=seed)
        draws[name] = (s, post.log_prob(s[:, :100], x), post.log_prob(truth, x))
    quality = _helpers().draw_quality
    out = {}
    for alpha in ALPHAS:
        use = p < alpha
        parts = [
            np.where(use.reshape((-1,) + (1,) * (m.ndim - 1)), f, m)
            for m, f in zip(draws["main"], draws["fallback"], strict=True)
        ]
        out[alpha] = {**quality(*parts, labels, seed), "used": float(use.mean())}
    return out


def _mean(per_seed: list[dict], key: str, alpha: float, quantity: str) -> float:
    return round(float(np.mean([s[key][alpha][quantity] for s in per_seed])), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/paper-grid/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-align"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--fallback", nargs="+", default=["mass_kinematics", "mass_kinematics_age"]
    )
    args = parser.parse_args()
    from sbi_exsitu.posteriors import load_posterior

    results: dict[str, Any] = {}
    for fb_name in args.fallback:
        per_seed = []
        for seed in args.seeds:
            main_post = load_posterior(args.out / "runs" / f"none__s{seed}")
            fallback = load_posterior(args.out / "runs" / f"{fb_name}__none__s{seed}")
            detector = main_post.misspecification_detector()
            per_seed.append(
                {
                    f"{model}/{split}": gate(
                        main_post,
                        fallback,
                        detector,
                        args.data / f"{model}__all5__ap4.h5",
                        split,
                        seed,
                    )  # fmt: skip
                    for model, split in SPLITS
                }
            )
        rows = {}
        for alpha in ALPHAS:
            row = {
                f"{key} {q}": _mean(per_seed, key, alpha, q)
                for key in per_seed[0]
                for q in ("bias", "rmse", "coverage_error", "used")
            }
            rows[str(alpha)] = row
            print(
                f"{fb_name} alpha={alpha}: tng RMSE {row['tng-like/test rmse']:.4f} "
                f"(fallback on {row['tng-like/test used']:.3f}); eagle bias "
                f"{row['eagle-like/test bias']:+.4f}, coverage error "
                f"{row['eagle-like/test coverage_error']:.3f} (fallback on "
                f"{row['eagle-like/test used']:.3f})",
                flush=True,
            )
        results[fb_name] = rows
    print(json.dumps({"benchmark": "gated_fallback", "seeds": args.seeds, **results}))


if __name__ == "__main__":
    main()
