"""What a training run returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbi_exsitu.posteriors.base import Posterior

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What :func:`sbi_exsitu.training.fit.fit` produced."""

    run_dir: Path
    posterior: Posterior
    metrics: dict[str, Any]
