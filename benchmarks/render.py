"""Benchmark :func:`sbi_exsitu.data.render.pixel_statistics` against scipy.

The paper's code (Angeloudi et al. 2023, table A4) bins each map with its own
``scipy.stats.binned_statistic_2d`` call: sum of mass, mean and std of the
line-of-sight velocity, mean age and mean metallicity. We render the same seeded
galaxies (a Hernquist spheroid plus a rotating exponential disc) both ways with
the same projection and pixel edges, check the maps agree to float tolerance
(NaN-aware), and time both.

Usage::

    python benchmarks/render.py [--sizes 1e4 1e5 1e6] [--resolution 128]

One readable line per size, then, as the last line, one JSON object with the
per-size results under ``"results"`` and the 1e5-particle case at top level.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import stats as sps

from sbi_exsitu.data.cameras import camera_basis
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.render import RenderConfig, pixel_statistics

__all__ = ["make_galaxy", "scipy_maps", "ours_maps", "main"]

# Not along an axis, so the projection mixes all three coordinates.
DIRECTION = np.array([0.3, -0.5, 0.81])


def make_galaxy(n: int, seed: int = 0) -> Particles:
    """A Hernquist spheroid (30%, ex-situ) plus a rotating disc (70%, in-situ)."""
    rng = np.random.default_rng(seed)
    n_sph = int(0.3 * n)
    n_disc = n - n_sph
    # Hernquist: M(<r)/M = r^2 / (r + a)^2  ->  r = a sqrt(u) / (1 - sqrt(u)).
    u = np.sqrt(rng.uniform(0, 0.98, n_sph))
    r = 2.0 * u / (1 - u)
    direction = rng.normal(size=(n_sph, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    pos_sph = r[:, None] * direction
    vel_sph = rng.normal(0, 150, (n_sph, 3))
    # Exponential disc: scale length 3 kpc, height 0.3 kpc, flat rotation curve.
    rd = rng.gamma(2.0, 3.0, n_disc)
    phi = rng.uniform(0, 2 * np.pi, n_disc)
    pos_disc = np.column_stack(
        [rd * np.cos(phi), rd * np.sin(phi), rng.laplace(0, 0.3, n_disc)]
    )
    v_rot = 200 * (1 - np.exp(-rd / 1.5))
    vel_disc = np.column_stack([-v_rot * np.sin(phi), v_rot * np.cos(phi), 0 * rd])
    vel_disc += rng.normal(0, 30, (n_disc, 3))
    return Particles(
        pos=np.vstack([pos_sph, pos_disc]),
        vel=np.vstack([vel_sph, vel_disc]),
        mass=rng.uniform(0.5e6, 1.5e6, n),
        age=np.r_[rng.uniform(8, 13, n_sph), rng.uniform(0.5, 10, n_disc)],
        metallicity=np.r_[
            rng.uniform(0.002, 0.01, n_sph), rng.uniform(0.01, 0.03, n_disc)
        ],
        ex_situ=np.r_[np.ones(n_sph, bool), np.zeros(n_disc, bool)],
        name=f"bench-{n}",
    )


def scipy_maps(p: Particles, config: RenderConfig) -> dict[str, np.ndarray]:
    """The paper's way: one ``binned_statistic_2d`` call per map, (H, W) = [y, x]."""
    e1, e2, los = camera_basis(DIRECTION)
    half = 0.5 * config.fov_re * p.half_mass_radius
    edges = np.linspace(-half, half, config.resolution + 1)
    x, y = p.pos @ e1, p.pos @ e2
    v = -(p.vel @ los)
    out = {}
    for name, values, statistic in (
        ("mass", p.mass, "sum"),
        ("velocity", v, "mean"),
        ("dispersion", v, "std"),
        ("age", p.age, "mean"),
        ("metallicity", p.metallicity, "mean"),
    ):
        res = sps.binned_statistic_2d(x, y, values, statistic, bins=[edges, edges])
        out[name] = res.statistic.T  # scipy indexes [x, y]
    return out


def ours_maps(p: Particles, config: RenderConfig) -> dict[str, np.ndarray]:
    """Our single-pass binning, same maps as :func:`scipy_maps`."""
    s = pixel_statistics(p, DIRECTION, config)
    return {
        "mass": s.mass,
        "velocity": s.velocity,
        "dispersion": s.dispersion,
        "age": s.age,
        "metallicity": s.metallicity,
    }


def _best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[bool, str]:
    for name in a:
        x, y = a[name], b[name]
        if name == "mass":
            # scipy leaves empty pixels at 0 for "sum", NaN for the others.
            pass
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return False, f"{name}: NaN patterns differ"
        ok = np.isfinite(x)
        scale = np.nanmax(np.abs(y)) or 1.0
        if not np.allclose(x[ok], y[ok], rtol=1e-9, atol=1e-9 * scale):
            err = np.max(np.abs(x[ok] - y[ok]))
            return False, f"{name}: max abs difference {err:.3g}"
    return True, ""


def run(n: int, resolution: int, repeat: int) -> dict[str, float | int | bool]:
    """Time both renderers on one galaxy of ``n`` particles."""
    p = make_galaxy(n)
    config = RenderConfig(resolution=resolution, weighting="none")
    equal, why = _equal(ours_maps(p, config), scipy_maps(p, config))
    ours = _best_ms(lambda: ours_maps(p, config), repeat)
    ref = _best_ms(lambda: scipy_maps(p, config), max(1, repeat // 2))
    return {
        "n_particles": n,
        "resolution": resolution,
        "ours_ms": round(ours, 3),
        "scipy_ms": round(ref, 3),
        "speedup_vs_scipy": round(ref / ours, 2),
        "maps_equal": equal,
        "mismatch": why,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print the results (last line: JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes:
        n = int(size)
        r = run(n, args.resolution, args.repeat if n < 1e6 else 3)
        results.append(r)
        print(
            f"n={n:>9,d}  {args.resolution}px  ours {r['ours_ms']:9.2f} ms  "
            f"scipy {r['scipy_ms']:9.2f} ms  speedup x{r['speedup_vs_scipy']:6.1f}  "
            f"maps equal: {r['maps_equal']} {r['mismatch']}"
        )
    summary: dict = {"results": results}
    headline = next((r for r in results if r["n_particles"] == 100_000), results[0])
    summary.update(headline)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
