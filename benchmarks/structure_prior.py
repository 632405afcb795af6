"""Benchmark: does the mock prior cover a real simulated galaxy's structure?

Issue #18's held-out check: a galaxy from a third-party zoom run (M* = 8.9e10
Msun, 3D half-mass radius 12.4 kpc, 74,661 star particles) filled 87-97% of a
32 px, 4 r_e frame, against the mocks' median 54% at the time, and no mock of its
mass had r_e above 7.6 kpc. This script draws ``--galaxies`` mock galaxies of the
formation model at fixed log M* (default that galaxy's) and reports the prior's
1 / 50 / 99% ranges of

* the 3D stellar half-mass radius r_e (kpc), at each mass of ``--masses`` too;
* the frame fill: the fraction of a ``--resolution`` px, 4 r_e frame kept by the
  default render config's ``min_count = 3`` particle cut (how the real galaxy's
  87-97% and the mocks' 54% were measured), at the model's
  own particle count (``--max-particles``, the quickstart's cap) and at TNG100's
  (M*/1.4e6 Msun: 64k particles at 8.9e10, about the real galaxy's 74,661);
* the fill of the quickstart's count-robust mask (``min_density_re = 0.25``),
  which is what the posterior sees and does not move with the particle count.

One view per galaxy along a random-orientation polyhedron direction (views of
one galaxy are not independent draws of the prior: n = galaxies). The real
galaxy is inside the prior when its r_e and fill lie between the 1st and 99th
percentiles. Prints, last, one JSON line.

Usage::

    python benchmarks/structure_prior.py [--model tng-like] [--galaxies 400]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from sbi_exsitu.data.mock import get_model  # noqa: E402
from sbi_exsitu.data.render import pixel_mask, pixel_statistics  # noqa: E402
from sbi_exsitu.data.render_config import RenderConfig  # noqa: E402
from sbi_exsitu.seeding import derive_seed  # noqa: E402

#: The held-out galaxy of issue #18 (third-party zoom run, TNG schema).
REAL = {"log_mstar": float(np.log10(8.9e10)), "r_e_kpc": 12.4, "fill": (0.87, 0.97)}
#: TNG100-1 target baryonic particle mass (Nelson et al. 2019, table 1).
TNG100_PARTICLE_MASS = 1.4e6


def _percentiles(x: list[float] | np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(x, [1, 50, 99])]


def _fills(particles, direction, res: int) -> tuple[float, float]:
    """Fill of the default ``min_count`` cut, and of the count-robust density mask."""
    count_cfg = RenderConfig(resolution=res)
    stats = pixel_statistics(particles, direction, count_cfg)
    dense = RenderConfig(resolution=res, min_density_re=0.25)
    return (
        float(np.mean(pixel_mask(stats, count_cfg))),
        float(np.mean(pixel_mask(stats, dense))),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tng-like")
    ap.add_argument("--galaxies", type=int, default=400)
    ap.add_argument("--log-mstar", type=float, default=REAL["log_mstar"])
    ap.add_argument("--masses", type=float, nargs="*", default=[10.25, 10.75, 11.5])
    ap.add_argument("--max-particles", type=int, default=12_000)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    capped = get_model(args.model, max_particles=args.max_particles)
    n_tng = int(round(10**args.log_mstar / TNG100_PARTICLE_MASS))
    full = get_model(args.model, max_particles=max(n_tng, args.max_particles))
    rng = np.random.default_rng(args.seed)
    r_e, fill_cap, fill_tng, dense_cap, dense_tng, fex = [], [], [], [], [], []
    for i in range(args.galaxies):
        seed = derive_seed(args.seed, "structure", i)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        p, info = capped.draw(seed, log_mstar=args.log_mstar)
        q, _ = full.draw(seed, log_mstar=args.log_mstar)
        r_e.append(info["half_mass_radius"])
        fex.append(info["f_ex"])
        f, d = _fills(p, direction, args.resolution)
        fill_cap.append(f)
        dense_cap.append(d)
        f, d = _fills(q, direction, args.resolution)
        fill_tng.append(f)
        dense_tng.append(d)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{args.galaxies} galaxies", file=sys.stderr)
    r_e_at = {}
    for m in args.masses:
        sizes = [
            capped.draw(
                derive_seed(args.seed, "size", int(round(m * 100)), i), log_mstar=m
            )[1]["half_mass_radius"]
            for i in range(args.galaxies // 2)
        ]
        r_e_at[f"{m:.2f}"] = _percentiles(sizes)
    r = np.asarray(r_e)
    lo, hi = np.percentile(r, [1, 99])
    big = r >= np.percentile(r, 90)
    f_lo, f_hi = np.percentile(fill_tng, [1, 99])
    out = {
        "model": args.model,
        "n_galaxies": args.galaxies,
        "log_mstar": round(args.log_mstar, 3),
        "r_e_kpc_1_50_99": _percentiles(r),
        "r_e_kpc_1_50_99_at_mass": r_e_at,
        "fraction_r_e_above_real": round(float(np.mean(r >= REAL["r_e_kpc"])), 4),
        "median_f_ex_largest_decile": round(float(np.median(np.asarray(fex)[big])), 3),
        "median_f_ex": round(float(np.median(fex)), 3),
        f"fill_1_50_99_cap_{args.max_particles}": _percentiles(fill_cap),
        f"fill_1_50_99_tng100_{n_tng}": _percentiles(fill_tng),
        f"density_mask_fill_1_50_99_cap_{args.max_particles}": _percentiles(dense_cap),
        f"density_mask_fill_1_50_99_tng100_{n_tng}": _percentiles(dense_tng),
        "real_r_e_inside": bool(lo <= REAL["r_e_kpc"] <= hi),
        "real_fill_inside_at_tng100_count": bool(f_lo <= 0.9 <= f_hi),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
