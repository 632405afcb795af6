"""Run every calibration check on a posterior and collect the results in one report.

:func:`calibrate` draws posterior samples for a set of test observations (one
vectorised call), evaluates log-densities of the draws and the truths, and hands the
arrays to :meth:`CalibrationReport.from_arrays`, which computes SBC ranks and
p-values, HPD expected coverage (per ensemble member too), PIT, TARP and a verdict.

Views of one galaxy are not independent observations: pass their galaxy ids as
``groups`` (:func:`calibrate_dataset` reads ``labels["galaxy_id"]``) and the SBC
test, the PIT-location test, the coverage band and the verdict tolerance count
galaxies (:func:`~.verdict.judge`); the JSON states which ``n`` each number uses.
TARP and the coverage curve itself use every view.

References:
    Hermans et al. (2021), arXiv:2110.06581; Talts et al. (2018), arXiv:1804.06788;
    Lemos et al. (2023), arXiv:2302.03026.

Example:
    >>> import numpy as np
    >>> class Exact:  # theta ~ N(0, 1), x = theta + N(0, 1): posterior N(x/2, 1/2)
    ...     param_names = ["theta"]
    ...     members = ()
    ...     def sample(self, maps, num_samples, *, seed=None, batch_size=512,
    ...                progress=False):
    ...         z = np.random.default_rng(seed).normal(size=(len(maps), num_samples, 1))
    ...         return maps[:, None] / 2 + np.sqrt(0.5) * z
    ...     def log_prob(self, theta, maps):
    ...         return -((theta[..., 0] - maps[:, None, 0] / 2) ** 2)
    >>> rng = np.random.default_rng(1)
    >>> theta = rng.normal(size=(500, 1))
    >>> x = theta + rng.normal(size=(500, 1))
    >>> report = calibrate(Exact(), x, theta, num_samples=300, progress=False)
    >>> report.verdict
    'calibrated'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sbi_exsitu.atomic import atomic_write_text, check_output_path
from sbi_exsitu.evaluation.calibration import metrics as M
from sbi_exsitu.evaluation.calibration import plots
from sbi_exsitu.evaluation.calibration.protocol import PosteriorLike
from sbi_exsitu.evaluation.calibration.verdict import VERDICT_RULE, Judgement, judge

__all__ = ["CalibrationReport", "calibrate"]

SCHEMA = "sbi-exsitu/calibration/2"  # 2: galaxy-aware tests (n_galaxies, "n" per test)
log = logging.getLogger(__name__)


def _r(x: Any, nd: int = 6) -> Any:
    """Round floats (and nested lists of them) for a readable JSON file."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, list):
        return [_r(v, nd) for v in x]
    return round(float(x), nd)


