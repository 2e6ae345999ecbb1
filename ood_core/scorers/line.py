"""LINe: leveraging important neurons (Ahn, Park, Kim, CVPR 2023), methods.md §3.10.

Follows the official code (``RouteLUNCH``), with C = ``class_contribution`` (K×D,
C[c] = W[c] ⊙ μ_c, the closed form of the code's Taylor/Shapley term):

1. AC: h̄ = min(h, δ), δ absolute (1.0 CIFAR, 0.8 ImageNet).
2. ĉ = argmax(W·h̄ + b), the *full* weights on the clipped features.
3. AP: m_ĉ[j] = [C[ĉ, j] > percentile_j(C[ĉ, :], p_a)] (signed C, per class, strict).
4. WP: M_w^ĉ[k, j] = [|C[ĉ, j]|·W[k, j] > τ_ĉ], τ_c = percentile over all K·D of
   A^c = |C[c, :]|[None, :] ⊙ W (W signed).
5. z_k = Σ_j W[k, j]·M_w^ĉ[k, j]·m_ĉ[j]·h̄_j + b_k;  S = LSE(z).

Batched per §3.10(e): samples are grouped by ĉ and each class present gets one GEMM with
its effective weight W_eff^c = W ⊙ M_w^c ⊙ m_c[None, :], built on the fly (never a K×K×D
tensor unless it is small). Masks are memoised per (p_a, p_w); a δ-only change rebuilds
nothing. When a tensor is scored again (a slider move) its rows are kept grouped by ĉ
(memoised; first the unclipped head's, then ĉ at the last δ that moved many rows):
clipping rarely changes ĉ, so a move runs each class's GEMM on a contiguous block and
regroups only the rows whose ĉ moved, instead of gathering every row into class groups
again. Switches: ``use_ac`` off → δ = ∞; ``use_ap`` off → m = 1; ``use_wp`` off → M_w = 1.
With all three off LINe is Energy.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from ood_core import stages
from ood_core.registry import OODLensError
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, PerTensorMemo, ShapedHeadScorer
from ood_core.scorers.react import head_on

# Above this many K·K·D elements, per-class effective weights are built on the fly instead
# of being memoised as one (K, K, D) stack (ImageNet: 2·10⁹ elements = 8 GB).
MAX_MEMOISED_EFFECTIVE_WEIGHT = 1 << 24
# Rows per step of the slider path: temporaries of a few MB are reused by the allocator,
# where whole-tensor ones (40 MB at CIFAR scale) are fresh pages, faulted in on every move.
ROW_CHUNK = 4096
# A slider move that finds more than this share of rows with a new ĉ regroups the rows.
REGROUP_FRACTION = 0.01
# Classes per chunk when computing the K thresholds τ_c (bounds a (G, K·D) temporary).
TAU_CHUNK_ELEMENTS = 1 << 24


@register_scorer("line")
class LineScorer(ShapedHeadScorer):
    """LINe: energy of the predicted class's pruned head on clipped features; higher = more ID.

    needs: penultimate (N, D) float32; stats: class_contribution (K, D),
    val_activations_sorted (V,) (only for showing δ as a percentile).
    """

    name: ClassVar[str] = "line"
    title: ClassVar[str] = "LINe"
    paper: ClassVar[str] = ("Ahn, Park, Kim. LINe: Out-of-Distribution Detection by Leveraging Important "
                            "Neurons. CVPR 2023.")
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    stats: ClassVar[frozenset[str]] = frozenset({"class_contribution", "val_activations_sorted"})
    params: ClassVar[tuple[Param, ...]] = (
        Param("delta", 1.0, low=0.01, high=20.0, step=0.01, unit="activation", label="δ (clip)",
              help="Absolute activation clip δ (AC): h̄ = min(h, δ); 1.0 for CIFAR DenseNet, 0.8 for ImageNet ResNet-50."),
        Param("p_a", 90.0, low=0.0, high=99.0, step=1.0, unit="%", label="p_a (neurons dropped)",
              help="Percent of neurons dropped per predicted class, by their signed contribution C[ĉ, j] (AP)."),
        Param("p_w", 90.0, low=0.0, high=99.0, step=1.0, unit="%", label="p_w (weights dropped)",
              help="Percent of weights dropped per predicted class, by |C[ĉ, j]|·W[k, j] over all K·D (WP)."),
        Param("use_ac", True, kind="bool", label="activation clipping (AC)",
              help="Clip activations at δ; off means no clipping."),
        Param("use_ap", True, kind="bool", label="activation pruning (AP)",
              help="Keep only the predicted class's important neurons; off keeps every neuron."),
        Param("use_wp", True, kind="bool", label="weight pruning (WP)",
              help="Keep only the predicted class's important weights; off keeps every weight."),
    )

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._by_class = PerTensorMemo()  # features → ClassSortedRows

    def fit(self, ctx: FitContext) -> "LineScorer":
        super().fit(ctx)
        contribution = ctx.stats["class_contribution"].float()
        weight = ctx.head_weight.float()
        if contribution.shape != weight.shape:
            raise OODLensError(f"line: class_contribution {tuple(contribution.shape)} does not match the head "
                             f"weight {tuple(weight.shape)}")
        self._contribution = contribution
        self._abs_contribution = contribution.abs()
        self._activation_masks: dict[float, Tensor] = {}  # p_a → (K, D) bool
        self._weight_thresholds: dict[float, Tensor] = {}  # p_w → (K,) τ_c
        self._effective_weights: dict[tuple, Tensor] = {}  # (p_a, p_w, use_ap, use_wp) → (K, K, D)
        return self

    # -- masks (memoised, on the fit device) --------------------------------------
    def activation_mask(self, p_a: float) -> Tensor:
        """(K, D) bool m: m[c, j] = C[c, j] > percentile(C[c, :], p_a)."""
        key = float(p_a)
        if key not in self._activation_masks:
            self._activation_masks[key] = stages.mask_above_percentile(self._contribution, key, dim=1)
        return self._activation_masks[key]

    def weight_thresholds(self, p_w: float) -> Tensor:
        """(K,) τ: τ_c = percentile over K·D of |C[c, :]|[None, :] ⊙ W, in chunks of classes."""
        key = float(p_w)
        if key not in self._weight_thresholds:
            weight = self.fitted.head_weight.float()
            k, d = weight.shape
            chunk = max(1, TAU_CHUNK_ELEMENTS // (k * d))
            taus = [
                stages.percentile_rows((self._abs_contribution[start:start + chunk, None, :] * weight).reshape(-1, k * d), key)
                for start in range(0, k, chunk)
            ]
            self._weight_thresholds[key] = torch.cat(taus)
        return self._weight_thresholds[key]

    def effective_weights(self, classes: Tensor, p_a: float, p_w: float, use_ap: bool, use_wp: bool) -> Tensor:
        """(G, K, D) float32 W_eff^c = W ⊙ M_w^c ⊙ m_c[None, :] for the G classes in ``classes``.

        The weight mask is the official product comparison |C[c, j]|·W[k, j] > τ_c (not a
        division by |C|), so the kept set matches the reference bit for bit.
        """
        weight = self.fitted.head_weight.float()
        eff = weight.expand(classes.numel(), *weight.shape)
        if use_wp:
            tau = self.weight_thresholds(p_w)[classes]
            eff = eff * ((self._abs_contribution[classes, None, :] * weight) > tau[:, None, None]).to(weight.dtype)
        if use_ap:
            eff = eff * self.activation_mask(p_a)[classes, None, :].to(weight.dtype)
        return eff

    def _class_weight_source(self, p_a: float, p_w: float, use_ap: bool, use_wp: bool):
        """A function class index → (K, D) effective weight, memoised as a stack when small."""
        weight = self.fitted.head_weight.float()
        k, d = weight.shape
        if k * k * d <= MAX_MEMOISED_EFFECTIVE_WEIGHT:
            key = (float(p_a), float(p_w), bool(use_ap), bool(use_wp))
            if key not in self._effective_weights:
                all_classes = torch.arange(k, device=weight.device)
                self._effective_weights[key] = self.effective_weights(all_classes, p_a, p_w, use_ap, use_wp)
            stack = self._effective_weights[key]
            return lambda c: stack[c]
        return lambda c: self.effective_weights(torch.tensor([c], device=weight.device), p_a, p_w, use_ap, use_wp)[0]

    # -- scoring --------------------------------------------------------------------
    def clip_value(self, values: dict[str, Any]) -> float:
        """δ, or ∞ when activation clipping is switched off."""
        return float(values["delta"]) if values["use_ac"] else float("inf")

    def predicted_classes(self, clipped: Tensor) -> Tensor:
        """(N,) int64 ĉ = argmax(W·h̄ + b) with the full head."""
        weight, bias = head_on(self.fitted, clipped.device)
        return torch.addmm(bias, clipped, weight.T).argmax(dim=1)

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 LINe logits: each sample through its predicted class's pruned head."""
        values = self.resolve(hparams)
        h = feats.penultimate.float()
        weight, bias = head_on(self.fitted, h.device)
        if not values["use_ap"] and not values["use_wp"]:  # no pruning: one dense head (AC only / Energy)
            return torch.addmm(bias, stages.clip_activations(h, self.clip_value(values)), weight.T)
        weight_of = self._class_weight_source(values["p_a"], values["p_w"], values["use_ap"], values["use_wp"])
        delta = self.clip_value(values)
        rows = self._by_class.get(feats.penultimate, lambda f: class_sorted_rows(h, weight, bias), reused_only=True,
                                  expected_bytes=h.shape[0] * (h.shape[1] * 4 + 16))
        if rows is None:  # first score of this tensor: group its rows by ĉ directly
            clipped = stages.clip_activations(h, delta)
            return grouped_head(clipped, torch.addmm(bias, clipped, weight.T).argmax(dim=1), weight_of, bias)
        out = torch.empty(h.shape[0], weight.shape[0], dtype=torch.float32, device=h.device)
        predicted_sorted = torch.empty(h.shape[0], dtype=torch.int64, device=h.device)
        moved_rows: list[Tensor] = []
        moved_classes: list[Tensor] = []
        for c, (start, stop) in zip(rows.classes, rows.bounds):  # contiguous class blocks
            weight_c = weight_of(c).to(h.device)
            for first in range(start, stop, ROW_CHUNK):
                last = min(first + ROW_CHUNK, stop)
                clipped = stages.clip_activations(rows.features[first:last], delta)
                torch.addmm(bias, clipped, weight_c.T, out=out[first:last])
                predicted = torch.addmm(bias, clipped, weight.T).argmax(dim=1)
                predicted_sorted[first:last] = predicted
                moved = (predicted != c).nonzero().squeeze(1)  # clipping changed ĉ
                if moved.numel():
                    moved_rows.append(first + moved)
                    moved_classes.append(predicted[moved])
        if moved_rows:  # all of them together: one GEMM per class they moved to
            index = torch.cat(moved_rows)
            clipped = stages.clip_activations(rows.features[index], delta)
            out[index] = grouped_head(clipped, torch.cat(moved_classes), weight_of, bias)
            if index.numel() > REGROUP_FRACTION * h.shape[0]:
                # Regroup by ĉ at this δ: the next move (a nearby δ) then finds few rows moved.
                self._by_class.put(feats.penultimate, regroup(rows, predicted_sorted))
        logits = torch.empty_like(out)
        logits[rows.order] = out  # back to the rows' own order
        return logits


