"""Calibration of a posterior on (a subset of) a dataset of labelled maps.

Example:
    >>> from sbi_exsitu.evaluation.calibration import calibrate_dataset
    >>> import sbi_exsitu as sx
    >>> calibrate_dataset(post, sx.MapDataset("test.h5")).verdict  # doctest: +SKIP
    'calibrated'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import check_output_path
from sbi_exsitu.errors import DatasetError, MissingLabelError
from sbi_exsitu.evaluation.calibration.protocol import PosteriorLike
from sbi_exsitu.evaluation.calibration.report import CalibrationReport, calibrate

__all__ = ["calibrate_dataset"]


def calibrate_dataset(
    posterior: PosteriorLike,
    dataset: Any,
    indices: Sequence[int] | np.ndarray | None = None,
    out_dir: str | Path | None = None,
    **kwargs: Any,
) -> CalibrationReport:
    """:func:`calibrate` on (a subset of) a
    :class:`~sbi_exsitu.data.dataset.MapDataset`.

    Truths are the dataset labels named by ``posterior.param_names``; the views
    are grouped by ``labels["galaxy_id"]`` when the dataset has it.

    Args:
        posterior: any :class:`~.protocol.PosteriorLike`.
        dataset: has ``labels`` (name -> ``(N,)`` array), ``maps(indices)`` and
            ``len``.
        indices: which samples; all by default. The maps are read into memory.
        out_dir: where the caller will save the report; checked before the
            sampling (:func:`~sbi_exsitu.atomic.check_output_path`), not written.
        **kwargs: passed to :func:`calibrate`.

    Returns:
        The :class:`CalibrationReport`.

    Raises:
        OutputPathError: ``out_dir`` is the dataset, a file or read-only.
    """
    if out_dir is not None:
        check_output_path(out_dir, kind="dir", inputs=[getattr(dataset, "path", None)])
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    missing = [n for n in posterior.param_names if n not in dataset.labels]
    if missing:
        raise MissingLabelError(
            f"dataset has no label(s) {missing} for the posterior's parameters; "
            f"labels: {sorted(dataset.labels)}"
        )
    for name in posterior.param_names:
        if len(dataset.labels[name]) != len(dataset):
            raise DatasetError(
                f"{getattr(dataset, 'path', 'dataset')}: label '{name}' has "
                f"{len(dataset.labels[name])} values for {len(dataset)} maps, "
                "expected one per map; re-write the dataset's labels"
            )
    truths = np.stack(
        [np.asarray(dataset.labels[n])[idx] for n in posterior.param_names], axis=1
    )
    if "galaxy_id" in dataset.labels:
        kwargs.setdefault("groups", np.asarray(dataset.labels["galaxy_id"])[idx])
    return calibrate(posterior, dataset.maps(idx), truths, **kwargs)
