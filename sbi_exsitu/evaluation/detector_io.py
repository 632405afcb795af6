"""Files of the misspecification detector in ``<run>/misspecification/``.

No pickle anywhere: arrays go to ``.npy`` (read with ``allow_pickle=False``),
settings to ``detector.json``, a flow's weights to ``flow.pt`` (a state dict, read
with ``torch.load(weights_only=True)``). Format 1 (embedding features, no flow,
no reference targets; written before issue #17) is still read.

Used by :meth:`~sbi_exsitu.evaluation.misspecification.MisspecificationDetector.save`
and ``.load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import atomic_save, atomic_write_json
from sbi_exsitu.evaluation.map_features import FeatureDensity, MapFeatures

__all__ = ["FORMAT", "read_detector", "write_detector"]

#: Current format of ``detector.json``.
FORMAT = 2
_ARRAYS = ("reference", "calibration_scores", "validation")
#: Arrays written when set; a detector without ``calibration_weights`` was
#: calibrated per view (before issue #17's per-galaxy weighting).
_OPTIONAL = ("reference_targets", "calibration_weights")


def write_detector(det: Any, out: Path) -> Path:
    """Write the fields of a ``MisspecificationDetector`` into directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    arrays = {n: getattr(det, n) for n in _ARRAYS}
    for name in _OPTIONAL:
        if getattr(det, name) is not None:
            arrays[name] = getattr(det, name)
    if det.map_features is not None:
        arrays["features_mean"] = det.map_features.mean
        arrays["features_components"] = det.map_features.components
    for name, arr in arrays.items():
        atomic_save(out / f"{name}.npy", lambda p, a=arr: _save_npy(p, a))
    info = {
        "format": FORMAT,
        "method": det.method,
        "alpha": det.alpha,
        "k": det.k,
        "bandwidth": det.bandwidth,
        "ref_kernel_mean": det.ref_kernel_mean,
        "mean": det.mean.tolist(),
        "std": det.std.tolist(),
        "meta": det.meta,
        "features": det.features,
        "map_features": None
        if det.map_features is None
        else det.map_features.to_json(),
        "density": None if det.density is None else det.density.save(out / "flow.pt"),
    }
    # Written last: a detector.json means every file it names is complete.
    atomic_write_json(out / "detector.json", info)
    return out


def read_detector(d: Path) -> dict[str, Any]:
    """The keyword arguments of a ``MisspecificationDetector`` saved in ``d``.

    Raises:
        ValueError: ``detector.json`` is no JSON object or has an unknown format.
        OSError, KeyError: a file or key is missing (the cache is damaged).
    """
    info = json.loads((d / "detector.json").read_text())
    if not isinstance(info, dict):
        raise ValueError(f"{d}: detector.json holds no JSON object")
    fmt = info.get("format")
    if fmt not in (1, FORMAT):
        raise ValueError(
            f"{d}: detector format {fmt!r} unknown (expected 1 or {FORMAT}); delete "
            "the directory to refit the detector"
        )
    fields = {n: _load_npy(d / f"{n}.npy") for n in _ARRAYS}
    fields |= {
        "mean": np.asarray(info["mean"]),
        "std": np.asarray(info["std"]),
        "bandwidth": info["bandwidth"],
        "ref_kernel_mean": info["ref_kernel_mean"],
        "alpha": info["alpha"],
        "method": info["method"],
        "k": info["k"],
        "meta": info.get("meta", {}),
    }
    if fmt == 1:
        return fields | {"features": "embedding"}
    fields["features"] = info["features"]
    for name in _OPTIONAL:
        if (d / f"{name}.npy").is_file():
            fields[name] = _load_npy(d / f"{name}.npy")
    if info.get("map_features") is not None:
        mf = info["map_features"]
        fields["map_features"] = MapFeatures(
            kind=mf["kind"],
            mean=_load_npy(d / "features_mean.npy"),
            components=_load_npy(d / "features_components.npy"),
            n_bins=int(mf["n_bins"]),
            pool=int(mf["pool"]),
            n_components=mf.get("n_components"),
        )
    if info.get("density") is not None:
        fields["density"] = FeatureDensity.load(info["density"], d / "flow.pt")
    return fields


def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _save_npy(path: Path, array: np.ndarray) -> None:
    # Through a file handle: np.save(path) would append ".npy" to the temp name.
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
