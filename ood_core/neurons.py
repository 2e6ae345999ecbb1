"""LINe's neuron-overlap statistics (docs/methods.md §3.10(f), the paper's Table 8), for the Neurons page.

All functions are pure, take the class contribution C (K×D, ``class_contribution`` of
:mod:`ood_core.statistics`, C[c] = W[c] ⊙ μ_c) and work on any device.

"Important" neurons of class c: T_c = {j : C[c, j] > percentile(C[c, :], 100 − q)}, the
same strict per-class percentile rule as LINe's activation mask with p_a = 100 − q (q = 10 on
D = 342 keeps 35 neurons per class).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ood_core import stages
from ood_core.registry import OODLensError

Denominator = Literal["D", "important"]


def _check_percent(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 100.0:
        raise OODLensError(f"{name}={value} must be a percentage in [0, 100]")
    return value


def important_neurons(contribution: Tensor, top_percent: float) -> Tensor:
    """(K, D) bool: row c marks T_c, the top ``top_percent`` % of neurons by C[c, :] (signed)."""
    top_percent = _check_percent("top_percent", top_percent)
    return stages.mask_above_percentile(contribution.float(), 100.0 - top_percent, dim=1)


def importance_counts(contribution: Tensor, top_percent: float) -> Tensor:
    """(D,) int64 n_j = #{c : j ∈ T_c}, how many classes find neuron j important."""
    return important_neurons(contribution, top_percent).sum(dim=0)


def neuron_overlap(contribution: Tensor, top_percent: float = 10.0, over_percent: float = 20.0,
                   denominator: Denominator = "D") -> float:
    """Share of neurons important to more than ``over_percent`` % of the classes.

    overlap = #{j : n_j > o·K} / Z with o = over_percent/100 and Z = D (``"D"``) or
    Z = #{j : n_j ≥ 1} (``"important"``: neurons important for at least one class).
    Returns NaN when Z = 0 (no neuron is important for any class).
    """
    over_percent = _check_percent("over_percent", over_percent)
    if denominator not in ("D", "important"):
        raise OODLensError(f"denominator={denominator!r} is not one of ['D', 'important']")
    counts = importance_counts(contribution, top_percent)
    k = contribution.shape[0]
    shared = int((counts > over_percent / 100.0 * k).sum())
    total = int(counts.numel()) if denominator == "D" else int((counts >= 1).sum())
    return shared / total if total else float("nan")


def overlap_histogram(contribution: Tensor, top_percent: float = 10.0) -> Tensor:
    """(D,) float32 n_j / K: the share of classes for which each neuron is important."""
    return importance_counts(contribution, top_percent).float() / contribution.shape[0]


def class_overlap_matrix(contribution: Tensor, top_percent: float = 10.0) -> Tensor:
    """(K, K) float32 Jaccard index |T_a ∩ T_b| / |T_a ∪ T_b| of the classes' important sets.

    One matrix product; pairs whose union is empty get 0.
    """
    important = important_neurons(contribution, top_percent).float()
    intersection = important @ important.T
    sizes = important.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1.0), torch.zeros_like(union))
