"""The run directory: every file name, and the checks around creating one.

A run directory holds everything needed to use and audit a trained posterior::

    config.json            the resolved experiment (all defaults filled in)
    render_config.json     how the training maps were rendered
    splits.json            train/validation/test sample indices (by galaxy)
    data.json              identity of the training data (see dataset_identity)
    model.json             architecture (written last: its presence = finished)
    weights/<name>.pt      state_dicts (never pickled objects)
    checkpoints/           per-epoch training state of an unfinished member
    history.json           losses per epoch; training_curves.png
    metrics.json           test-set metrics
    misspecification/      the misspecification detector (no pickle)

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

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_exsitu.atomic import atomic_write_json, atomic_write_text
from sbi_exsitu.errors import (
    CorruptWeightsError,
    RunDataChangedError,
    RunError,
    RunExistsError,
    StateFileError,
    WeightsMismatchError,
)
from sbi_exsitu.statefiles import (
    check_finite_state,
    load_state_dict,
    save_state_dict,
    state_mismatch,
)

__all__ = [
    "CorruptWeightsError",
    "check_finite_state",
    "CONFIG_FILE",
    "MODEL_FILE",
    "RENDER_CONFIG_FILE",
    "SPLITS_FILE",
    "DATA_FILE",
    "DETECTOR_DIR",
    "CALIBRATION_DATA",
    "POST_HOC_SECTIONS",
    "RunDataChangedError",
    "RunDirectory",
    "RunExistsError",
    "StateFileError",
    "WeightsMismatchError",
    "dataset_identity",
    "state_mismatch",
    "load_state_dict",
    "save_state_dict",
    "same_config",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
RENDER_CONFIG_FILE = "render_config.json"
SPLITS_FILE = "splits.json"
DATA_FILE = "data.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
WEIGHTS_DIR = "weights"
CHECKPOINTS_DIR = "checkpoints"
#: The misspecification detector, and the fresh galaxies calibrating it.
DETECTOR_DIR = "misspecification"
CALIBRATION_DATA = "misspecification/calibration.h5"
#: Sections training does not read: changing them resumes a run (not refused).
POST_HOC_SECTIONS = ("misspecification",)
#: Maps hashed into a dataset's identity (evenly spaced, first and last included).
HASHED_MAPS = 64

_log = logging.getLogger(__name__)


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What identifies a training dataset: ``data.json`` of a run.

    The SHA-256 covers every label (``galaxy_id``, ``view_id``, ``f_ex`` and the
    other targets, ``model``; all samples) and the maps of :data:`HASHED_MAPS`
    evenly spaced samples, first and last included. Hashing every map of a
    multi-GB file on every resume would take minutes; the labels alone already
    change when galaxies are added, removed, re-simulated or reordered, and the
    sampled maps catch a re-render with the same labels. Path and size are
    recorded for the message (a moved copy of the same data is the same data).

    Args:
        dataset: a :class:`~sbi_exsitu.data.dataset.MapDataset`.
    """
    import numpy as np

    digest = hashlib.sha256()
    for key in sorted(dataset.labels):
        values = np.asarray(dataset.labels[key])
        raw = "\0".join(values.astype(str)) if values.dtype.kind in "OUS" else values
        digest.update(key.encode())
        digest.update(raw.encode() if isinstance(raw, str) else raw.tobytes())
    n = len(dataset)
    if n:
        idx = np.unique(np.linspace(0, n - 1, min(n, HASHED_MAPS)).astype(np.int64))
        digest.update(np.ascontiguousarray(dataset.maps(idx), np.float32).tobytes())
    path = Path(dataset.path).resolve()
    return {
        "path": str(path),
        "size": path.stat().st_size,
        "n_samples": n,
        "n_galaxies": len(np.unique(dataset.labels["galaxy_id"])),
        "render_config": dataset.render_config.to_dict(),
        "max_particles": dataset.particle_cap,  # `render --like` caps at it
        "sha256": digest.hexdigest(),
        "hashed": f"all labels and the maps of {min(n, HASHED_MAPS)} samples",
    }


