"""GradNorm at the last layer (Huang, Geng & Li, NeurIPS 2021), docs/methods.md §2.4.

The official code back-propagates, per sample, L = Σ_k −log softmax(z/T)_k and takes the
L1 norm of ∂L/∂W (head weight only). Since ∂L/∂W_kj = (K·p_k − 1)·h_j / T this is the
closed form (1/T)·‖h‖₁·Σ_k |K·p_k − 1|, computed here from cached (h, z) without autograd.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ood_core.params import TEMPERATURES, Param
from ood_core.records import FeatureSet
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer


def gradnorm_closed_form(features: Tensor, logits: Tensor, temperature: float = 1.0) -> Tensor:
    """features (N, D), logits (N, K) → (N,) float32 = (1/T)·‖h‖₁·‖K·softmax(z/T) − 1‖₁."""
    num_classes = logits.shape[1]
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return features.float().abs().sum(1) * (num_classes * probabilities - 1.0).abs().sum(1) / temperature


@SCORERS.register("gradnorm")
class GradNormScorer(Scorer):
    """S(x) = (1/T)·‖h‖₁·Σ_k |K·softmax(z/T)_k − 1| (L1 norm of the head-weight gradient)."""

    name = "gradnorm"
    title = "GradNorm"
    summary = "Size of the gradient of the KL to the uniform distribution: ID images pull harder."
    paper = "Huang, Geng & Li, On the Importance of Gradients for Detecting Distributional Shifts in the Wild, NeurIPS 2021"
    needs = frozenset({"logits", "penultimate"})
    params = (
        Param("temperature", 1.0, "float", low=0.01, high=1000.0, step=0.01, log=True, label="T",
              help="Softmax temperature T of the KL-to-uniform loss; the paper uses T = 1.", search=TEMPERATURES),
    )

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D), feats.logits (N, K) → (N,) float32."""
        hp = self.resolve(hparams)
        return gradnorm_closed_form(feats.penultimate, feats.logits, hp["temperature"])
