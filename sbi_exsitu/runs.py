"""The run directory: every file name, and the checks around creating one.

A run directory holds everything needed to use and audit a trained posterior::

    config.json            the resolved experiment (all defaults filled in)
    render_config.json     how the training maps were rendered
    splits.json            train/validation/test sample indices (by galaxy)
    model.json             architecture (written last: its presence = finished)
    weights/<name>.pt      state_dicts (never pickled objects)
    checkpoints/           per-epoch training state of an unfinished member
    history.json           losses per epoch; training_curves.png
    metrics.json           test-set metrics

This module is the only place that spells these names.

Example:
    >>> import tempfile
    >>> run = RunDirectory(tempfile.mkdtemp())
    >>> run.weights("member_0").name, run.is_finished
    ('member_0.pt', False)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sbi_exsitu.atomic import atomic_write_json
from sbi_exsitu.errors import RunExistsError

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "RENDER_CONFIG_FILE",
    "SPLITS_FILE",
    "RunDirectory",
    "RunExistsError",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
RENDER_CONFIG_FILE = "render_config.json"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
WEIGHTS_DIR = "weights"
CHECKPOINTS_DIR = "checkpoints"


class RunDirectory:
    """One run directory and the names of the files in it.

    Args:
        path: the directory (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def splits_file(self) -> Path:
        return self.path / SPLITS_FILE

    @property
    def render_config_file(self) -> Path:
        return self.path / RENDER_CONFIG_FILE

    @property
    def is_finished(self) -> bool:
        """Whether ``model.json`` exists (it is written last)."""
        return self.model_file.is_file()

    def weights(self, name: str) -> Path:
        """The state_dict file of one module (``weights/<name>.pt``)."""
        return self.path / WEIGHTS_DIR / f"{name}.pt"

    def checkpoint(self, name: str) -> Path:
        """The checkpoint stem of an unfinished member (``checkpoints/<name>``)."""
        return self.path / CHECKPOINTS_DIR / name

    def read_json(self, name: str) -> Any:
        """A JSON file of the run, by name."""
        return json.loads((self.path / name).read_text())

    def prepare(self, resolved_config: dict[str, Any], overwrite: bool) -> Path:
        """Create the directory for a run of ``resolved_config``.

        A directory holding a run of the same configuration is kept (so training
        resumes); one of another configuration is refused unless ``overwrite``.

        Raises:
            RunExistsError: another configuration, and ``overwrite`` is false.
        """
        stored = self.config_file
        if stored.exists():
            if overwrite:
                shutil.rmtree(self.path)
            elif json.loads(stored.read_text()) != json.loads(
                json.dumps(resolved_config)
            ):
                raise RunExistsError(
                    f"{self.path} holds a run with a different configuration; pass "
                    "--overwrite to replace it or change [run] name"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_file, resolved_config)
        return self.path
