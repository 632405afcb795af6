"""Fixtures of the fault tests: tiny untrained posteriors and a hang guard.

The faults are about what reaches the networks, not what they learnt, so
untrained networks (built in milliseconds) are enough; ``toy_run`` (tests/
conftest.py, a trained run) is used where the trained weights matter.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sbi_exsitu.data.dataset import DatasetWriter
from sbi_exsitu.data.render import RenderConfig, RenderedViews

RES = 16


def toy_render_config() -> RenderConfig:
    return RenderConfig(resolution=RES, channels=("mass",), min_pixels=1)


@contextlib.contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: pytest-timeout is not installed."""

    def _raise(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: the call hangs")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_maps(path: Path, maps: np.ndarray) -> Path:
    """A dataset of the given (n, 1, RES, RES) maps, one galaxy per map."""
    with DatasetWriter(path, toy_render_config()) as writer:
        for g, m in enumerate(maps):
            writer.add_galaxy(
                RenderedViews(
                    maps=m[None].astype(np.float32),
                    exsitu=np.full((1, RES, RES), 0.5, np.float32),
                    mask=np.ones((1, RES, RES), bool),
                    directions=np.eye(3)[:1],
                ),
                galaxy_id=g,
                f_ex=0.5,
                log_mstar=10.0,
                half_mass_radius=1.0,
                model="toy",
            )
    return path


def write_empty(path: Path) -> Path:
    """A finished dataset that holds no complete sample (``n_complete = 0``).

    The writer itself never leaves such a file; older writers and other tools
    can, so the readers must still refuse it clearly.
    """
    import h5py

    write_maps(path, np.zeros((1, 1, RES, RES), np.float32))
    with h5py.File(path, "a") as h5:
        h5.attrs["n_complete"] = 0
    return path


@pytest.fixture
def maps() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(6, 1, RES, RES)).astype(np.float32)


@pytest.fixture
def scalar_post():
    from sbi_exsitu.posteriors.estimator import EstimatorSpec, build_estimator
    from sbi_exsitu.posteriors.scalar import ExSituPosterior

    spec = EstimatorSpec(
        targets=("f_ex",),
        x_shape=(1, RES, RES),
        embedding_features=8,
        hidden_features=16,
        num_transforms=1,
    )
    torch.manual_seed(0)
    return ExSituPosterior([build_estimator(spec)], spec, toy_render_config())


@pytest.fixture
def map_post():
    from sbi_exsitu.config.map import MapSettings
    from sbi_exsitu.posteriors.map.cvae import ConditionalVAE, CVAEConfig
    from sbi_exsitu.posteriors.map.latent_flow import build_latent_flow
    from sbi_exsitu.posteriors.map.posterior import MapPosterior

    settings = MapSettings(latent_dim=2, width=4, flow_transforms=1, flow_hidden=8)
    emb = {
        "name": "default",
        "in_channels": 1,
        "image_size": RES,
        "out_features": 4,
    }
    torch.manual_seed(0)
    cvae = ConditionalVAE(
        CVAEConfig(in_channels=1, image_size=RES, latent_dim=2, width=4)
    )
    return MapPosterior(
        cvae, build_latent_flow(emb, settings), toy_render_config(), emb, settings
    )
