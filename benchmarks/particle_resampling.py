"""Benchmark: how far the f_ex posterior moves with fewer or more star particles.

Re-draws test-split galaxies of a trained mock run and compares posterior medians
with those of the galaxy as trained (at the run's particle cap), in units of that
posterior's std:

* fewer: a random 1/2 and 1/4 of the star particles (masses scaled up so M* is
  unchanged, as a coarser simulation would give);
* more: the same galaxy drawn with 2x and 5x the particle cap (lighter
  particles, as a finer simulation would give), rendered as it is (``raw``, the
  baseline) and capped back to the run's training cap (``capped``, what
  ``sbi-exsitu render --like RUN`` does, :func:`cap_particles`).

Prints, last, one JSON line whose ``median_abs_shift_over_std`` is the median
over views of both "fewer" factors (goal <= 0.5: the posterior should not be
keyed on particle noise), beside the "more" medians, raw and capped, and the
median shift of the posterior median itself (``median_shift_*``: signed, a
smoother map read low gives a negative shift). Each view is one number; views of
one galaxy are not independent, so the JSON also gives the galaxy count.

The run: ``--run DIR`` (a run trained on a ``simulate`` dataset); by default
``runs/quickstart`` when present (``bash scripts/quickstart.sh`` makes it). The
JSON line names the run it used.

Usage::

    python benchmarks/particle_resampling.py --run runs/quickstart --galaxies 40
    python benchmarks/particle_resampling.py --run runs/quickstart --more 2 5 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from sbi_exsitu.data.particles import subsample
from sbi_exsitu.data.render import render_views
from sbi_exsitu.data.render_files import cap_particles
from sbi_exsitu.data.simulate import draw_galaxy, stored_simulation, views_for_fex
from sbi_exsitu.posteriors import load_posterior
from sbi_exsitu.seeding import derive_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--more", type=int, nargs="*", default=[2, 5],
        help="factors of the particle cap for the 'more particles' galaxies",
    )  # fmt: skip
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
    cap = int(cfg.model_params["max_particles"])
    floor = int(cfg.model_params.get("min_particles", cap))
    shifts: dict[int, list[float]] = {2: [], 4: []}
    more: dict[str, list[float]] = {}
    signed: dict[str, list[float]] = {}
    for gid in gids:
        p, info = draw_galaxy(cfg, int(gid))
        n_views = views_for_fex(info["f_ex"], cfg.balance_edges, cfg.balance_views)
        if cfg.views != "balanced":
            n_views = int(cfg.views)
        full = post.summarize(render_views(p, render, n_views).maps, args.samples)

        def shift(galaxy, key=None, views=n_views, ref=full):
            # Bound as defaults: one closure per galaxy of the loop.
            maps = render_views(galaxy, render, views).maps
            moved = post.summarize(maps, args.samples)
            delta = moved.median[:, 0] - ref.median[:, 0]
            if key is not None:
                signed.setdefault(key, []).extend(delta.tolist())
            return np.abs(delta / ref.std[:, 0]).tolist()

        for factor in shifts:
            seed = derive_seed(args.seed, "resample", int(gid))
            shifts[factor].extend(shift(subsample(p, len(p) // factor, seed)))
        for factor in args.more:
            finer = dataclasses.replace(
                cfg,
                model_params={
                    **cfg.model_params,
                    "max_particles": cap * factor,
                    "min_particles": floor * factor,
                },
            )
            dense, _ = draw_galaxy(finer, int(gid))
            seed = derive_seed(args.seed, "cap", int(gid), factor)
            raw, capped = f"more_x{factor}_raw", f"more_x{factor}_capped"
            more.setdefault(raw, []).extend(shift(dense, raw))
            capped_galaxy = cap_particles(dense, cap, seed)
            more.setdefault(capped, []).extend(shift(capped_galaxy, capped))
    everything = np.concatenate([shifts[2], shifts[4]])
    result = {
        "benchmark": "particle_resampling",
        "run": str(args.run),
        "galaxies": int(len(gids)),
        "views": int(len(shifts[2])),
        "particle_cap": cap,
        "median_abs_shift_over_std_half": round(float(np.median(shifts[2])), 3),
        "median_abs_shift_over_std_quarter": round(float(np.median(shifts[4])), 3),
    }
    for key, values in more.items():
        result[f"median_abs_shift_over_std_{key}"] = round(float(np.median(values)), 3)
        result[f"median_shift_{key}"] = round(float(np.median(signed[key])), 4)
        result[f"p90_abs_shift_over_std_{key}"] = round(
            float(np.quantile(values, 0.9)), 3
        )
    result["median_abs_shift_over_std"] = round(float(np.median(everything)), 3)
    result["goal"] = 0.5
    print(json.dumps(result))


if __name__ == "__main__":
    main()
