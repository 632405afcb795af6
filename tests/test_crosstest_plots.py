"""Figures of the cross-simulator study, from synthetic results (no training)."""

from __future__ import annotations

import numpy as np

from sbi_exsitu.studies.crosstest.plots import binned_band, plot_all
from sbi_exsitu.studies.crosstest.study import CrosstestSection, cell_name


def test_binned_band_percentiles_and_sparse_bins() -> None:
    x = np.r_[np.full(100, 0.1), np.full(3, 0.9)]
    y = np.r_[np.linspace(-1, 1, 100), np.zeros(3)]
    c, med, lo, hi = binned_band(x, y, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(c, [0.25, 0.75])
    assert abs(med[0]) < 1e-12 and lo[0] < 0 < hi[0]
    assert np.isnan(med[1])  # 3 points < min_n


def _fake(sec: CrosstestSection, n: int = 60):
    rng = np.random.default_rng(0)
    results, scores = [], {}
    levels = np.linspace(0, 1, 11)
    for a in sec.apertures:
        for c in sec.channels:
            for train in sec.train_sets:
                cell = cell_name(train, c, a)
                for test in sec.models:
                    truth = rng.uniform(0, 1, n)
                    shift = 0.0 if train in (test, "union") else 0.1
                    scores[(cell, test)] = {
                        "f_ex_true": truth,
                        "log_mstar": rng.uniform(10, 12, n),
                        "f_ex_median": truth + shift + rng.normal(0, 0.05, n),
                        "misspec_score": rng.normal(shift * 10, 1, n),
                    }
                    results.append(
                        {
                            "cell": cell,
                            "train": train,
                            "test": test,
                            "channels": c,
                            "aperture": a,
                            "calibration": {
                                "verdict": "calibrated",
                                "coverage_curve": {
                                    "levels": levels.tolist(),
                                    "empirical": (levels ** (1 + shift)).tolist(),
                                },
                            },
                        }
                    )
    return results, scores


def test_plot_all_writes_every_figure(tmp_path) -> None:
    sec = CrosstestSection.from_dict(
        {
            "apertures": [4.0, 1.0],
            "channels": {
                "all": ["mass", "velocity", "dispersion", "age", "metallicity"],
                "mass_kinematics": ["mass", "velocity", "dispersion"],
            },
        }
    )
    results, scores = _fake(sec)
    paths = plot_all(results, scores, sec, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "errors_vs_fex_ap4.png",
            "errors_vs_fex_ap1.png",
            "error_boxes.png",
            "fex_mstar.png",
            "coverage.png",
            "misspecification_roc.png",
        ]
    )
    assert all(p.stat().st_size > 10_000 for p in paths)
