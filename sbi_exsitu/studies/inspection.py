"""Validation figures of rendered map datasets (the ``sbi-exsitu inspect`` command).

The figures compare one or more datasets (typically one per formation model),
after Angeloudi et al. (2023, "001"):

- ``example_maps.png`` -- one galaxy per dataset, every channel plus the ex-situ
  fraction map, side by side (001 fig. 3);
- ``fex_mstar.png`` -- f_ex against log M* and half-mass radius, one point per
  galaxy, and the f_ex histogram per galaxy and per view (the balancing of 001
  sec. 2.5.1 and fig. 1, 2);
- ``exsitu_profile.png`` and, for mock datasets, ``debris.png`` -- where the
  ex-situ stars sit (:mod:`sbi_exsitu.studies.exsitu_profiles`);
- ``ring_gradients.png`` -- the differences of ring means of the standardised
  maps, inner (r_e/2 - r_e/4), inner-outer (2 r_e - r_e/4) and outer
  (2 r_e - r_e), per channel against f_ex: median and 68% band per dataset
  (001 fig. 13 and sec. 7.1.2).

Ring means use the unmasked pixels whose centre lies within ``max(1 px, 0.15 r)``
of the ring radius ``r``; a ring without data gives NaN (ignored in the medians).
Maps are streamed in batches, so datasets larger than memory are fine.

Example:
    >>> import numpy as np
    >>> maps = np.zeros((1, 1, 32, 32), np.float32)
    >>> yy, xx = np.mgrid[:32, :32] + 0.5 - 16
    >>> maps[0, 0] = np.hypot(xx, yy) / 8  # r in units of r_e (fov = 4 r_e)
    >>> g = ring_gradients(maps, np.ones((1, 32, 32), bool), fov_re=4.0)
    >>> [round(float(g[k][0, 0]), 1) for k in RING_PAIRS]
    [0.2, 1.7, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.errors import DatasetError
from sbi_exsitu.figures import save_figure
from sbi_exsitu.studies.rings import _RADII, dataset_label, ring_means

__all__ = [
    "RING_PAIRS",
    "ring_means",
    "ring_gradients",
    "dataset_gradients",
    "plot_example_maps",
    "plot_fex_mstar",
    "plot_ring_gradients",
    "inspect_datasets",
]

#: Gradient name -> (outer radius, inner radius) in r_e; value = mean(a) - mean(b).
RING_PAIRS: dict[str, tuple[float, float]] = {
    "inner": (0.5, 0.25),
    "inner_outer": (2.0, 0.25),
    "outer": (2.0, 1.0),
}
#: Literature f_ex at fixed M*, (log M*, f_ex, label): Illustris, ~10% at Milky-Way
#: mass (M* ~ 5e10) and over 80% at 1e12 (Rodriguez-Gomez et al. 2016,
#: arXiv:1511.08804); EAGLE, ~20% for M* >= 1e11 (Qu et al. 2017,
#: arXiv:1602.02136).
FEX_LITERATURE = (
    (10.7, 0.1, "Illustris (Rodriguez-Gomez+16)"),
    (12.0, 0.8, "Illustris (Rodriguez-Gomez+16)"),
    (11.0, 0.2, "EAGLE (Qu+17)"),
)
_LABELS = {
    "mass": "log mass",
    "velocity": "velocity",
    "dispersion": "dispersion",
    "age": "age",
    "metallicity": "log Z",
}


def ring_gradients(
    maps: np.ndarray, mask: np.ndarray, fov_re: float
) -> dict[str, np.ndarray]:
    """The three ring-mean differences of 001 fig. 13, each (N, C)."""
    means = ring_means(maps, mask, fov_re, _RADII)
    idx = {r: k for k, r in enumerate(_RADII)}
    return {
        name: means[:, :, idx[a]] - means[:, :, idx[b]]
        for name, (a, b) in RING_PAIRS.items()
    }


def dataset_gradients(ds: MapDataset, batch_size: int = 512) -> dict[str, np.ndarray]:
    """:func:`ring_gradients` of every sample of a dataset, streamed in batches."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in RING_PAIRS}
    fov = ds.render_config.fov_re
    for idx, maps in ds.iter_batches(batch_size=batch_size):
        grads = ring_gradients(maps, ds.mask(idx), fov)
        for key, value in grads.items():
            out[key].append(value)
    c = ds.shape[0]
    return {k: np.concatenate(v) if v else np.empty((0, c)) for k, v in out.items()}


