"""Per-observation misspecification warnings: "this galaxy is unlike the training set".

A posterior trained on one formation model is only trustworthy on maps that look
like its training maps; on maps from another simulator it can be biased *and*
overconfident (001 sec. 4.2 and fig. 11). The detector compares each observation
with the training set in the space where the posterior sees it, the output of the
posterior's embedding net, as sbi's misspecification test does:

* **reference**: embeddings of (up to ``max_reference``) training maps, each
  feature standardised with the reference mean and standard deviation;
* **score** of an observation ``z`` (``method="knn"``, the default): the mean
  Euclidean distance to its ``k`` nearest reference points, a local novelty score;
  ``method="mmd"``: the squared MMD between the one-point set ``{z}`` and the
  reference with sbi's RBF kernel and median-heuristic bandwidth
  (``sbi.diagnostics.misspecification``), which for one point is
  ``1 + mean K(Z, Z) - 2 mean_j k(z, Z_j)``, a kernel-density score. With the
  median-heuristic bandwidth the kernel is so wide that this score is nearly a
  distance from the centre of the training set: on our mocks it separated shifted
  metallicity gradients no better than chance (ROC AUC ~0.52) where the k-NN
  score reached 0.76-0.83, hence the default (see docs/crosstest.md);
* **p-value**: conformal, the rank of the score among the scores of held-out
  in-distribution (validation) maps, ``(1 + #{s_val >= s}) / (n_val + 1)``. For
  maps from the training distribution it is uniform, so flagging ``p < alpha``
  gives false alarms at rate ``alpha`` by construction, whatever the score.

For a whole set of observations :meth:`MisspecificationDetector.set_test` runs
sbi's own ``calc_misspecification_mmd`` (permutation test of the set MMD) on the
same embeddings.

Stored in ``<run>/misspecification/`` as ``.npy`` arrays and a JSON file (never
pickle): :meth:`~MisspecificationDetector.save`, :meth:`~MisspecificationDetector.load`,
and :meth:`~MisspecificationDetector.for_run` (load, or fit from the run's
``splits.json`` and save on first use).

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
    ...     rng.normal(size=(500, 4)), rng.normal(size=(200, 4)))
    >>> res = det.score_embeddings(np.r_[rng.normal(size=(5, 4)),
    ...                                  rng.normal(4.0, 1.0, size=(5, 4))])
    >>> res.flag.tolist()
    [False, False, False, False, False, True, True, True, True, True]
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from sbi_exsitu.atomic import atomic_save, atomic_write_json
from sbi_exsitu.data.dataset import MapDataset, subsample
from sbi_exsitu.errors import DatasetError, DetectorUnavailableError, RunError
from sbi_exsitu.evaluation.novelty import conformal_pvalues, roc_auc
from sbi_exsitu.runs import RunDirectory

__all__ = [
    "DETECTOR_DIR",
    "MisspecificationDetector",
    "MisspecificationScores",
    "embed",
    "roc_auc",
    "conformal_pvalues",
]

#: Sub-directory of a run directory holding the detector.
DETECTOR_DIR = "misspecification"
_FORMAT = 1


class MisspecificationScores(NamedTuple):
    """Per-observation results; unpacks as ``score, p_value, flag = ...``.

    Attributes:
        score: ``(n,)`` novelty score (higher = less like the training set).
        p_value: ``(n,)`` conformal p-value against in-distribution maps.
        flag: ``(n,)`` ``p_value < alpha``.
    """

    score: np.ndarray
    p_value: np.ndarray
    flag: np.ndarray

    def to_columns(self, prefix: str = "misspec_") -> dict[str, np.ndarray]:
        """Flat ``{column: (n,) array}`` for prediction tables."""
        return {
            f"{prefix}score": self.score,
            f"{prefix}pvalue": self.p_value,
            f"{prefix}flag": self.flag.astype(np.int8),
        }


@torch.no_grad()
def embed(
    posterior: Any,
    maps: np.ndarray | MapDataset,
    indices: np.ndarray | None = None,
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """Embedding-net outputs of every ensemble member, concatenated.

    Args:
        posterior: an :class:`~sbi_exsitu.posteriors.scalar.ExSituPosterior`
            (anything with ``estimators`` exposing sbi's public ``embedding_net``
            and a ``device``).
        maps: ``(n, C, H, W)`` array or a dataset.
        indices: which samples of a dataset (all by default).
        batch_size: maps per forward pass.

    Returns:
        ``(n, K * F)`` float64 array (K members, F features each).
    """
    nets = [est.embedding_net.eval() for est in posterior.estimators]
    device = getattr(posterior, "device", torch.device("cpu"))
    if isinstance(maps, MapDataset):
        idx = np.arange(len(maps)) if indices is None else np.asarray(indices)
        chunks = (
            maps.maps(idx[s : s + batch_size]) for s in range(0, len(idx), batch_size)
        )
    else:
        arr = np.asarray(maps, dtype=np.float32)
        if indices is not None:
            arr = arr[np.asarray(indices)]
        chunks = (arr[s : s + batch_size] for s in range(0, len(arr), batch_size))
    out = []
    for x in chunks:
        xt = torch.as_tensor(
            np.ascontiguousarray(x), dtype=torch.float32, device=device
        )
        out.append(torch.cat([net(xt) for net in nets], dim=1).cpu().double().numpy())
    if not out:
        return np.zeros((0, 0))
    return np.concatenate(out)


@dataclass
class MisspecificationDetector:
    """Novelty score in the posterior's embedding space, with conformal p-values.

    Build with :meth:`fit` (a posterior and its training dataset),
    :meth:`from_embeddings` (precomputed embeddings) or :meth:`for_run`.

    Attributes:
        reference: ``(n_ref, F)`` standardised training embeddings.
        mean, std: ``(F,)`` standardisation of the raw embeddings.
        bandwidth: RBF kernel bandwidth (sbi's median heuristic on the reference).
        ref_kernel_mean: ``mean K(Z, Z)`` of the reference (constant of the score).
        calibration_scores: ``(n_val,)`` scores of in-distribution held-out maps.
        validation: ``(n_val, F)`` standardised held-out embeddings (the reference
            of :meth:`set_test`).
        alpha: flag threshold on the p-value.
        method: ``"knn"`` or ``"mmd"``.
        k: neighbours of the ``"knn"`` score.
        meta: provenance (dataset, counts, seed).
    """

    reference: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    bandwidth: float
    ref_kernel_mean: float
    calibration_scores: np.ndarray
    validation: np.ndarray
    alpha: float = 0.05
    method: str = "knn"
    k: int = 5
    meta: dict[str, Any] = field(default_factory=dict)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_embeddings(
        cls,
        reference: np.ndarray,
        validation: np.ndarray,
        *,
        alpha: float = 0.05,
        method: str = "knn",
        k: int = 5,
        meta: dict[str, Any] | None = None,
    ) -> MisspecificationDetector:
        """Build from raw embeddings of training (reference) and validation maps."""
        from sbi.diagnostics.misspecification import median_heuristic, rbf_kernel

        if method not in ("mmd", "knn"):
            raise ValueError(f"'method' is {method!r}, expected 'mmd' or 'knn'")
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
        k_mean = float(rbf_kernel(zr, zr, bandwidth).mean())
        det = cls(
            reference=ref,
            mean=mean,
            std=std,
            bandwidth=bandwidth,
            ref_kernel_mean=k_mean,
            calibration_scores=np.zeros(0),
            validation=(validation - mean) / std,
            alpha=alpha,
            method=method,
            k=min(k, len(ref)),
            meta=dict(meta or {}),
        )
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
        method: str = "knn",
        k: int = 5,
        seed: int = 0,
    ) -> MisspecificationDetector:
        """Embed (a seeded subsample of) the training maps and the validation maps.

        Args:
            posterior: the trained posterior (its embedding nets are used).
            dataset: the training dataset.
            train_idx: training indices (the reference).
            val_idx: held-out in-distribution indices (calibrate the p-values).
            max_reference: cap on reference maps (memory and time grow as n_ref).
            alpha: flag threshold.
            method: ``"mmd"`` or ``"knn"``.
            k: neighbours of ``"knn"``.
            seed: seeds the reference subsample.
        """
        train_idx = subsample(train_idx, max_reference, seed)
        ref = embed(posterior, dataset, train_idx)
        val = embed(posterior, dataset, np.asarray(val_idx))
        meta = {
            "dataset": str(dataset.path),
            "n_reference": len(train_idx),
            "n_validation": len(val_idx),
            "seed": seed,
        }
        return cls.from_embeddings(ref, val, alpha=alpha, method=method, k=k, meta=meta)

    @classmethod
    def for_run(
        cls, posterior: Any, *, run_dir: str | Path | None = None, **fit_kwargs: Any
    ) -> MisspecificationDetector:
        """The detector of a run: loaded if saved, else fitted from ``splits.json``.

        The saved detector is only a cache: a damaged one is refitted (with a
        warning), and one that cannot be saved (a read-only run directory) is
        used without saving (with a warning).

        Raises:
            DetectorUnavailableError: no usable saved detector, and the run's
                training dataset or ``splits.json`` is unavailable.
        """
        run_dir = Path(run_dir if run_dir is not None else posterior.run_dir)
        saved = run_dir / DETECTOR_DIR / "detector.json"
        if saved.is_file():
            try:
                return cls.load(run_dir)
            # np.load raises EOFError on an empty .npy, json ValueError on a
            # truncated .json: either way the cache is damaged.
            except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
                warnings.warn(
                    f"{saved}: the saved misspecification detector is damaged "
                    f"({type(err).__name__}: {err}); refitting it",
                    stacklevel=2,
                )
        run = RunDirectory(run_dir)
        try:
            splits = run.read_splits()
            ds = MapDataset(run.training_data(), expect_config=posterior.render_config)
        except (RunError, DatasetError) as err:
            raise DetectorUnavailableError(
                f"{run_dir}: no saved detector, and it needs the training data "
                f"once to be fitted: {err}"
            ) from None
        with ds:
            det = cls.fit(
                posterior,
                ds,
                np.asarray(splits["train"], np.int64),
                np.asarray(splits["validation"], np.int64),
                **fit_kwargs,
            )
        try:
            det.save(run_dir)
        except OSError as err:  # read-only run: refit next time, but go on
            warnings.warn(
                f"{run_dir}: the misspecification detector cannot be cached "
                f"({err}); it is refitted on every use",
                stacklevel=2,
            )
        return det

    def with_method(
        self, method: str, k: int | None = None
    ) -> MisspecificationDetector:
        """The same reference and calibration maps scored with another method."""
        raw_ref = self.reference * self.std + self.mean
        raw_val = self.validation * self.std + self.mean
        return type(self).from_embeddings(
            raw_ref,
            raw_val,
            alpha=self.alpha,
            method=method,
            k=k or self.k,
            meta=self.meta,
        )

    # -- scoring ---------------------------------------------------------------------
    def standardize(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw embeddings -> the detector's standardised space."""
        return (np.asarray(embeddings, np.float64) - self.mean) / self.std

    def _raw_scores(self, z: np.ndarray, batch: int = 1024) -> np.ndarray:
        from sbi.diagnostics.misspecification import rbf_kernel

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

    def score_embeddings(self, embeddings: np.ndarray) -> MisspecificationScores:
        """Score raw (unstandardised) embeddings."""
        score = self._raw_scores(self.standardize(embeddings))
        p = conformal_pvalues(score, self.calibration_scores)
        return MisspecificationScores(score=score, p_value=p, flag=p < self.alpha)

    def score(
        self,
        posterior: Any,
        maps: np.ndarray | MapDataset,
        indices: np.ndarray | None = None,
    ) -> MisspecificationScores:
        """Score maps with ``posterior``'s embedding nets (the ones it was fitted on).

        Returns:
            :class:`MisspecificationScores`, unpacking as ``(score, p_value, flag)``.
        """
        return self.score_embeddings(embed(posterior, maps, indices))

    def set_test(
        self,
        embeddings: np.ndarray,
        *,
        n_shuffle: int = 1000,
        max_samples: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """sbi's ``calc_misspecification_mmd`` for a whole set of observations.

        sbi's ``mode="embedding"`` needs the trainer object, which a loaded run no
        longer has; we embed ourselves and call it in ``mode="x_space"`` on the
        embeddings, which is the same test. The reference is the held-out
        validation set, not the training set: the net has fitted its training maps,
        so their embeddings are slightly unlike any new map's and a training
        reference rejects even in-distribution test sets.

        Args:
            embeddings: ``(n, F)`` raw embeddings of the observed set.
            n_shuffle: permutations of the null distribution.
            max_samples: pooled size per permutation (default: all validation).
            seed: seeds the subsample and sbi's permutations.

        Returns:
            ``{"p_value", "mmd", "n_obs", "n_reference"}``.
        """
        from sbi.diagnostics import calc_misspecification_mmd

        z_obs = self.standardize(embeddings)
        ref = self.validation
        # sbi draws both halves of each permutation from the reference, so the
        # observed set must be smaller than it; subsample to half (seeded).
        n_obs = min(len(z_obs), len(ref) // 2)
        rng = np.random.default_rng(seed)
        z_obs = z_obs[np.sort(rng.choice(len(z_obs), n_obs, replace=False))]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            p, (_, mmd) = calc_misspecification_mmd(
                torch.from_numpy(z_obs).float(),
                torch.from_numpy(ref).float(),
                mode="x_space",
                n_shuffle=n_shuffle,
                max_samples=max_samples or len(ref),
            )
        return {
            "p_value": float(p),
            "mmd": float(mmd),
            "n_obs": int(n_obs),
            "n_reference": int(len(ref)),
        }

    # -- persistence -----------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/misspecification/`` (.npy arrays + detector.json)."""
        out = Path(run_dir) / DETECTOR_DIR
        out.mkdir(parents=True, exist_ok=True)
        for name in ("reference", "calibration_scores", "validation"):
            arr = getattr(self, name)
            atomic_save(out / f"{name}.npy", lambda p, a=arr: _save_npy(p, a))
        atomic_write_json(
            out / "detector.json",
            {
                "format": _FORMAT,
                "method": self.method,
                "alpha": self.alpha,
                "k": self.k,
                "bandwidth": self.bandwidth,
                "ref_kernel_mean": self.ref_kernel_mean,
                "mean": self.mean.tolist(),
                "std": self.std.tolist(),
                "meta": self.meta,
            },
        )
        return out

    @classmethod
    def load(cls, run_dir: str | Path) -> MisspecificationDetector:
        """Read a detector written by :meth:`save` (no pickle)."""
        d = Path(run_dir) / DETECTOR_DIR
        info = json.loads((d / "detector.json").read_text())
        if not isinstance(info, dict):
            raise ValueError(f"{d}: detector.json holds no JSON object")
        if info.get("format") != _FORMAT:
            raise ValueError(f"{d}: detector format {info.get('format')!r} unknown")
        arrays = {
            n: np.load(d / f"{n}.npy", allow_pickle=False)
            for n in ("reference", "calibration_scores", "validation")
        }
        return cls(
            **arrays,
            mean=np.asarray(info["mean"]),
            std=np.asarray(info["std"]),
            bandwidth=info["bandwidth"],
            ref_kernel_mean=info["ref_kernel_mean"],
            alpha=info["alpha"],
            method=info["method"],
            k=info["k"],
            meta=info.get("meta", {}),
        )

    def __repr__(self) -> str:
        return (
            f"MisspecificationDetector(method={self.method!r}, n_reference="
            f"{len(self.reference)}, n_calibration={len(self.calibration_scores)}"
            f", alpha={self.alpha}, bandwidth={self.bandwidth:.3g})"
        )


def _save_npy(path: Path, array: np.ndarray) -> None:
    # Through a file handle: np.save(path) would append ".npy" to the temp name.
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
