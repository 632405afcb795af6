"""Benchmark the outside-mask head (issue #19, goal iv): map f_ex vs the label.

Trains :class:`sbi_exsitu.posteriors.map.outside.OutsideMaskHead` on the
training split of a finished map run of CONFIG (``[run] name``; the head's
embedding is CONFIG's ``[posterior] embedding``, its optimiser CONFIG's
``[training]``), then on the run's evaluation test views (``metrics.json``)
compares with the f_ex label, as bias / scatter / RMSE:

* the in-mask f_ex implied by the map draws (what the map posterior reports);
* the whole-galaxy f_ex of :func:`~sbi_exsitu.posteriors.map.outside.galaxy_fex`
  (the same draws plus the head's delta), with its 68% / 95% coverage error;
* the true map's in-mask f_ex, and the true map's plus the head's mean;
* the scalar posterior ``<name>-scalar`` (as trained by
  ``benchmarks/map_posterior.py``; goal: galaxy scatter <= 1.2x its scatter).

Usage::

    python benchmarks/map_outside.py configs/map-cvae-64.toml [--threads 1]
        [--run RUN] [--scalar-run RUN] [--all-test] [--seed S]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from sbi_exsitu.evaluation.accuracy import point_metrics  # noqa: E402


def _coverage_error(draws: np.ndarray, truth: np.ndarray, level: float) -> float:
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return float(np.mean((truth >= lo) & (truth <= hi)) - level)


def main() -> None:
    from sbi_exsitu.embeddings import build_embedding

    from sbi_exsitu.data.exsitu_fraction import implied_fex
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.posteriors.map.outside import OutsideMaskHead, galaxy_fex
    from sbi_exsitu.runs import RunDirectory
    from sbi_exsitu.training.map_outside import fit_outside_head

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=30, help="head epochs (max)")
    ap.add_argument("--run", type=Path, default=None, help="default: CONFIG's")
    ap.add_argument("--scalar-run", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=None, help="head seed (run seed)")
    ap.add_argument(
        "--all-test", action="store_true", help="every test view, not the subset"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ExperimentConfig.from_toml(args.config)
    run_dir = args.run or cfg.run_dir
    run = RunDirectory(run_dir)
    post = load_posterior(run_dir)
    dataset = MapDataset(cfg.train_path)
    splits = run.read_splits()
    metrics = json.loads(run.metrics_file.read_text())
    idx = np.asarray(metrics["test"]["indices"], dtype=np.int64)
    if args.all_test:
        idx = np.asarray(splits["test"], dtype=np.int64)

    p = cfg.posterior
    seed = cfg.run.seed if args.seed is None else args.seed
    x0 = dataset.maps(idx[:1])
    torch.manual_seed(seed)
    emb = build_embedding(
        p.embedding,
        in_channels=x0.shape[1],
        image_size=x0.shape[2],
        out_features=p.embedding_features,
        invariant=p.invariant,
        **p.embedding_kwargs,
    )
    head = OutsideMaskHead(emb, p.embedding_features)
    t0 = time.perf_counter()
    history = fit_outside_head(
        post,
        dataset,
        np.asarray(splits["train"]),
        np.asarray(splits["validation"]),
        head,
        dataclasses.replace(cfg.training, max_epochs=args.epochs),
        seed=seed,
        augment=cfg.training.augment == "d4",
        progress=sys.stderr.isatty(),
    )
    train_s = time.perf_counter() - t0

    x, m, y = dataset.maps(idx), dataset.mask(idx), dataset.exsitu(idx)
    labels = np.asarray(dataset.labels["f_ex"], dtype=np.float64)[idx]
    samples = post.sample(x, 100, seed=cfg.run.seed, mask=m)
    w, _ = post.mass_weights(x, m)
    f_in = implied_fex(samples, w)
    f_gal = galaxy_fex(post, head, x, m, samples, seed=cfg.run.seed)
    f_true = implied_fex(y[:, None], w)[:, 0]
    with torch.inference_mode():
        head_mean = head.eval()(torch.from_numpy(x))[0].numpy()
    scalar_run = args.scalar_run or run_dir.parent / (run_dir.name + "-scalar")
    scalar = load_posterior(scalar_run)
    sc = np.median(scalar.sample(x, 1000, seed=cfg.run.seed)[..., 0], axis=1)
    sc_scatter = point_metrics(sc, labels)
    gal = point_metrics(np.median(f_gal, axis=1), labels)
    out = {
        "config": str(args.config),
        "run": str(run_dir),
        "scalar_run": str(scalar_run),
        "n_eval": len(idx),
        "head_seed": seed,
        "head_epochs": len(history["val_loss"]),
        "head_train_seconds": train_s,
        "map_in_mask_vs_label": point_metrics(np.median(f_in, axis=1), labels),
        "map_galaxy_vs_label": gal,
        "galaxy_coverage_error_68": _coverage_error(f_gal, labels, 0.68),
        "galaxy_coverage_error_95": _coverage_error(f_gal, labels, 0.95),
        "true_map_vs_label": point_metrics(f_true, labels),
        "true_map_plus_head_vs_label": point_metrics(f_true + head_mean, labels),
        "scalar_vs_label": sc_scatter,
        "galaxy_scatter_over_scalar": gal["scatter"] / sc_scatter["scatter"],
    }
    out["goal_fex_scatter_le_1.2x_scalar"] = out["galaxy_scatter_over_scalar"] <= 1.2
    print(json.dumps(out))


if __name__ == "__main__":
    main()