class ClassSortedRows(NamedTuple):
    """A feature tensor's rows grouped by a predicted class (memoised): first the unclipped
    head's ĉ, then, after a move that changed many, ĉ at that move's δ.

    order (N,) int64: row index in the grouping; features (N, D) float32 = h[order];
    group_class (N,) int64: each sorted row's group; classes / bounds: the groups present
    and their [start, stop) ranges."""

    order: Tensor
    features: Tensor
    group_class: Tensor
    classes: list[int]
    bounds: list[tuple[int, int]]


def class_sorted_rows(h: Tensor, weight: Tensor, bias: Tensor) -> ClassSortedRows:
    """h (N, D) float32 → :class:`ClassSortedRows` by argmax(W·h + b)."""
    predicted = torch.addmm(bias, h, weight.T).argmax(dim=1)
    identity = torch.arange(h.shape[0], device=h.device)
    return regroup(ClassSortedRows(identity, h, predicted, [], []), predicted)


def class_groups(predicted: Tensor) -> tuple[Tensor, list[int], list[tuple[int, int]]]:
    """predicted (N,) int64 → (order (N,) int64 sorting the rows by class (stable), the
    classes present, and each one's [start, stop) range in that order)."""
    order = torch.argsort(predicted, stable=True)
    classes, counts = torch.unique_consecutive(predicted[order], return_counts=True)
    stops = counts.cumsum(0).tolist()
    return order, classes.tolist(), list(zip([0] + stops[:-1], stops))


