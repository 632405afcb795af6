"""Joint, galaxy-aware calibration of a map posterior (issue #19).

Per-pixel coverage (:mod:`sbi_exsitu.evaluation.map_coverage`) tests each pixel's
marginal; a posterior with the right marginals but the wrong dependence between
pixels passes it and still gets the implied f_ex wrong. This module tests the
joint field:

* **TARP over whole maps** (Lemos et al. 2023, via sbi's ``run_tarp`` through
  :func:`sbi_exsitu.evaluation.calibration.metrics.tarp`): the vector is the whole
  map (0 outside the mask, in truth and draws alike, so masked pixels add
  nothing to the distances). The reference point of each observation depends
  on x -- the posterior mean plus its pixel std times white noise -- because
  Lemos et al. show TARP is *sufficient* for calibration only with
  x-dependent references (the default, uniform references, is also reported).
  Maps are not z-scored: every pixel is already a fraction in [0, 1].
* **SBC on the implied f_ex**, galaxy-aware by
  :func:`sbi_exsitu.evaluation.calibration.verdict.judge` (random one-view-per-galaxy
  picks; the p-value is twice the median over picks).

Views of one galaxy are not independent, so TARP is run on one view per galaxy
(``n_picks`` random picks, the median ATC reported) and its ATC is compared with
the 95% band of a calibrated posterior at that number of galaxies
(:func:`tarp_atc_band`, by simulation of sbi's own estimator).

Example:
    >>> lo, hi = tarp_atc_band(100, 100, n_sim=200, seed=0)
    >>> lo < 0 < hi
    True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from sbi_exsitu.evaluation.calibration import metrics as M
from sbi_exsitu.evaluation.calibration.verdict import judge
from sbi_exsitu.seeding import derive_seed

__all__ = ["joint_map_calibration", "map_tarp", "tarp_atc_band"]


def _bins(n_obs: int) -> int:
    # sbi's default, n_obs // 10, is 0 below 10 observations.
    return max(n_obs // 10, 1)


def _atc(coverage: torch.Tensor, num_bins: int) -> float:
    """sbi's ATC of credibility values: its ``_run_tarp`` and ``check_tarp``
    formulas, without ``check_tarp``'s KS test (the band needs thousands)."""
    hist, alpha = torch.histogram(coverage, density=True, bins=num_bins)
    ecp = torch.cat([torch.zeros(1), torch.cumsum(hist, 0) / hist.sum()])
    mid = len(alpha) // 2
    return float(((ecp[mid:] - alpha[mid:]) * (alpha[1] - alpha[0])).sum())


def tarp_atc_band(
    n_obs: int, num_samples: int, *, n_sim: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Central 95% range of sbi's TARP ATC for a calibrated posterior.

    Under calibration the TARP credibility of each truth is uniform on
    {0, 1/S, ..., 1}; the band is simulated with sbi's estimator (its
    histogram spans the observed range of credibilities, so the band is not
    a closed form). ``num_bins = n_obs // 10`` as in ``run_tarp``.
    """
    rng = np.random.default_rng(seed)
    bins = _bins(n_obs)
    atcs = [
        _atc(
            torch.as_tensor(rng.integers(0, num_samples + 1, n_obs) / num_samples),
            bins,
        )
        for _ in range(n_sim)
    ]
    lo, hi = np.quantile(atcs, [0.025, 0.975])
    return float(lo), float(hi)


def map_tarp(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int = 0,
    references: str = "posterior",
) -> M.TarpResult:
    """TARP over whole maps: (n, S, H, W) draws, (n, H, W) truths and masks.

    Args:
        samples, truth, mask: the draws, true maps and pixel masks.
        seed: seeds the reference points.
        references: ``"posterior"`` (x-dependent: posterior mean + std x
            N(0, 1) per pixel) or ``"uniform"`` (sbi's default).
    """
    m = mask[:, None].astype(np.float32)
    s = (samples * m).reshape(len(samples), samples.shape[1], -1)
    t = (truth * mask).reshape(len(truth), -1)
    ref = None
    if references == "posterior":
        eps = np.random.default_rng(seed).standard_normal(t.shape)
        ref = s.mean(axis=1) + s.std(axis=1) * eps * mask.reshape(len(t), -1)
    elif references != "uniform":
        raise ValueError(
            f"references is {references!r}, expected 'posterior' or 'uniform'"
        )
    with warnings.catch_warnings():
        # One view per galaxy gives < 100 maps on small test splits; the ATC
        # band of tarp_atc_band is simulated at that n, so the warning is moot.
        warnings.filterwarnings("ignore", message="Number of TARP samples")
        return M.tarp(
            s, t, seed=seed, references=ref, z_score=False, num_bins=_bins(len(t))
        )


def joint_map_calibration(
    samples: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    f_draws: np.ndarray,
    f_true: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    n_picks: int = 25,
) -> dict[str, Any]:
    """TARP on whole maps and SBC on the implied f_ex, one view per galaxy.

    Args:
        samples: (n, S, H, W) posterior draws.
        truth: (n, H, W) true maps.
        mask: (n, H, W) pixel masks.
        f_draws: (n, S) implied f_ex of the draws.
        f_true: (n,) f_ex of the true maps (same weights).
        groups: (n,) galaxy id of each view.
        seed: seeds the picks and the references.
        n_picks: random one-view-per-galaxy picks for TARP.

    Returns:
        JSON-ready dict: ``tarp`` (per reference kind: median ATC and KS p over
        the picks, the 95% ATC band of a calibrated posterior, ``within_band``),
        ``fex_sbc`` (galaxy-aware SBC p-value, verdict), ``n_galaxies``.
    """
    picks = M.one_view_per_group(groups, n_picks, seed=seed)
    n_gal, num = picks.shape[1], samples.shape[1]
    band = tarp_atc_band(n_gal, num, seed=derive_seed(seed, "tarp-band"))
    out: dict[str, Any] = {"n_views": len(truth), "n_galaxies": n_gal, "tarp": {}}
    for kind in ("posterior", "uniform"):
        res = [
            map_tarp(
                samples[p],
                truth[p],
                mask[p],
                seed=derive_seed(seed, "tarp", r),
                references=kind,
            )
            for r, p in enumerate(picks)
        ]
        atc = float(np.median([r.atc for r in res]))
        out["tarp"][kind] = {
            "atc_median": atc,
            "ks_pvalue_median": float(np.median([r.ks_pvalue for r in res])),
            "atc_band_95": list(band),
            "within_band": bool(band[0] <= atc <= band[1]),
            "n_picks": n_picks,
        }
    ranks = M.sbc_ranks(f_draws[:, :, None], f_true[:, None])
    pit = ranks[:, 0] / num
    j = judge(
        ranks,
        num,
        np.abs(2.0 * pit - 1.0),  # central-interval credibility of a 1-D law
        np.linspace(0, 1, 21),
        groups,
        seed=derive_seed(seed, "sbc"),
    )
    out["fex_sbc"] = {
        "pvalue": float(j.sbc_pvalues[0]),
        "verdict": j.verdict,
        "pit_bias_z": float(j.pit_bias_z[0]),
        "n_galaxies": j.n_galaxies,
    }
    return out
