"""Suffix sums of squared projections (ViM's ``dim`` slider in O(N) per move)."""
from __future__ import annotations

import torch
from torch import Tensor


def residual_sq_suffix(features: Tensor, origin: Tensor, eigenvectors: Tensor) -> Tensor:
    """features (N, D), origin u (D,), eigenvectors (D, D) by descending eigenvalue →
    (N, D + 1) float32 table T with T[:, j] = Σ_{i ≥ j} ((h − u)·v_i)², i.e. the squared
    residual norm for a principal subspace of dimension j (T[:, D] = 0)."""
    projected = (features.float() - origin) @ eigenvectors
    suffix = projected.square().flip(1).cumsum(dim=1).flip(1)  # sums from the right: no cancellation
    return torch.cat([suffix, suffix.new_zeros(suffix.shape[0], 1)], dim=1)
