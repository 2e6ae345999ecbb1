"""Energy score (Liu et al., NeurIPS 2020), docs/methods.md §1.2."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ood_core import stages
from ood_core.params import TEMPERATURES, Param
from ood_core.records import FeatureSet
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer

TEMPERATURE = Param(
    "temperature", 1.0, "float", low=0.01, high=1000.0, step=0.01, log=True, label="T",
    help="Softmax temperature T in T·LSE(z/T); the papers use T = 1.", search=TEMPERATURES,
)


@SCORERS.register("energy")
class EnergyScorer(Scorer):
    """S(x) = T·LSE(z/T), the negative free energy (higher = more ID)."""

    name = "energy"
    title = "Energy"
    summary = "Log-sum-exp of the logits (negative free energy): large total evidence is ID."
    paper = "Liu, Wang, Owens & Li, Energy-based Out-of-distribution Detection, NeurIPS 2020"
    needs = frozenset({"logits"})
    params = (TEMPERATURE,)

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.logits (N, K) → (N,) float32."""
        hp = self.resolve(hparams)
        return stages.energy(feats.logits.float(), hp["temperature"])
