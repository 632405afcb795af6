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

torch is imported inside the functions that save or load state dicts, so that
importing this module (e.g. by the CLI) stays cheap.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_exsitu.atomic import atomic_save, atomic_write_json, atomic_write_text
from sbi_exsitu.errors import (
    CorruptWeightsError,
    RunError,
    RunExistsError,
    StateFileError,
)

__all__ = [
    "CorruptWeightsError",
    "check_finite_state",
    "CONFIG_FILE",
    "MODEL_FILE",
    "RENDER_CONFIG_FILE",
    "SPLITS_FILE",
    "RunDirectory",
    "RunExistsError",
    "StateFileError",
    "load_state_dict",
    "save_state_dict",
    "same_config",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
RENDER_CONFIG_FILE = "render_config.json"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
WEIGHTS_DIR = "weights"
CHECKPOINTS_DIR = "checkpoints"


def _to_cpu(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_state_dict(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a (possibly nested) state dict atomically, tensors moved to the CPU.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    import torch

    path = Path(path)
    payload = _to_cpu(state)
    atomic_save(path, lambda p: torch.save(payload, p))
    return path


def check_finite_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a loaded state dict with a NaN or infinite floating-point tensor.

    Such weights (a diverged or damaged run) make every draw NaN, which sbi's
    rejection sampling never accepts (it hangs) and the map decoder passes on
    silently.

    Args:
        state: the loaded ``state_dict``.
        path: the file it came from, for the message.

    Example:
        >>> import torch
        >>> check_finite_state({"w": torch.tensor([1.0, float("nan")])}, "w.pt")
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.CorruptWeightsError: w.pt: tensor(s) ['w'] \
hold NaN or infinite values (training diverged or the file is damaged); \
re-train the run with `sbi-exsitu fit CONFIG --overwrite`
    """
    import torch

    bad = [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = bad[:3] + (["..."] if len(bad) > 3 else [])
        raise CorruptWeightsError(
            f"{path}: tensor(s) {shown} hold NaN or infinite values (training "
            "diverged or the file is damaged); re-train the run with "
            "`sbi-exsitu fit CONFIG --overwrite`"
        )


def load_state_dict(
    path: str | Path, map_location: Any = "cpu", what: str = "weights"
) -> dict[str, Any]:
    """Read a file written by :func:`save_state_dict`, never unpickling code.

    Raises:
        StateFileError: the file is missing, empty, truncated or holds something
            other than a state dict; the message names the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise StateFileError(f"{path}: {what} file missing")
    if path.stat().st_size == 0:
        raise StateFileError(f"{path}: {what} file is empty; delete it and re-run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors
        raise StateFileError(
            f"{path}: cannot read the {what} file ({type(err).__name__}: {err}); "
            "it is truncated or corrupt: delete it and re-run"
        ) from err
    if not isinstance(state, dict):
        raise StateFileError(
            f"{path}: holds a {type(state).__name__}, expected a state dict"
        )
    check_finite_state(state, path)
    return state


def same_config(stored: Mapping[str, Any], resolved: Mapping[str, Any]) -> bool:
    """Whether a stored ``config.json`` equals ``resolved`` once JSON-encoded.

    The round trip makes tuples and lists, and int and float keys, compare as
    they would after writing.
    """
    return json.loads(json.dumps(stored)) == json.loads(json.dumps(resolved))


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

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def weights(self, name: str) -> Path:
        """The state_dict file of one module (``weights/<name>.pt``)."""
        return self.path / WEIGHTS_DIR / f"{name}.pt"

    def checkpoint(self, name: str) -> Path:
        """The checkpoint stem of an unfinished member (``checkpoints/<name>``)."""
        return self.path / CHECKPOINTS_DIR / name

    def read_json(self, name: str) -> Any:
        """A JSON file of the run, by name."""
        return json.loads((self.path / name).read_text())

    # -- state dicts -----------------------------------------------------------
    def save_weights(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``weights/<name>.pt`` (atomic, CPU tensors)."""
        return save_state_dict(self.weights(name), state)

    def load_weights(self, name: str, map_location: Any = "cpu") -> dict[str, Any]:
        """Read ``weights/<name>.pt``.

        Raises:
            StateFileError: missing, truncated or not a state dict.
        """
        return load_state_dict(self.weights(name), map_location, f"{name} weights")

    # -- model.json, splits, render config, history, metrics ---------------------
    def write_model(self, meta: Mapping[str, Any]) -> Path:
        """Write ``model.json``: do it last, its presence marks a finished run."""
        atomic_write_json(self.model_file, dict(meta))
        return self.model_file

    def read_model(self) -> dict[str, Any]:
        """``model.json``.

        Raises:
            RunError: the run is not finished.
        """
        if not self.model_file.is_file():
            raise RunError(
                f"{self.model_file} not found: '{self.path}' is not a finished run "
                "(run or resume `sbi-exsitu fit CONFIG`)"
            )
        return json.loads(self.model_file.read_text())

    def write_render_config(self, text: str) -> Path:
        """Write ``render_config.json`` (the JSON text of a RenderConfig)."""
        atomic_write_text(self.render_config_file, text)
        return self.render_config_file

    def write_splits(
        self, splits: Mapping[str, Any], dataset: str | Path, seed: int
    ) -> Path:
        """Write ``splits.json``: index arrays per split, the dataset and the seed."""
        data = {k: [int(i) for i in v] for k, v in splits.items()}
        atomic_write_json(
            self.splits_file, data | {"dataset": str(dataset), "seed": int(seed)}
        )
        return self.splits_file

    def read_splits(self) -> dict[str, Any]:
        """``splits.json`` (lists of indices, ``dataset`` and ``seed``).

        Raises:
            FileNotFoundError: the run has no ``splits.json``.
        """
        if not self.splits_file.is_file():
            raise RunError(f"{self.splits_file}: no splits.json in this run")
        return json.loads(self.splits_file.read_text())

    def write_history(self, history: Any) -> Path:
        """Write ``history.json``."""
        atomic_write_json(self.history_file, history)
        return self.history_file

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json``."""
        atomic_write_json(self.metrics_file, dict(metrics))
        return self.metrics_file

    def has_config(self, resolved_config: Mapping[str, Any]) -> bool:
        """Whether ``config.json`` exists and equals ``resolved_config``."""
        if not self.config_file.is_file():
            return False
        return same_config(json.loads(self.config_file.read_text()), resolved_config)

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
            elif not self.has_config(resolved_config):
                raise RunExistsError(
                    f"{self.path} holds a run with a different configuration; pass "
                    "--overwrite to replace it or change [run] name"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_file, resolved_config)
        return self.path
