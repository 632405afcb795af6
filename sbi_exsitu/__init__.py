"""sbi-exsitu: how much of a galaxy's stellar mass was accreted, and where?

Simulation-based inference of the ex-situ stellar mass fraction from 2D maps.
The light layers (particles, rendering, datasets) import at once; the torch and
sbi layers load on first use, so ``import sbi_exsitu`` stays fast.

Example:
    >>> import sbi_exsitu as sx
    >>> sx.RenderConfig(resolution=64).fov_re
    4.0
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from sbi_exsitu.data.dataset import DatasetWriter, MapDataset, split_by_galaxy
from sbi_exsitu.data.particles import Particles
from sbi_exsitu.data.render import RenderConfig, render_views

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

_LAZY = {
    "load_posterior": "sbi_exsitu.posteriors",
    "ExSituPosterior": "sbi_exsitu.posteriors.scalar",
    "MapPosterior": "sbi_exsitu.posteriors.map.posterior",
    "fit": "sbi_exsitu.training.fit",
    "predict": "sbi_exsitu.studies.predict",
    "ExperimentConfig": "sbi_exsitu.config.experiment",
    "calibrate": "sbi_exsitu.evaluation.calibration",
    "calibrate_dataset": "sbi_exsitu.evaluation.calibration",
    "simulate": "sbi_exsitu.data.simulate",
}

__all__ = [
    "Particles",
    "RenderConfig",
    "render_views",
    "MapDataset",
    "DatasetWriter",
    "split_by_galaxy",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sbi_exsitu' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Tab completion and `dir(sx)` show the lazy names too.
    return sorted(set(globals()) | set(__all__))
