"""ODIN: temperature scaling + input perturbation (Liang, Li & Srikant, ICLR 2018), docs/methods.md §1.3.

The perturbed forward passes are model work, done at precompute time: the cache holds the
raw logits f(x̃) of x̃ = x − ε·sign(∇_x CE(f(x)/T, ŷ)) for each ε of a grid
(``FeatureSet.odin_logits``, (E, N, K)). Scoring is then max softmax(f(x̃)/T).
ε = 0 needs no perturbation: ODIN is then temperature-scaled MSP on the plain logits.
"""
from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ood_core.params import Param
from ood_core.records import ODIN_EPS_GRID, ODIN_TEMPERATURE, FeatureSet
from ood_core.registry import SCORERS, OODLensError
from ood_core.scorers.base import Scorer
from ood_core.scorers.msp import max_softmax



class ODINDataError(OODLensError):
    """The cached features lack the perturbed logits for the requested ε / T."""


def select_odin_logits(feats: FeatureSet, epsilon: float, temperature: float) -> Tensor:
    """The (N, K) logits to score for ``epsilon``: plain logits for ε = 0, else the cached
    perturbed logits whose ε matches. Raises :class:`ODINDataError` when they are missing."""
    if epsilon == 0.0:
        return feats.logits
    hint = f"re-run precompute with --odin-eps {epsilon:g} (and --odin-temperature {temperature:g})"
    if feats.odin_logits is None:
        raise ODINDataError(f"ODIN with ε={epsilon:g} needs perturbed logits, which this cache lacks; {hint}")
    if not math.isclose(feats.odin_temperature, temperature, rel_tol=1e-6):
        raise ODINDataError(f"the cached ODIN logits were perturbed at T={feats.odin_temperature:g}, "
                            f"not T={temperature:g}; {hint}")
    for index, cached_eps in enumerate(feats.odin_eps):
        if math.isclose(cached_eps, epsilon, rel_tol=1e-6, abs_tol=1e-12):
            return feats.odin_logits[index]
    raise ODINDataError(f"the cache has ODIN logits for ε in {list(feats.odin_eps)}, not ε={epsilon:g}; {hint}")


@SCORERS.register("odin")
class ODINScorer(Scorer):
    """S(x) = max_k softmax(f(x̃)/T)_k with x̃ the ε-perturbed input (cached logits)."""

    name = "odin"
    title = "ODIN"
    summary = "MSP at a high temperature on an input nudged to raise confidence (ID moves more)."
    paper = "Liang, Li & Srikant, Enhancing the Reliability of OOD Image Detection in Neural Networks, ICLR 2018"
    needs = frozenset({"logits", "odin_logits"})
    params = (
        Param("epsilon", ODIN_EPS_GRID[0], "choice", choices=(0.0,) + ODIN_EPS_GRID, label="ε",
              help="Input perturbation size (normalised-input units); only the ε values precomputed are available, 0 = no perturbation.",
              search=(0.0,) + ODIN_EPS_GRID),
        Param("temperature", ODIN_TEMPERATURE, "choice", choices=(ODIN_TEMPERATURE,), label="T",
              help="Softmax temperature; fixed at precompute time because the perturbation's gradient depends on it."),
    )

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.logits (N, K) and feats.odin_logits (E, N, K) → (N,) float32 in (1/K, 1]."""
        hp = self.resolve(hparams)
        logits = select_odin_logits(feats, float(hp["epsilon"]), float(hp["temperature"]))
        return max_softmax(logits, float(hp["temperature"]))