def _per_galaxy(ds: MapDataset) -> dict[str, np.ndarray]:
    _, first = np.unique(ds.labels["galaxy_id"], return_index=True)
    return {k: v[first] for k, v in ds.labels.items()}


def plot_example_maps(
    datasets: Sequence[MapDataset], out: Path, f_ex: float = 0.4
) -> Path:
    """One galaxy per dataset (f_ex closest to ``f_ex``), all channels + ex-situ map."""
    import matplotlib.pyplot as plt

    channels = datasets[0].render_config.channels
    ncol = len(channels) + 1
    fig, axes = plt.subplots(
        len(datasets), ncol, figsize=(2.3 * ncol, 2.5 * len(datasets)), squeeze=False
    )
    for row, ds in zip(axes, datasets, strict=True):
        i = int(np.argmin(np.abs(ds.labels["f_ex"] - f_ex)))
        maps, mask, ex = ds.maps([i])[0], ds.mask([i])[0], ds.exsitu([i])[0]
        for ax, name, img in zip(row, channels, maps, strict=False):
            shown = np.where(mask, img, np.nan)
            cmap = "RdBu_r" if name == "velocity" else "viridis"
            lim = np.nanmax(np.abs(shown)) if name == "velocity" else None
            ax.imshow(
                shown, origin="lower", cmap=cmap, vmin=-lim if lim else None, vmax=lim
            )
            ax.set_title(_LABELS.get(name, name), fontsize=9)
        im = row[-1].imshow(
            np.where(mask, ex, np.nan), origin="lower", cmap="magma", vmin=0, vmax=1
        )
        row[-1].set_title("ex-situ fraction", fontsize=9)
        fig.colorbar(im, ax=row[-1], fraction=0.046)
        row[0].set_ylabel(
            f"{dataset_label(ds)}\nf_ex={ds.labels['f_ex'][i]:.2f}, "
            f"log M*={ds.labels['log_mstar'][i]:.1f}",
            fontsize=9,
        )
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Standardised maps (field of view 4 r_e)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)[0]


