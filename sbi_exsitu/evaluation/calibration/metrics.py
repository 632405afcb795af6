"""Calibration metrics: pure functions of posterior samples, truths and log-densities.

Shapes: ``samples`` ``(n_obs, S, D)`` posterior draws per test observation,
``truths`` ``(n_obs, D)`` the parameters that generated each observation, log-densities
``(n_obs, S)`` for the draws and ``(n_obs,)`` for the truths, ``groups`` ``(n_obs,)``
the galaxy each observation (view) is of.

Views of one galaxy share its truth and most of its information, so they are not
independent observations; a test that counts views overstates its sample size by
up to the number of views per galaxy. The galaxy-aware statistics are:

- :func:`bootstrap_coverage`: coverage curves of a block bootstrap by galaxy
  (galaxies resampled with replacement, each with all its views), which gives the
  scatter of the all-view coverage curve honestly;
- :func:`one_view_per_group` + :func:`sbc_pvalues` per pick + :func:`median_pvalue`:
  the SBC KS test on one random view per galaxy (independent observations),
  repeated over picks and combined by twice the median p-value, which is a valid
  p-value under any dependence between the picks (Meinshausen et al. 2009);
- :func:`pit_bias_zscores` with ``groups``: the mean-PIT z-score with a
  cluster-robust (by galaxy) standard error on all views.

References:
    Talts et al. (2018), "Validating Bayesian Inference Algorithms with
    Simulation-Based Calibration", arXiv:1804.06788 (SBC ranks).
    Hermans et al. (2021), "A Trust Crisis in Simulation-Based Inference? Your
    Posterior Approximations Can Be Unfaithful", arXiv:2110.06581 (expected coverage
    of highest-posterior-density regions).
    Lemos et al. (2023), "Sampling-Based Accuracy Testing of Posterior Estimators for
    General Inference", arXiv:2302.03026 (TARP).
    Meinshausen, Meier & Bühlmann (2009), "P-values for high-dimensional
    regression", JASA 104:1671 (quantile aggregation of dependent p-values).
    Cameron & Miller (2015), "A Practitioner's Guide to Cluster-Robust
    Inference", J. Human Resources 50:317 (cluster-robust standard errors).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> truths = rng.normal(size=(500, 1))
    >>> samples = rng.normal(size=(500, 200, 1))  # the prior is the posterior here
    >>> ranks = sbc_ranks(samples, truths)
    >>> bool(sbc_pvalues(ranks, 200)[0] > 0.01)
    True
    >>> logp = -0.5 * samples[..., 0] ** 2
    >>> cred = hpd_credibility(logp, -0.5 * truths[:, 0] ** 2)
    >>> levels, cov = expected_coverage(cred)
    >>> bool(max_coverage_error(levels, cov) < 0.1)
    True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.stats
import torch
from scipy.integrate import trapezoid

__all__ = [
    "TarpResult",
    "bootstrap_coverage",
    "coverage_area",
    "coverage_band",
    "expected_coverage",
    "group_codes",
    "hpd_credibility",
    "max_coverage_error",
    "median_pvalue",
    "one_view_per_group",
    "pit_bias_zscores",
    "pit_values",
    "sbc_c2st",
    "sbc_pvalues",
    "sbc_ranks",
    "tarp",
]


def _check(samples: np.ndarray, truths: np.ndarray) -> None:
    if samples.ndim != 3 or truths.ndim != 2:
        raise ValueError(
            "expected samples (n_obs, S, D) and truths (n_obs, D), got "
            f"{samples.shape} and {truths.shape}"
        )
    if samples.shape[0] != truths.shape[0] or samples.shape[2] != truths.shape[1]:
        raise ValueError(
            f"samples {samples.shape} and truths {truths.shape} do not match"
        )


def sbc_ranks(samples: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """SBC rank of each truth among its posterior draws, per parameter.

    The rank is the number of draws below the truth (sbi's ``run_sbc`` convention),
    uniform on ``{0, ..., S}`` for a calibrated posterior (Talts et al. 2018).

    Args:
        samples: ``(n_obs, S, D)`` posterior draws.
        truths: ``(n_obs, D)`` true parameters.

    Returns:
        ``(n_obs, D)`` integer ranks.
    """
    samples, truths = np.asarray(samples), np.asarray(truths)
    _check(samples, truths)
    return (samples < truths[:, None, :]).sum(axis=1)


def pit_values(samples: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Probability integral transform: fraction of posterior draws below the truth.

    Args:
        samples: ``(n_obs, S, D)`` posterior draws.
        truths: ``(n_obs, D)`` true parameters.

    Returns:
        ``(n_obs, D)`` values in ``[0, 1]``, uniform for a calibrated posterior.
    """
    return sbc_ranks(samples, truths) / np.asarray(samples).shape[1]


def sbc_pvalues(ranks: np.ndarray, num_samples: int) -> np.ndarray:
    """Kolmogorov-Smirnov p-value of rank uniformity, per parameter.

    The same test as the ``ks_pvals`` of sbi's ``check_sbc``, but against the
    discrete uniform on ``{0, ..., S}``; ``check_sbc`` itself also trains two C2ST
    classifiers per parameter (~6 s each here, unseeded), see :func:`sbc_c2st`.

    Args:
        ranks: ``(n_obs, D)`` SBC ranks from :func:`sbc_ranks`.
        num_samples: ``S``, the number of posterior draws per observation.

    Returns:
        ``(D,)`` p-values; small means the ranks are not uniform (miscalibration).
    """
    ranks = np.asarray(ranks)
    cdf = scipy.stats.randint(0, num_samples + 1).cdf
    return np.array([scipy.stats.kstest(r, cdf).pvalue for r in ranks.T])


def sbc_c2st(
    ranks: np.ndarray,
    truths: np.ndarray,
    dap_samples: np.ndarray,
    num_samples: int,
    *,
    seed: int = 0,
) -> dict[str, list[float]]:
    """sbi's full ``check_sbc``: KS p-values plus C2ST accuracies (slow, optional).

    C2ST accuracy 0.5 means a classifier cannot tell the ranks from uniform draws
    (``c2st_ranks``) or the prior from the data-averaged posterior (``c2st_dap``).

    Args:
        ranks: ``(n_obs, D)`` SBC ranks.
        truths: ``(n_obs, D)`` true parameters (prior draws).
        dap_samples: ``(n_obs, D)`` one posterior draw per observation.
        num_samples: ``S``, the number of posterior draws per observation.
        seed: seeds torch and numpy (the C2ST classifier and its folds).

    Returns:
        ``{"ks_pvals": [...], "c2st_ranks": [...], "c2st_dap": [...]}``.
    """
    from sbi.diagnostics import check_sbc  # slow import; only needed here

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        np_state = np.random.get_state()
        np.random.seed(seed)  # sbi's c2st draws folds from numpy's global state
        try:
            out = check_sbc(
                torch.as_tensor(np.asarray(ranks), dtype=torch.float32),
                torch.as_tensor(np.asarray(truths), dtype=torch.float32),
                torch.as_tensor(np.asarray(dap_samples), dtype=torch.float32),
                num_samples,
            )
        finally:
            np.random.set_state(np_state)
    return {k: [float(v) for v in torch.atleast_1d(t)] for k, t in out.items()}


def group_codes(groups: np.ndarray | None, n_obs: int) -> np.ndarray:
    """``(n_obs,)`` codes ``0..G-1`` of each observation's group (galaxy).

    ``None`` makes every observation its own group (independent observations).
    """
    if groups is None:
        return np.arange(n_obs)
    groups = np.asarray(groups)
    if groups.shape != (n_obs,):
        raise ValueError(
            f"groups has shape {groups.shape}, expected ({n_obs},): one galaxy id "
            "per observation"
        )
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def pit_bias_zscores(pit: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """z-score of the mean PIT against 0.5, per parameter (a location test).

    Under- and over-dispersed posteriors keep the PIT symmetric about 0.5; a
    posterior shifted relative to the truth moves its mean, so this separates bias
    from a width error. The standard error is the empirical one, which stays
    honest when the PIT is not uniform; with ``groups`` it is cluster-robust
    (Cameron & Miller 2015): residuals are summed within each galaxy first, so
    ``V`` near-identical views count as one galaxy, not as ``V`` observations.

    Args:
        pit: ``(n_obs, D)`` PIT values.
        groups: ``(n_obs,)`` galaxy ids; ``None`` = independent observations.

    Returns:
        ``(D,)`` z-scores; ``|z| > 3`` flags a shift.

    Example:
        >>> pit = np.repeat(np.linspace(0.05, 0.55, 50), 4)[:, None]  # 4 views each
        >>> z_views, z_gal = pit_bias_zscores(pit), pit_bias_zscores(pit, pit[:, 0])
        >>> round(float(z_views[0] / z_gal[0]), 1)  # sqrt(4) too confident
        2.0
    """
    pit = np.asarray(pit, dtype=float)
    n = pit.shape[0]
    codes = group_codes(groups, n)
    n_groups = int(codes.max()) + 1
    resid = pit - pit.mean(axis=0)
    sums = np.zeros((n_groups, pit.shape[1]))
    np.add.at(sums, codes, resid)
    # G/(G-1) small-sample factor: equals the ddof=1 variance for singleton groups.
    var = (sums**2).sum(axis=0) / n**2 * n_groups / max(n_groups - 1, 1)
    return (pit.mean(axis=0) - 0.5) / np.maximum(np.sqrt(var), 1e-12)


def one_view_per_group(
    groups: np.ndarray, n_picks: int, *, seed: int = 0
) -> np.ndarray:
    """``(n_picks, G)`` observation indices, one random view of every galaxy each.

    Args:
        groups: ``(n_obs,)`` galaxy id of each observation.
        n_picks: how many independent random picks.
        seed: seeds the picks.

    Returns:
        Row ``r`` holds one observation index per galaxy (galaxies in sorted order).

    Example:
        >>> one_view_per_group(np.array([7, 7, 3]), 2, seed=0)[:, 0]
        array([2, 2])
    """
    codes = group_codes(groups, len(groups))
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    offsets = np.floor(rng.random((n_picks, counts.size)) * counts).astype(int)
    return order[starts + offsets]


def median_pvalue(pvalues: np.ndarray, axis: int = 0) -> np.ndarray:
    """Twice the median of dependent p-values, capped at 1: itself a valid p-value.

    The median of p-values over correlated repetitions (here: random picks of
    one view per galaxy) is not a p-value, but ``min(1, 2 * median)`` is, under
    any dependence between them (Meinshausen, Meier & Bühlmann 2009, quantile
    aggregation with gamma = 1/2).

    Example:
        >>> float(median_pvalue(np.array([0.01, 0.02, 0.9])))
        0.04
    """
    return np.minimum(1.0, 2.0 * np.median(np.asarray(pvalues), axis=axis))


def bootstrap_coverage(
    credibility: np.ndarray,
    groups: np.ndarray | None,
    levels: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Coverage curves of a block bootstrap by galaxy, ``(n_boot, L)``.

    Each replicate draws ``G`` galaxies with replacement and takes every view of
    each, so the replicates' scatter around the observed curve includes the
    correlation between views of one galaxy.

    Args:
        credibility: ``(n_obs,)`` from :func:`hpd_credibility`.
        groups: ``(n_obs,)`` galaxy ids; ``None`` = independent observations.
        levels: ``(L,)`` credible levels.
        n_boot: bootstrap replicates.
        seed: seeds the resampling.

    Returns:
        ``(n_boot, L)`` coverage curves.
    """
    cred = np.asarray(credibility, dtype=float)
    levels = np.asarray(levels, dtype=float)
    codes = group_codes(groups, cred.size)
    n_groups = int(codes.max()) + 1
    inside = (cred[:, None] <= levels[None, :]).astype(float)  # (n_obs, L)
    per_group = np.zeros((n_groups, levels.size))
    np.add.at(per_group, codes, inside)
    views = np.bincount(codes, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    # Multinomial counts = how often each galaxy is drawn in a replicate.
    weights = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), n_boot)
    return (weights @ per_group) / (weights @ views)[:, None]


def hpd_credibility(
    log_prob_samples: np.ndarray, log_prob_truths: np.ndarray
) -> np.ndarray:
    """Credibility of the smallest HPD region that contains the truth.

    Hermans et al. (2021): the truth lies in the level-``alpha`` highest-posterior-
    density region iff fewer than a fraction ``alpha`` of the posterior draws are
    more probable than it. That fraction is returned.

    Args:
        log_prob_samples: ``(n_obs, S)`` posterior log-density of each draw.
        log_prob_truths: ``(n_obs,)`` posterior log-density of each truth.

    Returns:
        ``(n_obs,)`` credibility levels in ``[0, 1]``, uniform if calibrated.
    """
    lp, lt = np.asarray(log_prob_samples), np.asarray(log_prob_truths)
    if lp.ndim != 2 or lt.shape != lp.shape[:1]:
        raise ValueError(
            f"expected (n_obs, S) and (n_obs,), got {lp.shape}, {lt.shape}"
        )
    return (lp > lt[:, None]).mean(axis=1)


def expected_coverage(
    credibility: np.ndarray, levels: int | np.ndarray = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical coverage of HPD regions at each credible level.

    Args:
        credibility: ``(n_obs,)`` from :func:`hpd_credibility`.
        levels: credible levels in ``[0, 1]``, or how many evenly spaced ones.

    Returns:
        ``(levels, coverage)``: the fraction of truths inside the level-``alpha``
        region. On the diagonal = calibrated, below = overconfident, above =
        conservative.
    """
    if np.isscalar(levels):
        levels = np.linspace(0.0, 1.0, int(levels))
    levels = np.asarray(levels, dtype=float)
    cred = np.sort(np.asarray(credibility, dtype=float))
    # ECDF of the credibilities evaluated at each level.
    coverage = np.searchsorted(cred, levels, side="right") / cred.size
    return levels, coverage


def coverage_area(levels: np.ndarray, coverage: np.ndarray) -> float:
    """Signed area between coverage and the diagonal, ``∫ (coverage - α) dα``.

    Negative = overconfident (regions too small), positive = conservative.
    """
    return float(trapezoid(np.asarray(coverage) - levels, levels))


def max_coverage_error(levels: np.ndarray, coverage: np.ndarray) -> float:
    """Largest absolute gap between coverage and credible level."""
    return float(np.max(np.abs(np.asarray(coverage) - levels)))


def coverage_band(
    member_coverage: np.ndarray, quantiles: tuple[float, ...] = (0.16, 0.5, 0.84)
) -> np.ndarray:
    """Quantiles of coverage curves across ensemble members (paper 001 fig. 11).

    Args:
        member_coverage: ``(K, L)`` one coverage curve per member.
        quantiles: which quantiles; the default is the median and middle 68%.

    Returns:
        ``(len(quantiles), L)``.
    """
    return np.quantile(np.asarray(member_coverage, dtype=float), quantiles, axis=0)


class TarpResult(NamedTuple):
    """TARP expected-coverage curve and sbi's summary of it.

    Attributes:
        levels: credibility levels ``alpha``.
        ecp: expected coverage probability at each level.
        atc: area to curve above ``alpha = 0.5``; ``< 0`` overconfident.
        ks_pvalue: sbi's KS p-value of ecp against alpha.
    """

    levels: np.ndarray
    ecp: np.ndarray
    atc: float
    ks_pvalue: float


class _FixedSamples:
    """Posterior stand-in for ``run_tarp``: serves precomputed draws.

    ``run_tarp`` only calls ``sample_batched``; we pass observation indices as ``x``
    so the draws we already have are reused instead of re-sampled.
    """

    def __init__(self, samples: torch.Tensor) -> None:
        self._samples = samples  # (S, n_obs, D), sbi's batched layout

    def sample_batched(self, sample_shape, x, **_: object) -> torch.Tensor:
        return self._samples[: sample_shape[0], x[:, 0].long()]


def tarp(
    samples: np.ndarray,
    truths: np.ndarray,
    *,
    seed: int = 0,
    num_bins: int | None = None,
    references: np.ndarray | None = None,
    z_score: bool = True,
) -> TarpResult:
    """TARP coverage via sbi's ``run_tarp`` and ``check_tarp`` (Lemos et al. 2023).

    TARP tests the joint posterior with random reference points and needs no
    density, but it can miss a bias that SBC catches (checked with sbi 0.27: an
    under-trained posterior with SBC KS p = 4e-10 and bias +0.03 passed TARP with
    KS p ≈ 1.0).

    Args:
        samples: ``(n_obs, S, D)`` posterior draws.
        truths: ``(n_obs, D)`` true parameters.
        seed: seeds the random reference points.
        num_bins: credibility bins; sbi's default is ``n_obs // 10``.
        references: ``(n_obs, D)`` reference points, e.g. x-dependent ones
            (Lemos et al. 2023: needed for TARP to be sufficient); default:
            sbi's uniform draws over the box of the truths.
        z_score: rescale every dimension to the range of the truths (sbi's
            default); off for maps whose pixels share one scale.

    Returns:
        A :class:`TarpResult`.
    """
    from sbi.diagnostics import check_tarp, run_tarp  # slow import

    samples, truths = np.asarray(samples), np.asarray(truths)
    _check(samples, truths)
    n_obs, n_draws, _ = samples.shape
    post = _FixedSamples(torch.as_tensor(samples, dtype=torch.float32).transpose(0, 1))
    index = torch.arange(n_obs, dtype=torch.float32)[:, None]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ecp, alpha = run_tarp(
            torch.as_tensor(truths, dtype=torch.float32),
            index,
            post,  # type: ignore[arg-type]  # duck-typed: only sample_batched is used
            num_posterior_samples=n_draws,
            show_progress_bar=False,
            num_bins=num_bins,
            references=None
            if references is None
            else torch.as_tensor(references, dtype=torch.float32),
            z_score_theta=z_score,
        )
    atc, ks_p = check_tarp(ecp, alpha)
    return TarpResult(alpha.numpy(), ecp.numpy(), float(atc), float(ks_p))
