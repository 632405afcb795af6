"""The main job on the embedded default: simulate → fit → predict → calibrate.

Every step resumes: an existing dataset is continued (or reused when complete),
finished ensemble members are loaded, so re-running after an interruption only
does the missing work. The observation set for ``predict`` is a fresh mock
sample (its own seed), standing in for new galaxies the posterior has never seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbi_exsitu.config import packaged_config, resolve_config
from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.errors import ConfigError

__all__ = ["QuickstartResult", "quickstart"]

logger = logging.getLogger(__name__)


@dataclass
class QuickstartResult:
    run_dir: Path
    metrics: dict[str, Any]
    predictions: Path
    calibration_dir: Path
    verdict: str
    plots: list[Path] = field(default_factory=list)


def _simulation(
    cfg: ExperimentConfig, seed_offset: int = 0, n_galaxies: int | None = None
) -> Any:
    sim: dict[str, Any] = {}
    if seed_offset:
        sim["seed"] = int(cfg.simulate.get("seed", 0)) + seed_offset
    if n_galaxies is not None:
        sim["n_galaxies"] = n_galaxies
    return cfg.simulation_config(simulate=sim)


def quickstart(
    config: str | Path | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    num_samples: int = 1000,
) -> QuickstartResult:
    """Run the whole chain described by an experiment file with a [simulate] table.

    Args:
        config: the experiment TOML, or the bare name of a packaged config; None
            is the packaged ``quickstart.toml``. Relative paths in it resolve
            against the current directory.
        workers: local processes for simulation.
        progress: print the steps and progress bars.
        num_samples: posterior draws per observation.

    Returns:
        The run directory, metrics, predictions, calibration verdict and plots.
    """
    from sbi_exsitu.data.simulate import simulate
    from sbi_exsitu.evaluation.calibration import calibrate_dataset
    from sbi_exsitu.studies.predict import predict
    from sbi_exsitu.training.fit import fit

    config = packaged_config("quickstart.toml") if config is None else config
    cfg = ExperimentConfig.from_toml(resolve_config(config))
    if not cfg.simulate:
        raise ConfigError(f"{config}: quickstart needs a [simulate] table")
    train_path = cfg.train_path
    say = logger.info if progress else (lambda *a, **k: None)
    say(f"[1/4] simulating the training set -> {train_path}")
    # resume=True also continues an interrupted `.partial` file (and starts a new
    # one when there is none); keying it on the final file refused to resume.
    simulate(
        _simulation(cfg),
        train_path,
        workers=workers,
        resume=True,
        progress=progress,
    )
    if cfg.observe:  # skipped views are a selection effect: always say how many
        from sbi_exsitu.data.dataset import MapDataset

        with MapDataset(train_path) as ds:
            say(ds.skip_summary().describe())
    say(f"[2/4] fitting the posterior -> {cfg.run_dir}")
    result = fit(cfg, progress=progress, num_eval_samples=num_samples)
    obs_path = train_path.with_name(train_path.stem + "-new-observations.h5")
    n_obs = max(10, int(cfg.simulate.get("n_galaxies", 100)) // 10)
    say(f"[3/4] predicting {n_obs} new mock galaxies -> {obs_path}")
    simulate(
        _simulation(cfg, seed_offset=10_000, n_galaxies=n_obs),
        obs_path,
        workers=workers,
        resume=True,
        progress=progress,
    )
    predictions = predict(
        result.run_dir,
        obs_path,
        result.run_dir / "predictions_new.csv",
        num_samples=num_samples,
        progress=progress,
    )
    say("[4/4] calibrating on the held-out test split")
    dataset, test = result.posterior.test_split()
    report = calibrate_dataset(
        result.posterior,
        dataset,
        test,
        num_samples=num_samples,
        seed=cfg.run.seed,
        progress=progress,
    )
    cal_dir = result.run_dir / "calibration"
    report.save(cal_dir)
    plots = report.plot(cal_dir)
    return QuickstartResult(
        run_dir=result.run_dir,
        metrics=result.metrics,
        predictions=predictions,
        calibration_dir=cal_dir,
        verdict=report.verdict,
        plots=[
            result.run_dir / "training_curves.png",
            result.run_dir / "predictions.png",
            *plots,
        ],
    )