def regroup(rows: ClassSortedRows, predicted_sorted: Tensor) -> ClassSortedRows:
    """``rows`` grouped again by ``predicted_sorted`` (N,) int64, a class per sorted row."""
    permutation, classes, bounds = class_groups(predicted_sorted)
    return ClassSortedRows(rows.order[permutation], rows.features.index_select(0, permutation),
                           predicted_sorted[permutation], classes, bounds)


def grouped_head(clipped: Tensor, predicted: Tensor, weight_of, bias: Tensor) -> Tensor:
    """(M, K) logits of rows ``clipped`` (M, D) through their own class's effective weight
    ``weight_of(ĉ)`` (K, D): a sort by ĉ, then one GEMM per class present."""
    order, classes, bounds = class_groups(predicted)
    logits = torch.empty(clipped.shape[0], bias.shape[0], dtype=torch.float32, device=clipped.device)
    for c, (start, stop) in zip(classes, bounds):
        rows = order[start:stop]
        logits[rows] = torch.addmm(bias, clipped[rows], weight_of(c).to(clipped.device).T)
    return logits


def line_explain(scorer: LineScorer, feats_one_sample: FeatureSet, **hparams: Any) -> dict[str, Any]:
    """Why LINe scored one sample as it did (the Inspect page).

    ``feats_one_sample``: a FeatureSet; its first row is explained. Returns a dict with
      predicted_class  int, ĉ = argmax(W·h̄ + b)
      delta            float, the clip used (inf when AC is off)
      clipped_neurons  (P,) int64, neurons with h_j > δ
      kept_neurons     (Q,) int64, neurons kept by ĉ's activation mask (all when AP is off)
      contributions    (Q,) float32, W_eff[ĉ, j]·h̄_j for each kept neuron (sums, plus b_ĉ,
                       to the pruned logit of ĉ)
      pruned_logit     float, z^LINe_ĉ
      score            float, S = LSE(z^LINe)
    All tensors on the CPU.
    """
    values = scorer.resolve(hparams)
    row = feats_one_sample.subset(torch.arange(1, device=feats_one_sample.device))
    h = row.penultimate.float()
    delta = scorer.clip_value(values)
    clipped = stages.clip_activations(h, delta)
    predicted = int(scorer.predicted_classes(clipped)[0])
    weight, bias = head_on(scorer.fitted, h.device)
    if values["use_ap"] or values["use_wp"]:
        classes = torch.tensor([predicted], device=weight.device)
        effective_row = scorer.effective_weights(classes, values["p_a"], values["p_w"], values["use_ap"],
                                                 values["use_wp"])[0, predicted].to(h.device)
    else:
        effective_row = weight[predicted]
    if values["use_ap"]:
        kept = scorer.activation_mask(values["p_a"])[predicted].nonzero().squeeze(1).to(h.device)
    else:
        kept = torch.arange(h.shape[1], device=h.device)
    contributions = effective_row * clipped[0]
    logits = scorer.modified_logits(row, **values)
    return {
        "predicted_class": predicted,
        "delta": delta,
        "clipped_neurons": (h[0] > delta).nonzero().squeeze(1).cpu(),
        "kept_neurons": kept.cpu(),
        "contributions": contributions[kept].cpu(),
        "pruned_logit": float(logits[0, predicted]),
        "score": float(stages.energy(logits)[0]),
    }
