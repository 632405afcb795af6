"""Figures of the map posterior's evaluation."""

from __future__ import annotations

import numpy as np

from sbi_exsitu.evaluation.map_evaluation import (
    plot_map_panels,
    plot_residual_distribution,
    plot_residual_vs_truth,
)

RES = 8


def test_figures_build() -> None:
    rng = np.random.default_rng(0)
    res = {"flow": rng.normal(0, 0.1, 500), "prior": rng.normal(0, 0.3, 500)}
    truth = rng.uniform(size=500)
    assert plot_residual_distribution(res).axes
    assert plot_residual_vs_truth(res, truth).axes
    mask = np.ones((2, RES, RES), bool)
    fig = plot_map_panels(
        rng.normal(size=(2, 3, RES, RES)),
        rng.uniform(size=(2, RES, RES)),
        rng.uniform(size=(2, RES, RES)),
        rng.uniform(size=(2, RES, RES)),
        mask,
        ["a", "b", "c"],
    )
    assert len(fig.axes) >= 2 * 7
