"""Shared fixtures: every test starts from the same random state."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.dataset import DatasetWriter
from sbi_exsitu.data.render import RenderConfig, RenderedViews

os.environ.setdefault("MPLBACKEND", "Agg")


def load_benchmark(name: str):
    """A ``benchmarks/NAME.py`` script as a module (benchmarks are not a package)."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Seed python, numpy and (if imported) torch before each test."""
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


# -- a toy problem with a known posterior, shared by the posterior-level tests ----
# f_ex ~ U(0, 1); every pixel of a 1x16x16 map is f_ex + N(0, SIGMA^2). The exact
# posterior is N(mean(x), SIGMA^2 / 256) truncated to [0, 1].
SIGMA = 0.64  # posterior std = 0.64 / 16 = 0.04
RES = 16


def _toy_config() -> RenderConfig:
    return RenderConfig(resolution=RES, channels=("mass",), min_pixels=1)


def write_toy_dataset(path: Path, n_galaxies: int, seed: int, views: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    cfg = _toy_config()
    with DatasetWriter(path, cfg) as writer:
        for g in range(n_galaxies):
            f_ex = rng.uniform(0, 1)
            maps = f_ex + SIGMA * rng.normal(size=(views, 1, RES, RES))
            writer.add_galaxy(
                RenderedViews(
                    maps=maps.astype(np.float32),
                    exsitu=np.full((views, RES, RES), f_ex, np.float32),
                    mask=np.ones((views, RES, RES), bool),
                    directions=np.eye(3)[:views],
                ),
                galaxy_id=g,
                f_ex=f_ex,
                log_mstar=10 + 2 * f_ex,
                half_mass_radius=1.0,
                model="toy",
            )
    return path


def toy_experiment(tmp: Path, data: Path, **posterior) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "run": {"name": "toy", "out_dir": str(tmp / "runs"), "seed": 0},
            "data": {"train": str(data)},
            "posterior": {
                "embedding": "default",
                "embedding_features": 8,
                "hidden_features": 32,
                "num_transforms": 2,
                "ensemble_size": 1,
                **posterior,
            },
            "training": {
                "batch_size": 64,
                "learning_rate": 5e-4,
                "max_epochs": 80,
                "patience": 20,
            },
        }
    )


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory):
    from sbi_exsitu.training.fit import fit

    tmp = tmp_path_factory.mktemp("toy")
    data = write_toy_dataset(tmp / "toy.h5", n_galaxies=1000, seed=1)
    cfg = toy_experiment(tmp, data)
    result = fit(cfg, progress=False, num_eval_samples=200)
    return tmp, data, result
