"""ViM: virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022), docs/methods.md §2.3.

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

from ood_core.fast.suffix import residual_sq_suffix
from ood_core.memo import Memo
from ood_core.params import Param, Relative
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS, OODLensError
from ood_core.scorers.base import Scorer
from ood_core.statistics import TrainingData, register_statistic

DIM = Param("dim", 256, "int", low=1, high=8191, step=1, label="principal dim",
            help="Dimension of the principal subspace; the residual outside it gives the virtual logit.",
            search=Relative((0.25, 0.5, 0.75, 1.0, 1.5)))


def default_principal_dim(feature_dim: int) -> int:
    """The official defaults: D ≥ 2048 → 1000, D ≥ 768 → 512, else D // 2 (at least 1)."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return max(1, feature_dim // 2)


def vim_score(features: Tensor, logits: Tensor, origin: Tensor, residual_basis: Tensor, alpha: float) -> Tensor:
    """features (N, D), logits (N, K), origin u (D,), residual_basis NS (D, D − dim) → (N,) float32."""
    residual_norm = ((features.float() - origin) @ residual_basis).norm(dim=1)
    return torch.logsumexp(logits.float(), dim=1) - alpha * residual_norm


@SCORERS.register("vim")
class ViMScorer(Scorer):
    """S(x) = LSE(z) − α·‖(h − u)·NS‖ (higher = more ID)."""

    name = "vim"
    title = "ViM"
    summary = "Energy minus a virtual logit from the features' residual outside the training principal subspace."
    paper = "Wang, Li, Feng & Zhang, ViM: Out-Of-Distribution with Virtual-logit Matching, CVPR 2022"
    needs = frozenset({"logits", "penultimate"})
    stats = frozenset({"vim_origin", "vim_eigenvectors", "vim_residual_norm_mean", "train_max_logit_mean"})
    params = (DIM,)

    fast_path = ("projection onto all eigenvectors once per feature tensor, kept as suffix sums of squares: "
                 "a dim move is a column lookup")

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._per_tensor = Memo()  # features → (LSE of the logits, suffix table)

    def params_for(self, ctx: FitContext) -> tuple[Param, ...]:
        """``dim`` in 1..D−1 with the official default for this model's width D."""
        feature_dim = int(ctx.stats["vim_eigenvectors"].shape[0])
        if feature_dim < 2:
            raise OODLensError(f"ViM needs features of dimension ≥ 2, got D={feature_dim}")
        return (dataclasses.replace(DIM, high=feature_dim - 1, default=default_principal_dim(feature_dim)),)

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D), feats.logits (N, K) → (N,) float32, one GEMM onto NS_dim."""
        dim = int(self.resolve(hparams)["dim"])
        stats = self.fitted.stats
        device = feats.penultimate.device
        origin = stats["vim_origin"].to(device=device, dtype=torch.float32)
        eigenvectors = stats["vim_eigenvectors"].to(device=device, dtype=torch.float32)
        return vim_score(feats.penultimate, feats.logits, origin, eigenvectors[:, dim:], self.alpha(dim))

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
        memo = self._per_tensor.get("suffix", lambda: (
            torch.logsumexp(feats.logits.float(), dim=1), residual_sq_suffix(features, origin, eigenvectors)),
            tensor=features, reused_only=True, expected_bytes=n * (d + 2) * 4)
        if memo is None:  # a one-off score (or a tensor too large to memoise): the reference's GEMM
            return vim_score(features, feats.logits, origin, eigenvectors[:, dim:], self.alpha(dim))
        energy, table = memo
        return energy - self.alpha(dim) * table[:, dim].clamp_min(0).sqrt()


# -- the training statistics only this method reads (ood_core.statistics) --------------------------


def _origin(data: TrainingData) -> Tensor:
    """u = −pinv(W)·b, where the logits vanish (float64)."""
    return data.shared("vim.origin", lambda: -(torch.linalg.pinv(data.W) @ data.b))


def _principal_space(data: TrainingData) -> tuple[Tensor, Tensor]:
    """(eigenvalues (D,) descending, eigenvectors (D, D) as columns) of cov(h − u) (assumed
    centred, divide by M), float64, computed once for every ViM statistic."""
    def compute() -> tuple[Tensor, Tensor]:
        def scatter(h: Tensor, z: Tensor, y: Tensor) -> Tensor:
            shifted = h - _origin(data)
            return shifted.T @ shifted

        eigenvalues, eigenvectors = torch.linalg.eigh(data.total("vim.scatter", scatter) / data.m)
        order = eigenvalues.argsort(descending=True)
        return eigenvalues[order], eigenvectors[:, order]

    return data.shared("vim.principal_space", compute)


@register_statistic("vim_origin", version=1, shape="(D,)")
def _vim_origin(data: TrainingData) -> Tensor:
    """u = −pinv(W)·b."""
    return _origin(data)


@register_statistic("vim_eigenvectors", version=1, shape="(D, D)")
def _vim_eigenvectors(data: TrainingData) -> Tensor:
    """Eigenvectors of cov(h − u) (assumed centred), columns by descending eigenvalue."""
    return _principal_space(data)[1]


@register_statistic("vim_eigenvalues", version=1, shape="(D,)")
def _vim_eigenvalues(data: TrainingData) -> Tensor:
    """Eigenvalues of cov(h − u), descending."""
    return _principal_space(data)[0]


@register_statistic("vim_residual_norm_mean", version=1, shape="(D + 1,)")
def _vim_residual_norm_mean(data: TrainingData) -> Tensor:
    """[i] = mean_x ‖(h − u)·NS_i‖ with NS_i = eigenvectors[:, i:], i = 0..D."""
    _, eigenvectors = _principal_space(data)

    def norms(h: Tensor, z: Tensor, y: Tensor) -> Tensor:
        projections = ((h - _origin(data)) @ eigenvectors) ** 2  # (m, D): energy along each principal axis
        # residual energy after dropping the top-i axes: tail sums, i = 0..D
        zeros = torch.zeros(h.shape[0], 1, dtype=projections.dtype, device=projections.device)
        tail = torch.cat([projections.flip(1).cumsum(1).flip(1), zeros], 1)
        return tail.clamp(min=0).sqrt().sum(0)

    return data.total("vim.residual_norm_sum", norms) / data.m


@register_statistic("train_max_logit_mean", version=1, shape="()")
def _train_max_logit_mean(data: TrainingData) -> Tensor:
    """mean_x max_k z_k over the training split (the numerator of α)."""
    return data.total("vim.max_logit_sum", lambda h, z, y: z.max(1).values.sum()) / data.m
