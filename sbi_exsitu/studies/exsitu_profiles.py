"""Where the ex-situ stars sit: radial profiles and debris, next to the literature.

Two figures of ``sbi-exsitu inspect`` (issue #18, item 5), beside those of
:mod:`sbi_exsitu.studies.inspection`:

- ``exsitu_profile.png`` -- the ex-situ fraction in rings at 0.25 - 2 r_e, median
  and 68% band per bin of log M* (one view per galaxy: views of a galaxy are not
  independent), and per galaxy the number of in-situ -> ex-situ transitions (where
  the ring profile crosses 0.5) inside 2 r_e. Literature marks: in MUSE early-type
  galaxies the ex-situ fraction at 2 R_e is 30-100% in massive extended ones and
  5-40% in compact ones (Davison et al. 2021, arXiv:2108.06160, 13 galaxies,
  full spectral fitting with semi-analytic priors); in Magneticum ~70% of
  galaxies have one transition radius, ~10% are accretion-dominated at all radii
  and ~13% have two transitions (Remus & Forbes 2022, arXiv:2101.12216, ~500
  galaxies; their profiles reach beyond 2 R_e, so their "no transition" class
  also holds galaxies whose transition lies outside our frame). In-situ stars
  dominate the centre in Illustris, ex-situ ones further out (Rodriguez-Gomez
  et al. 2016, arXiv:1511.08804).
- ``debris.png`` -- the accreted stars themselves: galaxies of the dataset with
  the most recent mergers re-drawn from its stored simulation config with more
  particles, as log ex-situ surface density in a wide frame, where streams and
  shells would show that a 4 r_e map at 32 px cannot resolve. (On today's mock
  worlds they do not: the debris is phase-mixed, see ``docs/simulate.md``.)

Example:
    >>> import numpy as np
    >>> profile = np.array([[0.1, 0.3, 0.6, 0.8], [0.7, 0.8, 0.9, 0.9]])
    >>> transitions(profile).tolist()
    [1, 0]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.figures import save_figure
from sbi_exsitu.studies.rings import dataset_label, ring_means

__all__ = [
    "PROFILE_RADII",
    "exsitu_ring_profiles",
    "transitions",
    "plot_exsitu_profile",
    "plot_debris",
]

#: Ring radii of the ex-situ profile (r_e); 2 r_e is the edge of a 4 r_e frame.
PROFILE_RADII = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: MUSE early types, ex-situ fraction at 2 R_e (Davison et al. 2021).
MUSE_2RE = {"massive extended": (0.3, 1.0), "compact": (0.05, 0.4)}
#: Magneticum transition classes (Remus & Forbes 2022): fraction of galaxies.
MAGNETICUM_TRANSITIONS = {"one": 0.70, "ex-situ\neverywhere": 0.10, "two or more": 0.13}


def exsitu_ring_profiles(
    ds: MapDataset, radii: tuple[float, ...] = PROFILE_RADII
) -> tuple[np.ndarray, np.ndarray]:
    """Ring means of the ex-situ map of each galaxy's first view.

    Returns:
        ``(profiles (G, R), log_mstar (G,))``; NaN where a ring holds no pixel.
    """
    _, first = np.unique(ds.labels["galaxy_id"], return_index=True)
    first = np.sort(first)
    ex = ds.exsitu(first)[:, None]
    profiles = ring_means(ex, ds.mask(first), ds.render_config.fov_re, radii)
    return profiles[:, 0], ds.labels["log_mstar"][first]


def transitions(profiles: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Number of times each ring profile crosses ``level`` (NaN rings skipped)."""
    out = np.zeros(len(profiles), dtype=int)
    for k, p in enumerate(profiles):
        above = p[np.isfinite(p)] > level
        out[k] = int(np.count_nonzero(above[1:] != above[:-1]))
    return out


def _classes(profiles: np.ndarray) -> dict[str, float]:
    n = transitions(profiles)
    inner = profiles[:, 0]
    return {
        "one": float(np.mean(n == 1)),
        "ex-situ\neverywhere": float(np.mean((n == 0) & (inner > 0.5))),
        "in-situ\neverywhere": float(np.mean((n == 0) & (inner <= 0.5))),
        "two or more": float(np.mean(n >= 2)),
    }


