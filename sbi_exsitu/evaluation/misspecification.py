"""Per-observation misspecification warnings: "this galaxy is unlike the training set".

A posterior trained on one formation model is only trustworthy on maps that look
like its training maps; on maps from another simulator it can be biased *and*
overconfident (001 sec. 4.2 and fig. 11). The detector compares each observation
with the training set in one of two kinds of space (``features``):

* ``"profile"`` (the default) or ``"pca"``: unsupervised features of the maps
  themselves (:class:`~sbi_exsitu.evaluation.map_features.MapFeatures`: whitened
  radial profiles per channel, or a PCA of downsampled maps);
* ``"embedding"``: the output of the posterior's embedding net, as sbi's
  misspecification test does. It was the default until issue #17: the net is
  trained to keep what predicts f_ex and drop the rest, so it separated
  eagle-like from tng-like maps with ROC AUC 0.38-0.71 where the radial profiles
  reached 0.91-0.999 (``benchmarks/misspecification.py``, docs/crosstest.md).

In that space (standardised per feature) the **score** of ``z`` is (``method``):

* ``"flow"`` (the default): the two-sided typicality ``|log q(z) - median|`` of a
  zuko flow ``q`` fitted to the reference
  (:class:`~sbi_exsitu.evaluation.map_features.FeatureDensity`);
* ``"knn"``: the mean Euclidean distance to the ``k`` nearest reference points;
* ``"mmd"``: the squared MMD between ``{z}`` and the reference with sbi's RBF
  kernel and median-heuristic bandwidth (nearly a distance from the centre).

The **p-value** is conformal, the rank of the score among the scores of held-out
in-distribution (validation) maps, ``(1 + #{s_val >= s}) / (n_val + 1)``: for maps
from the training distribution it is uniform, so flagging ``p < alpha`` raises
false alarms at rate ``alpha`` by construction, whatever the score. Validation
maps weigh ``1 / n_views`` of their galaxy, and the rate of one fitted detector
scatters by ~0.025 at 75 validation galaxies (why and what to do:
:mod:`~sbi_exsitu.evaluation.novelty`).

**How far off?** ``neighbour_f_ex`` (column ``misspec_nn_f_ex``) is the mean true
f_ex of the ``k`` training maps nearest in the detector's space; ``misspec_shift``
= posterior median - it; its mean had the sign of the mean error on every cross
cell of the smooth mock world and on four of six of the streams world, at 1.3-2x
its size (benchmarks/misspecification.py); per galaxy (tng-like -> eagle-like, all
channels at 4 r_e) ``|shift|`` ranks ``|error|`` with Spearman 0.35 at 1.6x its
size, and neither more neighbours, the neighbours' own errors nor a rescaling
did better (benchmarks/misspec_shift.py): a warning, not a correction.
:meth:`~MisspecificationDetector.set_test` runs sbi's MMD test on a whole set.

Stored in ``<run>/misspecification/`` without pickle
(:mod:`~sbi_exsitu.evaluation.detector_io`); :meth:`~MisspecificationDetector.for_run`
loads it, or fits it from the run's ``splits.json`` and saves it on first use,
calibrated on the validation split or, with ``[misspecification]
calibration_galaxies = N``, on N fresh in-model galaxies simulated for it
(:mod:`~sbi_exsitu.evaluation.detector_run`), which holds the false-alarm rate
to ``alpha +- sqrt(alpha (1 - alpha) / N)`` run to run.

References:
    | A kernel two-sample test (Gretton et al., 2012, JMLR)
    | Detecting model misspecification in amortized Bayesian inference with neural
      networks (Schmitt et al., 2023, GCPR), the embedding-space MMD of sbi
    | Conformal anomaly detection (Laxhammar & Falkman, 2015; Bates et al., 2023,
      Ann. Stat., "Testing for outliers with conformal p-values")

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = MisspecificationDetector.from_embeddings(
    ...     rng.normal(size=(500, 4)), rng.normal(size=(200, 4)), method="knn")
    >>> res = det.score_embeddings(np.r_[rng.normal(size=(5, 4)),
    ...                                  rng.normal(4.0, 1.0, size=(5, 4))])
    >>> res.flag.tolist()
    [False, False, False, False, False, True, True, True, True, True]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.evaluation.detector_io import read_detector, write_detector
from sbi_exsitu.evaluation.map_features import (
    DEFAULT_COMPONENTS,
    FEATURE_KINDS,
    FeatureDensity,
    MapFeatures,
    embed,
)
from sbi_exsitu.evaluation.novelty import (
    MisspecificationScores,
    conformal_pvalues,
    group_weights,
    roc_auc,
    set_mmd_test,
)
from sbi_exsitu.runs import DETECTOR_DIR  # the run's sub-directory of the detector

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_METHOD",
    "DETECTOR_DIR",
    "FEATURES",
    "METHODS",
    "MisspecificationDetector",
    "MisspecificationScores",
    "embed",
    "roc_auc",
    "conformal_pvalues",
]

#: Spaces the detector scores in (see the module doc).
FEATURES = ("embedding", *FEATURE_KINDS)
#: Per-observation scores.
METHODS = ("flow", "knn", "mmd")
#: The defaults, chosen by benchmarks/misspecification.py (issue #17).
DEFAULT_FEATURES = "profile"
DEFAULT_METHOD = "flow"


@dataclass
class MisspecificationDetector:
    """Novelty score of maps against the training set, with conformal p-values.

    Build with :meth:`fit` (a posterior and its training dataset),
    :meth:`from_embeddings` (precomputed features) or :meth:`for_run`.

    Attributes:
        reference: ``(n_ref, F)`` standardised training features.
        mean, std: ``(F,)`` standardisation of the raw features.
        bandwidth: RBF kernel bandwidth (sbi's median heuristic on the reference).
        ref_kernel_mean: ``mean K(Z, Z)`` of the reference (constant of the score).
        calibration_scores: ``(n_val,)`` scores of in-distribution held-out maps.
        validation: ``(n_val, F)`` standardised held-out features (the reference
            of :meth:`set_test`).
        alpha: flag threshold on the p-value.
        method: one of :data:`METHODS`.
        k: neighbours of the ``"knn"`` score and of :meth:`neighbour_targets`.
        meta: provenance (dataset, counts, seed).
        features: one of :data:`FEATURES`.
        map_features: the fitted map features (``features != "embedding"``).
        density: the fitted flow of ``method="flow"``.
        reference_targets: ``(n_ref,)`` true f_ex of the reference maps (for
            :meth:`neighbour_targets`), or None.
        calibration_weights: ``(n_val,)`` weight of each calibration score
            (``1 / n_views`` of its galaxy), or None (each map counts once).
    """

    reference: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    bandwidth: float
    ref_kernel_mean: float
    calibration_scores: np.ndarray
    validation: np.ndarray
    alpha: float = 0.05
    method: str = DEFAULT_METHOD
    k: int = 5
    meta: dict[str, Any] = field(default_factory=dict)
    features: str = "embedding"
    map_features: MapFeatures | None = None
    density: FeatureDensity | None = None
    reference_targets: np.ndarray | None = None
    calibration_weights: np.ndarray | None = None

    @classmethod
    def from_embeddings(
        cls,
        reference: np.ndarray,
        validation: np.ndarray,
        *,
        alpha: float = 0.05,
        method: str = DEFAULT_METHOD,
        k: int = 5,
        meta: dict[str, Any] | None = None,
        features: str = "embedding",
        map_features: MapFeatures | None = None,
        reference_targets: np.ndarray | None = None,
        validation_groups: np.ndarray | None = None,
        seed: int = 0,
    ) -> MisspecificationDetector:
        """Build from raw features of training (reference) and validation maps.

        ``features`` and ``map_features`` say what the features are (so that
        :meth:`score` can compute them from maps); ``validation_groups`` (the
        galaxy id of each validation map) weights the calibration per galaxy
        (see the module doc); ``seed`` seeds the flow.
        """
        from sbi.diagnostics.misspecification import median_heuristic, rbf_kernel

        if method not in METHODS:
            raise ValueError(f"'method' is {method!r}, expected one of {METHODS}")
        if features not in FEATURES:
            raise ValueError(f"'features' is {features!r}, expected one of {FEATURES}")
        if (features == "embedding") != (map_features is None):
            raise ValueError(f"'map_features' given with features {features!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"'alpha' is {alpha}, expected 0 < alpha < 1")
        reference = np.asarray(reference, np.float64)
        validation = np.asarray(validation, np.float64)
        if len(reference) < 2 or len(validation) < 1:
            raise ValueError("need >= 2 reference and >= 1 validation embeddings")
        mean = reference.mean(axis=0)
        # A dead feature (constant over the training set) must not divide by 0.
        std = np.where(reference.std(axis=0) > 0, reference.std(axis=0), 1.0)
        ref = (reference - mean) / std
        zr = torch.from_numpy(ref)
        bandwidth = float(median_heuristic(zr, zr))
        det = cls(
            reference=ref,
            mean=mean,
            std=std,
            bandwidth=bandwidth,
            ref_kernel_mean=float(rbf_kernel(zr, zr, bandwidth).mean()),
            calibration_scores=np.zeros(0),
            validation=(validation - mean) / std,
            alpha=alpha,
            method=method,
            k=min(k, len(ref)),
            meta=dict(meta or {}),
            features=features,
            map_features=map_features,
            reference_targets=reference_targets,
            calibration_weights=group_weights(validation_groups, len(validation)),
        )
        if method == "flow":
            det.density = FeatureDensity.fit(ref, kind="flow", seed=seed)
        det.calibration_scores = det._raw_scores(det.validation)
        return det

    @classmethod
    def fit(
        cls,
        posterior: Any,
        dataset: MapDataset,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        *,
        max_reference: int = 2000,
        alpha: float = 0.05,
        method: str = DEFAULT_METHOD,
        features: str = DEFAULT_FEATURES,
        n_components: int = DEFAULT_COMPONENTS,
        k: int = 5,
        seed: int = 0,
    ) -> MisspecificationDetector:
        """Represent (a seeded subsample of) the training maps and the validation maps.

        Args:
            posterior: the trained posterior (embedding nets: ``"embedding"``).
            dataset: the training dataset (``galaxy_id`` weighs calibration).
            train_idx: training indices (the reference).
            val_idx: held-out in-distribution indices (calibrate the p-values;
                the run's validation split, not used to fit the features).
            max_reference: cap on reference maps (memory and time grow as n_ref).
            alpha: flag threshold.
            method: one of :data:`METHODS`.
            features: one of :data:`FEATURES`.
            n_components: whitened components of the map features
                (:class:`~sbi_exsitu.evaluation.map_features.MapFeatures`).
            k: neighbours of ``"knn"`` and :meth:`neighbour_targets`.
            seed: seeds the reference subsample and the flow.
        """
        train_idx = subsample(train_idx, max_reference, seed)
        val_idx = np.asarray(val_idx)
        if features == "embedding":
            mf = None
            ref = embed(posterior, dataset, train_idx)
            val = embed(posterior, dataset, val_idx)
        elif features in FEATURE_KINDS:
            mf = MapFeatures.fit(
                dataset.maps(train_idx),
                kind=features,
                n_components=n_components,
                seed=seed,
            )
            ref, val = mf.transform(dataset, train_idx), mf.transform(dataset, val_idx)
        else:
            raise ValueError(f"'features' is {features!r}, expected one of {FEATURES}")
        meta = {
            "dataset": str(dataset.path),
            "n_reference": len(train_idx),
            "n_validation": len(val_idx),
            "seed": seed,
        }
        targets = dataset.labels.get("f_ex")
        groups = dataset.labels.get("galaxy_id")
        return cls.from_embeddings(
            ref,
            val,
            alpha=alpha,
            method=method,
            k=k,
            meta=meta,
            features=features,
            map_features=mf,
            reference_targets=None if targets is None else targets[train_idx],
            validation_groups=None if groups is None else groups[val_idx],
            seed=seed,
        )

    @classmethod
    def for_run(
        cls,
        posterior: Any,
        *,
        run_dir: str | Path | None = None,
        progress: bool = False,
        **fit_kwargs: Any,
    ) -> MisspecificationDetector:
        """The detector of a run: loaded if saved, else fitted from ``splits.json``
        and calibrated as the run's ``[misspecification]`` section asks (fresh
        in-model galaxies; :mod:`~sbi_exsitu.evaluation.detector_run`).

        The saved detector is only a cache: one of another :attr:`space` than
        asked for (the defaults unless given) is refitted, one
        calibrated otherwise recalibrated, a damaged one refitted (with a
        warning), and one that cannot be saved (a read-only run directory) is
        used without saving (with a warning). ``progress``: a bar while
        calibration galaxies are simulated.

        Raises:
            DetectorUnavailableError: no usable saved detector, and the run's
                training dataset or ``splits.json`` is unavailable.
            DatasetError: the calibration dataset does not fit the run.
        """
        from sbi_exsitu.evaluation.detector_run import detector_for_run

        run_dir = Path(run_dir if run_dir is not None else posterior.run_dir)
        features = fit_kwargs.get("features", DEFAULT_FEATURES)
        want = (
            features,
            fit_kwargs.get("method", DEFAULT_METHOD),
            None
            if features == "embedding"
            else fit_kwargs.get("n_components", DEFAULT_COMPONENTS),
        )
        return detector_for_run(
            cls, posterior, run_dir, want=want, progress=progress, fit_kwargs=fit_kwargs
        )

    @property
    def space(self) -> tuple[str, str, int | None]:
        """``(features, method, n_components)``: what :meth:`for_run` matches a
        saved detector on (``n_components`` None for the embedding, and for map
        features saved before it was recorded)."""
        mf = self.map_features
        return self.features, self.method, None if mf is None else mf.n_components

    def with_method(
        self, method: str, k: int | None = None, seed: int = 0
    ) -> MisspecificationDetector:
        """The same reference and calibration maps scored with another method."""
        det = type(self).from_embeddings(
            self.reference * self.std + self.mean,
            self.validation * self.std + self.mean,
            alpha=self.alpha,
            method=method,
            k=k or self.k,
            meta=self.meta,
            features=self.features,
            map_features=self.map_features,
            reference_targets=self.reference_targets,
            seed=seed,
        )
        det.calibration_weights = self.calibration_weights
        return det

    def represent(
        self,
        posterior: Any,
        maps: np.ndarray | MapDataset,
        indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw features of maps in the detector's space (``posterior``: embeddings)."""
        if self.map_features is None:
            return embed(posterior, maps, indices)
        return self.map_features.transform(maps, indices)

    def standardize(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw features -> the detector's standardised space."""
        return (np.asarray(embeddings, np.float64) - self.mean) / self.std

    def _raw_scores(self, z: np.ndarray, batch: int = 1024) -> np.ndarray:
        from sbi.diagnostics.misspecification import rbf_kernel

        if self.method == "flow":
            if self.density is None:
                raise ValueError("method 'flow' without a fitted density")
            return self.density.typicality(z)
        ref = torch.from_numpy(self.reference)
        out = []
        for s in range(0, len(z), batch):
            zb = torch.from_numpy(np.ascontiguousarray(z[s : s + batch]))
            if self.method == "mmd":
                # sbi's compute_rbf_mmd would recompute K(Z, Z) for every
                # observation; for the one-point set {z} the biased MMD^2 reduces
                # to k(z,z) + mean K(Z,Z) - 2 mean k(z,Z) with k(z,z) = 1.
                cross = rbf_kernel(zb, ref, self.bandwidth).mean(dim=1)
                out.append((1.0 + self.ref_kernel_mean - 2.0 * cross).numpy())
            else:
                d = torch.cdist(zb, ref)
                out.append(d.topk(self.k, dim=1, largest=False).values.mean(1).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def calibrate(
        self, embeddings: np.ndarray, groups: np.ndarray | None = None
    ) -> MisspecificationDetector:
        """A copy calibrated on other in-distribution maps' raw features (e.g.
        galaxies simulated for it only; ``groups``: galaxy ids, weigh per galaxy)."""
        z = self.standardize(embeddings)
        return replace(
            self,
            calibration_scores=self._raw_scores(z),
            validation=z,
            calibration_weights=group_weights(groups, len(z)),
            meta=self.meta | {"n_validation": len(z), "recalibrated": True},
        )

    def score_embeddings(self, embeddings: np.ndarray) -> MisspecificationScores:
        """Score raw (unstandardised) features."""
        score = self._raw_scores(self.standardize(embeddings))
        p = conformal_pvalues(score, self.calibration_scores, self.calibration_weights)
        nn = None
        if self.reference_targets is not None and len(score):
            nn = self.neighbour_targets(embeddings)
        return MisspecificationScores(score, p, p < self.alpha, nn)

    def score(
        self,
        posterior: Any,
        maps: np.ndarray | MapDataset,
        indices: np.ndarray | None = None,
    ) -> MisspecificationScores:
        """Score maps (with ``posterior``'s embedding nets if it scores in them).

        Returns:
            :class:`MisspecificationScores`, unpacking as ``(score, p_value, flag)``.
        """
        return self.score_embeddings(self.represent(posterior, maps, indices))

    def neighbour_targets(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean true f_ex of the ``k`` nearest reference maps of each observation.

        Raises:
            ValueError: no reference targets (bare embeddings, or format 1).
        """
        if self.reference_targets is None:
            raise ValueError(
                "this detector holds no reference f_ex (format 1 or built from "
                "bare embeddings); delete <run>/misspecification/ to refit it"
            )
        z = torch.from_numpy(np.ascontiguousarray(self.standardize(embeddings)))
        nn = torch.cdist(z, torch.from_numpy(self.reference)).topk(
            self.k, dim=1, largest=False
        )
        return self.reference_targets[nn.indices.numpy()].mean(axis=1)

    def set_test(
        self,
        embeddings: np.ndarray,
        *,
        n_shuffle: int = 1000,
        max_samples: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """sbi's set-level MMD test of a set of observations against the validation
        maps (:func:`~sbi_exsitu.evaluation.novelty.set_mmd_test`).

        Args:
            embeddings: ``(n, F)`` raw features of the observed set.
            n_shuffle, max_samples, seed: as for ``set_mmd_test``.
        """
        return set_mmd_test(
            self.standardize(embeddings),
            self.validation,
            n_shuffle=n_shuffle,
            max_samples=max_samples,
            seed=seed,
        )

    def save(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/misspecification/`` (.npy, detector.json, flow.pt)."""
        return write_detector(self, Path(run_dir) / DETECTOR_DIR)

    @classmethod
    def load(cls, run_dir: str | Path) -> MisspecificationDetector:
        """Read a detector written by :meth:`save` (no pickle)."""
        return cls(**read_detector(Path(run_dir) / DETECTOR_DIR))

    def __repr__(self) -> str:
        n_ref, n_cal = len(self.reference), len(self.calibration_scores)
        return (
            f"MisspecificationDetector(features={self.features!r}, method="
            f"{self.method!r}, n_reference={n_ref}, n_calibration={n_cal}, "
            f"alpha={self.alpha}, bandwidth={self.bandwidth:.3g})"
        )
