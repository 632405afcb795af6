"""Training that resists the simulator shift: none / MMD / DANN on tng -> eagle.

Issue #17 item 4, on the crosstest cell "all channels @ 4 r_e, trained on
tng-like, tested on eagle-like" of ``configs/paper-grid.toml`` (its datasets:
800 galaxies per model, 4 fixed views, 32 px; its posterior and ``[training]``
settings). Goal: eagle bias < 0.01 and coverage error < 0.05 with the in-model
(tng) RMSE at most 10 % worse than without alignment.

The eagle-like dataset is used three ways, split by galaxy with the grid's
``split_seed = 0`` (75/10/15):

* its **train** split (600 galaxies) is the unlabelled target set ``align_data``
  (copied to its own file; its labels are never read by training);
* its **validation** split (80 galaxies) is where the alignment weight is chosen;
* its **test** split (120 galaxies, the grid cell's test set) is only reported.

``--channels`` repeats the study on channel subsets of the same galaxies
(``CHANNEL_SETS``; sliced exactly from the all-channel datasets with the grid's
own :func:`~sbi_exsitu.studies.crosstest.data.derive_channels`, into
``<out>/data``): which representation transfers from tng to eagle, and what it
costs in the model it was trained on? An unlabelled-data alignment can only
meet the goal if some invariant representation keeps the in-model RMSE within
10 %.

Usage::

    python benchmarks/alignment.py --data runs/paper-grid/data \\
        [--out runs/bench-align] [--settings none "dann+em w=0.3"] [--seeds 0 1] \\
        [--channels all5 mass_kinematics_age]

Every (channels, setting, seed) is cached as ``<out>/results/<name>.json``
(all channels: no channel prefix); a rerun only trains what is missing. Prints
one line per run, a markdown table (means over seeds, seed range in brackets),
then as the LAST line one JSON object with every result.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHANNEL_SETS",
    "SETTINGS",
    "channel_data",
    "domain_auc",
    "main",
    "markdown",
    "quality",
    "train",
]

ROOT = Path(__file__).resolve().parents[1]
ALL = "all5"
APERTURE = "ap4"
#: name -> channels; "all5" is the grid's "all" (its files are named all5).
CHANNEL_SETS: dict[str, tuple[str, ...]] = {
    "all5": ("mass", "velocity", "dispersion", "age", "metallicity"),
    "mass_kinematics": ("mass", "velocity", "dispersion"),
    "age_metallicity": ("age", "metallicity"),
    "mass_kinematics_age": ("mass", "velocity", "dispersion", "age"),
    "mass_kinematics_metallicity": ("mass", "velocity", "dispersion", "metallicity"),
}
#: name -> [training] alignment keys.
SETTINGS: dict[str, dict[str, Any]] = {
    "none": {},
    "mmd+em w=0.1": {"align_method": "mmd", "align_weight": 0.1},
    "mmd+em w=1": {"align_method": "mmd", "align_weight": 1.0},
    "dann w=0.3": {"align_method": "dann", "align_weight": 0.3, "align_prior": "none"},
    "dann w=1": {"align_method": "dann", "align_weight": 1.0, "align_prior": "none"},
    "dann+em w=0.1": {"align_method": "dann", "align_weight": 0.1},
    "dann+em w=0.3": {"align_method": "dann", "align_weight": 0.3},
    "dann+em w=1": {"align_method": "dann", "align_weight": 1.0},
    "dann+em w=3": {"align_method": "dann", "align_weight": 3.0},
    "dann+em w=10": {"align_method": "dann", "align_weight": 10.0},
    "mmd+em w=0.3": {"align_method": "mmd", "align_weight": 0.3},
    "confusion+em w=1": {"align_method": "confusion", "align_weight": 1.0},
    "confusion+em w=3": {"align_method": "confusion", "align_weight": 3.0},
    # Diagnostics, not deployable: the importance weights from the TRUE f_ex
    # histogram of the unlabelled target set instead of the EM estimate (is the
    # estimate what limits the correction?).
    "mmd+oracle w=0.1": {"align_method": "mmd", "align_weight": 0.1, "oracle": 1},
    "dann+oracle w=1": {"align_method": "dann", "align_weight": 1.0, "oracle": 1},
}
#: configs/paper-grid.toml's [posterior] and [training].
POSTERIOR = {
    "kind": "scalar",
    "targets": ["f_ex"],
    "estimator": "zuko_nsf",
    "ensemble_size": 1,
    "embedding": "default",
    "embedding_features": 32,
}
TRAINING = {
    "batch_size": 128,
    "learning_rate": 5e-4,
    "weight_decay": 1e-3,
    "lr_schedule": "plateau",
    "lr_factor": 0.5,
    "lr_patience": 4,
    "max_lr_reductions": 1,
    "max_epochs": 40,
    "patience": 10,
}


def channel_data(data: Path, out: Path, channels: str) -> tuple[Path, Path]:
    """The (tng-like, eagle-like) datasets of one ``CHANNEL_SETS`` entry.

    All channels: the grid's files in ``data``; a subset: sliced from them into
    ``<out>/data`` (exact: the same galaxies, views and maps, fewer channels).
    """
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.studies.crosstest.data import derive_channels

    if channels not in CHANNEL_SETS:
        raise SystemExit(
            f"--channels {channels!r}: expected one of {sorted(CHANNEL_SETS)}"
        )
    paths = []
    for model in ("tng-like", "eagle-like"):
        base = data / f"{model}__{ALL}__{APERTURE}.h5"
        if channels == ALL:
            paths.append(base)
            continue
        path = out / "data" / f"{model}__{channels}__{APERTURE}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with MapDataset(base) as ds:
            paths.append(derive_channels(ds, CHANNEL_SETS[channels], path))
    return paths[0], paths[1]


def unlabelled_target(eagle: Path, out: Path, channels: str = ALL) -> Path:
    """The eagle-like train split as its own dataset (the unlabelled target)."""
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.studies.crosstest.data import _copy_galaxies

    suffix = "" if channels == ALL else f"__{channels}"
    path = out / "data" / f"eagle-like-unlabelled__train-split{suffix}.h5"
    if path.exists():
        return path
    with MapDataset(eagle) as ds:
        idx = ds.splits(seed=0)["train"]
        attrs = {"source": "bench-align", "derived_from": str(eagle)}
        _copy_galaxies(ds, np.sort(idx), path, ds.render_config, attrs)
    return path


def train(out: Path, tng: Path, target: Path, name: str, keys: dict, seed: int):
    """One one-member posterior (paper-grid settings), cached in its run dir."""
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.fit import fit

    keys = dict(keys)
    oracle = keys.pop("oracle", False)
    align = keys | {"align_data": str(target)} if keys else {}
    cfg = ExperimentConfig.from_dict(
        {
            "run": {
                "name": name,
                "out_dir": str(out / "runs"),
                "threads": 1,
                "seed": seed,
            },
            "data": {"train": str(tng), "split_seed": 0},
            "posterior": POSTERIOR,
            "training": TRAINING | align,
        }
    )
    if RunDirectory(cfg.run_dir).is_finished:
        return load_posterior(cfg.run_dir), None
    t = time.perf_counter()
    with _oracle_prior(target) if oracle else contextlib.nullcontext():
        post = fit(cfg, progress=False, evaluate=False).posterior
    return post, time.perf_counter() - t


@contextlib.contextmanager
def _oracle_prior(target: Path):
    """Replace the EM estimate by the target set's true f_ex histogram."""
    from unittest import mock

    import torch

    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.training.align import EmbeddingAlignment

    with MapDataset(target) as ds:
        f_true = np.asarray(ds.labels["f_ex"])

    def start_epoch(self, model, epoch):
        self.epoch, self.step = epoch, 0
        ratio = self._histogram(f_true) / self.p_source
        self.ratio = torch.as_tensor(ratio, dtype=torch.float32)

    with mock.patch.object(EmbeddingAlignment, "start_epoch", start_epoch):
        yield


