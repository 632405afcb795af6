"""Benchmark: how much the f_ex posterior moves when a galaxy has fewer particles.

Re-draws test-split galaxies of a trained mock run, keeps a random 1/2 and 1/4 of
their star particles (masses scaled up so M* is unchanged, as a coarser
simulation would give), renders them with the run's cameras and config, and
compares posterior medians with those of the full galaxy, in units of the full
galaxy's posterior std. Prints, last, one JSON line whose
``median_abs_shift_over_std`` is the median over views and both factors (goal
<= 0.5: the posterior should not be keyed on particle noise).

The run: ``--run DIR`` (a run trained on a ``simulate`` dataset); by default
``runs/quickstart`` when present (``bash scripts/quickstart.sh`` makes it). The
JSON line names the run it used.

Usage::

    python benchmarks/particle_resampling.py --run runs/quickstart --galaxies 40
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sbi_exsitu.data.particles import subsample
from sbi_exsitu.data.render import render_views
from sbi_exsitu.data.simulate import draw_galaxy, stored_simulation, views_for_fex
from sbi_exsitu.posteriors import load_posterior
from sbi_exsitu.seeding import derive_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.run / "model.json").is_file():
        sys.exit(
            f"{args.run}: no trained run (model.json missing); run "
            "`bash scripts/quickstart.sh` first or pass --run DIR"
        )
    post = load_posterior(args.run)
    data, test = post.test_split()
    with data:
        # The stored full model parameters: exact re-draws under later defaults.
        cfg = stored_simulation(data.attrs)
        gids = np.unique(data.labels["galaxy_id"][test])[: args.galaxies]
    render = post.render_config
    shifts: dict[int, list[float]] = {2: [], 4: []}
    for gid in gids:
        p, info = draw_galaxy(cfg, int(gid))
        n_views = views_for_fex(info["f_ex"], cfg.balance_edges, cfg.balance_views)
        if cfg.views != "balanced":
            n_views = int(cfg.views)
        full = post.summarize(render_views(p, render, n_views).maps, args.samples)
        for factor in shifts:
            seed = derive_seed(args.seed, "resample", int(gid))
            coarse = subsample(p, len(p) // factor, seed)
            s = post.summarize(render_views(coarse, render, n_views).maps, args.samples)
            d = np.abs(s.median[:, 0] - full.median[:, 0]) / full.std[:, 0]
            shifts[factor].extend(d.tolist())
    everything = np.concatenate([shifts[2], shifts[4]])
    print(
        json.dumps(
            {
                "benchmark": "particle_resampling",
                "run": str(args.run),
                "galaxies": int(len(gids)),
                "views": int(len(shifts[2])),
                "median_abs_shift_over_std_half": round(float(np.median(shifts[2])), 3),
                "median_abs_shift_over_std_quarter": round(
                    float(np.median(shifts[4])), 3
                ),
                "median_abs_shift_over_std": round(float(np.median(everything)), 3),
                "goal": 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
