"""Choose the kernel of the smoothed ex-situ target (issue #19) by measurement.

For galaxies of a mock formation model, one draw with ``--ref-factor`` times
the particle count of the training sets (``--particles``) is split at random
into a training-like subset of ``--particles`` particles and the disjoint rest
(same structure, orientation, r_e and cameras): the per-pixel ex-situ fraction
of the rest is, up to its own smaller and independent shot noise (the same
for every candidate), the expected fraction the target should estimate.
For each candidate kernel (a fixed Gaussian width in pixels, or a width
adapted to the particle count per pixel) it prints the RMSE against the
reference over the unmasked pixels and the share of pixels exactly 0 or 1.

Usage::

    python benchmarks/exsitu_target.py [--galaxies 24] [--resolution 32]

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from sbi_exsitu.data.cameras import polyhedron_vertices  # noqa: E402
from sbi_exsitu.data.exsitu_target import smoothed_exsitu_fraction  # noqa: E402
from sbi_exsitu.data.mock.registry import get_model  # noqa: E402
from sbi_exsitu.data.particles import Particles  # noqa: E402
from sbi_exsitu.data.render import (  # noqa: E402
    RenderConfig,
    pixel_mask,
    pixel_statistics,
)
from sbi_exsitu.data.simulate import galaxy_seed  # noqa: E402

FIXED = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0)
ADAPTIVE = (2.0, 3.0, 4.0)  # sigma_p = k / sqrt(count_p), clipped to [0, 2]


def _adaptive(stats, k: float) -> np.ndarray:
    """Per-pixel width k / sqrt(N_p), picked from a ladder of fixed widths."""
    ladder = np.array(FIXED)
    fr = np.stack(
        [smoothed_exsitu_fraction(stats.mass, stats.exsitu_fraction, s) for s in ladder]
    )
    want = np.clip(k / np.sqrt(np.maximum(stats.count, 1.0)), 0.0, ladder[-1])
    pick = np.abs(want[None] - ladder[:, None, None]).argmin(axis=0)
    return np.take_along_axis(fr, pick[None], axis=0)[0]


def _subset(p: Particles, sel: np.ndarray) -> Particles:
    """The selected particles, same r_e (same pixel grid), masses rescaled."""
    return Particles(
        pos=p.pos[sel],
        vel=p.vel[sel],
        mass=p.mass[sel] * len(sel) / sel.sum(),
        age=p.age[sel],
        metallicity=p.metallicity[sel],
        ex_situ=p.ex_situ[sel],
        half_mass_radius=p.half_mass_radius,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tng-like")
    ap.add_argument("--galaxies", type=int, default=24)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--particles", type=int, default=12000)
    ap.add_argument("--ref-factor", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    cfg = RenderConfig(resolution=args.resolution)
    cams = polyhedron_vertices(args.views)
    names = [f"fixed {s}" for s in FIXED] + [f"adaptive {k}" for k in ADAPTIVE]
    sq = dict.fromkeys(names, 0.0)
    atoms = dict.fromkeys(names, 0)
    n_pix = 0
    n = args.particles
    hi_n = n * args.ref_factor
    hi = get_model(args.model, max_particles=hi_n, min_particles=hi_n)
    for g in range(args.galaxies):
        p, _ = hi.draw(galaxy_seed(args.seed, g))
        pick = np.zeros(len(p.mass), bool)
        pick[np.random.default_rng(g).choice(len(pick), n, replace=False)] = True
        p_lo, p_hi = (_subset(p, sel) for sel in (pick, ~pick))
        for d in cams:
            s_lo = pixel_statistics(p_lo, d, cfg)
            ref = pixel_statistics(p_hi, d, cfg).exsitu_fraction
            m = pixel_mask(s_lo, cfg) & np.isfinite(ref)
            n_pix += int(m.sum())
            for name in names:
                kind, v = name.split()
                t = (
                    smoothed_exsitu_fraction(s_lo.mass, s_lo.exsitu_fraction, float(v))
                    if kind == "fixed"
                    else _adaptive(s_lo, float(v))
                )
                sq[name] += float(np.sum((t[m] - ref[m]) ** 2))
                atoms[name] += int(np.sum((t[m] == 0) | (t[m] == 1)))
    out = {
        "model": args.model,
        "galaxies": args.galaxies,
        "views": args.views,
        "resolution": args.resolution,
        "particles": n,
        "reference_particles": hi_n,
        "n_pixels": n_pix,
        "rmse_vs_reference": {k: float(np.sqrt(v / n_pix)) for k, v in sq.items()},
        "atom_fraction": {k: v / n_pix for k, v in atoms.items()},
    }
    for k in names:
        print(
            f"{k:14s} rmse {out['rmse_vs_reference'][k]:.4f}  "
            f"atoms {out['atom_fraction'][k]:.3f}",
            file=sys.stderr,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
