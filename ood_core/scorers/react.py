"""ReAct: rectified activations (Sun, Guo, Li, NeurIPS 2021), methods.md §2.5.

S(x) = LSE(W·min(h, c) + b): an upper clip of the penultimate features, then energy.
The threshold c is either a percentile of ID-validation activations (the official
``compute_threshold.py`` uses p90) or an absolute value (the CIFAR DenseNet rows of the
seed papers fit c = 1.0, ≈ p97; p90 ≈ 0.40 there and hurts badly).

This module also defines the clipping params shared by DICE+ReAct, OPNP+ReAct and NAP-R.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ood_core import stages
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, ShapedHeadScorer


def clip_params(clip_by: str = "percentile", clip_percentile: float = 90.0,
                clip_value: float = 1.0) -> tuple[Param, ...]:
    """The three clipping params (ReAct's c) with the given defaults."""
    return (
        Param("clip_by", clip_by, kind="choice", choices=stages.CLIP_BY_CHOICES, label="clip c given as",
              help="Give the clip threshold c as a percentile of ID-validation activations or as an absolute value."),
        Param("clip_percentile", float(clip_percentile), low=50.0, high=99.9, step=0.1, unit="%",
              label="c percentile",
              help="c = this percentile of ID-validation penultimate activations (when clip_by = percentile)."),
        Param("clip_value", float(clip_value), low=0.01, high=20.0, step=0.01, unit="activation",
              label="c (absolute)",
              help="Absolute clip threshold c on penultimate activations (when clip_by = value)."),
    )


def head_on(ctx: FitContext, device: torch.device) -> tuple[Tensor, Tensor]:
    """(W (K, D), b (K,)) float32 on ``device`` (a no-op when already there)."""
    return ctx.head_weight.to(device=device, dtype=torch.float32), ctx.head_bias.to(device=device, dtype=torch.float32)


@register_scorer("react")
class ReActScorer(ShapedHeadScorer):
    """ReAct: S = LSE(W·min(h, c) + b), higher = more ID.

    needs: penultimate (N, D) float32; stats: val_activations_sorted (V,) ascending.
    """

    name: ClassVar[str] = "react"
    title: ClassVar[str] = "ReAct"
    paper: ClassVar[str] = "Sun, Guo, Li. ReAct: Out-of-distribution Detection With Rectified Activations. NeurIPS 2021."
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    stats: ClassVar[frozenset[str]] = frozenset({"val_activations_sorted"})
    params: ClassVar[tuple[Param, ...]] = clip_params("percentile", 90.0, 1.0)

    def threshold(self, **hparams: Any) -> float:
        """The clip threshold c (an absolute activation) for these hyperparameters."""
        return stages.clip_threshold(self.fitted.stats, self.resolve(hparams))

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 logits W·min(h, c) + b."""
        h = feats.penultimate.float()
        weight, bias = head_on(self.fitted, h.device)
        clipped = stages.clip_activations(h, self.threshold(**hparams))
        return torch.addmm(bias, clipped, weight.T)

