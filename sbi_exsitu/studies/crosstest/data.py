"""The datasets of ``sbi-exsitu crosstest``: simulated per model and aperture,
channel subsets sliced exactly, and the union training set.

See :mod:`sbi_exsitu.studies.crosstest.study` for why slicing channels is exact and why
apertures are re-rendered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import OPTIONAL_LABELS, DatasetWriter, MapDataset
from sbi_exsitu.data.render import CHANNELS, RenderedViews
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.studies.crosstest.grid import (
    UNION,
    UNION_ID_OFFSET,
    CrosstestSection,
    aperture_label,
    cell_name,
)

__all__ = ["derive_channels", "prepare_data", "union_dataset"]


def _simulation(
    cfg: ExperimentConfig, model: str, model_index: int, aperture: float | None
) -> Any:
    # Independent galaxies per model (as TNG and EAGLE are), the same galaxies
    # for every aperture of one model.
    seed = int(cfg.simulate.get("seed", 0)) + 1000 * model_index
    return cfg.simulation_config(
        simulate={"model": model, "seed": seed},
        render={
            "channels": list(CHANNELS),
            "aperture_re": aperture if aperture is not None else False,
        },
        where=f"{cfg.source} (crosstest {model}, aperture {aperture_label(aperture)})",
    )


def derive_channels(base: MapDataset, channels: tuple[str, ...], out: Path) -> Path:
    """Write the ``channels`` slice of an all-channel dataset (exact, see module doc).

    The stored render config is the base config with ``channels`` replaced, i.e.
    what rendering with those channels would store. Reuses a finished ``out``.
    """
    if out.exists():
        return out
    cfg = base.render_config
    missing = [c for c in channels if c not in cfg.channels]
    if missing:
        raise DatasetError(f"{base.path} has no channel(s) {missing}")
    pick = [cfg.channels.index(c) for c in channels]
    new_cfg = dataclasses.replace(cfg, channels=tuple(channels))
    attrs = base.attrs
    attrs = {
        k: v
        for k, v in attrs.items()
        if k not in ("schema_version", "render_config", "n_complete")
    }
    attrs["derived_from"] = {"path": str(base.path), "channels": list(channels)}
    _copy_galaxies(
        base, np.arange(len(base)), out, new_cfg, attrs, transform=lambda m: m[:, pick]
    )
    return out


def _copy_galaxies(
    src: MapDataset,
    indices: np.ndarray,
    out: Path,
    render_config: Any,
    attrs: dict[str, Any],
    *,
    transform: Callable | None = None,
    id_offset: int = 0,
    writer: DatasetWriter | None = None,
) -> None:
    gid = src.labels["galaxy_id"][indices]
    # Samples of one galaxy are contiguous (written whole): cut at id changes.
    cuts = np.flatnonzero(np.diff(gid)) + 1
    own = writer is None
    # Not `writer or ...`: a DatasetWriter with no samples yet has len 0 (falsy).
    w = (
        writer
        if writer is not None
        else DatasetWriter(out, render_config, overwrite=True, attrs=attrs)
    )
    try:
        for group in np.split(indices, cuts):
            maps = src.maps(group)
            if transform is not None:
                maps = transform(maps)
            lab = {k: v[group] for k, v in src.labels.items()}
            views = RenderedViews(
                maps=np.ascontiguousarray(maps),
                exsitu=src.exsitu(group),
                mask=src.mask(group),
                directions=np.zeros((len(group), 3)),
            )
            w.add_galaxy(
                views,
                galaxy_id=int(lab["galaxy_id"][0]) + id_offset,
                f_ex=float(lab["f_ex"][0]),
                log_mstar=float(lab["log_mstar"][0]),
                half_mass_radius=float(lab["half_mass_radius"][0]),
                model=str(lab["model"][0]),
                view_ids=lab["view_id"],
                assembly={k: float(lab[k][0]) for k in OPTIONAL_LABELS if k in lab},
            )
    except BaseException:
        if own:
            w.close(finalize=False)
        raise
    if own:
        w.close()


def union_dataset(sources: list[MapDataset], split_seed: int, out: Path) -> Path:
    """Training + validation galaxies of every source, ids offset per source.

    The sources' test galaxies (``split_by_galaxy`` with ``split_seed``) are left
    out so the union posterior can be tested on them. Reuses a finished ``out``.
    """
    if out.exists():
        return out
    cfg = sources[0].render_config
    for s in sources[1:]:
        s.check_config(cfg)
    caps = [src.particle_cap for src in sources]
    attrs = {
        "source": "crosstest-union",
        "members": [str(s.path) for s in sources],
        "id_offset": UNION_ID_OFFSET,
        "split_seed": split_seed,
        # The most particles of any member galaxy: `render --like` caps at it.
        "max_particles": None if None in caps else max(caps),
    }
    with DatasetWriter(out, cfg, overwrite=True, attrs=attrs) as writer:
        for k, src in enumerate(sources):
            sp = src.splits(seed=split_seed)
            keep = np.sort(np.r_[sp["train"], sp["validation"]])
            _copy_galaxies(
                src, keep, out, cfg, attrs, writer=writer, id_offset=k * UNION_ID_OFFSET
            )
    return out


def prepare_data(
    cfg: ExperimentConfig,
    sec: CrosstestSection,
    data_dir: Path,
    progress: bool,
    say: Callable,
) -> dict[tuple[str, str, Any], Path]:
    from sbi_exsitu.data.simulate import simulate

    paths: dict[tuple[str, str, Any], Path] = {}
    for a in sec.apertures:
        for k, model in enumerate(sec.models):
            base = data_dir / f"{model}__all5__ap{aperture_label(a)}.h5"
            if not base.exists():
                say(f"simulating {model}, aperture {aperture_label(a)} -> {base}")
            simulate(
                _simulation(cfg, model, k, a),
                base,
                resume=base.exists() or base.with_name(base.name + ".partial").exists(),
                progress=progress,
            )
            with MapDataset(base) as ds:
                for cname, chans in sec.channels.items():
                    out = data_dir / f"{cell_name(model, cname, a)}.h5"
                    if tuple(chans) == tuple(CHANNELS):
                        out = base
                    paths[(model, cname, a)] = derive_channels(ds, tuple(chans), out)
        if UNION in sec.train_sets:
            for cname in sec.channels:
                out = data_dir / f"{cell_name(UNION, cname, a)}.h5"
                srcs = [MapDataset(paths[(m, cname, a)]) for m in sec.models]
                try:
                    paths[(UNION, cname, a)] = union_dataset(
                        srcs, cfg.data.split_seed, out
                    )
                finally:
                    for s in srcs:
                        s.close()
    return paths
