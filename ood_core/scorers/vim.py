"""ViM: virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022), methods.md §2.3.

S(x) = LSE(z) − α·‖(h − u)·NS‖ with u = −pinv(W)·b, NS the eigenvectors of cov(h − u)
after the top ``dim`` (the residual subspace) and α = mean_train max_k z_k /
mean_train ‖(h − u)·NS‖. The full eigendecomposition and the residual-norm means for
every ``dim`` are training statistics. Per cached feature tensor the projection onto *all*
eigenvectors is done once and kept as suffix sums of its squares, so ‖(h − u)·NS_dim‖² is
column ``dim`` of that table and a ``dim`` change costs O(N) instead of a GEMM. The table
is built when a tensor is scored a second time; a one-off score (and a tensor too large
for the memo's budget) is one GEMM onto NS_dim.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ood_core.registry import OODLensError
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, PerTensorMemo, Scorer

DIM = Param("dim", 256, "int", low=1, high=8191, step=1, label="principal dim",
            help="Dimension of the principal subspace; the residual outside it gives the virtual logit.")


def default_principal_dim(feature_dim: int) -> int:
    """The official defaults: D ≥ 2048 → 1000, D ≥ 768 → 512, else D // 2 (at least 1)."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return max(1, feature_dim // 2)


def residual_sq_suffix(features: Tensor, origin: Tensor, eigenvectors: Tensor) -> Tensor:
    """features (N, D), origin u (D,), eigenvectors (D, D) by descending eigenvalue →
    (N, D + 1) float32 table T with T[:, j] = Σ_{i ≥ j} ((h − u)·v_i)², i.e. the squared
    residual norm for a principal subspace of dimension j (T[:, D] = 0)."""
    projected = (features.float() - origin) @ eigenvectors
    squares = projected.square()
    suffix = squares.flip(1).cumsum(dim=1).flip(1)  # sums from the right: no cancellation
    return torch.cat([suffix, suffix.new_zeros(suffix.shape[0], 1)], dim=1)


def vim_score(features: Tensor, logits: Tensor, origin: Tensor, residual_basis: Tensor, alpha: float) -> Tensor:
    """features (N, D), logits (N, K), origin u (D,), residual_basis NS (D, D − dim) → (N,) float32."""
    residual_norm = ((features.float() - origin) @ residual_basis).norm(dim=1)
    return torch.logsumexp(logits.float(), dim=1) - alpha * residual_norm


@register_scorer("vim")
class ViMScorer(Scorer):
    """S(x) = LSE(z) − α·‖(h − u)·NS‖ (higher = more ID)."""

    name = "vim"
    title = "ViM"
    paper = "Wang, Li, Feng & Zhang, ViM: Out-Of-Distribution with Virtual-logit Matching, CVPR 2022"
    needs = frozenset({"logits", "penultimate"})
    stats = frozenset({"vim_origin", "vim_eigenvectors", "vim_residual_norm_mean", "train_max_logit_mean"})
    params = (DIM,)

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._dim_overridden = "dim" in default_overrides
        self._per_tensor = PerTensorMemo()  # features → (LSE of the logits, suffix table)

    def fit(self, ctx: FitContext) -> "ViMScorer":
        """Sets the ``dim`` range to 1..D−1 and its default from D (unless overridden)."""
        super().fit(ctx)
        feature_dim = int(ctx.stats["vim_eigenvectors"].shape[0])
        if feature_dim < 2:
            raise OODLensError(f"ViM needs features of dimension ≥ 2, got D={feature_dim}")
        default = self._defaults["dim"] if self._dim_overridden else default_principal_dim(feature_dim)
        default = min(max(1, int(default)), feature_dim - 1)
        # An instance-level params tuple: resolve() then validates dim against this model's D.
        self.params = (dataclasses.replace(DIM, high=feature_dim - 1, default=default),)
        self._defaults["dim"] = default
        return self

    def alpha(self, dim: int) -> float:
        """α(dim) = mean_train max_k z_k / mean_train ‖(h − u)·NS_dim‖ (denominator guarded
        against 0, which happens when the training features span ≤ dim directions)."""
        stats = self.fitted.stats
        denominator = float(stats["vim_residual_norm_mean"][dim])
        return float(stats["train_max_logit_mean"]) / max(denominator, 1e-12)

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D), feats.logits (N, K) → (N,) float32."""
        hp = self.resolve(hparams)
        stats = self.fitted.stats
        dim = int(hp["dim"])
        features = feats.penultimate
        device = features.device
        origin = stats["vim_origin"].to(device=device, dtype=torch.float32)
        eigenvectors = stats["vim_eigenvectors"].to(device=device, dtype=torch.float32)
        n, d = features.shape
        # Keyed by the feature tensor; the logits are the same rows' (one FeatureSet).
        memo = self._per_tensor.get(features, lambda f: (
            torch.logsumexp(feats.logits.float(), dim=1), residual_sq_suffix(f, origin, eigenvectors)),
            reused_only=True, expected_bytes=n * (d + 2) * 4)
        if memo is None:  # a one-off score (or a tensor too large to memoise): one GEMM onto NS
            return vim_score(features, feats.logits, origin, eigenvectors[:, dim:], self.alpha(dim))
        energy, table = memo
        return energy - self.alpha(dim) * table[:, dim].clamp_min(0).sqrt()