@dataclasses.dataclass
class CalibrationReport:
    """Calibration numbers for one posterior on one test set.

    Attributes:
        param_names: the ``D`` parameters.
        n_observations: test observations (views).
        n_galaxies: distinct galaxies among them (what the tests count).
        n_posterior_draws: posterior draws per observation.
        n_hpd_draws: of which had their log-density evaluated for HPD coverage.
        levels: ``(L,)`` credible levels of the coverage curve.
        coverage: ``(L,)`` empirical HPD coverage of the (ensemble) posterior.
        member_coverage: ``(K, L)`` per-member coverage (the posterior itself if
            it is not an ensemble).
        credibility: ``(n_obs,)`` HPD level at which each truth enters.
        ranks: ``(n_obs, D)`` SBC ranks.
        pit: ``(n_obs, D)`` PIT values.
        sbc_ks_pvalues: ``(D,)`` SBC uniformity p-values (one view per galaxy,
            combined over picks; see :func:`~.verdict.judge`).
        pit_bias_z: ``(D,)`` mean-PIT z-scores (location test, cluster-robust).
        tarp: TARP curve, ATC and KS p-value.
        coverage_area: signed ``∫ (coverage - α) dα``; negative = overconfident.
        max_abs_coverage_error: ``max |coverage - α|``.
        coverage_tolerance: the tolerance the verdict used.
        verdict: see :mod:`sbi_exsitu.evaluation.calibration.verdict`.
        judgement: the galaxy-aware statistics behind the verdict (``n`` and
            method of each, the coverage band).
        verdict_rule: the rule, in words.
        c2st: sbi ``check_sbc`` C2ST results, if requested.
        seed: the seed everything random derived from.
        timings: seconds spent per step.
        meta: free-form provenance (run, data file) copied into the JSON.
    """

    param_names: list[str]
    n_observations: int
    n_galaxies: int
    n_posterior_draws: int
    n_hpd_draws: int
    levels: np.ndarray
    coverage: np.ndarray
    member_coverage: np.ndarray
    credibility: np.ndarray
    ranks: np.ndarray
    pit: np.ndarray
    sbc_ks_pvalues: np.ndarray
    pit_bias_z: np.ndarray
    tarp: M.TarpResult
    coverage_area: float
    max_abs_coverage_error: float
    coverage_tolerance: float
    verdict: str
    judgement: Judgement
    verdict_rule: str = VERDICT_RULE
    c2st: dict[str, list[float]] | None = None
    seed: int = 0
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        samples: np.ndarray,
        truths: np.ndarray,
        log_prob_samples: np.ndarray,
        log_prob_truths: np.ndarray,
        *,
        param_names: Sequence[str],
        member_credibility: Sequence[np.ndarray] | None = None,
        levels: int | np.ndarray = 101,
        seed: int = 0,
        c2st: bool = False,
        groups: np.ndarray | None = None,
    ) -> CalibrationReport:
        """Compute every metric from precomputed draws and log-densities.

        Args:
            samples: ``(n_obs, S, D)`` posterior draws.
            truths: ``(n_obs, D)`` true parameters.
            log_prob_samples: ``(n_obs, S')`` posterior log-density of the first
                ``S' <= S`` draws.
            log_prob_truths: ``(n_obs,)`` posterior log-density of the truths.
            param_names: the ``D`` parameter names.
            member_credibility: per ensemble member, ``(n_obs,)`` HPD credibility
                of the truths (:func:`~.metrics.hpd_credibility`).
            levels: credible levels, or how many evenly spaced ones.
            seed: seeds TARP's reference points and (with ``c2st``) the C2ST.
            c2st: also run sbi's ``check_sbc`` C2ST tests (~6 s per parameter).
            groups: ``(n_obs,)`` galaxy id of each observation; ``None`` treats
                every observation as its own galaxy.

        Returns:
            The report.
        """
        t0 = time.perf_counter()
        samples, truths = np.asarray(samples), np.asarray(truths, dtype=float)
        n_obs, n_draws, d = samples.shape
        if len(param_names) != d:
            raise ValueError(f"{len(param_names)} param_names for D = {d} parameters")
        if np.isnan(log_prob_samples).any() or np.isnan(log_prob_truths).any():
            raise ValueError("NaN log-densities; cannot rank draws against truths")
        ranks = M.sbc_ranks(samples, truths)
        cred = M.hpd_credibility(log_prob_samples, log_prob_truths)
        lv, cov = M.expected_coverage(cred, levels)
        # Child seeds: TARP keeps `seed` itself; the bootstrap and picks get a child.
        j_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
        j = judge(ranks, n_draws, cred, lv, groups, seed=j_seed)
        members = [cov] if member_credibility is None else [
            M.expected_coverage(c, lv)[1] for c in member_credibility
        ]  # fmt: skip
        area, err = M.coverage_area(lv, cov), M.max_coverage_error(lv, cov)
        tarp = M.tarp(samples, truths, seed=seed)
        c2st_out = None
        if c2st:
            # One draw per observation is a draw from the data-averaged posterior.
            c2st_out = M.sbc_c2st(ranks, truths, samples[:, 0], n_draws, seed=seed)
        return cls(
            param_names=list(param_names),
            n_observations=n_obs,
            n_galaxies=j.n_galaxies,
            n_posterior_draws=n_draws,
            n_hpd_draws=np.shape(log_prob_samples)[1],
            levels=lv,
            coverage=cov,
            member_coverage=np.stack(members),
            credibility=cred,
            ranks=ranks,
            pit=ranks / n_draws,
            sbc_ks_pvalues=j.sbc_pvalues,
            pit_bias_z=j.pit_bias_z,
            tarp=tarp,
            coverage_area=area,
            max_abs_coverage_error=err,
            coverage_tolerance=j.tolerance,
            verdict=j.verdict,
            judgement=j,
            c2st=c2st_out,
            seed=seed,
            timings={"metrics": time.perf_counter() - t0},
        )

    @property
    def note(self) -> str:
        """One-line summary: verdict, coverage error and SBC."""
        return (
            f"{self.verdict}: max|cov−α| = {self.max_abs_coverage_error:.3f} "
            f"(tol {self.coverage_tolerance:.3f}), area = {self.coverage_area:+.3f}, "
            f"min SBC p = {self.sbc_ks_pvalues.min():.2g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (curves, p-values, verdict; no per-obs arrays)."""
        lo, med, hi = M.coverage_band(self.member_coverage)
        names, j = self.param_names, self.judgement
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "verdict_rule": self.verdict_rule,
            "param_names": names,
            "n_observations": self.n_observations,
            "n_views": self.n_observations,
            "n_galaxies": self.n_galaxies,
            "tests": j.describe(names),
            "n_posterior_draws": self.n_posterior_draws,
            "n_hpd_draws": self.n_hpd_draws,
            "max_abs_coverage_error": _r(self.max_abs_coverage_error),
            "coverage_area": _r(self.coverage_area),
            "coverage_tolerance": _r(self.coverage_tolerance),
            "coverage_curve": {
                "levels": _r(self.levels),
                "empirical": _r(self.coverage),
            },
            "member_coverage": {
                "n_members": len(self.member_coverage),
                "curves": _r(self.member_coverage),
                "median": _r(med),
                "q16": _r(lo),
                "q84": _r(hi),
            },
            "sbc_ks_pvalues": dict(zip(names, _r(self.sbc_ks_pvalues, 8), strict=True)),
            "sbc_min_pvalue": _r(self.sbc_ks_pvalues.min(), 8),
            "pit_mean": dict(zip(names, _r(self.pit.mean(axis=0)), strict=True)),
            "pit_bias_z": dict(zip(names, _r(self.pit_bias_z, 3), strict=True)),
            "tarp_atc": _r(self.tarp.atc),
            "tarp_ks_pvalue": _r(self.tarp.ks_pvalue, 8),
            "tarp_curve": {"levels": _r(self.tarp.levels), "ecp": _r(self.tarp.ecp)},
            "c2st": self.c2st,
            "seed": self.seed,
            "timings_s": {k: _r(v, 3) for k, v in self.timings.items()},
            "meta": self.meta,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/calibration.json`` atomically (temp file + rename).

        Raises:
            OutputPathError: ``out_dir`` is a file or read-only.
        """
        out_dir = check_output_path(out_dir, kind="dir")
        path = out_dir / "calibration.json"
        atomic_write_text(path, self.to_json() + "\n")
        return path

    def plot(
        self, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")
    ) -> list[Path]:
        """Write coverage, SBC, TARP and PIT figures; return their paths.

        ``coverage.png`` (first in the list) is the headline figure.
        """
        t0 = time.perf_counter()
        names = self.param_names
        views = self.judgement.plot_views
        figs = {
            "coverage": plots.plot_coverage(
                self.levels, self.coverage, member_coverage=self.member_coverage,
                n_obs=self.n_observations, note=self.verdict,
                band=self.judgement.coverage_band, n_galaxies=self.n_galaxies,
                tolerance=self.coverage_tolerance,
            ),
            # Drawn on one view per galaxy, so the bands count galaxies as the
            # verdict's tests do (all views would make them ~sqrt(V) too narrow).
            "sbc": plots.plot_sbc(
                self.ranks[views], self.n_posterior_draws, param_names=names,
                pvalues=self.sbc_ks_pvalues, seed=self.seed,
                per_galaxy=self.n_galaxies < self.n_observations,
            ),
            "tarp": plots.plot_tarp(
                self.tarp.levels, self.tarp.ecp, atc=self.tarp.atc,
                ks_pvalue=self.tarp.ks_pvalue,
            ),
            "pit": plots.plot_pit(
                self.pit[views], param_names=names,
                per_galaxy=self.n_galaxies < self.n_observations,
            ),
        }  # fmt: skip
        paths = [
            p
            for stem, fig in figs.items()
            for p in plots.save_figure(fig, out_dir, stem, formats)
        ]
        self.timings["plots"] = time.perf_counter() - t0
        return paths


def _log_probs(
    posterior: PosteriorLike,
    maps: np.ndarray,
    samples: np.ndarray,
    truths: np.ndarray,
    *,
    chunk: int,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-densities of the draws and the truths, in observation chunks."""
    n_obs, n_draws, _ = samples.shape
    out = np.empty((n_obs, n_draws + 1))
    # Bound theta values per call: a posterior may hold activations for each one
    # (sbi's log_prob_batched re-runs the embedding net per theta).
    step = max(1, chunk // (n_draws + 1))
    starts = range(0, n_obs, step)
    for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
        j = min(i + step, n_obs)
        # Truth first, then the draws: one call per chunk instead of two.
        theta = np.concatenate([truths[i:j, None], samples[i:j]], axis=1)
        lp = np.asarray(posterior.log_prob(theta, maps[i:j]), dtype=float)
        if lp.shape != (j - i, n_draws + 1):
            raise ValueError(
                f"log_prob returned {lp.shape}, expected {theta.shape[:2]}"
            )
        out[i:j] = lp
    return out[:, 1:], out[:, 0]


def _draw(
    posterior: PosteriorLike,
    maps: np.ndarray,
    num_samples: int,
    n_params: int,
    *,
    seed: int,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    s = posterior.sample(
        maps, num_samples, seed=seed, batch_size=batch_size, progress=progress
    )
    s = np.asarray(s, dtype=float)
    if s.shape != (len(maps), num_samples, n_params):
        raise ValueError(
            f"sample returned {s.shape}, expected {(len(maps), num_samples, n_params)}"
        )
    return s


def calibrate(
    posterior: PosteriorLike,
    maps: np.ndarray,
    truths: np.ndarray,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 512,
    hpd_draws: int | None = None,
    log_prob_chunk: int = 16_384,
    members: bool = True,
    levels: int | np.ndarray = 101,
    c2st: bool = False,
    progress: bool = True,
    groups: np.ndarray | None = None,
) -> CalibrationReport:
    """Calibrate ``posterior`` on test observations with known truths.

    Args:
        posterior: any :class:`~.protocol.PosteriorLike`.
        maps: ``(n_obs, ...)`` what the posterior conditions on.
        truths: ``(n_obs, D)`` (or ``(n_obs,)`` for ``D = 1``) true parameters, in
            the order of ``posterior.param_names``.
        num_samples: posterior draws per observation.
        seed: master seed; sampling, members and TARP get seeds derived from it.
        batch_size: observations per ``sample`` call.
        hpd_draws: evaluate log-densities (for HPD coverage) on only the first
            this many draws; SBC, PIT and TARP still use all. Trades a little
            Monte Carlo noise in the coverage curve for speed when ``log_prob``
            is costly. All draws by default.
        log_prob_chunk: at most this many theta values per ``log_prob`` call
            (bounds memory).
        members: also compute each ensemble member's coverage (``K`` extra
            sampling and ``log_prob`` passes of ``hpd_draws`` draws); skipped for
            a single posterior.
        levels: credible levels, or how many evenly spaced ones.
        c2st: also run sbi's ``check_sbc`` C2ST tests (slow).
        progress: show progress bars.
        groups: ``(n_obs,)`` galaxy id of each observation, so that views of one
            galaxy count once in the tests; ``None`` treats every observation as
            its own galaxy (logged, since it overstates n for multi-view data).

    Returns:
        The :class:`CalibrationReport`.
    """
    if groups is None:
        log.info(
            "calibrate: no groups= given; treating each of the %d observations as "
            "its own galaxy (pass galaxy ids if several are views of one galaxy)",
            len(maps),
        )
    names = list(posterior.param_names)
    truths = np.asarray(truths, dtype=float)
    if truths.ndim == 1:
        truths = truths[:, None]
    if truths.shape != (len(maps), len(names)):
        raise ValueError(
            f"truths {truths.shape} do not match {len(maps)} maps x {len(names)} "
            f"parameters {names}"
        )
    # Found here, not after an hour of sampling as NaN log-densities.
    bad = np.flatnonzero(~np.isfinite(truths).all(axis=1))
    if bad.size:
        raise ValueError(
            f"truths of {bad.size} observation(s) are NaN or infinite (first: "
            f"observation {bad[0]}); calibrate only on labelled samples"
        )
    ms = list(posterior.members)
    if not members or (len(ms) == 1 and ms[0] is posterior):
        ms = []
    # Independent child seeds: 0 sampling, 1 TARP/plots, 2+k member k.
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(2 + len(ms))]
    n_hpd = min(hpd_draws or num_samples, num_samples)
    draw = dict(batch_size=batch_size, progress=progress)
    lp = dict(chunk=log_prob_chunk, progress=progress)
    timings = {}

    t0 = time.perf_counter()
    samples = _draw(posterior, maps, num_samples, len(names), seed=seeds[0], **draw)
    timings["sampling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lp_s, lp_t = _log_probs(
        posterior, maps, samples[:, :n_hpd], truths, desc="log_prob", **lp
    )
    timings["log_prob"] = time.perf_counter() - t0

    member_cred = None
    if ms:
        t0 = time.perf_counter()
        member_cred = []
        for k, m in enumerate(tqdm(ms, desc="members", disable=not progress)):
            s = _draw(m, maps, n_hpd, len(names), seed=seeds[2 + k], **draw)
            logp = _log_probs(m, maps, s, truths, desc=f"member {k}", **lp)
            member_cred.append(M.hpd_credibility(*logp))
        timings["members"] = time.perf_counter() - t0

    report = CalibrationReport.from_arrays(
        samples, truths, lp_s, lp_t, param_names=names,
        member_credibility=member_cred, levels=levels, seed=seeds[1], c2st=c2st,
        groups=groups,
    )  # fmt: skip
    report.seed = seed
    report.timings = {**timings, **report.timings}
    return report
