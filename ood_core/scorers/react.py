"""ReAct: rectified activations (Sun, Guo, Li, NeurIPS 2021), docs/methods.md §2.5.

    S(x) = LSE(W·min(h, c) + b)

an upper clip of the penultimate features, then energy. c is a percentile of ID-validation
activations (the official ``compute_threshold.py`` uses p90) or an absolute value (the CIFAR
DenseNet rows of the seed papers fit c = 1.0, ≈ p97; p90 ≈ 0.40 there and hurts badly).
The clip is a declared stage (:class:`~ood_core.scorers.composed.ClipStage`) that DICE+ReAct
and OPNP+ReAct compose with their masks.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from ood_core.registry import SCORERS
from ood_core.scorers.composed import ClipStage, ComposedHeadScorer

PAPER = "Sun, Guo, Li. ReAct: Out-of-distribution Detection With Rectified Activations. NeurIPS 2021."


def react_reference(h: Tensor, weight: Tensor, bias: Tensor, c: float) -> Tensor:
    """h (N, D), W (K, D), b (K,), clip c → (N,) S = LSE(W·min(h, c) + b)."""
    return torch.logsumexp(h.clamp(max=c) @ weight.T + bias, dim=1)


build_react = functools.partial(ComposedHeadScorer, name="react", title="ReAct", paper=PAPER,
                                head_stages=(ClipStage("percentile", 90.0, 1.0),),
                                summary="Energy after clipping activations at c: OOD images spike a few units.")
SCORERS.register("react")(build_react)
