"""Teacher-student transfer: invariant-channel pseudo-labels on unlabelled maps.

Issue #17 item 4, a fourth answer beside MMD / DANN alignment and the flag-gated
fallback (docs/crosstest.md). On the streams world the tng -> eagle shift sits in
the metallicity maps, while mass + kinematics maps of the two models cannot be
told apart (domain AUC 0.53, measured on *unlabelled* eagle maps), and a
posterior on them transfers (eagle bias +0.004, coverage error 0.04) at 66 %
more in-model RMSE. So:

1. the **teacher** is the mass + kinematics posterior trained on tng-like labels
   (``benchmarks/alignment.py --channels mass_kinematics``);
2. every unlabelled eagle-like map (the train split; its labels are never read)
   gets one f_ex **pseudo-label drawn from the teacher's posterior** on its mass +
   kinematics channels (an NPE training pair, like a simulated one);
3. the **student**, the all-channel posterior, trains on the tng-like labelled
   maps plus the pseudo-labelled eagle-like maps: ``fit`` with ``[training]
   pseudo_label_data`` / ``pseudo_label_teacher``
   (:mod:`sbi_exsitu.training.pseudo_labels`). The tng-like data keep the grid's
   split; the eagle-like maps are split by galaxy, 10 % validation (early
   stopping), the rest training. So on maps like eagle's the student learns the
   teacher's posterior, on tng-like maps the full one.

The student is compared with the all-channel posterior trained on the same
tng-like galaxies without target maps (the alignment benchmark's ``none`` run,
the same split). Goal: eagle bias < 0.01 and coverage error < 0.05 with the tng
RMSE at most 10 % worse than the baseline's. Test sets: n = 120 galaxies (480
maps) per model, the grid's test splits, never trained on (the unlabelled
eagle-like maps are its train split).

Usage (after the alignment benchmark has trained the teachers and baselines)::

    python benchmarks/alignment.py --data runs/paper-grid/data --out runs/bench-align \
        --settings none --seeds 0 1 2 --channels mass_kinematics all5
    python benchmarks/pseudo_label_transfer.py --align-out runs/bench-align \
        --data runs/paper-grid/data --seeds 0 1 2 [--draws 1 4]

Runs are cached by name in ``<out>/runs``. Prints one line per seed, the means,
and as the LAST line one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _alignment() -> Any:
    spec = importlib.util.spec_from_file_location(
        "alignment", ROOT / "benchmarks" / "alignment.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_student(
    al: Any,
    out: Path,
    tng: Path,
    target: Path,
    teacher: Path,
    draws: int,
    seed: int,
    tag: str = "",
) -> Any:
    """The all-channel student (paper-grid settings), cached in its run dir."""
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.fit import fit

    cfg = ExperimentConfig.from_dict(
        {
            "run": {
                "name": f"student-{teacher.name}__d{draws}{tag}",
                "out_dir": str(out / "runs"),
                "threads": 1,
                "seed": seed,
            },
            "data": {"train": str(tng), "split_seed": 0},
            "posterior": al.POSTERIOR,
            "training": {
                "pseudo_label_data": str(target),
                "pseudo_label_teacher": str(teacher),
                "pseudo_label_draws": draws,
            }
            | al.TRAINING,
        }
    )
    if RunDirectory(cfg.run_dir).is_finished:
        return load_posterior(cfg.run_dir)
    return fit(cfg, progress=False, evaluate=False).posterior


def fewer_views(unlabelled: Path, views: int) -> Path:
    """The first ``views`` views of every galaxy of ``unlabelled`` (0: all)."""
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.studies.crosstest.data import _copy_galaxies

    if not views:
        return unlabelled
    out = unlabelled.with_name(f"{unlabelled.stem}__views{views}.h5")
    if not out.exists():
        with MapDataset(unlabelled) as ds:
            keep = np.flatnonzero(np.asarray(ds.labels["view_id"]) < views)
            attrs = {"source": "bench-pseudo", "derived_from": str(unlabelled)}
            _copy_galaxies(ds, keep, out, ds.render_config, attrs)
    return out


def overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["training.max_epochs=80", ...]`` -> {"training": {"max_epochs": 80}}."""
    out: dict[str, dict[str, Any]] = {"training": {}, "posterior": {}}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in out or not name or not value:
            raise SystemExit(
                f"--set {item!r}: expected training.KEY=VALUE or posterior.KEY=VALUE"
            )
        out[section][name] = json.loads(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/paper-grid/data"))
    parser.add_argument("--align-out", type=Path, default=Path("runs/bench-align"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pseudo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", default="mass_kinematics")
    parser.add_argument(
        "--draws", type=int, nargs="+", default=[1], help="pseudo-labels per map"
    )
    parser.add_argument(
        "--members", type=int, default=1, help="ensemble members of both posteriors"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        help="training.KEY=VALUE / posterior.KEY=VALUE for student and baseline "
        "(JSON values; the baseline is then re-trained in --out)",
    )
    parser.add_argument(
        "--target-views",
        type=int,
        default=0,
        help="pseudo-label only the first K views of each target galaxy (0: all)",
    )
    args = parser.parse_args()
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.device import configure_threads

    configure_threads(1)  # two benchmarks share the 2 cores
    al = _alignment()
    # The grid's one-member posterior, or a mixture of --members (run names say so).
    al.POSTERIOR = {**al.POSTERIOR, "ensemble_size": args.members}
    tag = "" if args.members == 1 else f"__k{args.members}"
    changed = overrides(args.set)
    al.POSTERIOR |= changed["posterior"]
    al.TRAINING = al.TRAINING | changed["training"]
    for item in sorted(args.set):
        tag += "__" + item.split(".", 1)[1].replace("=", "-").replace('"', "")
    tng_path = args.data / "tng-like__all5__ap4.h5"
    eagle_path = args.data / "eagle-like__all5__ap4.h5"
    unlabelled = fewer_views(
        al.unlabelled_target(eagle_path, args.align_out), args.target_views
    )
    labels = ["baseline"] + [f"student d={d}" for d in args.draws]
    results: dict[str, Any] = {}
    for seed in args.seeds:
        teacher = args.align_out / "runs" / f"{args.teacher}__none__s{seed}"
        # The grid's baseline is the alignment benchmark's run; another one
        # (--set, --members) is trained beside the students.
        base_out = args.out / f"s{seed}" if args.set else args.align_out
        base, _ = al.train(
            base_out, tng_path, unlabelled, f"none{tag}__s{seed}", {}, seed
        )
        posts = {"baseline": base}
        for d in args.draws:
            posts[f"student d={d}"] = train_student(
                al,
                args.out / f"s{seed}",
                tng_path,
                unlabelled,
                teacher,
                d,
                seed,
                tag + (f"__views{args.target_views}" if args.target_views else ""),
            )
        row = {}
        with MapDataset(tng_path) as tng, MapDataset(eagle_path) as eagle:
            for label, post in posts.items():
                row[label] = {
                    "tng_test": al.quality(post, tng, "test", seed),
                    "eagle_val": al.quality(post, eagle, "validation", seed),
                    "eagle_test": al.quality(post, eagle, "test", seed),
                }
        results[str(seed)] = row
        for label in labels:
            q = row[label]
            print(
                f"seed {seed} {label}: eagle bias {q['eagle_test']['bias']:+.4f}, "
                f"coverage error {q['eagle_test']['coverage_error']:.3f}; tng RMSE "
                f"{q['tng_test']['rmse']:.4f}",
                flush=True,
            )
    mean = {
        label: {
            f"{split} {q}": round(
                float(np.mean([results[k][label][split][q] for k in results])), 4
            )
            for split in ("tng_test", "eagle_val", "eagle_test")
            for q in ("bias", "scatter", "rmse", "coverage_error")
        }
        for label in labels
    }
    base_rmse = mean["baseline"]["tng_test rmse"]
    ratio = {
        label: round(mean[label]["tng_test rmse"] / base_rmse, 3)
        for label in labels[1:]
    }
    print(f"means: {json.dumps(mean)}; tng RMSE / baseline {json.dumps(ratio)}")
    print(
        json.dumps(
            {
                "benchmark": "pseudo_label_transfer",
                "teacher": args.teacher,
                "members": args.members,
                "set": args.set,
                "target_views": args.target_views,
                "seeds": args.seeds,
                "mean": mean,
                "tng_rmse_ratio": ratio,
                "per_seed": results,
            }
        )
    )


if __name__ == "__main__":
    main()
