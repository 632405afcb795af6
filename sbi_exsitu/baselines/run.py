r"""The two baselines every posterior is measured against.

* **MDN-CNN** -- the method of Angeloudi et al. (2023, sec. 3.1 and 4): the CNN
  of their table A2 (:class:`embeddings.paper_cnn.PaperCNN`) with a 2-unit head
  giving the mean and scale of one Normal per galaxy, trained by negative
  log-likelihood with Adam (learning rate 1e-3), random up/down and left/right
  flips of the training maps, the validation loss watched for over-fitting, and
  an ensemble of five members that differ only in their seed. The ensemble's
  posterior is the equal-weight mixture of the members' Normals (the paper
  samples all five and pools the draws, which is the same distribution); the
  paper's point estimate is the mixture's mode (MAP), its uncertainty the
  mixture's standard deviation.
* **Bare f_ex-M\* relation** -- the paper's fig. 14 reference: f_ex predicted
  from the stellar mass alone by a cubic spline through the training set, with
  the training residual scatter as a Gaussian uncertainty.

Both keep the paper's Normal likelihood on purpose: f_ex lies in [0, 1] but a
Normal is unbounded, so some posterior mass (and some MAP values) fall outside
the prior range. That is part of what the baseline measures; our sbi posteriors
train in an unconstrained space instead.

Two choices that the paper leaves open are made here. Early stopping restores
the weights of the epoch with the lowest validation loss after ``patience``
epochs without improvement (the paper trains 500 epochs while "monitoring" the
validation loss). Flips are drawn independently for every map of a batch, as
Keras' ``RandomFlip`` layer does.

The f_ex-M\* spline: the paper runs "a cubic spline interpolation on all data
points" of the training set, which is ill-posed as written (noisy points, and
every view of a galaxy repeats its mass). We first average the views of each
galaxy (galaxies with more views must not weigh more), split the galaxies into
``n_bins`` equal-count bins of log M\*, and interpolate the bin medians with a
natural :class:`scipy.interpolate.CubicSpline`: medians are robust to the
skewed f_ex distribution at fixed mass and are what fig. 14 plots, and the
number of bins is the only knob. Outside the training mass range the relation
is held constant rather than extrapolated as a cubic.

References:
    | ERGO-ML: towards a robust machine learning model for inferring the fraction
      of accreted stars in galaxies from integral-field spectroscopic maps
      (Angeloudi et al., 2023, MNRAS), sec. 3.1, 3.2.4, 4 and fig. 14
    | Mixture density networks (Bishop, 1994)
    | Simple and scalable predictive uncertainty estimation using deep ensembles
      (Lakshminarayanan et al., 2017)

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> log_mstar = rng.uniform(10, 12, 500)
    >>> f_ex = 1 / (1 + np.exp(-3 * (log_mstar - 11))) + rng.normal(0, 0.05, 500)
    >>> relation = MassRelationBaseline(n_bins=8).fit(log_mstar, f_ex)
    >>> mean, std = relation.predict(np.array([10.5, 11.5]))
    >>> bool(mean[0] < mean[1]), bool(np.all(std > 0.03))
    (True, True)
    >>> # ensemble = fit_mdn_cnn(dataset, splits["train"], splits["validation"])
    >>> # mean, std = ensemble.predict(dataset.maps(splits["test"]))
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbi_exsitu.baselines.mass_relation import MassRelationBaseline
from sbi_exsitu.baselines.mdn_cnn import (
    GaussianMixture,
    MDNEnsemble,
    MDNNet,
    _validation_loss,
    fit_mdn_cnn,
    random_flips,
)
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.evaluation.accuracy import FEX_EDGES, MSTAR_EDGES, evaluate
from sbi_exsitu.training.torchdata import target_array

__all__ = [
    "GaussianMixture",
    "MDNNet",
    "MDNEnsemble",
    "random_flips",
    "fit_mdn_cnn",
    "MassRelationBaseline",
    "BaselineConfig",
    "run_baselines",
    "_validation_loss",
]


@dataclass
class BaselineConfig:
    """Settings of :func:`run_baselines` (defaults follow the paper).

    Attributes:
        methods: which baselines to run.
        ensemble_size: MDN-CNN members.
        max_epochs: MDN-CNN epoch limit.
        patience: MDN-CNN early-stopping patience.
        batch_size: MDN-CNN batch size.
        lr: Adam learning rate.
        dropout: CNN dropout rate.
        flips: random flips of training maps.
        point: MDN-CNN point estimate, ``"map"`` (the paper) or ``"mean"``.
        mass_bins: bins of the f_ex-M* spline.
        seed: base seed.
        device: torch device.
        fex_edges: f_ex bins of the report.
        mstar_edges: log M* bins of the report.
    """

    methods: tuple[str, ...] = ("mdn_cnn", "mass_relation")
    ensemble_size: int = 5
    max_epochs: int = 500
    patience: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    dropout: float = 0.2
    flips: bool = True
    point: str = "map"
    mass_bins: int = 10
    seed: int = 0
    device: str = "cpu"
    fex_edges: tuple[float, ...] = FEX_EDGES
    mstar_edges: tuple[float, ...] = MSTAR_EDGES


def run_baselines(
    dataset: MapDataset,
    splits: dict[str, np.ndarray],
    *,
    config: BaselineConfig | None = None,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train both baselines and evaluate them on the test split.

    Args:
        dataset: labelled maps.
        splits: ``{"train", "validation", "test"}`` index arrays (e.g.
            ``dataset.splits(seed)``).
        config: settings; the defaults follow the paper.
        save_dir: if given, the MDN-CNN ensemble goes to ``save_dir/mdn_cnn/``
            and the spline to ``save_dir/mass_relation.json``.
        progress: show progress bars.

    Returns:
        Method name -> :func:`sbi_exsitu.evaluation.accuracy.evaluate` output plus
        ``train_s``
        and ``predict_s`` (wall-clock seconds) and ``n_train``/``n_test``.
    """
    cfg = config or BaselineConfig()
    unknown = set(cfg.methods) - {"mdn_cnn", "mass_relation"}
    if unknown:
        raise ValueError(
            f"unknown baseline(s) {sorted(unknown)}; known: 'mdn_cnn', 'mass_relation'"
        )
    if cfg.point not in ("map", "mean"):
        raise ValueError(f"point must be 'map' or 'mean', got {cfg.point!r}")
    train, val, test = (np.asarray(splits[k]) for k in ("train", "validation", "test"))
    labels = dataset.labels
    truth = target_array(dataset, ["f_ex"], test)[:, 0].astype(np.float64)
    log_mstar = np.asarray(labels["log_mstar"][test], dtype=np.float64)
    report = {"fex_edges": cfg.fex_edges, "mstar_edges": cfg.mstar_edges}
    sizes = {"n_train": int(len(train)), "n_test": int(len(test))}
    out: dict[str, dict[str, Any]] = {}

    if "mass_relation" in cfg.methods:
        t0 = time.perf_counter()
        relation = MassRelationBaseline(n_bins=cfg.mass_bins).fit(
            labels["log_mstar"][train],
            target_array(dataset, ["f_ex"], train)[:, 0],
            groups=labels["galaxy_id"][train],
        )
        t1 = time.perf_counter()
        pred, _ = relation.predict(log_mstar)
        log_prob = relation.log_prob(truth, log_mstar)
        t2 = time.perf_counter()
        out["mass_relation"] = evaluate(pred, truth, log_mstar, log_prob, **report) | {
            "train_s": t1 - t0,
            "predict_s": t2 - t1,
            **sizes,
        }
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            (Path(save_dir) / "mass_relation.json").write_text(
                json.dumps(relation.to_dict(), indent=2)
            )

    if "mdn_cnn" in cfg.methods:
        t0 = time.perf_counter()
        ensemble = fit_mdn_cnn(
            dataset,
            train,
            val,
            ensemble_size=cfg.ensemble_size,
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            dropout=cfg.dropout,
            flips=cfg.flips,
            seed=cfg.seed,
            device=cfg.device,
            progress=progress,
        )
        t1 = time.perf_counter()
        mix = ensemble.mixture_dataset(dataset, test)
        pred = mix.mode() if cfg.point == "map" else mix.mean
        log_prob = mix.log_prob(truth)
        t2 = time.perf_counter()
        # Posterior mass the unbounded Normals put outside the prior [0, 1].
        outside = float(
            np.mean(mix.cdf(np.zeros(len(mix))) + 1 - mix.cdf(np.ones(len(mix))))
        )
        out["mdn_cnn"] = evaluate(pred, truth, log_mstar, log_prob, **report) | {
            "train_s": t1 - t0,
            "predict_s": t2 - t1,
            **sizes,
            "point": cfg.point,
            "epochs": [len(h["val"]) for h in ensemble.config["history"]],
            "mass_outside_prior": outside,
        }
        if save_dir is not None:
            ensemble.save(Path(save_dir) / "mdn_cnn")
    return out
