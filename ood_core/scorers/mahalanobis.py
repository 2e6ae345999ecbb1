"""Mahalanobis distance to the closest class mean, penultimate layer only (Lee et al.,
NeurIPS 2018, as run by ViM's ``benchmark.py`` and OpenOOD's ``mds``), docs/methods.md §2.1.

S(x) = max_c −(h − μ_c)ᵀ P (h − μ_c), with class means μ_c and the tied precision P
(pinv of the MLE class-centred covariance). No input pre-processing, no regression.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ood_core.memo import Memo
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer
from ood_core.statistics import TrainingData, register_statistic


def mahalanobis_reference(h: Tensor, class_means: Tensor, precision: Tensor) -> Tensor:
    """h (N, D), μ (K, D), P (D, D) → (N,) S = max_c −(h − μ_c)ᵀ P (h − μ_c), as written."""
    diff = h.double()[:, None, :] - class_means.double()[None, :, :]
    return (-torch.einsum("nkd,de,nke->nk", diff, precision.double(), diff)).amax(dim=1).float()


def whitening_factor(precision: Tensor) -> Tensor:
    """A (D, D) matrix A with ``precision = A Aᵀ``, so (h−μ)ᵀP(h−μ) = ‖(h−μ) A‖².

    Cholesky when P is positive definite; otherwise (P is a pinv and may be singular)
    the eigendecomposition V·diag(√λ) with negative round-off eigenvalues clamped to 0.
    Computed in float64 (float32 on devices without it), returned in float32.
    """
    dtype = torch.float32 if precision.device.type == "mps" else torch.float64
    p = precision.to(dtype)
    p = (p + p.T) / 2  # exact symmetry: pinv output is symmetric only up to round-off
    factor, info = torch.linalg.cholesky_ex(p)
    if int(info) != 0 or not bool(torch.isfinite(factor).all()):
        eigenvalues, eigenvectors = torch.linalg.eigh(p)
        factor = eigenvectors * eigenvalues.clamp(min=0).sqrt()
    return factor.float()


def min_squared_mahalanobis(features: Tensor, whitened_means: Tensor, factor: Tensor) -> Tensor:
    """min_c ‖(h − μ_c) A‖² for features (N, D), whitened_means μA (K, D), factor A (D, D) → (N,).

    GEMM form ‖g‖² − 2 g·m_c + ‖m_c‖² with g = hA: two matrix products instead of an
    (N, K, D) difference tensor.
    """
    g = features.float() @ factor
    squared = (g * g).sum(1, keepdim=True) - 2.0 * (g @ whitened_means.T) + (whitened_means * whitened_means).sum(1)
    return squared.clamp(min=0).amin(dim=1)  # clamp: float round-off can dip below 0


@SCORERS.register("mahalanobis")
class MahalanobisScorer(Scorer):
    """S(x) = max_c −(h − μ_c)ᵀ P (h − μ_c) (tied covariance, penultimate layer)."""

    name = "mahalanobis"
    title = "Mahalanobis"
    summary = "Distance of the features to the nearest class mean, under the shared training covariance."
    paper = "Lee, Lee, Lee & Shin, A Simple Unified Framework for Detecting OOD Samples and Adversarial Attacks, NeurIPS 2018"
    needs = frozenset({"penultimate"})
    # class_counts: a class without training images has no mean (its stored row is 0, not a centre)
    stats = frozenset({"class_means", "class_counts", "precision"})
    fast_path = "whitened GEMM form (two products, no (N, K, D) difference), memoised per feature tensor"

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._scores = Memo()  # no hyperparameters: a cached set is scored once

    def fit(self, ctx: FitContext) -> "MahalanobisScorer":
        """Whitening factor A of P and the whitened class means μ_c A, once."""
        super().fit(ctx)
        self._factor = whitening_factor(ctx.stats["precision"])
        self._whitened_means = self._present_means(ctx.stats).float().to(self._factor.device) @ self._factor
        return self

    @staticmethod
    def _present_means(stats: Any) -> Tensor:
        """(K', D) the means of the K' classes with training images (a partial training split,
        e.g. ``--limit`` on ImageNet, leaves classes empty: their zero rows are no class centre)."""
        return stats["class_means"][stats["class_counts"].to(stats["class_means"].device) > 0]

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32 (≤ 0), by the formula (float64)."""
        self.resolve(hparams)
        stats = self.fitted.stats
        device = feats.penultimate.device
        return mahalanobis_reference(feats.penultimate, self._present_means(stats).to(device),
                                     stats["precision"].to(device))

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32 (≤ 0)."""
        self.resolve(hparams)
        _ = self.fitted  # raises a clear error before fit()
        def compute(features: Tensor) -> Tensor:
            device = features.device
            return -min_squared_mahalanobis(features, self._whitened_means.to(device), self._factor.to(device))

        return self._scores.get("scores", lambda: compute(feats.penultimate), tensor=feats.penultimate)


# -- the training statistic only this method reads (ood_core.statistics) ---------------------------


@register_statistic("precision", version=1, shape="(D, D)")
def _precision(data: TrainingData) -> Tensor:
    """P = pinv of the tied covariance of the class-centred training features, MLE (divide by
    M), as sklearn's EmpiricalCovariance; float64."""
    def scatter(h: Tensor, z: Tensor, y: Tensor) -> Tensor:
        centred = h - data.class_means[y]
        return centred.T @ centred

    covariance = data.total("mahalanobis.scatter", scatter) / data.m
    return torch.linalg.pinv(covariance, hermitian=True)
