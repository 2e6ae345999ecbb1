"""MaxLogit (Hendrycks et al., ICML 2022, "Scaling OOD Detection to Real-World Settings")."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ood_core.records import FeatureSet
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer


@SCORERS.register("maxlogit")
class MaxLogitScorer(Scorer):
    """S(x) = max_k z_k. No hyperparameters."""

    name = "maxlogit"
    title = "MaxLogit"
    summary = "Largest raw logit: MSP without the softmax normalisation."
    paper = "Hendrycks et al., Scaling Out-of-Distribution Detection for Real-World Settings, ICML 2022"
    needs = frozenset({"logits"})

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.logits (N, K) → (N,) float32."""
        self.resolve(hparams)
        return feats.logits.float().amax(dim=1)