def _data_change(stored: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """How ``now`` differs from the stored identity ("" if it does not)."""
    if stored.get("render_config") != now["render_config"]:
        return "its maps were rendered with another render config"
    if any(stored.get(k) != now[k] for k in ("n_galaxies", "n_samples")):
        return (
            f"the training dataset now has {now['n_galaxies']} galaxies / "
            f"{now['n_samples']} samples, the run was trained on "
            f"{stored.get('n_galaxies')} / {stored.get('n_samples')}"
        )
    if stored.get("sha256") != now["sha256"]:
        return (
            f"the training dataset has as many samples ({now['n_samples']}) but "
            f"other content ({stored.get('hashed', 'labels and maps')} differ)"
        )
    return ""


def same_config(
    stored: Mapping[str, Any], resolved: Mapping[str, Any], ignore: Any = ()
) -> bool:
    """Whether a stored ``config.json`` equals ``resolved`` once JSON-encoded,
    but for the top-level sections ``ignore``.

    The round trip makes tuples and lists, and int and float keys, compare as
    they would after writing.
    """
    a, b = ({k: v for k, v in d.items() if k not in ignore} for d in (stored, resolved))
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


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

    def load_into(
        self,
        module: Any,
        name: str,
        map_location: Any = "cpu",
        *,
        fill_missing: bool = False,
    ) -> Any:
        """Load ``weights/<name>.pt`` into ``module`` (built from ``model.json``).

        Args:
            fill_missing: keep the module's own value of keys the file lacks (a
                buffer added after the run was saved).

        Raises:
            WeightsMismatchError: the file holds another architecture's weights.
            StateFileError: missing, truncated or not a state dict.
        """
        state = self.load_weights(name, map_location)
        expected = module.state_dict()
        if fill_missing:
            state = {**expected, **state}
        problem = state_mismatch(expected, state)
        if problem:
            raise WeightsMismatchError(
                f"{self.path}: {WEIGHTS_DIR}/{name}.pt does not match the "
                f"architecture in {MODEL_FILE} ({problem}); the run's files come "
                "from different runs: re-train with `sbi-exsitu fit CONFIG "
                "--overwrite`"
            )
        module.load_state_dict(state)
        return module

    # -- model.json, splits, render config, history, metrics ---------------------
    def write_model(self, meta: Mapping[str, Any]) -> Path:
        """Write ``model.json``: do it last, its presence marks a finished run."""
        atomic_write_json(self.model_file, dict(meta))
        return self.model_file

    def read_model(self) -> dict[str, Any]:
        """``model.json``.

        Raises:
            RunError: the run is not finished, or ``model.json`` is damaged.
        """
        if not self.model_file.is_file():
            raise RunError(
                f"{self.model_file} not found: '{self.path}' is not a finished run "
                "(run or resume `sbi-exsitu fit CONFIG`)"
            )
        try:
            meta = json.loads(self.model_file.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            problem = f"is not valid JSON ({err})"
        else:
            if isinstance(meta, dict):
                return meta
            problem = f"holds a {type(meta).__name__}, expected a JSON object"
        raise RunError(
            f"{self.model_file} {problem}: it is truncated or damaged; re-run "
            "`sbi-exsitu fit CONFIG` to rewrite it (finished members are reused)"
        )

    def write_render_config(self, text: str) -> Path:
        """Write ``render_config.json`` (the JSON text of a RenderConfig)."""
        atomic_write_text(self.render_config_file, text)
        return self.render_config_file

    def write_splits(
        self, splits: Mapping[str, Any], dataset: str | Path, seed: int
    ) -> Path:
        """Write ``splits.json``: index arrays per split, the dataset and the seed.

        The dataset path is stored absolute, so the run works from any directory.
        """
        data = {k: [int(i) for i in v] for k, v in splits.items()}
        where = str(Path(dataset).resolve())
        atomic_write_json(
            self.splits_file, data | {"dataset": where, "seed": int(seed)}
        )
        return self.splits_file

    def read_splits(self) -> dict[str, Any]:
        """``splits.json`` (lists of indices, ``dataset`` and ``seed``).

        Raises:
            RunError: the run has no readable ``splits.json``.
        """
        if not self.splits_file.is_file():
            raise RunError(f"{self.splits_file}: no splits.json in this run")
        try:
            return dict(json.loads(self.splits_file.read_text()))
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            raise RunError(
                f"{self.splits_file} is damaged ({err}); re-train the run with "
                "`sbi-exsitu fit CONFIG --overwrite`"
            ) from None

    def training_data(self) -> Path:
        """The training dataset of ``splits.json``, wherever the run is used from.

        New runs store it absolute. An old run's relative path is tried against
        the current directory, then against the run directory and its parents.

        Raises:
            RunError: no such file; the message lists where it was looked for.
        """
        given = Path(self.read_splits()["dataset"])
        if given.is_absolute():
            tried = [given]
        else:
            here = self.path.resolve()
            tried = [Path.cwd() / given] + [d / given for d in (here, *here.parents)]
        for path in tried:
            if path.is_file():
                return path
        where = ", ".join(str(p) for p in tried[:6]) + (
            ", ..." if len(tried) > 6 else ""
        )
        raise RunError(
            f"{self.splits_file}: the training dataset {str(given)!r} is gone "
            f"(looked for {where}); move it back or pass a dataset explicitly "
            "(--data TEST.h5)"
        )

    def write_history(self, history: Any) -> Path:
        """Write ``history.json``."""
        atomic_write_json(self.history_file, history)
        return self.history_file

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json``."""
        atomic_write_json(self.metrics_file, dict(metrics))
        return self.metrics_file

    def has_config(self, resolved_config: Mapping[str, Any], ignore: Any = ()) -> bool:
        """Whether ``config.json`` exists and equals ``resolved_config`` (but for
        the sections ``ignore``, see :func:`same_config`)."""
        if not self.config_file.is_file():
            return False
        try:
            stored = json.loads(self.config_file.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(stored, dict) and same_config(stored, resolved_config, ignore)

    @property
    def has_trained_state(self) -> bool:
        """Whether training left anything here: ``model.json``, weights, checkpoints.

        Only such a directory holds work to protect; one with just a config (a
        command that failed before its first epoch) is replaced freely.
        """
        return (
            self.model_file.is_file()
            or any((self.path / WEIGHTS_DIR).glob("*.pt"))
            or (self.checkpoints_dir.is_dir() and any(self.checkpoints_dir.iterdir()))
        )

    def _check_removable(self) -> None:
        """Refuse to delete a directory that is not exactly one run."""
        if not self.path.is_dir() or not any(self.path.iterdir()):
            return
        if not self.config_file.is_file():
            raise RunError(
                f"{self.path} does not look like a run directory (no {CONFIG_FILE}); "
                "--overwrite deletes run directories only: choose another "
                "[run] name or out_dir"
            )
        nested = [
            p.parent
            for name in (CONFIG_FILE, MODEL_FILE)
            for p in self.path.glob(f"*/**/{name}")
        ]
        if nested:
            raise RunError(
                f"{self.path} holds other runs ({nested[0]}, ...); --overwrite "
                "deletes one run directory only: remove it by hand or choose "
                "another [run] name"
            )

    def prepare(
        self,
        resolved_config: dict[str, Any],
        overwrite: bool,
        *,
        dataset: Any = None,
        splits: Mapping[str, Any] | None = None,
        split_seed: int = 0,
    ) -> Path:
        """Create the directory for a run of ``resolved_config`` on ``dataset``.

        A directory with trained state (:attr:`has_trained_state`) of the same
        configuration and the same data (:func:`dataset_identity`) is kept, so
        training resumes; its ``splits.json`` is never rewritten. Another
        configuration or other data is refused unless ``overwrite``. A directory
        without trained state is simply re-initialised. With a ``dataset``, its
        render config, identity (``data.json``) and ``splits`` are written.

        Raises:
            RunExistsError: another configuration, and ``overwrite`` is false.
            RunDataChangedError: the data changed, and ``overwrite`` is false.
            RunError: ``overwrite`` of a directory that is not one run.
        """
        identity = None if dataset is None else dataset_identity(dataset)
        if overwrite and self.path.exists():
            self._check_removable()
            shutil.rmtree(self.path)
        elif self.has_trained_state:
            if not self.has_config(resolved_config, ignore=POST_HOC_SECTIONS):
                raise RunExistsError(
                    f"{self.path} holds a run with a different configuration; pass "
                    "--overwrite to replace it or change [run] name"
                )
            if identity is not None:
                self._check_same_data(identity, splits)
            if not self.has_config(resolved_config):  # only post-hoc settings
                atomic_write_json(self.config_file, resolved_config)
            return self.path
        elif self.config_file.is_file() and not self.has_config(resolved_config):
            _log.warning(
                "%s: replacing the config of a run that never trained", self.path
            )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_file, resolved_config)
        if dataset is not None:
            self.write_render_config(dataset.render_config.to_json())
            atomic_write_json(self.path / DATA_FILE, identity)
            if splits is not None:
                self.write_splits(splits, dataset.path, split_seed)
        return self.path

    def _check_same_data(
        self, identity: dict[str, Any], splits: Mapping[str, Any] | None
    ) -> None:
        """Refuse trained state that came from other data than ``identity``."""
        data_file = self.path / DATA_FILE
        fix = (
            "pass --overwrite to retrain on the new data, or point [data] train "
            "at the original file"
        )
        if data_file.is_file():
            try:
                stored = json.loads(data_file.read_text())
            except (ValueError, UnicodeDecodeError):
                stored = {}
            change = _data_change(stored, identity)
        else:  # a run from before data.json: its splits are the only record
            old = self.read_splits() if self.splits_file.is_file() else {}
            same = splits is not None and all(
                old.get(k) == [int(i) for i in v] for k, v in splits.items()
            )
            change = "" if same else "its galaxy splits differ from splits.json"
        if change:
            raise RunDataChangedError(
                f"{self.path} was trained on other data than {identity['path']}: "
                f"{change}; {fix}"
            )
        if not data_file.is_file():
            atomic_write_json(data_file, identity)
