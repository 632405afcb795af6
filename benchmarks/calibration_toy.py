"""False-verdict rate of the calibration rule when views share a galaxy.

A toy where the truth is known and the posterior is EXACT, but the test
observations are correlated by construction, as the views of one galaxy are:
``G`` galaxies, ``theta_g ~ N(0, 1)``, and ``V`` views per galaxy
``x_gv = theta_g + e_g + eta_gv`` with galaxy-level noise ``e_g ~ N(0, 0.5^2)``
shared by all its views and a small view-level noise ``eta_gv ~ N(0, 0.1^2)``.
Each view's exact posterior (given that view alone) is
``N(x / (1 + s^2), s^2 / (1 + s^2))`` with ``s^2 = 0.5^2 + 0.1^2``, so the views'
posteriors are nearly identical (correlation of their means ~0.96).

An exact posterior should be judged ``calibrated`` in all but a few percent of
test sets; anything else is a false verdict. Each repeat draws a fresh test set
and posterior draws (seeded), and judges it with

- the galaxy-aware rule (:func:`sbi_exsitu.evaluation.calibration.verdict.judge`
  with the galaxy ids), and
- the previous view-counting rule (KS, mean-PIT z and tolerance ``1.63/sqrt(n)``
  all with ``n`` = views), which is what ``judge`` does without ids.

Usage::

    python benchmarks/calibration_toy.py [--repeats 200] [--galaxies 100] [--views 6]

A table, then, as the last line, one JSON object with both rates.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sbi_exsitu.evaluation.calibration import metrics as M
from sbi_exsitu.evaluation.calibration.verdict import BIAS_Z, SBC_ALPHA, judge

__all__ = ["NOMINAL_RATE", "main", "run", "simulate_test_set"]

SIGMA_GALAXY, SIGMA_VIEW = 0.5, 0.1
LEVELS = np.linspace(0.0, 1.0, 101)
# Upper bound on the rule's rate for a calibrated posterior: coverage (1%) + SBC
# (1%, D = 1; 2 x median is conservative) + PIT location (|z| > 3: 0.27%).
NOMINAL_RATE = 0.01 + SBC_ALPHA + 0.0027


def simulate_test_set(
    galaxies: int, views: int, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SBC ranks ``(n, 1)``, HPD credibilities ``(n,)`` and galaxy ids ``(n,)``."""
    theta = rng.standard_normal(galaxies)
    x = (
        theta[:, None]
        + SIGMA_GALAXY * rng.standard_normal((galaxies, 1))
        + SIGMA_VIEW * rng.standard_normal((galaxies, views))
    ).reshape(-1)
    s2 = SIGMA_GALAXY**2 + SIGMA_VIEW**2
    mean, sd = x / (1 + s2), np.sqrt(s2 / (1 + s2))
    truth = np.repeat(theta, views)
    draws = mean[:, None] + sd * rng.standard_normal((x.size, num_samples))
    ranks = (draws < truth[:, None]).sum(axis=1)[:, None]
    # Gaussian log-density up to a constant is enough to rank draws vs the truth.
    cred = M.hpd_credibility(-((draws - mean[:, None]) ** 2), -((truth - mean) ** 2))
    return ranks, cred, np.repeat(np.arange(galaxies), views)


def run(
    repeats: int = 200,
    galaxies: int = 100,
    views: int = 6,
    num_samples: int = 200,
    seed: int = 0,
) -> dict:
    """Judge ``repeats`` seeded test sets with both rules; rates and breakdown."""
    rng = np.random.default_rng(seed)
    out = {
        rule: {"not_calibrated": 0, "coverage": 0, "sbc": 0, "pit_bias": 0}
        for rule in ("new_rule", "old_rule")
    }
    for r in range(repeats):
        ranks, cred, groups = simulate_test_set(galaxies, views, num_samples, rng)
        _, cov = M.expected_coverage(cred, LEVELS)
        err = M.max_coverage_error(LEVELS, cov)
        for rule, g in (("new_rule", groups), ("old_rule", None)):
            j = judge(ranks, num_samples, cred, LEVELS, g, seed=r)
            o = out[rule]
            o["not_calibrated"] += j.verdict != "calibrated"
            o["coverage"] += err > j.tolerance
            o["sbc"] += float(j.sbc_pvalues.min()) < SBC_ALPHA
            o["pit_bias"] += bool(np.any(np.abs(j.pit_bias_z) > BIAS_Z))
            o["tolerance"] = o.get("tolerance", 0.0) + j.tolerance / repeats
            o["n"] = j.n_galaxies
    result: dict = {}
    for rule, o in out.items():
        result[rule] = {
            "false_verdict_rate": o["not_calibrated"] / repeats,
            "coverage_flag_rate": o["coverage"] / repeats,
            "sbc_flag_rate": o["sbc"] / repeats,
            "pit_bias_flag_rate": o["pit_bias"] / repeats,
            "mean_tolerance": round(o["tolerance"], 4),
            "n_counted": o["n"],
        }
    result |= {
        "nominal_rate_bound": NOMINAL_RATE,
        "n_repeats": repeats,
        "galaxies": galaxies,
        "views": views,
        "num_samples": num_samples,
        "seed": seed,
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--galaxies", type=int, default=100)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.repeats, args.galaxies, args.views, args.num_samples, args.seed)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    print(
        f"{args.galaxies} galaxies x {args.views} views, exact posterior, "
        f"{args.repeats} repeats (nominal rate <= {NOMINAL_RATE:.4f})"
    )
    print(f"{'rule':<10}{'n':>6}{'false verdict':>15}{'coverage':>10}"
          f"{'SBC':>8}{'PIT z':>8}{'mean tol':>10}")  # fmt: skip
    for rule in ("new_rule", "old_rule"):
        o = res[rule]
        print(
            f"{rule:<10}{o['n_counted']:>6}{o['false_verdict_rate']:>15.3f}"
            f"{o['coverage_flag_rate']:>10.3f}{o['sbc_flag_rate']:>8.3f}"
            f"{o['pit_bias_flag_rate']:>8.3f}{o['mean_tolerance']:>10.4f}"
        )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
