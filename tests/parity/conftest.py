"""A realistic synthetic benchmark on which OOD Lens and pytorch-ood see IDENTICAL features.

ReLU penultimate features drawn around sparse positive class means, a linear head roughly
aligned with them (a "trained" head with noise), and OOD features drawn around other sparse
means (far OOD) and around blends of two ID class means (near OOD), so the sets overlap
(AUROC well below 1) and the parity comparison is informative.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from ood_core.scorers.base import FeatureSet, FitContext
from ood_core.train_stats import compute_train_stats

K, D = 10, 64


@dataclass
class ParityData:
    train_features: Tensor  # (M, D)
    train_labels: Tensor  # (M,)
    val_features: Tensor  # (V, D)
    weight: Tensor  # (K, D)
    bias: Tensor  # (K,)
    ctx: FitContext
    id_feats: FeatureSet  # N ≈ 600
    ood_feats: FeatureSet  # N ≈ 400


def _sparse_means(count: int, gen: torch.Generator) -> Tensor:
    support = torch.rand(count, D, generator=gen) < 0.35
    return support * (0.5 + 1.5 * torch.rand(count, D, generator=gen))


@pytest.fixture(scope="session")
def parity_data() -> ParityData:
    gen = torch.Generator().manual_seed(2024)
    class_means = _sparse_means(K, gen)
    weight = 2.0 * torch.nn.functional.normalize(class_means, dim=1) + 0.3 * torch.randn(K, D, generator=gen)
    bias = 0.2 * torch.randn(K, generator=gen)

    def sample(means: Tensor, per_mean: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(len(means)).repeat_interleave(per_mean)
        noise = torch.randn(len(labels), D, generator=gen) * (0.3 + 0.7 * torch.rand(D, generator=gen))
        return (means[labels] + noise).relu(), labels

    train_features, train_labels = sample(class_means, 100)
    val_features, _ = sample(class_means, 50)
    id_features, id_labels = sample(class_means, 60)
    # OOD: half far (new sparse means), half near (blends of two ID class means).
    pairs = torch.randint(0, K, (10, 2), generator=gen)
    near_means = 0.5 * (class_means[pairs[:, 0]] + class_means[pairs[:, 1]])
    ood_features, _ = sample(torch.cat([_sparse_means(10, gen), near_means]), 20)

    def feature_set(features: Tensor, labels: Tensor) -> FeatureSet:
        return FeatureSet(logits=features @ weight.T + bias, penultimate=features, labels=labels)

    stats = compute_train_stats(train_features, train_features @ weight.T + bias, train_labels,
                                weight, bias, val_features=val_features)
    return ParityData(
        train_features=train_features, train_labels=train_labels, val_features=val_features,
        weight=weight, bias=bias, ctx=FitContext(weight, bias, stats),
        id_feats=feature_set(id_features, id_labels),
        ood_feats=feature_set(ood_features, torch.full((len(ood_features),), -1, dtype=torch.int64)),
    )
