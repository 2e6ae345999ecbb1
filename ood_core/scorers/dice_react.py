"""DICE + ReAct, methods.md §2.7: S = LSE((W ⊙ M_DICE)·min(h, c) + b).

The official ResNet path clips before the masked head. The CIFAR DenseNet has no such
path; the defaults (p = 90, c = 1.0 absolute) follow LINe's δ by analogy. ImageNet's
commented demo line uses p = 10 with c = 1.0.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ood_core import stages
from ood_core.scorers import register_scorer
from ood_core.scorers.base import Param
from ood_core.scorers.dice import SPARSITY, DiceScorer
from ood_core.scorers.react import clip_params


@register_scorer("dice+react")
class DiceReActScorer(DiceScorer):
    """DICE's static masked head on ReAct-clipped features; higher = more ID.

    needs: penultimate (N, D); stats: feature_mean (D,), val_activations_sorted (V,).
    """

    name: ClassVar[str] = "dice+react"
    title: ClassVar[str] = "DICE + ReAct"
    paper: ClassVar[str] = ("Sun & Li. DICE, ECCV 2022 (with ReAct's clipping, Sun, Guo, Li, NeurIPS 2021).")
    stats: ClassVar[frozenset[str]] = frozenset({"feature_mean", "val_activations_sorted"})
    params: ClassVar[tuple[Param, ...]] = (SPARSITY,) + clip_params("value", 90.0, 1.0)

    def threshold(self, **hparams: Any) -> float:
        """The clip threshold c (an absolute activation)."""
        return stages.clip_threshold(self.fitted.stats, self.resolve(hparams))

    def transform_features(self, h: Tensor, values: dict[str, Any]) -> Tensor:
        """min(h, c): the clip comes before the masked head (the official ResNet order)."""
        return stages.clip_activations(h, stages.clip_threshold(self.fitted.stats, values))
