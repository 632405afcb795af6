"""``sbi-exsitu predict``: posterior summaries for new observations.

Reads any dataset written by ``simulate`` or ``render`` (labelled or not),
checks that it was rendered with the run's config, and writes one row per
observation: median, mean, std, 68%/95% HDIs of every target, plus the
dataset's identifiers (and the true values when the dataset has them). The table
is CSV or HDF5 by the output suffix; posterior draws are optional.

A MaNGA DAP MAPS file (``.fits`` / ``.fits.gz``, with its Pipe3D file) may be
given instead of a dataset: it is ingested on the run's grid first
(:func:`sbi_exsitu.data.ingest.ingest_manga`, into a temporary dataset; run
``sbi-exsitu ingest MAPS --pipe3d P3D --like RUN -o obs.h5`` to keep it).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.atomic import check_output_path
from sbi_exsitu.data.compatibility import (
    ObservationError,
    check_sampling_size,
    iter_observations,
    particle_cap_warning,
)
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.errors import DetectorUnavailableError, OutputError, RunError
from sbi_exsitu.runs import DATA_FILE, RunDirectory
from sbi_exsitu.seeding import derive_seed
from sbi_exsitu.tables import TABLE_SUFFIXES, write_table

__all__ = ["predict", "predict_dataset", "is_fits", "training_particle_cap"]

logger = logging.getLogger(__name__)


def is_fits(path: str | Path) -> bool:
    """Whether ``path`` names a FITS file (a survey file to ingest first)."""
    name = Path(path).name.lower()
    return name.endswith((".fits", ".fits.gz", ".fit", ".fits.fz"))


def predict(
    run_dir: str | Path,
    maps_path: str | Path,
    out: str | Path,
    *,
    pipe3d: str | Path | None = None,
    **kwargs: Any,
) -> Path:
    """Summarise the posterior of every observation in ``maps_path`` into ``out``.

    ``maps_path`` is a dataset, or a MaNGA DAP MAPS file (with ``pipe3d``, its
    Pipe3D file), ingested on the run's grid first; the rest is
    :func:`predict_dataset`.

    Raises:
        RenderConfigMismatch: a MAPS file for a run trained without
            ``[observe]``; see also :func:`predict_dataset`.
        ReaderError: a malformed MAPS or Pipe3D file (of another DAP type, all
            masked, without REFF or redshift).
    """
    if not is_fits(maps_path):
        if pipe3d is not None:
            raise OutputError(
                f"{pipe3d}: --pipe3d goes with a MAPS file, not a dataset"
            )
        return predict_dataset(run_dir, maps_path, out, **kwargs)
    from sbi_exsitu.data.ingest import ingest_manga
    from sbi_exsitu.data.render import RenderConfig
    from sbi_exsitu.errors import RunError
    from sbi_exsitu.runs import RunDirectory

    check_output_path(out, inputs=[maps_path, pipe3d], overwrite=True)
    config_file = RunDirectory(run_dir).render_config_file
    if not config_file.is_file():
        raise RunError(f"{run_dir}: not a run directory (no {config_file.name})")
    config = RenderConfig.from_json(config_file.read_text())
    with tempfile.TemporaryDirectory(prefix="sbi-exsitu-ingest-") as tmp:
        obs = Path(tmp) / "observations.h5"
        ingest_manga(
            [maps_path],
            obs,
            config=config,
            pipe3d=None if pipe3d is None else [pipe3d],
            where=str(run_dir),
        )
        return predict_dataset(run_dir, obs, out, **kwargs)


def training_particle_cap(run_dir: str | Path) -> int | None:
    """The most star particles a training galaxy of a run was rendered from.

    From the run's ``data.json`` (runs trained since the cap was recorded), else
    from the training dataset itself when it is still where ``splits.json``
    says (:attr:`~sbi_exsitu.data.map_dataset.MapDataset.particle_cap`). None if
    neither says: the training data had no cap, or it is gone. ``render --like
    RUN`` caps galaxies at it; ``predict`` warns about maps rendered above it.
    """
    run = RunDirectory(run_dir)
    try:
        stored = run.read_json(DATA_FILE)
    except (OSError, ValueError):
        stored = {}
    if isinstance(stored, dict) and "max_particles" in stored:
        return None if stored["max_particles"] is None else int(stored["max_particles"])
    try:
        path = run.training_data()
    except (RunError, OSError, KeyError, ValueError):
        return None
    with MapDataset(path) as ds:
        return ds.particle_cap


def predict_dataset(
    run_dir: str | Path,
    maps_path: str | Path,
    out: str | Path,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    save_samples: bool = False,
    batch_size: int = 512,
    device: str = "cpu",
    progress: bool = True,
    misspecification: bool = True,
) -> Path:
    """Summarise the posterior of every observation of a dataset into ``out``.

    With ``misspecification`` the table also holds, per observation, the
    novelty score, conformal p-value and flag of
    :class:`~sbi_exsitu.evaluation.misspecification.MisspecificationDetector` (columns
    ``misspec_score``, ``misspec_pvalue``, ``misspec_flag``): flag = 1 means "this
    galaxy is unlike the training set". The detector is loaded from the run, or
    fitted on first use from the run's training data and saved there; if that data
    is gone the columns are left out with a warning.

    A map run (``[posterior] kind = "map"``) gives the implied f_ex columns
    (``f_ex_median``, HDIs, ...); an HDF5 output also holds the posterior mean
    and std maps, ``maps/mean`` and ``maps/std`` (n, H, W).

    Args:
        num_samples: draws per observation; default 1000, or 100 for a map
            run (100 maps of H x W per observation; the seed paper's number).

    Raises:
        OutputPathError: ``out`` is the maps file or a file of the run, or
            cannot be written (checked before any work).
        RenderConfigMismatch: the maps were rendered with another config.
        ObservationError: the dataset is empty, or a map holds NaN/inf.
        SamplingLimitError: ``num_samples`` < 1 or the draws cannot fit.
    """
    from sbi_exsitu.posteriors import load_posterior
    from sbi_exsitu.posteriors.scalar import SamplingError

    out = Path(out)
    if out.suffix not in TABLE_SUFFIXES:
        raise OutputError(f"{out}: output must end in one of {TABLE_SUFFIXES}")
    if save_samples and out.suffix == ".csv":
        raise OutputError(f"{out}: --samples needs an HDF5 output (.h5)")
    run_files = [p for p in Path(run_dir).rglob("*") if p.is_file()]
    # An existing table is replaced (as before); an input never is.
    check_output_path(out, inputs=[maps_path, *run_files], overwrite=True)

    post = load_posterior(run_dir, device=device)
    is_map = post.kind == "map"
    if num_samples is None:
        num_samples = 100 if is_map else 1000
    detector = None
    if misspecification and not is_map:  # the detector reads scalar runs
        import warnings

        try:
            detector = post.misspecification_detector()
        except DetectorUnavailableError as err:
            # The table does not need the training data; only the flags do.
            warnings.warn(
                f"misspecification flags are unavailable: {err}", stacklevel=2
            )
    with MapDataset(maps_path) as ds:
        post.check_render_config(ds.render_config, where=str(ds.path))
        if post.run_dir is not None:
            cap = training_particle_cap(post.run_dir)
            if (msg := particle_cap_warning(cap, ds, post.run_dir)) is not None:
                import warnings

                warnings.warn(msg, stacklevel=2)
        if len(ds) == 0:
            raise ObservationError(f"{ds.path}: the dataset holds no samples")
        # Up front, not after hours of sampling: one batch of draws is held at
        # a time, all of them with --samples.
        per_draw = ds.shape[1] * ds.shape[2] if is_map else len(post.param_names)
        n_held = len(ds) if save_samples else min(batch_size, len(ds))
        hint = "drop --samples" if save_samples else "lower --batch-size"
        check_sampling_size(n_held, num_samples, per_draw, hint=hint)
        chunks, summaries, mean_maps, std_maps = [], [], [], []
        # Checked batches: a NaN is named by its index in the dataset.
        batches = iter_observations(ds, batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches,
                total=-(-len(ds) // batch_size),
                desc="predicting",
                unit="batch",
            )
        for i, (start, x) in enumerate(batches):
            try:
                s = post.sample(x, num_samples, seed=derive_seed(seed, "batch", i))
            except SamplingError as err:  # name the sample in the file
                msg = f"{ds.path}, batch from sample {start}: {err}"
                raise SamplingError(msg) from None
            # Scalar summaries flag by default: pass the detector, or False
            # when flags are off or unavailable (no second attempt per batch).
            flags = (
                {}
                if is_map
                else {"misspecification": detector if detector is not None else False}
            )
            summary = post.summarize(x, samples=s, **flags)
            summaries.append(summary.to_columns())
            if is_map:
                mean_maps.append(summary.mean)
                std_maps.append(summary.std)
            if save_samples:
                chunks.append(s)
        columns: dict[str, Any] = {
            "index": np.arange(len(ds)),
            "galaxy_id": ds.labels["galaxy_id"],
            "view_id": ds.labels["view_id"],
            "model": ds.labels["model"],
        }
        # A map run summarises the implied f_ex: compare it with the f_ex label.
        for name in ["f_ex"] if is_map else post.param_names:
            true = ds.labels.get(name)
            if true is not None and np.any(np.isfinite(true)):
                columns[f"{name}_true"] = true
        for key in summaries[0]:
            columns[key] = np.concatenate([s[key] for s in summaries])
    if "misspec_flag" in columns:
        flagged = int(np.sum(columns["misspec_flag"]))
        logger.info(
            "%d of %d observations flagged as unlike the training set "
            "(misspec_flag = 1: do not trust their posteriors)",
            flagged,
            len(columns["misspec_flag"]),
        )
    samples = np.concatenate(chunks) if save_samples else None
    arrays = None
    if is_map and out.suffix != ".csv":
        arrays = {
            "maps/mean": np.concatenate(mean_maps),
            "maps/std": np.concatenate(std_maps),
        }
    return write_table(columns, out, samples=samples, arrays=arrays, inputs=[maps_path])
