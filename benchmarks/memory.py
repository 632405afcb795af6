"""Peak memory of training on a paper-size dataset (24,000 maps of 5x128x128).

Usage: ``python benchmarks/memory.py [--n 24000] [--resolution 128] [--epochs 1]``

Writes a synthetic dataset of that size (random maps, 8 views per galaxy) with the
project's own ``DatasetWriter``, then runs the real ``fit`` on it for one epoch with
a 1 GB in-memory budget, so the maps stream from HDF5 batch by batch. Prints the
peak resident memory of the process (``ru_maxrss``) and, as the LAST line, one JSON
object. For scale: holding the maps in memory would need ``maps_gb``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    from sbi_exsitu.config.experiment import ExperimentConfig
    from sbi_exsitu.data.dataset import DatasetWriter
    from sbi_exsitu.data.render import RenderConfig, RenderedViews
    from sbi_exsitu.device import configure_threads
    from sbi_exsitu.training.fit import fit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24_000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to write the dataset")
    args = ap.parse_args()
    configure_threads()
    res, views = args.resolution, 8
    work = Path(args.dir or tempfile.mkdtemp(prefix="sbi-exsitu-mem-"))
    data = work / "paper-size.h5"
    cfg_render = RenderConfig(resolution=res)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if not data.exists():
        with DatasetWriter(data, cfg_render) as w:
            for g in range(args.n // views):
                f_ex = float(rng.uniform(0.01, 0.99))
                maps = (f_ex + rng.standard_normal((views, 5, res, res))).astype(
                    np.float32
                )
                w.add_galaxy(
                    RenderedViews(
                        maps=maps,
                        exsitu=np.full((views, res, res), f_ex, np.float32),
                        mask=np.ones((views, res, res), bool),
                        directions=np.zeros((views, 3)),
                    ),
                    galaxy_id=g,
                    f_ex=f_ex,
                    log_mstar=11.0,
                    half_mass_radius=5.0,
                    model="synthetic",
                )
    write_s = time.perf_counter() - t0
    rss_after_write = rss_gb()
    cfg = ExperimentConfig.from_dict(
        {
            "run": {"name": "memory", "out_dir": str(work / "runs")},
            "data": {"train": str(data), "memory_limit_gb": 1.0},
            "posterior": {"ensemble_size": 1},
            "training": {"max_epochs": args.epochs, "batch_size": 128},
        }
    )
    t1 = time.perf_counter()
    result = fit(cfg, overwrite=True, progress=False, evaluate=False)
    train_s = time.perf_counter() - t1
    maps_gb = args.n * 5 * res * res * 4 / 2**30
    print(
        f"dataset {args.n} x 5x{res}x{res} ({maps_gb:.1f} GB of maps) written in "
        f"{write_s:.0f} s; one epoch streamed in {train_s:.0f} s; "
        f"peak RSS {rss_gb():.2f} GB"
    )
    print(
        json.dumps(
            {
                "n_maps": args.n,
                "resolution": res,
                "maps_gb": round(maps_gb, 2),
                "n_train": result.metrics["n_train"],
                "epochs": args.epochs,
                "write_s": round(write_s, 1),
                "train_s": round(train_s, 1),
                "peak_rss_gb_after_write": round(rss_after_write, 3),
                "peak_rss_gb": round(rss_gb(), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
