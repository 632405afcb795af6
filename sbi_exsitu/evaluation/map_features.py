"""The spaces the misspecification detector scores in: maps' own features or the
posterior's embedding (:func:`embed`).

The posterior's embedding is trained to keep what predicts f_ex and to discard the
rest, so a shift of the formation model that leaves the maps' f_ex information
alone is invisible in it (issue #17: ROC AUC ~0.53 between tng-like and
eagle-like). These features keep what the maps *show*, whatever it predicts:

* ``"profile"`` (default): per channel, the mean and the root-mean-square of the
  pixel values in ``n_bins`` circular annuli around the image centre. Rotation
  invariant (a galaxy's position angle on the sky carries no information), and it
  measures exactly the radial gradients by which the formation models differ
  (in-situ metallicity and age gradients, the ex-situ envelope); the RMS keeps
  the rotation signal of the (signed) velocity map.
* ``"pca"``: the maps average-pooled by ``pool`` and flattened.

Either is then centred and whitened by a principal component analysis of the
training maps (``numpy.linalg.svd``), so a Euclidean distance in feature space is
a Mahalanobis distance. Only the leading ``n_components`` (:data:`DEFAULT_COMPONENTS`
= 10) components are kept: whitening gives every kept direction unit variance, so
the many low-variance directions, where the formation models hardly differ, would
add as much scatter to a density score as the few that carry the shift. Measured
on the streams world (``benchmarks/misspecification.py``, 500 galaxies per model,
profiles + flow, one view per galaxy): tng-like -> eagle-like AUC 0.91 / 0.95 /
0.95 / 0.92 / 0.91 with 6 / 8 / 10-12 / 16 / 32 components, eagle-like ->
tng-like 0.85 (8) to 0.76 (32); fewer than 8 lose the shift (0.69 at 4).

:class:`FeatureDensity` adds a density of the whitened features (a Gaussian, or a
zuko normalising flow) and the two-sided typicality score
``|log q(x) - median log q(x_val)|``: flows can give out-of-distribution inputs a
*higher* likelihood than typical ones (Nalisnick et al., 2019, ICLR, "Do deep
generative models know what they don't know?"), and typicality tests catch both
tails (Nalisnick et al., 2019, arXiv:1906.02994).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> feats = MapFeatures.fit(rng.normal(size=(200, 2, 16, 16)), n_components=8)
    >>> feats.transform(rng.normal(size=(3, 2, 16, 16))).shape
    (3, 8)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.statefiles import load_state_dict, save_state_dict

__all__ = [
    "DEFAULT_COMPONENTS",
    "FEATURE_KINDS",
    "FeatureDensity",
    "MapFeatures",
    "embed",
    "radial_profiles",
]

#: Feature kinds of :class:`MapFeatures`.
FEATURE_KINDS = ("profile", "pca")
#: Whitened components kept by :meth:`MapFeatures.fit` (see the module doc).
DEFAULT_COMPONENTS = 10


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
    out = []
    for x in _chunks(maps, indices, batch_size):
        xt = torch.as_tensor(
            np.ascontiguousarray(x), dtype=torch.float32, device=device
        )
        out.append(torch.cat([net(xt) for net in nets], dim=1).cpu().double().numpy())
    if not out:
        return np.zeros((0, 0))
    return np.concatenate(out)


def _chunks(
    maps: np.ndarray | MapDataset, indices: np.ndarray | None, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of maps from an array or a dataset (read lazily)."""
    if isinstance(maps, MapDataset):
        idx = np.arange(len(maps)) if indices is None else np.asarray(indices)
        for s in range(0, len(idx), batch_size):
            yield maps.maps(idx[s : s + batch_size])
        return
    arr = np.asarray(maps, dtype=np.float32)
    if indices is not None:
        arr = arr[np.asarray(indices)]
    for s in range(0, len(arr), batch_size):
        yield arr[s : s + batch_size]


