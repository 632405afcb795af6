"""Benchmark ``simulate``: views rendered per second on this machine.

Runs the full pipeline (draw, render, write HDF5) for a tng-like config and prints
one JSON object as its last line, with ``views_per_s``, ``galaxies_per_s``,
``workers``, ``resolution``, ``particles_cap``, ``debris_fraction`` and the
extrapolated
``minutes_for_24000_views_128px`` (the paper's dataset size; goal <= 10 minutes).

With ``--observe`` every view goes through the MaNGA-like observation stage
(PSF, footprint, correlated noise, S/N binning; default ObserveConfig with the
redshift drawn in 0.01-0.15), and the JSON adds ``observed_views_per_s``
(goal >= 20 on 2 cores) next to the idealised ``views_per_s`` of the same
galaxies measured in the same run.

With ``--particle-subsample LO HI`` the idealised run uses the ``[simulate]
particle_subsample`` augmentation (each view its own particle subset).

Usage::

    python benchmarks/simulate.py --workers 2 --galaxies 120 --resolution 128
    python benchmarks/simulate.py --workers 2 --galaxies 20 --resolution 32 --observe
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--galaxies", type=int, default=120)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--model", default="tng-like")
    parser.add_argument("--max-particles", type=int, default=30_000)
    parser.add_argument("--min-particles", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--observe", action="store_true")
    # 0 = the smooth-spheroid world, for the cost of the satellite debris.
    parser.add_argument("--debris-fraction", type=float, default=1.0)
    parser.add_argument(
        "--particle-subsample", type=float, nargs=2, metavar=("LO", "HI")
    )
    args = parser.parse_args()

    doc = {
        "simulate": {
            "model": args.model,
            "n_galaxies": args.galaxies,
            "seed": args.seed,
            "views": "balanced",
            **(
                {"particle_subsample": args.particle_subsample}
                if args.particle_subsample
                else {}
            ),
        },
        "model": {
            "max_particles": args.max_particles,
            "min_particles": args.min_particles,
            "debris_fraction": args.debris_fraction,
        },
        "render": {"resolution": args.resolution},
    }
    cfg = SimulationConfig.from_dict(doc)
    seconds, n_views, size_mb = _run(cfg, args.workers)
    views_per_s = n_views / seconds
    observed = {}
    if args.observe:
        obs_cfg = SimulationConfig.from_dict(
            {**doc, "observe": {"redshift": [0.01, 0.15]}}
        )
        obs_seconds, obs_views, _ = _run(obs_cfg, args.workers)
        observed = {
            "observed_seconds": round(obs_seconds, 3),
            "observed_views_per_s": round(obs_views / obs_seconds, 2),
        }
    print(
        json.dumps(
            {
                "benchmark": "simulate",
                "model": args.model,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "resolution": args.resolution,
                "galaxies": args.galaxies,
                "views": n_views,
                "particles_cap": args.max_particles,
                "debris_fraction": args.debris_fraction,
                "particle_subsample": args.particle_subsample,
                "particles_floor": args.min_particles,
                "seconds": round(seconds, 3),
                "views_per_s": round(views_per_s, 2),
                "galaxies_per_s": round(args.galaxies / seconds, 3),
                "file_mb_per_view": round(size_mb / n_views, 4),
                # Includes pool start-up (~1-2 s); linear in views, resolution fixed.
                "minutes_for_24000_views_128px": (
                    round(24000 / views_per_s / 60, 2)
                    if args.resolution == 128
                    else None
                ),
                **observed,
            }
        )
    )


def _run(cfg: SimulationConfig, workers: int) -> tuple[float, int, float]:
    """(seconds, views, file MB) of one simulate run into a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.h5"
        start = time.perf_counter()
        simulate(cfg, out, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        with MapDataset(out) as ds:
            n_views = len(ds)
        size_mb = out.stat().st_size / 1e6
    return seconds, n_views, size_mb


if __name__ == "__main__":
    main()
