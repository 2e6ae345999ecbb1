"""OPNP: optimal parameter and neuron pruning (Chen et al., NeurIPS 2023), methods.md §3.12.

Sensitivities from the training set (closed form, no backward pass):
  S = Pᵀ|H| / m (K×D, mean |∂LSE/∂W_kj|) and s = mean_k S[k] (D,).
Pruning, with global percentiles over the whole matrix / vector:
  weights: drop W_kj if S_kj > percentile(S, 100 − q_w_high) or S_kj < percentile(S, q_w_low);
  neurons: drop unit j if s_j > percentile(s, 100 − q_n_high) or s_j < percentile(s, q_n_low).
Score: S = LSE((W ⊙ M_w)·(m_n ⊙ h̄) + b), h̄ = h or min(h, c) (OPNP + ReAct); bias untouched.

No official code exists; the default percentages are the paper's worked examples, not tuned
values (the paper grid-searched them on a validation split). On the CIFAR DenseNet pruning the
most-sensitive 1 % of weights hurts; tune on ID/OOD validation data, never on test sets.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

from torch import Tensor

from ood_core import stages
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, ShapedHeadScorer
from ood_core.scorers.react import clip_params, head_on

_UNTUNED = "Default is the paper's worked example, not a tuned value."


class OpnpScorer(ShapedHeadScorer):
    """OPP / ONP / OPNP (± ReAct): energy of a sensitivity-pruned head; higher = more ID.

    needs: penultimate (N, D) float32; stats: opnp_weight_sensitivity (K, D),
    opnp_neuron_sensitivity (D,), val_activations_sorted (V,) (for the ReAct clip).
    Both masks are memoised per percentage pair, so scoring is one GEMM.
    """

    name: ClassVar[str] = "opnp"
    title: ClassVar[str] = "OPNP"
    paper: ClassVar[str] = ("Chen, Fu, Liu, Chen, Tao, Ye. Optimal Parameter and Neuron Pruning for "
                            "Out-of-Distribution Detection. NeurIPS 2023.")
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    stats: ClassVar[frozenset[str]] = frozenset({"opnp_weight_sensitivity", "opnp_neuron_sensitivity",
                                                 "val_activations_sorted"})
    params: ClassVar[tuple[Param, ...]] = (
        Param("q_w_high", 0.5, low=0.0, high=2.0, step=0.1, unit="%", label="weights: top % pruned",
              help=f"Prune the weights whose sensitivity is in the top q %. {_UNTUNED}"),
        Param("q_w_low", 10.0, low=0.0, high=50.0, step=0.5, unit="%", label="weights: bottom % pruned",
              help=f"Prune the weights whose sensitivity is in the bottom q %. {_UNTUNED}"),
        Param("q_n_high", 1.0, low=0.0, high=10.0, step=0.1, unit="%", label="neurons: top % pruned",
              help=f"Zero the penultimate units whose sensitivity is in the top q %. {_UNTUNED}"),
        Param("q_n_low", 0.0, low=0.0, high=50.0, step=0.5, unit="%", label="neurons: bottom % pruned",
              help=f"Zero the penultimate units whose sensitivity is in the bottom q %. {_UNTUNED}"),
        Param("prune_weights", True, kind="bool", label="prune weights (OPP)",
              help="Apply the weight-sensitivity mask to the head."),
        Param("prune_neurons", True, kind="bool", label="prune neurons (ONP)",
              help="Apply the neuron-sensitivity mask to the penultimate features."),
        Param("use_react", False, kind="bool", label="ReAct clip",
              help="Clip the penultimate features at c before the pruned head (OPNP + ReAct)."),
    ) + clip_params("percentile", 90.0, 1.0)

    def __init__(self, name: str | None = None, title: str | None = None, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        if name is not None:
            self.name = name  # registered variants report their own name
        if title is not None:
            self.title = title

    def fit(self, ctx: FitContext) -> "OpnpScorer":
        super().fit(ctx)
        self._weight_masks: dict[tuple[float, float], Tensor] = {}  # (q_w_high, q_w_low) → (K, D) bool
        self._neuron_masks: dict[tuple[float, float], Tensor] = {}  # (q_n_high, q_n_low) → (D,) bool
        return self

    def weight_mask(self, q_w_high: float, q_w_low: float) -> Tensor:
        """(K, D) bool keep-mask of the head weights (on the fit device)."""
        key = (float(q_w_high), float(q_w_low))
        if key not in self._weight_masks:
            sensitivity = self.fitted.stats["opnp_weight_sensitivity"].float()
            self._weight_masks[key] = stages.keep_between_percentiles(sensitivity, q_low=key[1], q_high=key[0])
        return self._weight_masks[key]

    def neuron_mask(self, q_n_high: float, q_n_low: float) -> Tensor:
        """(D,) bool keep-mask of the penultimate units (on the fit device)."""
        key = (float(q_n_high), float(q_n_low))
        if key not in self._neuron_masks:
            sensitivity = self.fitted.stats["opnp_neuron_sensitivity"].float()
            self._neuron_masks[key] = stages.keep_between_percentiles(sensitivity, q_low=key[1], q_high=key[0])
        return self._neuron_masks[key]

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 logits (W ⊙ M_w)·(m_n ⊙ h̄) + b."""
        values = self.resolve(hparams)
        h = feats.penultimate.float()
        weight, bias = head_on(self.fitted, h.device)
        if values["use_react"]:
            h = stages.clip_activations(h, stages.clip_threshold(self.fitted.stats, values))
        weight_mask = (self.weight_mask(values["q_w_high"], values["q_w_low"]).to(h.device)
                       if values["prune_weights"] else None)
        neuron_mask = (self.neuron_mask(values["q_n_high"], values["q_n_low"]).to(h.device)
                       if values["prune_neurons"] else None)
        return stages.masked_head_logits(h, weight, bias, weight_mask=weight_mask, feature_mask=neuron_mask)



register_scorer("opp")(functools.partial(OpnpScorer, name="opp", title="OPP", prune_neurons=False))
register_scorer("onp")(functools.partial(OpnpScorer, name="onp", title="ONP", prune_weights=False))
register_scorer("opnp")(functools.partial(OpnpScorer, name="opnp", title="OPNP"))
register_scorer("opnp+react")(functools.partial(OpnpScorer, name="opnp+react", title="OPNP + ReAct",
                                                use_react=True))
