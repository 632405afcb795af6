"""Tests for ``sbi-exsitu show`` and :mod:`sbi_exsitu.figures`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from sbi_exsitu.cli import app  # noqa: E402
from sbi_exsitu.data.dataset import DatasetWriter, MapDataset  # noqa: E402
from sbi_exsitu.data.particles import Particles  # noqa: E402
from sbi_exsitu.data.render import RenderConfig, render_views  # noqa: E402
from sbi_exsitu.figures import channel_title, plot_sample  # noqa: E402

runner = CliRunner()


def make_dataset(path, labelled=True, channels=None):
    rng = np.random.default_rng(0)
    n = 8000
    pos = rng.normal(0, [3, 3, 0.5], (n, 3))
    vel = rng.normal(0, 40, (n, 3)) + np.c_[-pos[:, 1], pos[:, 0], 0 * pos[:, 0]] * 30
    p = Particles(
        pos=pos,
        vel=vel,
        mass=np.full(n, 1e6),
        age=rng.uniform(1, 12, n),
        metallicity=rng.uniform(0.005, 0.03, n),
        ex_situ=(rng.random(n) < 0.3) if labelled else None,
    )
    config = RenderConfig(resolution=32, **({"channels": channels} if channels else {}))
    with DatasetWriter(path, config) as w:
        w.add_galaxy(
            render_views(p, config, 4),
            galaxy_id=17,
            f_ex=p.f_ex,
            log_mstar=p.log_mstar,
            half_mass_radius=p.half_mass_radius,
            model="toy",
        )
    return path


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data.h5")


def test_show_writes_a_png(dataset, tmp_path):
    out = tmp_path / "panel.png"
    result = runner.invoke(app, ["show", str(dataset), "-i", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in result.output


def test_show_index_out_of_range_names_file_and_count(dataset, tmp_path):
    result = runner.invoke(
        app, ["show", str(dataset), "-i", "4", "-o", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2
    assert "data.h5" in result.output and "holds 4 samples" in result.output
    assert not (tmp_path / "x.png").exists()


def test_show_missing_or_corrupt_file(tmp_path):
    result = runner.invoke(app, ["show", str(tmp_path / "nope.h5")])
    assert result.exit_code == 2 and "file not found" in result.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    result = runner.invoke(app, ["show", str(bad)])
    assert result.exit_code == 2 and "bad.h5" in result.output
    assert "Traceback" not in result.output


def test_plot_sample_panels_and_titles(dataset):
    with MapDataset(dataset) as ds:
        fig = plot_sample(ds, -1)
        mask = ds.mask([3])[0]
        f_ex, log_mstar = ds.labels["f_ex"][3], ds.labels["log_mstar"][3]
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles == [
        "log mass [std]",
        "velocity [std]",
        "dispersion [std]",
        "age [std]",
        "log Z/Zsun [std]",
        "ex-situ fraction",
    ]
    suptitle = fig._suptitle.get_text()
    assert "galaxy 17" in suptitle and "view 3" in suptitle and "toy" in suptitle
    assert f"f_ex = {f_ex:.2f}" in suptitle
    assert f"log M* = {log_mstar:.2f}" in suptitle
    image = axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(image), ~mask)
    velocity = axes[1].images[0]
    assert velocity.get_cmap().name == "RdBu_r"
    assert velocity.norm.vmin == -velocity.norm.vmax
    plt.close(fig)


def test_unlabelled_sample_has_no_exsitu_panel(tmp_path):
    path = make_dataset(
        tmp_path / "real.h5", labelled=False, channels=("velocity", "age")
    )
    fig = plot_sample(path, 0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["velocity [std]", "age [std]"]
    assert "f_ex unknown" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(IndexError, match=r"real\.h5: sample index -5"):
        plot_sample(path, -5)


def test_channel_titles_follow_the_preprocessing():
    raw = RenderConfig(standardize=False, log_mass=False, log_metallicity=False)
    assert channel_title("mass", raw) == "mass [Msun]"
    assert channel_title("dispersion", raw) == "dispersion [km/s]"
    assert channel_title("metallicity", raw) == "Z [mass fraction]"
    assert channel_title("metallicity", RenderConfig(standardize=False)) == (
        "log Z/Zsun [dex]"
    )
