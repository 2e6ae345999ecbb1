"""OPNP: optimal parameter and neuron pruning (Chen et al., NeurIPS 2023), docs/methods.md §3.12.

Sensitivities from the training set (closed form, no backward pass; statistics below):
  S = Pᵀ|H| / m (K×D, mean |∂LSE/∂W_kj|) and s = mean_k S[k] (D,).
Pruning, with global percentiles over the whole matrix / vector:
  weights: drop W_kj if S_kj > percentile(S, 100 − q_w_high) or S_kj < percentile(S, q_w_low);
  units:   drop unit j if s_j > percentile(s, 100 − q_n_high) or s_j < percentile(s, q_n_low).
Score: S = LSE((W ⊙ M_w)·(m_n ⊙ h̄) + b), h̄ = h, or min(h, c) for OPNP + ReAct; bias untouched.

OPP, ONP, OPNP and OPNP + ReAct are compositions of declared stages: weight pruning and unit
pruning (:class:`SensitivityPruning`) and ReAct's clip. No official code exists; the default percentages are
the paper's worked examples, not tuned values (the paper grid-searched them on a validation
split). On the CIFAR DenseNet pruning the most-sensitive 1 % of weights hurts; tune on ID/OOD
validation data, never on test sets.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import torch
from torch import Tensor

from ood_core import stages
from ood_core.params import Param
from ood_core.records import FitContext
from ood_core.registry import SCORERS
from ood_core.scorers.composed import ClipStage, ComposedHeadScorer, HeadStage
from ood_core.statistics import TrainingData, register_statistic

PAPER = ("Chen, Fu, Liu, Chen, Tao, Ye. Optimal Parameter and Neuron Pruning for Out-of-Distribution "
         "Detection. NeurIPS 2023.")
_UNTUNED = "Default is the paper's worked example, not a tuned value."


def opnp_reference(h: Tensor, weight: Tensor, bias: Tensor, weight_sensitivity: Tensor, unit_sensitivity: Tensor,
                   q_w: tuple[float, float], q_n: tuple[float, float]) -> Tensor:
    """h (N, D) → (N,) S = LSE((W ⊙ M_w)·(m_n ⊙ h) + b); q = (top %, bottom %) pruned."""
    keep_w = stages.keep_between_percentiles(weight_sensitivity, q_low=q_w[1], q_high=q_w[0])
    keep_n = stages.keep_between_percentiles(unit_sensitivity, q_low=q_n[1], q_high=q_n[0])
    return torch.logsumexp((h * keep_n) @ (weight * keep_w).T + bias, dim=1)


class SensitivityPruning(HeadStage):
    """Keep what lies between two percentiles of a sensitivity: head weights (OPP, ``"w"``) or
    penultimate units (ONP, ``"n"``); one global percentile over the whole matrix / vector."""

    def __init__(self, target: str) -> None:
        self.target = target
        what, (top, bottom), unit_help = {
            "w": ("weights", (0.5, 10.0), "Prune the weights whose sensitivity is in the {} q %."),
            "n": ("neurons", (1.0, 0.0), "Zero the penultimate units whose sensitivity is in the {} q %."),
        }[target]
        # The paper's ranges: up to ~2 % of the most sensitive weights, up to ~50 % of the least.
        top_grid, bottom_grid = {"w": ((0.0, 0.5, 1.0, 2.0), (0.0, 10.0, 30.0, 50.0)),
                                 "n": ((0.0, 1.0, 5.0, 10.0), (0.0, 10.0, 30.0))}[target]
        self.params = (
            Param(f"q_{target}_high", top, low=0.0, high=2.0 if target == "w" else 10.0, step=0.1, unit="%",
                  label=f"{what}: top % pruned", help=f"{unit_help.format('top')} {_UNTUNED}", search=top_grid,
                  group=what),
            Param(f"q_{target}_low", bottom, low=0.0, high=50.0, step=0.5, unit="%",
                  label=f"{what}: bottom % pruned", help=f"{unit_help.format('bottom')} {_UNTUNED}",
                  search=bottom_grid, group=what),
        )
        self.statistic = "opnp_weight_sensitivity" if target == "w" else "opnp_neuron_sensitivity"
        self.stats = frozenset({self.statistic})
        self.mask_params = (f"q_{target}_high", f"q_{target}_low")

    def keep(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor:
        high, low = (float(values[name]) for name in self.mask_params)
        return stages.keep_between_percentiles(ctx.stats[self.statistic].float(), q_low=low, q_high=high)

    def weight_mask(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor | None:
        return self.keep(ctx, values) if self.target == "w" else None

    def unit_mask(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor | None:
        return self.keep(ctx, values) if self.target == "n" else None


def _register(name: str, title: str, summary: str, *head_stages: HeadStage) -> None:
    # The paper tunes its pruning percentages jointly, by grid search on validation data.
    pruned = tuple(p for stage in head_stages if isinstance(stage, SensitivityPruning) for p in stage.mask_params)
    SCORERS.register(name)(functools.partial(ComposedHeadScorer, name=name, title=title, paper=PAPER,
                                             head_stages=head_stages, joint=(pruned,), summary=summary))


_register("opp", "OPP", "Energy after pruning head weights by their sensitivity on training data.", SensitivityPruning("w"))
_register("onp", "ONP", "Energy after zeroing penultimate units by their sensitivity on training data.",
          SensitivityPruning("n"))
_register("opnp", "OPNP", "Energy after pruning the most and least sensitive weights and units (OPP + ONP).",
          SensitivityPruning("w"), SensitivityPruning("n"))
_register("opnp+react", "OPNP + ReAct", "OPNP's pruned head on ReAct-clipped activations.", ClipStage("percentile", 90.0, 1.0), SensitivityPruning("w"),
          SensitivityPruning("n"))


# -- the training statistics only this method reads (ood_core.statistics) --------------------------


def _weight_sensitivity(data: TrainingData) -> Tensor:
    """(K, D) float64 S = Pᵀ|H| / m: mean_x p_k(x)·|h_j(x)| = mean_x |∂LSE/∂W_kj|, computed once."""
    return data.total("opnp.weight_sensitivity_sum", lambda h, z, y: torch.softmax(z, dim=1).T @ h.abs()) / data.m


@register_statistic("opnp_weight_sensitivity", version=1, shape="(K, D)")
def _opnp_weight_sensitivity(data: TrainingData) -> Tensor:
    """S = Pᵀ|H| / m, the mean |∂E/∂W| of every head weight."""
    return _weight_sensitivity(data)


@register_statistic("opnp_neuron_sensitivity", version=1, shape="(D,)")
def _opnp_neuron_sensitivity(data: TrainingData) -> Tensor:
    """s = mean_k S[k], the sensitivity of every penultimate unit."""
    return _weight_sensitivity(data).mean(0)