def plot_fex_mstar(datasets: Sequence[MapDataset], out: Path) -> Path:
    """f_ex vs log M* and r_e per galaxy, f_ex histograms per galaxy and per view."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    bins = np.linspace(0, 1, 21)
    for k, ds in enumerate(datasets):
        colour = f"C{k}"
        gal = _per_galaxy(ds)
        label = f"{dataset_label(ds)} ({len(gal['f_ex'])} galaxies)"
        axes[0].scatter(
            gal["log_mstar"], gal["f_ex"], s=6, alpha=0.4, c=colour, label=label
        )
        _binned_median(axes[0], gal["log_mstar"], gal["f_ex"], colour)
        axes[1].scatter(
            np.log10(gal["half_mass_radius"]), gal["f_ex"], s=6, alpha=0.4, c=colour
        )
        axes[2].hist(
            gal["f_ex"],
            bins,
            histtype="step",
            color=colour,
            density=True,
            label=f"{dataset_label(ds)} per galaxy",
        )
        axes[2].hist(
            ds.labels["f_ex"],
            bins,
            histtype="step",
            color=colour,
            density=True,
            ls="--",
            label=f"{dataset_label(ds)} per view",
        )
    for k, (logm, f, label) in enumerate(FEX_LITERATURE):
        marker = "*" if "Illustris" in label else "D"
        first = label not in [lab for _, _, lab in FEX_LITERATURE[:k]]
        axes[0].scatter(
            logm,
            f,
            marker=marker,
            s=90,
            c="k",
            zorder=5,
            label=label if first else None,
        )
    axes[0].set(xlabel="log10 M* / Msun", ylabel="f_ex", title="f_ex - M* (001 fig. 2)")
    axes[1].set(xlabel="log10 r_e / kpc", ylabel="f_ex", title="f_ex - size")
    axes[2].set(
        xlabel="f_ex", ylabel="density", title="balancing by views (001 fig. 1)"
    )
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)[0]


def plot_ring_gradients(
    datasets: Sequence[MapDataset],
    out: Path,
    gradients: Sequence[dict[str, np.ndarray]] | None = None,
) -> Path:
    """Ring gradients per channel vs f_ex: median and 68% band (001 fig. 13)."""
    import matplotlib.pyplot as plt

    if gradients is None:
        gradients = [dataset_gradients(ds) for ds in datasets]
    channels = datasets[0].render_config.channels
    titles = {
        "inner": "r_e/2 - r_e/4",
        "inner_outer": "2r_e - r_e/4",
        "outer": "2r_e - r_e",
    }
    fig, axes = plt.subplots(
        len(RING_PAIRS),
        len(channels),
        figsize=(2.9 * len(channels), 7.5),
        squeeze=False,
        sharex=True,
    )
    edges = np.linspace(0, 1, 11)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for k, (ds, grads) in enumerate(zip(datasets, gradients, strict=True)):
        f_ex = ds.labels["f_ex"]
        which = np.digitize(f_ex, edges[1:-1])
        for row, key in enumerate(RING_PAIRS):
            for col, name in enumerate(channels):
                values = grads[key][:, col]
                q = np.full((len(centres), 3), np.nan)
                for b in range(len(centres)):
                    v = values[(which == b) & np.isfinite(values)]
                    if len(v) >= 5:
                        q[b] = np.percentile(v, [16, 50, 84])
                ax = axes[row, col]
                ax.plot(centres, q[:, 1], color=f"C{k}", label=dataset_label(ds))
                ax.fill_between(centres, q[:, 0], q[:, 2], color=f"C{k}", alpha=0.2)
                ax.axhline(0, color="0.7", lw=0.5)
                if row == 0:
                    ax.set_title(_LABELS.get(name, name), fontsize=10)
                if col == 0:
                    ax.set_ylabel(f"{titles[key]}\n[std of the map]", fontsize=9)
                if row == len(RING_PAIRS) - 1:
                    ax.set_xlabel("f_ex")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Ring gradients of the standardised maps (001 fig. 13)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)[0]


def inspect_datasets(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Write the validation figures for ``paths`` into ``out_dir``.

    The ex-situ profile needs ex-situ maps (mocks or simulations with ex-situ
    flags), the debris figure a mock dataset (it re-draws galaxies).

    Raises:
        DatasetError: a file is missing or unreadable.
        ValueError: the datasets have different channels or no samples.
    """
    from sbi_exsitu.studies.exsitu_profiles import plot_debris, plot_exsitu_profile

    out_dir = Path(out_dir)
    datasets = [MapDataset(p) for p in paths]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        channels = {ds.render_config.channels for ds in datasets}
        if len(channels) != 1:
            raise DatasetError(
                f"datasets have different channels {sorted(channels)}; "
                "inspect compares datasets rendered with the same channels"
            )
        for ds in datasets:
            if len(ds) == 0:
                raise DatasetError(f"{ds.path}: the dataset holds no samples")
        written = [
            plot_example_maps(datasets, out_dir / "example_maps.png"),
            plot_fex_mstar(datasets, out_dir / "fex_mstar.png"),
            plot_ring_gradients(datasets, out_dir / "ring_gradients.png"),
        ]
        if all(np.isfinite(ds.exsitu([0])).all() for ds in datasets):
            written.append(
                plot_exsitu_profile(datasets, out_dir / "exsitu_profile.png")
            )
        for ds in datasets:
            if "simulation" in ds.attrs and "mean_merger_lookback" in ds.labels:
                name = (
                    f"debris_{dataset_label(ds)}.png"
                    if len(datasets) > 1
                    else "debris.png"
                )
                written.append(plot_debris(ds, out_dir / name))
        return written
    finally:
        for ds in datasets:
            ds.close()


def _binned_median(ax: Any, x: np.ndarray, y: np.ndarray, colour: str) -> None:
    edges = np.linspace(x.min(), x.max(), 9)
    which = np.digitize(x, edges[1:-1])
    centres, medians = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 3:
            centres.append(0.5 * (edges[b] + edges[b + 1]))
            medians.append(np.median(y[sel]))
    ax.plot(centres, medians, color=colour, lw=2)
