"""MSP: maximum softmax probability (Hendrycks & Gimpel, ICLR 2017), docs/methods.md §1.1."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ood_core.records import FeatureSet
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer


def max_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``max_k softmax(z / T)_k``: (N, K) → (N,) float32."""
    return torch.softmax(logits.float() / temperature, dim=1).amax(dim=1)


@SCORERS.register("msp")
class MSPScorer(Scorer):
    """S(x) = max_k softmax(z)_k. No hyperparameters."""

    name = "msp"
    title = "MSP"
    summary = "Maximum softmax probability: confident predictions are ID."
    paper = "Hendrycks & Gimpel, A Baseline for Detecting Misclassified and OOD Examples, ICLR 2017"
    needs = frozenset({"logits"})

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.logits (N, K) → (N,) float32 in (1/K, 1]."""
        self.resolve(hparams)
        return max_softmax(feats.logits)
