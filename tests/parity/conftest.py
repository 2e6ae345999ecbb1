"""A realistic synthetic benchmark on which OOD Lens and pytorch-ood see IDENTICAL features.

``ood_core.synthetic`` at its ``parity`` settings: ReLU penultimate features around sparse
positive class means, a linear head roughly aligned with them (a "trained" head with noise),
and OOD features around other sparse means (far OOD) and around blends of two ID class means
(near OOD), so the sets overlap (AUROC well below 1) and the parity comparison is informative.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import Tensor

from ood_core.records import FeatureSet, FitContext
from ood_core.synthetic import SyntheticSettings, synthesize

SETTINGS = SyntheticSettings.parity()
K, D = SETTINGS.classes, SETTINGS.dim


@dataclass
class ParityData:
    train_features: Tensor  # (M, D)
    train_labels: Tensor  # (M,)
    val_features: Tensor  # (V, D)
    weight: Tensor  # (K, D)
    bias: Tensor  # (K,)
    ctx: FitContext
    id_feats: FeatureSet  # N = 600
    ood_feats: FeatureSet  # N = 400, half far, half near

    # what ood_core.testing.pytorch_ood fits its detectors on
    @property
    def head_weight(self) -> Tensor:
        return self.weight

    @property
    def head_bias(self) -> Tensor:
        return self.bias


@pytest.fixture(scope="session")
def parity_data() -> ParityData:
    synthetic = synthesize(SETTINGS)
    bench = synthetic.benchmark
    (ood_feats,) = bench.ood.values()
    return ParityData(
        train_features=synthetic.train_features, train_labels=synthetic.train_labels,
        val_features=synthetic.val_features, weight=bench.head_weight, bias=bench.head_bias,
        ctx=bench.fit_context(), id_feats=bench.id_test, ood_feats=ood_feats,
    )
