"""How far off? Per-galaxy estimates of a posterior's error against the real one (#17).

On the tng-like -> eagle-like all-channel 4 r_e cell of
``benchmarks/misspecification.py`` (its cached 500-galaxy posterior), the first
view of each of 1,500 fresh galaxies per model is scored with the default
detector (profiles + flow, fitted on the training split) and compared, per
galaxy, with the real error ``e = posterior median - true f_ex``:

* ``nn_k{k}``: today's ``misspec_shift`` = median - mean true f_ex of the ``k``
  training maps nearest in the detector's space (``k = 5`` is the package's);
* ``resid_k{k}``: mean real error of the ``k`` nearest in-distribution maps
  (validation split + 500 fresh galaxies, where the truth is known);
* ``shrunk_k{k}``: ``nn_k{k}`` times the least-squares slope of ``e`` on it over
  those in-distribution maps (the best linear predictor of e there);
* ``posterior_std``: the posterior's own standard deviation (a scale, no sign);
* ``member_spread`` (``--run`` an ensemble): the standard deviation of the
  members' medians (ensemble disagreement, a scale).

Per estimate ``s``: Spearman of ``|s|`` vs ``|e|``, of ``s`` vs ``e``, and
``mean|s| / mean|e|``; on all galaxies and on the flagged ones.

Usage::

    python benchmarks/misspec_shift.py [--out runs/bench-misspec] [--run RUN]

Prints one line per test set, then as the LAST line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RUN = "runs/tng-like__n500__e10__all"


def _first(ds: Any, idx: np.ndarray) -> np.ndarray:
    _, first = np.unique(ds.labels["galaxy_id"][idx], return_index=True)
    return np.sort(idx[first])


def _stats(s: np.ndarray, e: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    return {
        "spearman_abs": round(float(spearmanr(np.abs(s), np.abs(e))[0]), 3),
        "spearman": round(float(spearmanr(s, e)[0]), 3),
        "ratio": round(float(np.abs(s).mean() / np.abs(e).mean()), 2),
        "mean": round(float(s.mean()), 4),
    }


def _nn_mean(z: np.ndarray, ref: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    import torch

    d = torch.cdist(torch.from_numpy(z), torch.from_numpy(ref))
    return values[d.topk(k, dim=1, largest=False).indices.numpy()].mean(axis=1)


def main(argv: list[str] | None = None) -> dict:
    from sbi_exsitu.data.dataset import MapDataset
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.evaluation.misspecification import MisspecificationDetector
    from sbi_exsitu.posteriors.scalar import ExSituPosterior

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-misspec"))
    ap.add_argument("--run", default=RUN, help="the posterior's run, under --out")
    args = ap.parse_args(argv)
    configure_threads(1)  # 2 cores shared by several engineers
    out = Path(args.out)
    post = ExSituPosterior.load(out / args.run)

    def median_std(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        draws = post.sample(maps, 200, seed=0, progress=False)[:, :, 0]
        return np.median(draws, axis=1), draws.std(axis=1)

    data = out / "data"
    with (
        MapDataset(data / "tng-like__n500__all5.h5") as src,
        MapDataset(data / "tng-like-fresh__n500__all5.h5") as fresh,
    ):
        sp = src.splits(seed=0)
        det = MisspecificationDetector.fit(post, src, sp["train"], sp["validation"])
        fi = _first(fresh, np.arange(len(fresh)))
        ref_maps = np.concatenate([src.maps(sp["validation"]), fresh.maps(fi)])
        ref_true = np.r_[src.labels["f_ex"][sp["validation"]], fresh.labels["f_ex"][fi]]
    ref_z = det.standardize(det.represent(post, ref_maps))
    ref_err = median_std(ref_maps)[0] - ref_true
    rows: dict[str, Any] = {}
    for name in ("eagle-like", "tng-like"):
        with MapDataset(data / f"{name}-fresh1__n1500__all5.h5") as ds:
            idx = _first(ds, np.arange(len(ds)))
            maps, truth = ds.maps(idx), ds.labels["f_ex"][idx]
        med, std = median_std(maps)
        err = med - truth
        raw = det.represent(post, maps)
        z, flag = det.standardize(raw), det.score_embeddings(raw).flag
        est = {"posterior_std": std}
        if len(post.members) > 1:
            meds = [
                np.median(m.sample(maps, 200, seed=0, progress=False)[:, :, 0], 1)
                for m in post.members
            ]
            est["member_spread"] = np.std(meds, axis=0)
        for k in (5, 25, 100):
            est[f"nn_k{k}"] = med - _nn_mean(z, det.reference, det.reference_targets, k)
            s_ref = (
                ref_err
                + ref_true
                - _nn_mean(ref_z, det.reference, det.reference_targets, k)
            )
            slope = np.cov(ref_err, s_ref)[0, 1] / np.var(s_ref, ddof=1)
            est[f"shrunk_k{k}"] = slope * est[f"nn_k{k}"]
        for k in (10, 50):
            est[f"resid_k{k}"] = _nn_mean(z, ref_z, ref_err, k)
        row = {
            "n": len(idx),
            "bias": round(float(err.mean()), 4),
            "mean_abs_error": round(float(np.abs(err).mean()), 4),
            "flag_rate": round(float(flag.mean()), 3),
            "all": {k: _stats(s, err) for k, s in est.items()},
            "n_flagged": int(flag.sum()),
            "bias_flagged": round(float(err[flag].mean()), 4),
            "flagged": {k: _stats(s[flag], err[flag]) for k, s in est.items()},
        }
        print(name, json.dumps(row), flush=True)
        rows[name] = row
    result = {
        "run": args.run,
        "tests": rows,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