def radial_profiles(maps: np.ndarray, n_bins: int = 8) -> np.ndarray:
    """Per-channel mean and RMS of the pixel values in circular annuli.

    Args:
        maps: ``(n, C, H, W)``.
        n_bins: annuli of equal width from the centre to the image edge (the
            corners fall in the last one).

    Returns:
        ``(n, 2 * C * n_bins)`` float64: all means, then all RMS values.

    Example:
        >>> radial_profiles(np.ones((1, 1, 8, 8)), n_bins=2).round(12).tolist()
        [[1.0, 1.0, 1.0, 1.0]]
    """
    maps = np.asarray(maps, np.float64)
    n, c, h, w = maps.shape
    y, x = np.mgrid[:h, :w]
    r = np.hypot(y - (h - 1) / 2, x - (w - 1) / 2) / (min(h, w) / 2)
    ring = np.minimum((r * n_bins).astype(int), n_bins - 1).ravel()
    # One-hot (pixels x bins) / counts: the annulus means as one matrix product.
    onehot = np.zeros((h * w, n_bins))
    onehot[np.arange(h * w), ring] = 1.0
    onehot /= onehot.sum(axis=0, keepdims=True)
    flat = maps.reshape(n * c, h * w)
    mean = (flat @ onehot).reshape(n, c * n_bins)
    rms = np.sqrt((flat**2) @ onehot).reshape(n, c * n_bins)
    return np.concatenate([mean, rms], axis=1)


def _pool(maps: np.ndarray, pool: int) -> np.ndarray:
    maps = np.asarray(maps, np.float64)
    n, c, h, w = maps.shape
    h2, w2 = h // pool, w // pool
    m = maps[:, :, : h2 * pool, : w2 * pool].reshape(n, c, h2, pool, w2, pool)
    return m.mean(axis=(3, 5)).reshape(n, -1)


@dataclass
class MapFeatures:
    """Whitened, unsupervised features of maps (see the module doc).

    Attributes:
        kind: ``"profile"`` or ``"pca"``.
        mean: ``(D,)`` mean of the raw features of the training maps.
        components: ``(d, D)`` principal axes, each divided by its standard
            deviation (so ``(f - mean) @ components.T`` is white).
        n_bins: annuli of ``"profile"``.
        pool: pooling factor of ``"pca"``.
        n_components: the components asked for (``components`` has fewer if the
            training maps have fewer directions of variance); None for features
            saved before it was recorded (32 components then).
    """

    kind: str
    mean: np.ndarray
    components: np.ndarray
    n_bins: int = 8
    pool: int = 2
    n_components: int | None = None

    @classmethod
    def fit(
        cls,
        maps: np.ndarray,
        *,
        kind: str = "profile",
        n_components: int = DEFAULT_COMPONENTS,
        n_bins: int = 8,
        pool: int = 2,
        max_maps: int = 4000,
        seed: int = 0,
    ) -> MapFeatures:
        """Fit the whitening on (a seeded subsample of) training maps.

        Raises:
            ValueError: unknown ``kind`` or fewer than 2 maps.
        """
        if kind not in FEATURE_KINDS:
            raise ValueError(f"'kind' is {kind!r}, expected one of {FEATURE_KINDS}")
        if n_components < 1:
            raise ValueError(f"'n_components' is {n_components}, expected >= 1")
        maps = np.asarray(maps)
        if len(maps) < 2:
            raise ValueError(f"need >= 2 maps to fit features, got {len(maps)}")
        if len(maps) > max_maps:
            rng = np.random.default_rng(seed)
            maps = maps[np.sort(rng.choice(len(maps), max_maps, replace=False))]
        raw = cls(kind, np.zeros(0), np.zeros((0, 0)), n_bins, pool).raw(maps)
        mean = raw.mean(axis=0)
        _, s, vt = np.linalg.svd(raw - mean, full_matrices=False)
        sd = s / np.sqrt(len(raw) - 1)
        # Drop directions without variance (constant features): no 0-division.
        keep = np.flatnonzero(sd > 1e-8 * max(sd.max(), 1e-300))[:n_components]
        components = vt[keep] / sd[keep, None]
        return cls(kind, mean, components, n_bins, pool, n_components)

    def raw(self, maps: np.ndarray) -> np.ndarray:
        """Unwhitened features ``(n, D)``."""
        if self.kind == "profile":
            return radial_profiles(maps, self.n_bins)
        return _pool(maps, self.pool)

    def transform(
        self, maps: np.ndarray | MapDataset, indices: np.ndarray | None = None
    ) -> np.ndarray:
        """Whitened features ``(n, d)`` of an array or (``indices`` of) a dataset."""
        out = [
            (self.raw(x) - self.mean) @ self.components.T
            for x in _chunks(maps, indices, 1024)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.components)))

    def to_json(self) -> dict[str, Any]:
        """The scalar settings (the arrays go to ``.npy`` files)."""
        return {
            "kind": self.kind,
            "n_bins": self.n_bins,
            "pool": self.pool,
            "n_components": self.n_components,
        }

    def density(
        self, features: np.ndarray, *, kind: str = "gauss", seed: int = 0
    ) -> FeatureDensity:
        """A :class:`FeatureDensity` fitted on whitened training ``features``."""
        return FeatureDensity.fit(features, kind=kind, seed=seed)


