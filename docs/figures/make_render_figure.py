"""Make ``docs/figures/render_pipeline.png``: raw maps -> default vs paper preset.

One synthetic galaxy (a rotating exponential disc plus a Hernquist spheroid,
seeded) seen from one camera: the raw per-pixel statistics (top row), then the
maps after the ``default`` preprocessing (middle) and the ``paper`` preset
(bottom, Angeloudi et al. 2023). Run from the repository root::

    python docs/figures/make_render_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sbi_exsitu.data.particles import Particles  # noqa: E402
from sbi_exsitu.data.render import (  # noqa: E402
    RenderConfig,
    pixel_mask,
    pixel_statistics,
    preprocess,
)

OUT = Path(__file__).with_name("render_pipeline.png")


def disc_plus_spheroid(n: int = 60_000, seed: int = 0) -> Particles:
    """A young, metal-rich rotating disc and an old, metal-poor accreted spheroid."""
    rng = np.random.default_rng(seed)
    n_sph = n * 4 // 10
    n_disc = n - n_sph
    u = np.sqrt(rng.uniform(0, 0.97, n_sph))
    r = 1.5 * u / (1 - u)  # Hernquist, a = 1.5 kpc
    d = rng.normal(size=(n_sph, 3))
    pos_sph = r[:, None] * d / np.linalg.norm(d, axis=1, keepdims=True)
    vel_sph = rng.normal(0, 140, (n_sph, 3))
    rd = rng.gamma(2.0, 2.5, n_disc)
    phi = rng.uniform(0, 2 * np.pi, n_disc)
    pos_disc = np.c_[rd * np.cos(phi), rd * np.sin(phi), rng.laplace(0, 0.3, n_disc)]
    v_rot = 220 * (1 - np.exp(-rd / 1.2))
    vel_disc = np.c_[-v_rot * np.sin(phi), v_rot * np.cos(phi), np.zeros(n_disc)]
    vel_disc += rng.normal(0, 35, (n_disc, 3))
    age = np.r_[
        rng.uniform(8, 13, n_sph), 9 * np.exp(-rd / 6) + rng.uniform(0, 2, n_disc)
    ]
    z_disc = 0.03 * np.exp(-rd / 8) * rng.lognormal(0, 0.2, n_disc)
    z_sph = 0.004 * rng.lognormal(0, 0.4, n_sph)
    return Particles(
        pos=np.vstack([pos_sph, pos_disc]),
        vel=np.vstack([vel_sph, vel_disc]),
        mass=rng.uniform(0.8e6, 1.2e6, n),
        age=age,
        metallicity=np.r_[z_sph, z_disc],
        ex_situ=np.r_[np.ones(n_sph, bool), np.zeros(n_disc, bool)],
        name="demo",
    )


def main() -> Path:
    """Render the figure and return its path."""
    p = disc_plus_spheroid()
    # Inclined view (60 degrees from face-on), so the disc rotation shows.
    direction = np.array([0.0, -np.sin(np.radians(60)), np.cos(np.radians(60))])
    configs = {
        "default": RenderConfig(resolution=64),
        "paper": RenderConfig.preset("paper", resolution=64),
    }
    raw_stats = pixel_statistics(p, direction, configs["default"])
    names = ["mass", "velocity", "dispersion", "age", "metallicity", "exsitu_fraction"]
    raw_titles = [
        "mass [Msun]",
        "velocity [km/s]",
        "dispersion [km/s]",
        "age [Gyr]",
        "Z",
        "ex-situ fraction",
    ]
    fig, axes = plt.subplots(3, 6, figsize=(15, 7.8), layout="constrained")
    populated = raw_stats.count > 0
    for ax, name, title in zip(axes[0], names, raw_titles, strict=True):
        img = getattr(raw_stats, name)
        kw = {"cmap": "RdBu_r", "vmin": -250, "vmax": 250} if name == "velocity" else {}
        if name == "mass":
            kw = {"norm": matplotlib.colors.LogNorm()}
        im = ax.imshow(np.ma.masked_where(~populated, img), origin="lower", **kw)
        ax.set_title(f"raw {title}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.75)
    for row, (preset, config) in zip(axes[1:], configs.items(), strict=True):
        stats = pixel_statistics(p, direction, config)
        maps, mask = preprocess(stats, config)
        kept = pixel_mask(stats, config).mean()
        for c, ax in enumerate(row[:5]):
            kw = {"cmap": "RdBu_r"} if config.channels[c] == "velocity" else {}
            if "cmap" in kw:
                lim = np.abs(maps[c][mask]).max()
                kw.update(vmin=-lim, vmax=lim)
            im = ax.imshow(np.ma.masked_where(~mask, maps[c]), origin="lower", **kw)
            ax.set_title(f"{preset}: {config.channels[c]} [std]", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.75)
        ax = row[5]
        im = ax.imshow(
            np.ma.masked_where(~mask, stats.exsitu_fraction),
            origin="lower",
            cmap="Greens",
            vmin=0,
            vmax=1,
        )
        ax.set_title(f"{preset}: ex-situ ({kept:.0%} of pixels kept)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.75)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"render pipeline: {len(p):,} particles, f_ex = {p.f_ex:.2f}, "
        f"r_e = {p.half_mass_radius:.1f} kpc, field of view 4 r_e, 64 x 64 px"
    )
    fig.savefig(OUT, dpi=100)
    plt.close(fig)
    return OUT


if __name__ == "__main__":
    print(f"wrote {main()}")
