"""Training that resists a change of simulator: align the embedding on target maps.

A posterior trained on one formation model is biased on maps of another (issue
#17, all channels at 4 r_e, tng-like -> eagle-like, configs/paper-grid.toml:
-0.030 in f_ex, coverage error 0.25 on the streams world; -0.055, 0.40 on
debris scheme 1). What these options achieve there (not the goal) is measured in
docs/crosstest.md. With *unlabelled* maps of the target
domain (the other model's, or observed galaxies) the embedding can be trained to
map both domains alike, so the flow downstream never sees a summary it was not
trained on: the loss of every training batch gains ``align_weight *
MMD^2(z_source, z_target)`` between the embeddings of the batch and of as many
target maps (Elsemüller et al., 2025,
arXiv:2502.04949, "Does unsupervised domain adaptation improve the robustness of
amortized Bayesian inference?"; the MMD of Gretton et al., 2012, JMLR, with a
mixture of RBF kernels at 0.5, 1 and 2 times the median distance as in
Schmitt et al., 2023, arXiv:2112.08866).

**Prior correction.** Aligning the marginal embedding distributions is wrong when
the two domains' f_ex distributions differ: the summaries *should* then differ as
much as f_ex does, and plain alignment hurts (Elsemüller et al., 2025, sec. 5;
the label-shift problem of Zhao et al., 2019, ICML, "On learning invariant
representations for domain adaptation"). With ``align_prior = "em"`` the source
side of the MMD is importance-weighted by ``w(f_ex) = p_target(f_ex) /
p_source(f_ex)`` on a histogram, and ``p_target`` is re-estimated at the start of
every epoch as the mixture of the current posterior over target maps, one step of
the EM prior adjustment of Saerens, Latinne & Decaestecker (2002, Neural
Computation 14, 21). Written by hand: no maintained library offers a weighted
MMD on torch tensors inside another training loop.

**DANN** (``align_method = "dann"``): instead of the MMD, a small domain
classifier on the embedding learns to tell source from target maps, behind a
gradient-reversal layer, so the embedding is trained to *confuse* it
(domain-adversarial training, Ganin et al., 2016, JMLR 17, 59). The reversal
scale ramps up as ``align_weight * (2 / (1 + exp(-10 p)) - 1)`` with ``p =
epoch / align_ramp_epochs`` capped at 1 (Ganin et al.'s schedule, there over
the whole training): the
classifier first learns on an untouched embedding. The prior correction is the
same importance weight ``w(f_ex)``, on the source side of the classifier's
cross-entropy (the importance-weighted DANN of Combes et al., 2020, NeurIPS,
"Domain adaptation with conditional distribution matching and generalized label
shift"). Written by hand: the reversal is four lines, and the DANN libraries
(e.g. ADAPT, pytorch-adapt) bring their own training loops.

``align_method = "confusion"`` keeps the classifier, weights and ramp but
replaces the reversal: the classifier learns on detached embeddings, and the
embedding minimises the cross-entropy of the (frozen) classifier against labels
1/2, the domain confusion loss of Tzeng, Hoffman, Darrell & Saenko (2015, ICCV,
"Simultaneous deep transfer across domains and tasks"). Unlike the reversed
cross-entropy it is bounded below (by log 2, at "cannot tell"), so the embedding
cannot win by swapping the domains' regions instead of merging them, which is
what the reversal appears to do on our mocks at ``align_weight >= 1`` (the
domains grow *more* separable; docs/crosstest.md).

Example:
    >>> import torch
    >>> x, y = torch.randn(64, 3), torch.randn(64, 3) + 2.0
    >>> bool(weighted_mmd2(x, y) > weighted_mmd2(x, torch.randn(64, 3)))
    True
    >>> z = torch.ones(2, requires_grad=True)
    >>> reverse_gradient(z, 0.5).sum().backward()
    >>> z.grad.tolist()
    [-0.5, -0.5]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sbi_exsitu.seeding import derive_seed

__all__ = [
    "ALIGN_METHODS",
    "ALIGN_PRIORS",
    "DomainClassifier",
    "EmbeddingAlignment",
    "dann_ramp",
    "reverse_gradient",
    "weighted_domain_loss",
    "weighted_mmd2",
]

#: Values of ``[training] align_prior``.
ALIGN_PRIORS = ("none", "em")
#: Values of ``[training] align_method``.
ALIGN_METHODS = ("mmd", "dann", "confusion")
_BANDWIDTH_SCALES = (0.5, 1.0, 2.0)


def weighted_mmd2(
    x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Biased squared MMD between ``x`` (optionally weighted) and ``y``.

    A sum of RBF kernels with bandwidths ``{0.5, 1, 2} x`` the median pairwise
    distance of the pooled sample (detached: the bandwidth is not trained).

    Args:
        x: ``(n, F)`` source sample.
        y: ``(m, F)`` target sample.
        weights: ``(n,)`` non-negative importance weights of ``x`` (normalised
            here), or None for equal weights.
    """
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).square()
    med = d2.detach()[d2.detach() > 0].median().clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (2 * s**2 * med)) for s in _BANDWIDTH_SCALES)
    n = len(x)
    wx = torch.full((n,), 1.0 / n) if weights is None else weights / weights.sum()
    wx = wx.to(x)
    wy = torch.full((len(y),), 1.0 / len(y), dtype=x.dtype, device=x.device)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return wx @ kxx @ wx + wy @ kyy @ wy - 2 * wx @ kxy @ wy


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, but what flows back through it is multiplied by ``-scale``.

    The gradient-reversal layer of Ganin et al. (2016, JMLR 17, 59): the domain
    classifier after it descends its loss, the embedding before it ascends it.
    """
    return _GradientReversal.apply(x, float(scale))


def dann_ramp(progress: float) -> float:
    """``2 / (1 + exp(-10 p)) - 1``: 0 at ``p = 0``, 0.9999 at ``p = 1`` (the
    schedule of Ganin et al., 2016); ``p`` is clipped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class DomainClassifier(torch.nn.Module):
    """The DANN domain classifier: an MLP from the embedding to one logit
    (source 0, target 1).

    Args:
        features: embedding size.
        hidden: width of its two hidden layers.
    """

    def __init__(self, features: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def weighted_domain_loss(
    logit_source: torch.Tensor,
    logit_target: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    labels: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Cross-entropy of the domain classifier, source side importance-weighted.

    ``0.5 * (mean_i w_i BCE(s_i, 0) + mean_j BCE(t_j, 1))`` with the weights
    normalised to mean 1 (Combes et al., 2020): with ``w = p_target(f_ex) /
    p_source(f_ex)`` the source half stands for source maps drawn with the
    target's f_ex distribution.

    Args:
        logit_source: ``(n,)`` classifier logits of source embeddings.
        logit_target: ``(m,)`` logits of target embeddings.
        weights: ``(n,)`` non-negative weights, or None for equal weights.
        labels: the (source, target) labels; ``(0.5, 0.5)`` is the domain
            confusion loss of Tzeng et al. (2015), smallest (log 2) where the
            classifier cannot tell the domains apart.
    """
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    src = bce(logit_source, torch.full_like(logit_source, labels[0]), reduction="none")
    tgt = bce(logit_target, torch.full_like(logit_target, labels[1]), reduction="none")
    if weights is not None:
        w = weights.to(src)
        src = src * (w / w.mean().clamp_min(1e-12))
    return 0.5 * (src.mean() + tgt.mean())


class EmbeddingAlignment:
    """The alignment term of one ensemble member (see the module doc).

    Args:
        target_maps: ``(m, C, H, W)`` unlabelled target-domain maps.
        weight: ``align_weight``: the factor of the MMD in the loss, or DANN's
            largest gradient-reversal scale.
        source_theta: ``(n, D)`` training parameters (the source prior histogram).
        prior: ``"none"`` or ``"em"`` (prior correction).
        method: ``"mmd"``, ``"dann"`` or ``"confusion"``.
        seed: seeds the target batches (and the DANN classifier's initial weights).
        bins: histogram bins of f_ex (the first parameter) on [0, 1].
        em_maps, em_draws: target maps and posterior draws per epoch for the
            EM estimate of the target prior.
        ramp_epochs: DANN's reversal scale reaches ``weight`` after this many
            epochs (0: from the start).
    """

    def __init__(
        self,
        target_maps: np.ndarray,
        weight: float,
        source_theta: np.ndarray,
        *,
        prior: str = "em",
        method: str = "mmd",
        seed: int = 0,
        bins: int = 10,
        em_maps: int = 256,
        em_draws: int = 50,
        ramp_epochs: int = 10,
    ) -> None:
        if prior not in ALIGN_PRIORS:
            raise ValueError(
                f"align_prior is {prior!r}, expected one of {ALIGN_PRIORS}"
            )
        if method not in ALIGN_METHODS:
            raise ValueError(
                f"align_method is {method!r}, expected one of {ALIGN_METHODS}"
            )
        if len(target_maps) < 2:
            raise ValueError(f"need >= 2 target maps to align, got {len(target_maps)}")
        self.target = torch.as_tensor(np.ascontiguousarray(target_maps))
        self.weight, self.prior, self.seed = float(weight), prior, seed
        self.method, self.ramp_epochs = method, int(ramp_epochs)
        self.edges = np.linspace(0.0, 1.0, bins + 1)
        self.p_source = self._histogram(np.asarray(source_theta)[:, 0])
        self.ratio = torch.ones(bins)
        self.em_maps, self.em_draws = em_maps, em_draws
        self.epoch, self.step = 0, 0
        self.critic: DomainClassifier | None = None

    def attach(self, model: Any) -> torch.nn.Module | None:
        """Build what the alignment trains besides ``model`` (DANN, confusion:
        the domain classifier, sized by ``model.embedding_net``'s output), or
        None (MMD).

        The caller trains it with the model (:func:`..loop.train_member` does)."""
        if self.method == "mmd":
            return None
        if self.critic is None:
            param = next(model.parameters())
            was_training = model.training
            model.eval()  # a probe of the output size must not move norm statistics
            with torch.no_grad():
                features = model.embedding_net(self.target[:2].to(param.device))
            model.train(was_training)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "dann-critic"))
                self.critic = DomainClassifier(features.shape[-1])
            self.critic.to(param.device)
        return self.critic

    def _histogram(self, f: np.ndarray) -> np.ndarray:
        h, _ = np.histogram(np.clip(f, 0.0, 1.0), self.edges)
        # Add-one smoothing: an empty source bin must not give an infinite weight.
        return (h + 1.0) / (h.sum() + len(h))

    @torch.no_grad()
    def start_epoch(self, model: Any, epoch: int) -> None:
        """Call before every training pass: the target batches follow ``(seed,
        epoch, step)`` (so a resumed run draws the same ones), and with ``"em"``
        the target prior is re-estimated with the current posterior."""
        self.epoch, self.step = epoch, 0
        if self.prior != "em" or epoch == 0:
            return  # epoch 0: the untrained posterior knows nothing yet
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "align-em", epoch))
        n = min(self.em_maps, len(self.target))
        idx = torch.randperm(len(self.target), generator=gen)[:n]
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "align-em-draws", epoch))
            draws = model.sample((self.em_draws,), condition=self.target[idx])
        model.train(was_training)
        p_target = self._histogram(draws[..., 0].reshape(-1).cpu().numpy())
        self.ratio = torch.as_tensor(p_target / self.p_source, dtype=torch.float32)

    def loss(self, model: Any, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The alignment term of one training batch, against as many target maps:
        ``weight * MMD^2`` of the embeddings, or the domain classifier's
        cross-entropy behind the gradient reversal (DANN), or that on detached
        embeddings plus the confusion loss (call :meth:`attach` first)."""
        gen = torch.Generator().manual_seed(
            derive_seed(self.seed, "align", self.epoch, self.step)
        )
        self.step += 1
        idx = torch.randint(len(self.target), (len(x),), generator=gen)
        xt = self.target[idx].to(x.device)
        z = model.embedding_net(torch.cat([x, xt]))
        w = None
        if self.prior == "em":
            b = np.clip(np.digitize(theta[:, 0].cpu().numpy(), self.edges) - 1, 0, None)
            w = self.ratio[np.minimum(b, len(self.ratio) - 1)].to(z.device)
        if self.method == "mmd":
            return self.weight * weighted_mmd2(z[: len(x)], z[len(x) :], w)
        if self.critic is None:
            raise RuntimeError("DANN alignment: call attach(model) before loss()")
        ramp = dann_ramp(self.epoch / self.ramp_epochs) if self.ramp_epochs else 1.0
        n, scale = len(x), self.weight * ramp
        if self.method == "dann":
            logits = self.critic(reverse_gradient(z, scale))
            return weighted_domain_loss(logits[:n], logits[n:], w)
        # "confusion": the classifier learns on detached embeddings; the embedding
        # is pulled to the classifier's 50/50 point through its frozen weights.
        logits = self.critic(z.detach())
        frozen = {k: p.detach() for k, p in self.critic.named_parameters()}
        seen = torch.func.functional_call(self.critic, frozen, (z,))
        confusion = weighted_domain_loss(seen[:n], seen[n:], w, labels=(0.5, 0.5))
        return weighted_domain_loss(logits[:n], logits[n:], w) + scale * confusion
