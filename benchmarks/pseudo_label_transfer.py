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
3. the **student**, the all-channel posterior, trains on tng-like labelled maps
   plus the pseudo-labelled eagle-like maps (``union_dataset``: the tng-like
   test galaxies left out), so on maps like eagle's it learns the teacher's
   posterior and on tng-like maps the full one.

The student is compared with an all-channel posterior trained on the same
tng-like galaxies without the target maps (``fit`` re-splits the union 75/10/15,
so the student sees ~15 % fewer tng-like galaxies than the alignment runs; the
baseline has exactly the student's tng-like share). Goal: eagle bias < 0.01 and
coverage error < 0.05 with the tng RMSE at most 10 % worse than the baseline's.
Test sets: n = 120 galaxies (480 maps) per model; eagle validation: 80.

Usage (after the alignment benchmark has trained the teachers in ``--align-out``)::

    python benchmarks/alignment.py --data runs/paper-grid/data --out runs/bench-align \\
        --settings none --seeds 0 1 2 --channels mass_kinematics
    python benchmarks/pseudo_label_transfer.py --data runs/paper-grid/data \\
        --align-out runs/bench-align --out runs/bench-pseudo --seeds 0 1 2

Runs are cached by name in ``<out>/runs``. Prints one line per seed, the means,
and as the LAST line one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
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


def pseudo_labelled(teacher: Any, unlabelled: Path, out: Path, seed: int) -> Path:
    """A copy of ``unlabelled`` whose f_ex labels are one teacher draw per map.

    The teacher reads the channels it was trained on, sliced from the maps
    (exact: channels are rendered independently). Written to a temporary name
    and renamed, so an interrupted run leaves no half-labelled file.
    """
    import h5py

    from sbi_exsitu.data.dataset import MapDataset

    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.h5")
    shutil.copyfile(unlabelled, tmp)
    with MapDataset(tmp) as ds:
        channels = list(ds.render_config.channels)
        keep = [channels.index(c) for c in teacher.render_config.channels]
        maps = ds.maps(slice(None))[:, keep]
    draws = teacher.sample(maps, 1, seed=seed)[:, 0, 0]
    with h5py.File(tmp, "a") as h5:
        h5["labels/f_ex"][: len(draws)] = draws.astype(h5["labels/f_ex"].dtype)
        h5.attrs["pseudo_labels"] = json.dumps(
            {"teacher": str(teacher.run_dir), "seed": seed}
        )
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/paper-grid/data"))
    parser.add_argument("--align-out", type=Path, default=Path("runs/bench-align"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pseudo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", default="mass_kinematics")
    parser.add_argument(
        "--members", type=int, default=1, help="ensemble members of both posteriors"
    )
    args = parser.parse_args()
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.studies.crosstest.data import union_dataset

    al = _alignment()
    # The grid's one-member posterior, or a mixture of --members (run names say so).
    al.POSTERIOR = {**al.POSTERIOR, "ensemble_size": args.members}
    tag = "" if args.members == 1 else f"__k{args.members}"
    unlabelled = args.align_out / "data" / "eagle-like-unlabelled__train-split.h5"
    tng_path = args.data / "tng-like__all5__ap4.h5"
    eagle_path = args.data / "eagle-like__all5__ap4.h5"
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for seed in args.seeds:
        teacher = load_posterior(
            args.align_out / "runs" / f"{args.teacher}__none__s{seed}"
        )
        pseudo = pseudo_labelled(
            teacher,
            unlabelled,
            data / f"eagle-pseudo__{args.teacher}__s{seed}.h5",
            seed=1000 + seed,
        )
        with MapDataset(tng_path) as tng, MapDataset(pseudo) as ps:
            student_data = union_dataset(
                [tng, ps], 0, data / f"student-train__{args.teacher}__s{seed}.h5"
            )
            base_data = union_dataset([tng], 0, data / "tng-trainval.h5")
        row = {}
        for label, train_path, name in (
            ("baseline", base_data, f"base-tngtrainval{tag}__s{seed}"),
            ("student", student_data, f"student-{args.teacher}{tag}__s{seed}"),
        ):
            post, _ = al.train(args.out, train_path, train_path, name, {}, seed)
            with MapDataset(tng_path) as tng, MapDataset(eagle_path) as eagle:
                row[label] = {
                    "tng_test": al.quality(post, tng, "test", seed),
                    "eagle_val": al.quality(post, eagle, "validation", seed),
                    "eagle_test": al.quality(post, eagle, "test", seed),
                }
        results[str(seed)] = row
        s, b = row["student"], row["baseline"]
        print(
            f"seed {seed}: student eagle bias {s['eagle_test']['bias']:+.4f}, "
            f"coverage error {s['eagle_test']['coverage_error']:.3f}, tng RMSE "
            f"{s['tng_test']['rmse']:.4f} (baseline {b['tng_test']['rmse']:.4f}; "
            f"eagle {b['eagle_test']['bias']:+.4f}, "
            f"{b['eagle_test']['coverage_error']:.3f})",
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
        for label in ("baseline", "student")
    }
    ratio = mean["student"]["tng_test rmse"] / mean["baseline"]["tng_test rmse"]
    print(f"means: {json.dumps(mean)}; student / baseline tng RMSE {ratio:.3f}")
    print(
        json.dumps(
            {
                "benchmark": "pseudo_label_transfer",
                "teacher": args.teacher,
                "members": args.members,
                "seeds": args.seeds,
                "mean": mean,
                "tng_rmse_ratio": round(ratio, 3),
                "per_seed": results,
            }
        )
    )


if __name__ == "__main__":
    main()