@functools.cache
def _helpers() -> Any:
    """``benchmarks/misspec_helpers.py``, loaded by path once."""
    spec = importlib.util.spec_from_file_location(
        "misspec_helpers", ROOT / "benchmarks" / "misspec_helpers.py"
    )
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers


def quality(posterior: Any, ds: Any, split: str, seed: int) -> dict[str, float]:
    """Bias, scatter, RMSE and coverage error of f_ex on one split of ``ds``."""
    row = _helpers().split_quality(posterior, ds, split, seed)
    idx = ds.splits(seed=0)[split]
    row["n"] = len(idx)
    row["n_galaxies"] = len(np.unique(ds.labels["galaxy_id"][idx]))
    return row


def domain_auc(posterior: Any, src: Any, tgt: Any, seed: int) -> float:
    """How well a logistic classifier tells the two models apart in the
    posterior's embedding: fitted on the train splits, ROC AUC on the test
    splits (0.5: the embedding is aligned)."""
    from sbi_exsitu.evaluation.misspecification import embed, roc_auc

    ss, ts = src.splits(seed=0), tgt.splits(seed=0)
    z = {
        (name, k): embed(posterior, ds.maps(sp[k]))
        for name, ds, sp in (("s", src, ss), ("t", tgt, ts))
        for k in ("train", "test")
    }
    clf = _helpers().logistic(z["s", "train"], z["t", "train"], seed)
    return round(float(roc_auc(clf(z["s", "test"]), clf(z["t", "test"]))), 3)