def plot_exsitu_profile(datasets: list[MapDataset], out: Path) -> Path:
    """Ex-situ ring profiles per mass bin and transition classes (see module)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    edges = [10.0, 10.5, 11.0, 11.5, 12.0]
    width = 0.8 / (len(datasets) + 1)
    styles = ["-", "--", ":", "-."]
    for k, ds in enumerate(datasets):
        prof, logm = exsitu_ring_profiles(ds)
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            sel = (logm >= lo) & (logm < hi)
            if sel.sum() < 5:
                continue
            q = np.nanpercentile(prof[sel], [16, 50, 84], axis=0)
            label = f"{dataset_label(ds)} {lo:g}-{hi:g} (n={sel.sum()})"
            axes[0].plot(
                PROFILE_RADII, q[1], color=f"C{b}", ls=styles[k % 4], label=label
            )
            if k == 0:
                axes[0].fill_between(
                    PROFILE_RADII, q[0], q[2], color=f"C{b}", alpha=0.12
                )
        classes = _classes(prof)
        x = np.arange(len(classes)) + k * width
        axes[1].bar(x, list(classes.values()), width, label=f"{dataset_label(ds)}")
        axes[1].set_xticks(np.arange(len(classes)) + 0.4 - width / 2, list(classes))
    for j, (name, (lo, hi)) in enumerate(MUSE_2RE.items()):
        x = 2.0 + 0.05 * (j + 1)
        axes[0].errorbar(
            x, 0.5 * (lo + hi), yerr=0.5 * (hi - lo), color="k", capsize=3, lw=1
        )
        axes[0].annotate(f"MUSE ETGs, {name}", (x + 0.02, hi), fontsize=7)
    ref = [MAGNETICUM_TRANSITIONS.get(c, np.nan) for c in classes]
    axes[1].bar(
        np.arange(len(ref)) + len(datasets) * width,
        ref,
        width,
        color="0.6",
        label="Magneticum (Remus & Forbes 2022)",
    )
    axes[0].set(
        xlabel="R / r_e",
        ylabel="ex-situ fraction in the ring",
        ylim=(0, 1.05),
        title="ex-situ profile per log M* bin (one view per galaxy)",
    )
    axes[1].set(ylabel="fraction of galaxies", title="transitions inside 2 r_e")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)[0]


def plot_debris(
    ds: MapDataset,
    out: Path,
    n_galaxies: int = 3,
    max_particles: int = 100_000,
    fov_re: float = 10.0,
    resolution: int = 96,
    candidates: int = 200,
    min_f_ex: float = 0.25,
) -> Path:
    """Log ex-situ surface density of the galaxies with the latest mergers.

    Re-draws (from the dataset's ``simulation`` attribute: the same galaxy
    parameters and merger history, with ``max_particles`` particles instead of
    the dataset's count) the ``n_galaxies`` of the first ``candidates`` galaxies
    with f_ex >= ``min_f_ex`` whose mass-weighted merger lookback time is
    smallest, projected along the z axis in a ``fov_re`` r_e wide frame.

    Raises:
        DatasetError: the dataset holds no simulation config (not a mock set).
    """
    import matplotlib.pyplot as plt
    from scipy.ndimage import gaussian_filter

    from sbi_exsitu.data.simulate import draw_galaxy, stored_simulation
    from sbi_exsitu.errors import DatasetError

    if "simulation" not in ds.attrs or "mean_merger_lookback" not in ds.labels:
        raise DatasetError(
            f"{ds.path}: no 'simulation' attribute or merger labels; the debris "
            "figure re-draws mock galaxies (a dataset written by `sbi-exsitu "
            "simulate`)"
        )
    cfg = stored_simulation(ds.attrs)
    # One particle count for every galaxy: the picture is about where the debris
    # lies, and equal counts make the panels comparable.
    params = {
        **cfg.model_params,
        "max_particles": max_particles,
        "min_particles": max_particles,
    }
    cfg = dataclasses.replace(cfg, model_params=params)
    labels = ds.labels
    gid, first = np.unique(labels["galaxy_id"], return_index=True)
    gid, first = gid[:candidates], first[:candidates]
    lookback = np.where(
        labels["f_ex"][first] >= min_f_ex,
        labels["mean_merger_lookback"][first],
        np.inf,
    )
    keep = np.argsort(lookback)[:n_galaxies]
    fig, axes = plt.subplots(1, len(keep), figsize=(3.6 * len(keep), 3.6))
    for ax, k in zip(np.atleast_1d(axes), keep, strict=True):
        p, info = draw_galaxy(cfg, int(gid[k]))
        half = 0.5 * fov_re * p.half_mass_radius
        ex = p.ex_situ.astype(bool)
        img, _, _ = np.histogram2d(
            p.pos[ex, 0],
            p.pos[ex, 1],
            bins=resolution,
            range=[[-half, half], [-half, half]],
            weights=p.mass[ex],
        )
        # log density over four decades below the peak, after a 1 px Gaussian
        # so that the faint outskirts (where streams and shells live) are not
        # particle shot noise.
        smooth = gaussian_filter(img, 1.0)
        top = np.log10(smooth.max())
        ax.imshow(
            np.log10(np.maximum(smooth, 10 ** (top - 4))).T,
            origin="lower",
            cmap="magma",
            vmin=top - 4,
            vmax=top,
            extent=[-half, half] * 2,
        )
        ax.set_title(
            f"galaxy {gid[k]}: f_ex={info['f_ex']:.2f}, log M*={info['log_mstar']:.1f}"
            f"\nmean merger lookback {lookback[k]:.1f} Gyr",
            fontsize=8,
        )
        ax.set_xlabel("x / kpc")
    np.atleast_1d(axes)[0].set_ylabel("y / kpc")
    fig.suptitle(
        f"accreted stars, log surface density ({fov_re:g} r_e across, "
        f"{max_particles:,} particles per galaxy)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)[0]
