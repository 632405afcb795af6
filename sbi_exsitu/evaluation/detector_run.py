"""The misspecification detector of a run directory, and what calibrates its flag.

:meth:`MisspecificationDetector.for_run
<sbi_exsitu.evaluation.misspecification.MisspecificationDetector.for_run>` loads
``<run>/misspecification/`` or fits it from the run's ``splits.json`` on first
use; this module does that work and, with the experiment's ``[misspecification]``
section (:class:`~sbi_exsitu.config.experiment.MisspecificationSection`, read
from the run's ``config.json``), calibrates the flag on more in-model galaxies
than the validation split holds (issue #17):

* ``calibration_galaxies = N``: N fresh galaxies are simulated exactly like the
  training set (its stored ``simulation`` attributes: model, parameters, views,
  render and observation) from :func:`calibration_seed`, into
  ``<run>/misspecification/calibration.h5`` (resumable, like ``simulate``);
  their features calibrate the conformal p-values, each view weighing
  ``1 / n_views`` of its galaxy; the file is deleted once the detector is saved
  (the features stay in ``validation.npy``; the seed regenerates the maps);
* ``calibration_data = "path.h5"``: an existing dataset, checked to be rendered
  like the training set, of its formation model(s) and not its galaxies.

Why: the false-alarm rate of a conformal flag calibrated on ``n`` galaxies
scatters from run to run by ``sqrt(alpha (1 - alpha) / n)`` around ``alpha``
(conditional validity; Vovk 2012, "Conditional validity of inductive conformal
predictors", ACML): ~0.03 for the ~50 validation galaxies of a 500-galaxy run,
~0.006 for 1,500 galaxies.

A saved detector records its calibration settings (``meta["calibration"]``);
one calibrated otherwise than ``config.json`` asks is recalibrated (its
features and flow are kept).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.config.experiment import MisspecificationSection
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.simulate import SimulationConfig, simulate, stored_simulation
from sbi_exsitu.errors import DatasetError, DetectorUnavailableError, RunError
from sbi_exsitu.runs import CALIBRATION_DATA, CONFIG_FILE, DETECTOR_DIR, RunDirectory
from sbi_exsitu.schema import ConfigError, take_section
from sbi_exsitu.seeding import derive_seed

__all__ = [
    "calibration_seed",
    "calibration_simulation",
    "check_calibration_data",
    "detector_for_run",
    "run_calibration_settings",
]


def calibration_seed(run_seed: int, train_seed: int) -> int:
    """The simulation seed of a run's calibration galaxies.

    Galaxy ``i`` of a dataset simulated with seed ``s`` is drawn from
    ``SeedSequence(s, spawn_key=(i,))``, so two datasets share galaxies only if
    their seeds are equal: this seed is hashed from the run's and the training
    set's (:func:`~sbi_exsitu.seeding.derive_seed`, 63 bits) and checked to
    differ from the training seed, so no calibration galaxy is a training one.

    Example:
        >>> calibration_seed(0, 1) != 1
        True
    """
    seed = derive_seed(run_seed, "misspecification-calibration", train_seed)
    if seed == train_seed:  # a 2**-63 chance; would reuse the training galaxies
        seed = derive_seed(seed, "misspecification-calibration")
    return seed


def calibration_simulation(
    train: MapDataset, n_galaxies: int, run_seed: int
) -> SimulationConfig:
    """The simulation of ``n_galaxies`` fresh galaxies like ``train``'s.

    Raises:
        DetectorUnavailableError: ``train`` was not written by ``simulate`` (no
            ``simulation`` attributes, e.g. a union of two datasets).
        DatasetError: the stored simulation no longer renders like ``train``.
    """
    attrs = train.attrs
    doc = attrs.get("simulation")
    if attrs.get("source") != "simulate" or not isinstance(doc, dict):
        raise DetectorUnavailableError(
            f"{train.path}: the training set was not written by `sbi-exsitu "
            "simulate` (no 'simulation' attributes), so [misspecification] "
            "calibration_galaxies cannot simulate more of its galaxies; give "
            "calibration_data = an in-model dataset rendered like it, or "
            "calibration_galaxies = 0 (calibrate on the validation split)"
        )
    where = f"{train.path} (its 'simulation' attributes)"
    try:
        # The full stored model parameters, not the config's overrides: the
        # new galaxies are in-model even if a later version changed a default.
        stored = stored_simulation(attrs)
    except ConfigError as err:
        raise DatasetError(f"cannot simulate calibration galaxies: {err}") from None
    seed = calibration_seed(run_seed, stored.seed)
    cfg = dataclasses.replace(stored, n_galaxies=n_galaxies, seed=seed)
    if cfg.render != train.render_config:
        raise DatasetError(
            f"{where}: the stored simulation renders unlike the dataset's maps ("
            + "; ".join(cfg.render.diff(train.render_config))
            + "); re-simulate the training set"
        )
    return cfg


def check_calibration_data(cal: MapDataset, train: MapDataset) -> None:
    """Refuse a calibration dataset that is not fresh in-model data of ``train``.

    Raises:
        DatasetError: rendered otherwise, another formation model, no galaxy
            ids, or simulated with the training set's seed (its galaxies).
    """
    fix = (
        f"give [misspecification] calibration_data = an in-model dataset rendered "
        f"like the training set {train.path} (other galaxies of its model), or "
        "calibration_galaxies = N to simulate one"
    )
    try:
        cal.check_config(train.render_config)
    except DatasetError as err:
        raise DatasetError(
            f"[misspecification] calibration_data: {err}; {fix}"
        ) from None
    if "galaxy_id" not in cal.labels:
        raise DatasetError(f"{cal.path}: no 'galaxy_id' labels; {fix}")
    models = {str(m) for m in np.unique(cal.labels.get("model", []))}
    known = {str(m) for m in np.unique(train.labels.get("model", []))}
    if models - known:
        raise DatasetError(
            f"{cal.path}: galaxies of formation model(s) {sorted(models - known)}, "
            f"the run was trained on {sorted(known)}; {fix}"
        )
    sim_cal, sim_train = cal.attrs.get("simulation"), train.attrs.get("simulation")
    if isinstance(sim_cal, dict) and isinstance(sim_train, dict):
        if sim_cal["simulate"] == sim_train["simulate"]:
            raise DatasetError(
                f"{cal.path}: simulated with the training set's model and seed "
                f"({sim_cal['simulate'].get('seed')}), so it holds the training "
                f"galaxies; {fix}"
            )


def run_calibration_settings(run: RunDirectory) -> tuple[MisspecificationSection, int]:
    """The run's ``[misspecification]`` section and ``[run] seed`` (``config.json``;
    the defaults for a run without one)."""
    if not run.config_file.is_file():
        return MisspecificationSection(), 0
    try:
        doc = run.read_json(CONFIG_FILE)
        section = take_section(
            doc.get("misspecification"),
            MisspecificationSection,
            f"{run.config_file} [misspecification]",
        )
        return section, int(doc.get("run", {}).get("seed", 0))
    except (ValueError, AttributeError) as err:  # ConfigError is a ValueError
        raise RunError(f"{run.config_file}: unreadable ({err})") from None


def detector_for_run(
    cls: Any,
    posterior: Any,
    run_dir: Path,
    *,
    want: tuple[str, str, int | None],
    progress: bool = False,
    fit_kwargs: dict[str, Any],
) -> Any:
    """The body of ``MisspecificationDetector.for_run`` (``cls``), see there;
    ``want``: the ``space`` (features, method, components) a cached detector
    must have."""
    run = RunDirectory(run_dir)
    settings, run_seed = run_calibration_settings(run)
    wanted = _wanted(settings, run_seed)
    det = _cached(cls, run_dir, want)
    if det is not None and det.meta.get("calibration", {}).get("settings") == wanted:
        return det
    try:
        splits = run.read_splits()
        ds = MapDataset(run.training_data(), expect_config=posterior.render_config)
    except (RunError, DatasetError) as err:
        raise DetectorUnavailableError(
            f"{run_dir}: no saved detector, and it needs the training data "
            f"once to be fitted: {err}"
        ) from None
    with ds:
        if det is None:
            det = cls.fit(
                posterior,
                ds,
                np.asarray(splits["train"], np.int64),
                np.asarray(splits["validation"], np.int64),
                **fit_kwargs,
            )
        det = _calibrated(det, posterior, run, ds, settings, run_seed, splits, progress)
    det.meta["calibration"]["settings"] = wanted
    try:
        det.save(run_dir)
    except OSError as err:  # read-only run: refit next time, but go on
        warnings.warn(
            f"{run_dir}: the misspecification detector cannot be cached "
            f"({err}); it is refitted on every use",
            stacklevel=3,
        )
    else:
        # Saved: the features are in validation.npy, the seed regenerates the maps.
        (run.path / CALIBRATION_DATA).unlink(missing_ok=True)
    return det


def _wanted(settings: MisspecificationSection, run_seed: int) -> dict[str, Any] | None:
    """What ``meta["calibration"]["settings"]`` of a matching detector holds."""
    if not settings.active:
        return None  # also what detectors saved before this section hold
    return dataclasses.asdict(settings) | {"run_seed": run_seed}


def _cached(cls: Any, run_dir: Path, want: tuple[str, str, int | None]) -> Any:
    """The saved detector if it scores in the space and with the score wanted."""
    saved = run_dir / DETECTOR_DIR / "detector.json"
    if not saved.is_file():
        return None
    try:
        det = cls.load(run_dir)
    # np.load raises EOFError on an empty .npy, json ValueError on a truncated
    # .json: either way the cache is damaged (a damaged flow state dict raises
    # StateFileError, an OSError).
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        warnings.warn(
            f"{saved}: the saved misspecification detector is damaged "
            f"({type(err).__name__}: {err}); refitting it",
            stacklevel=4,
        )
        return None
    # Another space, score or component count (a pre-#17 embedding k-NN, 32
    # unrecorded components) or per-view calibration (no weights: before #17's
    # per-galaxy one): refit.
    weighted = det.calibration_weights is not None
    return det if weighted and det.space == want else None


def _calibrated(
    det: Any,
    posterior: Any,
    run: RunDirectory,
    train: MapDataset,
    settings: MisspecificationSection,
    run_seed: int,
    splits: dict[str, Any],
    progress: bool,
) -> Any:
    """``det`` calibrated as ``settings`` ask (the validation split if inactive)."""
    if not settings.active:
        if det.meta.get("calibration") is None:  # fitted on the validation split
            det.meta["calibration"] = {"source": "validation"}
            return det
        val = np.asarray(splits["validation"], np.int64)
        z = det.represent(posterior, train, val)
        det = det.calibrate(z, train.labels["galaxy_id"][val])
        det.meta["calibration"] = {"source": "validation"}
        return det
    if settings.calibration_data:
        path, source = Path(settings.calibration_data), "data"
        meta: dict[str, Any] = {"path": str(path.resolve())}
    else:
        n = settings.calibration_galaxies
        sim = calibration_simulation(train, n, run_seed)
        path = simulate(
            sim, run.path / CALIBRATION_DATA, resume=True, progress=progress
        )
        source, meta = "simulated", {"seed": sim.seed, "model": sim.model}
    try:
        cal = MapDataset(path)
    except (OSError, DatasetError) as err:
        raise DatasetError(f"[misspecification] calibration_data: {err}") from None
    with cal:
        check_calibration_data(cal, train)
        groups = cal.labels["galaxy_id"]
        det = det.calibrate(det.represent(posterior, cal), groups)
    det.meta["calibration"] = meta | {
        "source": source,
        "n_galaxies": len(np.unique(groups)),
        "n_maps": len(groups),
    }
    return det