@dataclass
class FeatureDensity:
    """Density of whitened features with a two-sided typicality score.

    Attributes:
        kind: ``"gauss"`` (the whitened features are N(0, I) to second order) or
            ``"flow"`` (a zuko masked autoregressive flow).
        centre: median log density of the fitting features; the typicality
            score is the distance of ``log q`` from it.
        flow: the trained flow (``"flow"`` only).
    """

    kind: str
    centre: float
    flow: Any = None
    n_features: int = 0

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        *,
        kind: str = "gauss",
        seed: int = 0,
        steps: int = 400,
    ) -> FeatureDensity:
        """Fit the density; ``steps`` full-batch Adam steps for the flow."""
        if kind not in ("gauss", "flow"):
            raise ValueError(f"'kind' is {kind!r}, expected 'gauss' or 'flow'")
        det = cls(kind, 0.0, n_features=np.shape(features)[1])
        if kind == "flow":
            det.flow = _fit_flow(np.asarray(features), seed, steps)
        det.centre = float(np.median(det.log_prob(features)))
        return det

    def log_prob(self, features: np.ndarray) -> np.ndarray:
        """Log density of whitened features (up to a constant for ``"gauss"``)."""
        f = np.asarray(features, np.float64)
        if self.kind == "gauss":
            return -0.5 * np.sum(f**2, axis=1)
        with torch.no_grad():
            x = torch.as_tensor(f, dtype=torch.float32)
            return self.flow().log_prob(x).double().numpy()

    def save(self, path: Path) -> dict[str, Any]:
        """Write the flow's state dict to ``path`` (flows only); the JSON part."""
        if self.flow is not None:
            save_state_dict(path, self.flow.state_dict())
        return {"kind": self.kind, "centre": self.centre, "n_features": self.n_features}

    @classmethod
    def load(cls, info: dict[str, Any], path: Path) -> FeatureDensity:
        """Rebuild from :meth:`save`'s JSON part and state dict (never unpickled)."""
        det = cls(info["kind"], float(info["centre"]), None, int(info["n_features"]))
        if det.kind == "flow":
            det.flow = _new_flow(det.n_features)
            det.flow.load_state_dict(load_state_dict(path, what="detector flow"))
            det.flow.eval()
        return det

    def typicality(self, features: np.ndarray) -> np.ndarray:
        """``|log q(x) - centre|``: large for atypically low *or* high density."""
        return np.abs(self.log_prob(features) - self.centre)


def _new_flow(n_features: int) -> Any:
    import zuko

    return zuko.flows.MAF(features=n_features, transforms=3, hidden_features=[64])


def _fit_flow(features: np.ndarray, seed: int, steps: int) -> Any:
    x = torch.as_tensor(features, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = _new_flow(x.shape[1])
        opt = torch.optim.Adam(flow.parameters(), lr=3e-3, weight_decay=1e-4)
        for _ in range(steps):
            opt.zero_grad()
            loss = -flow().log_prob(x).mean()
            loss.backward()
            opt.step()
    return flow.eval()
