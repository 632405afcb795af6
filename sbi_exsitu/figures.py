"""The package's one figure writer, and figures of rendered samples.

:func:`save_figure` writes every figure of the package (atomically). The map
panels show one row of maps per observation (like 001 fig. 3).

Example:
    >>> from sbi_exsitu.figures import channel_title
    >>> from sbi_exsitu.data.render import RenderConfig
    >>> channel_title("velocity", RenderConfig())
    'velocity [std]'
    >>> channel_title("mass", RenderConfig(standardize=False))
    'log mass [log Msun]'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sbi_exsitu.atomic import atomic_save, check_output_path
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.render import RenderConfig
from sbi_exsitu.errors import SampleIndexError

if TYPE_CHECKING:  # matplotlib loads on first plot, not on import
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["channel_title", "plot_maps", "plot_sample", "save_figure", "save_sample"]

# Diverging maps for signed quantities, so zero is the neutral colour.
_CMAPS = {
    "mass": "magma",
    "velocity": "RdBu_r",
    "dispersion": "viridis",
    "age": "cividis",
    "metallicity": "plasma",
}


def channel_title(name: str, config: RenderConfig) -> str:
    """Panel title with the channel's quantity and unit after preprocessing.

    Args:
        name: a channel of :data:`sbi_exsitu.data.render.CHANNELS`.
        config: the render config the maps were made with.
    """
    logged = {"mass": config.log_mass, "metallicity": config.log_metallicity}
    quantity = {
        "mass": "log mass" if config.log_mass else "mass",
        "velocity": "velocity",
        "dispersion": "dispersion",
        "age": "age",
        "metallicity": "log Z/Zsun" if config.log_metallicity else "Z",
    }[name]
    if config.standardize:
        unit = "std"
    else:
        unit = {
            "mass": "log Msun" if logged["mass"] else "Msun",
            "velocity": "km/s",
            "dispersion": "km/s",
            "age": "Gyr",
            "metallicity": "dex" if logged["metallicity"] else "mass fraction",
        }[name]
    return f"{quantity} [{unit}]"


def plot_maps(
    maps: np.ndarray,
    mask: np.ndarray,
    config: RenderConfig,
    exsitu: np.ndarray | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Draw one observation's (C, H, W) maps in a row, masked pixels blank.

    Args:
        maps: (C, H, W) maps in the order of ``config.channels``.
        mask: (H, W) pixels holding data.
        config: the render config (channel names and units).
        exsitu: (H, W) ex-situ fraction map, drawn as a last panel if given.
        axes: C (+1 with ``exsitu``) axes to draw into; a new figure if omitted.

    Returns:
        The figure holding the axes.
    """
    import matplotlib.pyplot as plt

    n_panels = config.n_channels + (exsitu is not None)
    if axes is None:
        fig, axes = plt.subplots(
            1,
            n_panels,
            figsize=(2.6 * n_panels, 3.0),
            squeeze=False,
            layout="constrained",
        )
        axes = axes[0]
    elif len(axes) != n_panels:
        raise ValueError(f"need {n_panels} axes, got {len(axes)}")
    fig = axes[0].figure
    panels = [(name, maps[c]) for c, name in enumerate(config.channels)]
    if exsitu is not None:
        panels.append(("exsitu", exsitu))
    for ax, (name, image) in zip(axes, panels, strict=True):
        shown = np.ma.masked_where(~mask, image)
        kwargs: dict = {"cmap": _CMAPS.get(name, "Greens")}
        if name == "exsitu":
            kwargs.update(vmin=0.0, vmax=1.0)
            title = "ex-situ fraction"
        else:
            title = channel_title(name, config)
            if name == "velocity" and shown.count():
                lim = float(np.abs(shown).max()) or 1.0
                kwargs.update(vmin=-lim, vmax=lim)
        # origin="lower": rows are the image y axis, which points up.
        im = ax.imshow(shown, origin="lower", interpolation="nearest", **kwargs)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
    return fig


def plot_sample(
    dataset: MapDataset | str | Path,
    index: int,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Plot sample ``index`` of a dataset: every channel, plus the ex-situ map.

    The suptitle gives galaxy id, view, formation model, f_ex and log M*; the
    ex-situ fraction panel is drawn only for labelled samples.

    Args:
        dataset: an open :class:`MapDataset` or the path of one.
        index: sample index; negative values count from the end.
        axes: axes to draw into (see :func:`plot_maps`).

    Returns:
        The figure.

    Raises:
        IndexError: ``index`` is out of range (the message names the file and
            its sample count).
        sbi_exsitu.data.dataset.DatasetError: the file cannot be read.
    """
    if not isinstance(dataset, MapDataset):
        with MapDataset(dataset) as ds:
            return plot_sample(ds, index, axes)
    n = len(dataset)
    if not -n <= index < n:
        raise SampleIndexError(
            f"{dataset.path}: sample index {index} is out of range, the file holds "
            f"{n} samples (valid: 0 to {n - 1})"
        )
    index %= n
    labels = {key: value[index] for key, value in dataset.labels.items()}
    labelled = bool(np.isfinite(labels["f_ex"]))
    exsitu = dataset.exsitu([index])[0] if labelled else None
    fig = plot_maps(
        dataset.maps([index])[0],
        dataset.mask([index])[0],
        dataset.render_config,
        exsitu=exsitu,
        axes=axes,
    )
    f_ex = f"f_ex = {labels['f_ex']:.2f}" if labelled else "f_ex unknown"
    fig.suptitle(
        f"galaxy {labels['galaxy_id']}, view {labels['view_id']}, "
        f"{labels['model']}: {f_ex}, log M* = {labels['log_mstar']:.2f}"
    )
    return fig


def save_figure(
    fig: Figure,
    path: str | Path,
    formats: Sequence[str] = ("png",),
    dpi: int = 130,
) -> list[Path]:
    """Save ``fig`` atomically as ``path`` with each suffix in ``formats``; close it.

    The one figure writer of the package: a killed job never leaves a truncated
    PNG or PDF under the final name.

    Raises:
        OutputPathError: a target is a folder or lies in a read-only folder.
    """
    out = []
    try:
        for fmt in formats:
            target = Path(path).with_suffix(f".{fmt}")
            check_output_path(target, overwrite=True)
            atomic_save(
                target,
                lambda p, f=fmt: fig.savefig(p, format=f, dpi=dpi, bbox_inches="tight"),
            )
            out.append(target)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out


def save_sample(
    dataset: str | Path, index: int, output: str | Path, dpi: int = 120
) -> Path:
    """Plot sample ``index`` of ``dataset`` (:func:`plot_sample`) to ``output``.

    The output is checked before the file is read and written atomically; it
    may be replaced, but never when it is the dataset itself.

    Raises:
        OutputPathError: ``output`` is the dataset, a folder or not writable.
        IndexError: ``index`` is out of range.
        sbi_exsitu.data.dataset.DatasetError: the file cannot be read.
    """
    output = check_output_path(output, inputs=[dataset], overwrite=True)
    fig = plot_sample(dataset, index)
    suffix = output.suffix.lstrip(".") or "png"
    try:
        atomic_save(output, lambda p: fig.savefig(p, format=suffix, dpi=dpi))
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return output
