"""DICE: directed sparsification of the head (Sun & Li, ECCV 2022), methods.md §2.6.

V = m̄[None, :] ⊙ W (signed contribution, K×D); M = V > np.percentile(V, p) over all K·D
entries (strict ">"); S = LSE((W ⊙ M)·h + b), the bias untouched. p is the percent of
weights *dropped*: 90 on CIFAR, 70 on ImageNet ResNet-50.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ood_core import stages
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, ShapedHeadScorer
from ood_core.scorers.react import head_on

SPARSITY = Param("sparsity", 90.0, low=0.0, high=99.9, step=0.1, unit="%", label="sparsity p",
                 help="Percent of head weights dropped, those with the smallest m̄ⱼ·W_kj (90 on CIFAR, 70 on ImageNet).")


@register_scorer("dice")
class DiceScorer(ShapedHeadScorer):
    """DICE: S = LSE((W ⊙ M_p)·h + b) with M_p = [m̄ ⊙ W > percentile_p], higher = more ID.

    needs: penultimate (N, D) float32; stats: feature_mean (D,).
    The masked weight is memoised per sparsity, so scoring is one GEMM.
    """

    name: ClassVar[str] = "dice"
    title: ClassVar[str] = "DICE"
    paper: ClassVar[str] = "Sun & Li. DICE: Leveraging Sparsification for Out-of-Distribution Detection. ECCV 2022."
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    stats: ClassVar[frozenset[str]] = frozenset({"feature_mean"})
    params: ClassVar[tuple[Param, ...]] = (SPARSITY,)

    def fit(self, ctx: FitContext) -> "DiceScorer":
        super().fit(ctx)
        self._masked_weights: dict[float, Tensor] = {}  # sparsity → W ⊙ M (K, D) on the ctx device
        return self

    @property
    def contribution(self) -> Tensor:
        """(K, D) float32 signed contribution V = m̄[None, :] ⊙ W that the sparsity percentile ranks."""
        ctx = self.fitted
        return ctx.stats["feature_mean"].float()[None, :] * ctx.head_weight.float()

    def weight_mask(self, sparsity: float) -> Tensor:
        """(K, D) bool DICE mask on the fit device."""
        ctx = self.fitted
        return stages.dice_weight_mask(ctx.stats["feature_mean"].float(), ctx.head_weight.float(), float(sparsity))

    def masked_weight(self, sparsity: float, device: torch.device) -> Tensor:
        """(K, D) float32 W ⊙ M, memoised per sparsity (a δ-only slider never rebuilds it)."""
        key = float(sparsity)
        if key not in self._masked_weights:
            mask = self.weight_mask(key)
            self._masked_weights[key] = self.fitted.head_weight.float() * mask.to(torch.float32)
        return self._masked_weights[key].to(device)

    def transform_features(self, h: Tensor, values: dict[str, Any]) -> Tensor:
        """The features entering the masked head; identity here (DICE+ReAct clips)."""
        return h

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 logits of the sparsified head."""
        values = self.resolve(hparams)
        h = self.transform_features(feats.penultimate.float(), values)
        _, bias = head_on(self.fitted, h.device)
        return torch.addmm(bias, h, self.masked_weight(values["sparsity"], h.device).T)

