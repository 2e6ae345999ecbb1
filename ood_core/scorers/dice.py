"""DICE: directed sparsification of the head (Sun & Li, ECCV 2022), docs/methods.md §2.6.

    V = m̄[None, :] ⊙ W           (signed contribution, K×D; m̄ the training feature mean)
    M = V > np.percentile(V, p)   (one percentile over all K·D entries, strict ">")
    S(x) = LSE((W ⊙ M)·h + b)     (the bias untouched)

p is the percent of weights *dropped*: 90 on CIFAR, 70 on ImageNet ResNet-50. The mask is a
declared stage (:class:`DiceMask`), composed alone here and with ReAct's clip in DICE+ReAct.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import torch
from torch import Tensor

from ood_core import stages
from ood_core.params import PRUNE_PERCENTILES, Param
from ood_core.records import FitContext
from ood_core.registry import SCORERS
from ood_core.scorers.composed import ComposedHeadScorer, HeadStage

PAPER = "Sun & Li. DICE: Leveraging Sparsification for Out-of-Distribution Detection. ECCV 2022."
SPARSITY = Param("sparsity", 90.0, low=0.0, high=99.9, step=0.1, unit="%", label="sparsity p",
                 help="Percent of head weights dropped, those with the smallest m̄ⱼ·W_kj (90 on CIFAR, 70 on ImageNet).",
                 search=PRUNE_PERCENTILES)


def dice_mask(feature_mean: Tensor, weight: Tensor, sparsity: float) -> Tensor:
    """m̄ (D,), W (K, D) → (K, D) bool M = m̄ ⊙ W > np.percentile(m̄ ⊙ W, p) (sparsity 0 still
    drops the entries equal to the minimum: the comparison is strict)."""
    contribution = feature_mean[None, :] * weight
    return contribution > stages.percentile(contribution, sparsity)


def dice_reference(h: Tensor, weight: Tensor, bias: Tensor, feature_mean: Tensor, sparsity: float) -> Tensor:
    """h (N, D) → (N,) S = LSE((W ⊙ M)·h + b)."""
    return torch.logsumexp(h @ (weight * dice_mask(feature_mean, weight, sparsity)).T + bias, dim=1)


class DiceMask(HeadStage):
    """DICE's static weight mask M_p."""

    stats = frozenset({"feature_mean"})
    mask_params = ("sparsity",)

    def __init__(self, sparsity: float = 90.0) -> None:
        self.params = (dataclasses.replace(SPARSITY, default=float(sparsity)),)

    def weight_mask(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor:
        return dice_mask(ctx.stats["feature_mean"].float(), ctx.head_weight.float(), float(values["sparsity"]))


build_dice = functools.partial(ComposedHeadScorer, name="dice", title="DICE", paper=PAPER, head_stages=(DiceMask(90.0),),
                               summary="Energy through a head that keeps only the weights contributing most on training data.")
SCORERS.register("dice")(build_dice)