def markdown(results: dict[str, dict]) -> str:
    """One row per (channels, setting): means over seeds (with the seed range
    when > 1)."""
    cols = [
        ("eagle_val", "bias"),
        ("eagle_val", "coverage_error"),
        ("eagle_test", "bias"),
        ("eagle_test", "scatter"),
        ("eagle_test", "coverage_error"),
        ("tng_test", "rmse"),
        ("tng_test", "coverage_error"),
    ]
    head = ["channels", "setting", "seeds"]
    head += [f"{a} {b}" for a, b in cols] + ["domain AUC"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    by: dict[tuple[str, str], list[dict]] = {}
    for row in results.values():
        key = (row.get("channels", ALL), row["setting"])
        by.setdefault(key, []).append(row)
    for key in [(c, k) for c in CHANNEL_SETS for k in SETTINGS if (c, k) in by]:
        rows = by[key]
        cells = [*key, str(len(rows))]
        for a, b in cols + [(None, "domain_auc")]:
            v = np.array([r[a][b] if a else r.get(b, np.nan) for r in rows], float)
            cell = f"{np.mean(v):+.3f}" if b == "bias" else f"{np.mean(v):.3f}"
            if len(v) > 1:
                cell += f" [{v.min():.3f}, {v.max():.3f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_name(channels: str, label: str, seed: int) -> str:
    """The cache/run-directory name of one run (all channels: no prefix, as
    before channel subsets existed)."""
    tag = label.replace("+", "-").replace(" w=", "-w")
    prefix = "" if channels == ALL else f"{channels}__"
    return f"{prefix}{tag}__s{seed}"


def _measure(post: Any, tng: Path, eagle: Path, seed: int) -> dict[str, Any]:
    from sbi_exsitu.data.dataset import MapDataset

    with MapDataset(tng) as src, MapDataset(eagle) as tgt:
        return {
            "eagle_val": quality(post, tgt, "validation", seed),
            "eagle_test": quality(post, tgt, "test", seed),
            "tng_test": quality(post, src, "test", seed),
            "domain_auc": domain_auc(post, src, tgt, seed),
        }


def main(argv: list[str] | None = None) -> dict:
    from sbi_exsitu.device import configure_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "runs" / "paper-grid" / "data"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-align"))
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--channels", nargs="*", default=[ALL], choices=list(CHANNEL_SETS))
    args = ap.parse_args(argv)

    configure_threads(1)  # 2 cores shared by several engineers
    out, data = Path(args.out), Path(args.data)
    (out / "results").mkdir(parents=True, exist_ok=True)
    results = {}
    for channels in args.channels:
        tng, eagle = channel_data(data, out, channels)
        target = unlabelled_target(eagle, out, channels)
        for label in args.settings:
            for seed in args.seeds:
                name = run_name(channels, label, seed)
                cached = out / "results" / f"{name}.json"
                if cached.exists():
                    results[name] = json.loads(cached.read_text())
                    continue
                post, seconds = train(out, tng, target, name, SETTINGS[label], seed)
                row = {"channels": channels, "setting": label, "seed": seed}
                row |= _measure(post, tng, eagle, seed)
                row["train_seconds"] = None if seconds is None else round(seconds)
                row["load_average_1min"] = round(os.getloadavg()[0], 2)
                cached.write_text(json.dumps(row, indent=1))
                results[name] = row
                print(f"{name}: {json.dumps(row)}", flush=True)
    print(markdown(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
