"""The one posterior type: what every posterior of the package offers.

Two posteriors implement it: :class:`~sbi_exsitu.posteriors.scalar.ExSituPosterior`
(p(f_ex | maps), an ensemble of sbi flows) and
:class:`~sbi_exsitu.posteriors.map.posterior.MapPosterior` (p(ex-situ map | maps),
a cVAE with a latent flow). Code that only samples, summarises, checks maps or
saves works with either through this base; :func:`sbi_exsitu.posteriors.load_posterior`
rebuilds the right one from a run directory.

Example:
    >>> from sbi_exsitu.posteriors.scalar import ExSituPosterior
    >>> issubclass(ExSituPosterior, Posterior), ExSituPosterior.kind
    (True, 'scalar')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sbi_exsitu.data.compatibility import check_render_config
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import RunError
from sbi_exsitu.runs import RunDirectory

__all__ = ["Posterior"]


class Posterior(ABC):
    """Base of the package's posteriors.

    Attributes:
        kind: the ``[posterior] kind`` of the config, stored in ``model.json``.
        render_config: how the training maps were rendered; maps rendered
            otherwise are refused.
        run_dir: the run directory, if loaded from or saved to one.
        metadata: free-form JSON (training set, times).
    """

    kind: ClassVar[str]
    render_config: RenderConfig
    run_dir: Path | None
    metadata: dict[str, Any]

    @property
    @abstractmethod
    def param_names(self) -> list[str]:
        """Names of the inferred quantities."""

    @abstractmethod
    def sample(self, maps: Any, num_samples: int, **kwargs: Any) -> np.ndarray:
        """Posterior draws, (n_obs, num_samples, ...)."""

    @abstractmethod
    def summarize(self, maps: Any, num_samples: int = ..., **kwargs: Any) -> Any:
        """Per-observation summaries (with ``to_columns()`` for tables)."""

    def log_prob(self, theta: np.ndarray, maps: Any) -> np.ndarray:
        """Log-density of ``theta`` given ``maps``, where the model has one."""
        raise NotImplementedError(
            f"the {self.kind} posterior has no tractable log-density"
        )

    @abstractmethod
    def save(self, run_dir: str | Path) -> Path:
        """Write weights and ``model.json`` (last) into ``run_dir``."""

    @classmethod
    @abstractmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Posterior:
        """Rebuild from a run directory, without unpickling anything."""

    def check_render_config(self, other: RenderConfig, where: str = "maps") -> None:
        """Refuse maps rendered with another configuration, naming each difference."""
        check_render_config(self.render_config, other, where, run_dir=self.run_dir)

    def test_split(self) -> tuple[MapDataset, np.ndarray]:
        """The training dataset and its held-out test indices (from ``splits.json``).

        Raises:
            FileNotFoundError: the posterior was not loaded from a run directory,
                or the training dataset has moved (pass a dataset explicitly).
        """
        run = RunDirectory(self.run_dir) if self.run_dir is not None else None
        if run is None or not run.splits_file.is_file():
            raise RunError(
                "this posterior has no run directory with splits.json; pass a test "
                "dataset explicitly (--data TEST.h5)"
            )
        splits = run.read_splits()
        path = run.training_data()  # absolute, or an old run's relative path
        return MapDataset(path, expect_config=self.render_config), np.asarray(
            splits["test"], dtype=np.int64
        )
