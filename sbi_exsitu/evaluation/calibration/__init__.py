"""Calibration built in: SBC, HPD expected coverage, PIT and TARP, with a verdict.

Use :func:`calibrate` (arrays) or :func:`calibrate_dataset` (a ``MapDataset``) on
any :class:`PosteriorLike`; the :class:`CalibrationReport` writes
``calibration.json`` and the figures (``coverage.png`` is the headline).

Example:
    >>> from sbi_exsitu.evaluation.calibration import calibrate, VERDICTS
    >>> "calibrated" in VERDICTS
    True
"""

from sbi_exsitu.evaluation.calibration.datasets import calibrate_dataset
from sbi_exsitu.evaluation.calibration.metrics import (
    TarpResult,
    coverage_area,
    coverage_band,
    expected_coverage,
    hpd_credibility,
    max_coverage_error,
    pit_bias_zscores,
    pit_values,
    sbc_c2st,
    sbc_pvalues,
    sbc_ranks,
    tarp,
)
from sbi_exsitu.evaluation.calibration.protocol import PosteriorLike
from sbi_exsitu.evaluation.calibration.report import CalibrationReport, calibrate
from sbi_exsitu.evaluation.calibration.verdict import (
    VERDICT_RULE,
    VERDICTS,
    coverage_tolerance,
    verdict,
)

__all__ = [
    "VERDICTS",
    "VERDICT_RULE",
    "CalibrationReport",
    "PosteriorLike",
    "TarpResult",
    "calibrate",
    "calibrate_dataset",
    "coverage_area",
    "coverage_band",
    "coverage_tolerance",
    "expected_coverage",
    "hpd_credibility",
    "max_coverage_error",
    "pit_bias_zscores",
    "pit_values",
    "sbc_c2st",
    "sbc_pvalues",
    "sbc_ranks",
    "tarp",
    "verdict",
]
