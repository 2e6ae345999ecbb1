"""Toy fixtures shared by the scorer tests: a separable synthetic benchmark.

``ood_core.synthetic`` at its ``toy`` settings: ID features are ReLU features near K sparse
positive class means, scored by a linear head aligned with those means (confident logits);
OOD features are small random ReLU features (near the origin, no class structure); the ODIN
logits are exact for the linear head. Training statistics are computed as the cache builder
does, from a separate synthetic training split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import Tensor

from ood_core.records import FeatureSet, FitContext
from ood_core.synthetic import Synthetic, SyntheticSettings, synthesize

NUM_CLASSES = SyntheticSettings.toy().classes
FEATURE_DIM = SyntheticSettings.toy().dim


@dataclass
class Toy:
    """A fitted-ready toy benchmark; every tensor on ``device``."""

    ctx: FitContext
    id_feats: FeatureSet
    ood_feats: FeatureSet
    train_features: Tensor  # (M, D)
    train_labels: Tensor  # (M,)
    class_means: Tensor  # (K, D) generating means
    synthetic: Synthetic  # what the toy was made from

    def fit_inputs(self) -> Synthetic:
        """What a pytorch-ood adapter fits on (``ood_core.testing.pytorch_ood.reference``)."""
        return self.synthetic


def build_toy(device: str | torch.device = "cpu", seed: int = 0, num_classes: int = NUM_CLASSES,
              feature_dim: int = FEATURE_DIM) -> Toy:
    """Build the toy benchmark (deterministic for a seed)."""
    synthetic = synthesize(SyntheticSettings.toy(seed=seed, classes=num_classes, dim=feature_dim), device)
    bench = synthetic.benchmark
    (ood_feats,) = bench.ood.values()
    return Toy(ctx=bench.fit_context(), id_feats=bench.id_test, ood_feats=ood_feats,
               train_features=synthetic.train_features, train_labels=synthetic.train_labels,
               class_means=synthetic.class_means, synthetic=synthetic)


@pytest.fixture
def toy() -> Toy:
    """The CPU toy benchmark (fresh per test: scorers must not, but could, mutate it)."""
    return build_toy()


@pytest.fixture
def toy_factory() -> Callable[..., Toy]:
    """``build_toy`` itself, for other devices, seeds or sizes."""
    return build_toy
