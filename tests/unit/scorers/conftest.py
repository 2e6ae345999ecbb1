"""Toy fixtures shared by the scorer tests: a separable synthetic benchmark.

ID features are ReLU features near K sparse positive class means, scored by a linear
head aligned with those means (confident logits); OOD features are small random ReLU
features (near the origin, no class structure). Training statistics come from
``compute_train_stats`` on a separate synthetic training split, as in production.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import Tensor

from ood_core.scorers.base import FeatureSet, FitContext
from ood_core.scorers.odin import ODIN_EPS_GRID, ODIN_TEMPERATURE
from ood_core.train_stats import compute_train_stats

NUM_CLASSES = 5
FEATURE_DIM = 32


@dataclass
class Toy:
    """A fitted-ready toy benchmark; every tensor on ``device``."""

    ctx: FitContext
    id_feats: FeatureSet
    ood_feats: FeatureSet
    train_features: Tensor  # (M, D)
    train_labels: Tensor  # (M,)
    class_means: Tensor  # (K, D) generating means


def _odin_logits(features: Tensor, weight: Tensor, bias: Tensor, eps: tuple[float, ...], temperature: float) -> Tensor:
    """Exact ODIN on a linear head with the feature as the 'input': (E, N, K) raw logits of
    h̃ = h − ε·sign(∇_h CE(z/T, ŷ)), where ∇_h CE = (softmax(z/T) − onehot(ŷ)) W / T."""
    logits = features @ weight.T + bias
    onehot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(features.dtype)
    gradient = (torch.softmax(logits / temperature, 1) - onehot) @ weight / temperature
    return torch.stack([(features - e * gradient.sign()) @ weight.T + bias for e in eps])


def build_toy(device: str | torch.device = "cpu", seed: int = 0, num_classes: int = NUM_CLASSES,
              feature_dim: int = FEATURE_DIM) -> Toy:
    """Build the toy benchmark (deterministic for a seed)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    # Sparse, positive, well-separated class means (ReLU-like penultimate features).
    support = torch.rand(num_classes, feature_dim, generator=gen) > 0.6
    class_means = support * (1.5 + torch.rand(num_classes, feature_dim, generator=gen))
    weight = 3.0 * torch.nn.functional.normalize(class_means, dim=1) + 0.1 * randn(num_classes, feature_dim)
    bias = 0.1 * randn(num_classes)

    def sample_id(per_class: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        return (class_means[labels] + 0.3 * randn(len(labels), feature_dim)).relu(), labels

    train_features, train_labels = sample_id(80)
    val_features, _ = sample_id(20)
    id_features, id_labels = sample_id(40)
    ood_features = (0.3 * randn(150, feature_dim)).relu()

    stats = compute_train_stats(train_features, train_features @ weight.T + bias, train_labels,
                                weight, bias, val_features=val_features)

    def feature_set(features: Tensor, labels: Tensor) -> FeatureSet:
        # prepool_max: a per-channel spatial max is ≥ the spatial mean (the pooled feature).
        prepool = features * (1.0 + torch.rand(features.shape, generator=gen))
        return FeatureSet(
            logits=features @ weight.T + bias, penultimate=features, labels=labels, prepool_max=prepool,
            odin_logits=_odin_logits(features, weight, bias, ODIN_EPS_GRID, ODIN_TEMPERATURE),
            odin_eps=ODIN_EPS_GRID, odin_temperature=ODIN_TEMPERATURE,
        ).to(device)

    return Toy(
        ctx=FitContext(head_weight=weight.to(device), head_bias=bias.to(device),
                       stats={name: value.to(device) for name, value in stats.items()}),
        id_feats=feature_set(id_features, id_labels),
        ood_feats=feature_set(ood_features, torch.full((len(ood_features),), -1, dtype=torch.int64)),
        train_features=train_features.to(device), train_labels=train_labels.to(device),
        class_means=class_means.to(device),
    )


@pytest.fixture
def toy() -> Toy:
    """The CPU toy benchmark (fresh per test: scorers must not, but could, mutate it)."""
    return build_toy()


@pytest.fixture
def toy_factory() -> Callable[..., Toy]:
    """``build_toy`` itself, for other devices, seeds or sizes."""
    return build_toy
