"""LINe: leveraging important neurons (Ahn, Park, Kim, CVPR 2023), docs/methods.md §3.10.

Follows the official code (``RouteLUNCH``), with C = ``class_contribution`` (K×D,
C[c] = W[c] ⊙ μ_c, the closed form of the code's Taylor/Shapley term):

1. AC: h̄ = min(h, δ), δ absolute (1.0 CIFAR, 0.8 ImageNet).
2. ĉ = argmax(W·h̄ + b), the *full* weights on the clipped features.
3. AP: m_ĉ[j] = [C[ĉ, j] > percentile_j(C[ĉ, :], p_a)] (signed C, per class, strict).
4. WP: M_w^ĉ[k, j] = [|C[ĉ, j]|·W[k, j] > τ_ĉ], τ_c = percentile over all K·D of
   A^c = |C[c, :]|[None, :] ⊙ W (W signed).
5. z_k = Σ_j W[k, j]·M_w^ĉ[k, j]·m_ĉ[j]·h̄_j + b_k;  S = LSE(z).

Switches: ``use_ac`` off → δ = ∞; ``use_ap`` off → m = 1; ``use_wp`` off → M_w = 1. With all
three off LINe is Energy. Percentiles are np.percentile's (linear interpolation).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ood_core import stages
from ood_core.fast import class_groups
from ood_core.memo import Memo
from ood_core.params import ACTIVATION_FACTORS, Param
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS, OODLensError
from ood_core.scorers.base import ShapedHeadScorer


def line_reference_logits(h: Tensor, weight: Tensor, bias: Tensor, contribution: Tensor, delta: float, p_a: float,
                          p_w: float, use_ac: bool = True, use_ap: bool = True, use_wp: bool = True) -> Tensor:
    """The definition, steps 1–5: h (N, D), W (K, D), b (K,), C (K, D) → z (N, K) float32.
    Builds every class's masks and each sample's own head: O(K·K·D + N·K·D) memory, for
    tests and small sets (:meth:`LineScorer.modified_logits` is the fast path)."""
    h, weight, contribution = h.float(), weight.float(), contribution.float()
    k, d = weight.shape
    clipped = h.clamp(max=delta) if use_ac else h  # 1. AC
    predicted = (clipped @ weight.T + bias).argmax(dim=1)  # 2. ĉ with the full head
    keep = torch.ones(k, k, d, dtype=torch.bool, device=h.device)  # keep[c] = M_w^c ⊙ m_c[None, :]
    if use_ap:  # 3. m_c[j] = C[c, j] > percentile(C[c, :], p_a)
        keep &= (contribution > stages.percentile_rows(contribution, p_a)[:, None])[:, None, :]
    if use_wp:  # 4. M_w^c = A^c > τ_c, A^c = |C[c, :]|[None, :] ⊙ W
        adjusted = contribution.abs()[:, None, :] * weight
        keep &= adjusted > stages.percentile_rows(adjusted.reshape(k, k * d), p_w)[:, None, None]
    per_sample = (weight * keep)[predicted]  # (N, K, D): W ⊙ M_w^ĉ ⊙ m_ĉ for each sample
    return torch.einsum("nkd,nd->nk", per_sample, clipped) + bias  # 5.


# Fast path: above this many K·K·D elements, per-class effective weights are built on the fly
# instead of being memoised as one (K, K, D) stack (ImageNet: 2·10⁹ elements = 8 GB).
MAX_MEMOISED_EFFECTIVE_WEIGHT = 1 << 24
# Classes per chunk when computing the K thresholds τ_c (bounds a (G, K·D) temporary).
TAU_CHUNK_ELEMENTS = 1 << 24


@SCORERS.register("line")
class LineScorer(ShapedHeadScorer):
    """LINe: energy of the predicted class's pruned head on clipped features; higher = more ID.

    needs: penultimate (N, D) float32; stats: class_contribution (K, D),
    val_activations_sorted (V,) (only for showing δ as a percentile).
    """

    name: ClassVar[str] = "line"
    title: ClassVar[str] = "LINe"
    summary: ClassVar[str] = "Energy through the predicted class's own important neurons and weights, on clipped activations."
    paper: ClassVar[str] = ("Ahn, Park, Kim. LINe: Out-of-Distribution Detection by Leveraging Important "
                            "Neurons. CVPR 2023.")
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    stats: ClassVar[frozenset[str]] = frozenset({"class_contribution", "val_activations_sorted"})
    params: ClassVar[tuple[Param, ...]] = (
        Param("delta", 1.0, low=0.01, high=20.0, step=0.01, unit="activation", label="δ (clip)",
              help="Absolute activation clip δ (AC): h̄ = min(h, δ); 1.0 for CIFAR DenseNet, 0.8 for ImageNet ResNet-50.",
              search=ACTIVATION_FACTORS, active_when=("use_ac", True)),
        Param("p_a", 90.0, low=0.0, high=99.0, step=1.0, unit="%", label="p_a (neurons dropped)",
              help="Percent of neurons dropped per predicted class, by their signed contribution C[ĉ, j] (AP).",
              search=(10.0, 50.0, 70.0, 90.0, 95.0), active_when=("use_ap", True)),
        Param("p_w", 90.0, low=0.0, high=99.0, step=1.0, unit="%", label="p_w (weights dropped)",
              help="Percent of weights dropped per predicted class, by |C[ĉ, j]|·W[k, j] over all K·D (WP).",
              search=(10.0, 50.0, 70.0, 90.0, 95.0), active_when=("use_wp", True)),
        Param("use_ac", True, kind="bool", label="activation clipping (AC)",
              help="Clip activations at δ; off means no clipping."),
        Param("use_ap", True, kind="bool", label="activation pruning (AP)",
              help="Keep only the predicted class's important neurons; off keeps every neuron."),
        Param("use_wp", True, kind="bool", label="weight pruning (WP)",
              help="Keep only the predicted class's important weights; off keeps every weight."),
    )
    joint: ClassVar[tuple[tuple[str, ...], ...]] = (("p_a", "p_w"),)  # the paper sets both together
    # each switch right before the one param it enables (declaration order stays the tuners')
    display_order: ClassVar[tuple[str, ...]] = ("use_ac", "delta", "use_ap", "p_a", "use_wp", "p_w")
    fast_path: ClassVar[str] = (
        "masks memoised per p_a / p_w (δ moves rebuild nothing); small heads: rows grouped by ĉ memoised per "
        "tensor, one GEMM per class block, only rows whose ĉ moved regrouped; large heads: the full head's logits "
        "(for ĉ), then per class one GEMM over the columns its mask keeps, or a correction over the columns it "
        "prunes, whichever are fewer (ood_core.fast.class_groups)")

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._activation_masks = Memo(max_entries=16)  # p_a → (K, D) bool
        self._weight_thresholds = Memo(max_entries=16)  # p_w → (K,) τ_c
        self._effective_weights = Memo(max_entries=8)  # (p_a, p_w, use_ap, use_wp) → (K, K, D)
        self._column_plans = Memo(max_entries=8)  # (p_a, p_w, use_ap, use_wp) → ColumnPlan
        self._by_class = Memo()  # features → ClassSortedRows

    def fit(self, ctx: FitContext) -> "LineScorer":
        super().fit(ctx)
        contribution, weight = ctx.stats["class_contribution"].float(), ctx.head_weight.float()
        if contribution.shape != weight.shape:
            raise OODLensError(f"line: class_contribution {tuple(contribution.shape)} does not match the head "
                               f"weight {tuple(weight.shape)}")
        self._contribution, self._abs_contribution = contribution, contribution.abs()
        # Large heads (column_subset_head): Wᵀ, whose rows are W's columns (a gather of
        # contiguous rows), and each column's extremes, which decide in O(D) per class whether
        # a column keeps any / every weight (|C[c, j]|·w is monotone in w since |C| ≥ 0).
        self._weight_t = weight.T.contiguous()
        self._column_max, self._column_min = weight.amax(dim=0), weight.amin(dim=0)
        return self

    def reference_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) z by :func:`line_reference_logits`."""
        v = self.resolve(hparams)
        weight, bias = self.head_on(feats.penultimate.device)
        return line_reference_logits(feats.penultimate, weight, bias, self._contribution.to(weight.device),
                                     v["delta"], v["p_a"], v["p_w"], v["use_ac"], v["use_ap"], v["use_wp"])

    # -- fast path: masks memoised on the fit device ------------------------------------
    def activation_mask(self, p_a: float) -> Tensor:
        """(K, D) bool m: m[c, j] = C[c, j] > percentile(C[c, :], p_a)."""
        return self._activation_masks.get(float(p_a), lambda: stages.mask_above_percentile(
            self._contribution, float(p_a), dim=1))

    def weight_thresholds(self, p_w: float) -> Tensor:
        """(K,) τ: τ_c = percentile over K·D of |C[c, :]|[None, :] ⊙ W, in chunks of classes."""
        def compute() -> Tensor:
            weight = self.fitted.head_weight.float()
            k, d = weight.shape
            chunk = max(1, TAU_CHUNK_ELEMENTS // (k * d))
            return torch.cat([stages.percentile_rows((self._abs_contribution[start:start + chunk, None, :] * weight)
                                                     .reshape(-1, k * d), float(p_w)) for start in range(0, k, chunk)])
        return self._weight_thresholds.get(float(p_w), compute)

    def effective_weights(self, classes: Tensor, p_a: float, p_w: float, use_ap: bool, use_wp: bool) -> Tensor:
        """(G, K, D) float32 W_eff^c = W ⊙ M_w^c ⊙ m_c[None, :] for the G classes in ``classes``
        (the official product comparison |C[c, j]|·W[k, j] > τ_c, not a division by |C|)."""
        weight = self.fitted.head_weight.float()
        eff = weight.expand(classes.numel(), *weight.shape)
        if use_wp:
            tau = self.weight_thresholds(p_w)[classes]
            eff = eff * ((self._abs_contribution[classes, None, :] * weight) > tau[:, None, None]).to(weight.dtype)
        if use_ap:
            eff = eff * self.activation_mask(p_a)[classes, None, :].to(weight.dtype)
        return eff

    def _weight_of(self, p_a: float, p_w: float, use_ap: bool, use_wp: bool):
        """class c → (K, D) W_eff^c, from one memoised (K, K, D) stack (small heads only)."""
        k = self.fitted.head_weight.shape[0]
        stack = self._effective_weights.get((float(p_a), float(p_w), bool(use_ap), bool(use_wp)), lambda: (
            self.effective_weights(torch.arange(k, device=self.fitted.head_weight.device), p_a, p_w, use_ap, use_wp)))
        return lambda c: stack[c]

    def column_plan(self, p_a: float, p_w: float, use_ap: bool, use_wp: bool) -> class_groups.ColumnPlan:
        """Per class, the columns :func:`class_groups.column_subset_head` reads (memoised per setting).

        Column j of W_eff^c keeps some weight iff m_c[j] and |C[c, j]|·max_k W[k, j] > τ_c, and
        every weight iff m_c[j] and |C[c, j]|·min_k W[k, j] > τ_c (the product is monotone in
        W[k, j], so these are the official comparisons at the column's extremes). A class
        reads its kept columns S, or, when fewer, the columns with a pruned weight P."""
        def build() -> class_groups.ColumnPlan:
            k, d = self._abs_contribution.shape
            keep_any = torch.ones(k, d, dtype=torch.bool, device=self._abs_contribution.device)
            keep_all = keep_any.clone()
            if use_wp:
                tau = self.weight_thresholds(p_w)[:, None]
                keep_any &= self._abs_contribution * self._column_max > tau
                keep_all &= self._abs_contribution * self._column_min > tau
            if use_ap:
                activation_mask = self.activation_mask(p_a)
                keep_any &= activation_mask
                keep_all &= activation_mask
            correction = (~keep_all).sum(dim=1) < keep_any.sum(dim=1)
            chosen = torch.where(correction[:, None], ~keep_all, keep_any)
            counts = chosen.sum(dim=1).tolist()  # one host sync per setting
            owners, columns = chosen.nonzero().unbind(1)
            # W[k, j] is kept iff W[k, j] > t: the official product comparison as a threshold per column
            thresholds = torch.full(columns.shape, -float("inf"), device=columns.device)
            if use_wp:
                thresholds = stages.product_thresholds(self._abs_contribution[owners, columns],
                                                       self.weight_thresholds(p_w)[owners])
            if thresholds is not None and use_ap:  # a dropped unit keeps nothing
                thresholds = thresholds.masked_fill(~self.activation_mask(p_a)[owners, columns], float("inf"))
            return class_groups.ColumnPlan(tuple(columns.split(counts)), tuple(correction.tolist()), correction,
                                           None if thresholds is None else tuple(thresholds.split(counts)))
        return self._column_plans.get((float(p_a), float(p_w), bool(use_ap), bool(use_wp)), build)

    def plan_weights(self, classes: list[int], plan: class_groups.ColumnPlan, p_a: float, p_w: float,
                     use_ap: bool, use_wp: bool) -> Tensor:
        """(Σ m_c, K) float32: for each class c in ``classes``, the rows ``plan.columns[c]`` of
        W_eff^cᵀ (or of (W − W_eff^c)ᵀ for a correction class), built from Wᵀ with the official
        comparison |C[c, j]|·W[k, j] > τ_c: one gather and a few passes for all the classes."""
        device = self._weight_t.device
        columns = torch.cat([plan.columns[c] for c in classes])
        if plan.thresholds is not None:  # one comparison per weight
            weight_t = self._weight_t.index_select(0, columns)  # (M, K) = W[:, columns]ᵀ
            thresholds = torch.cat([plan.thresholds[c] for c in classes])[:, None]
            forms = {plan.correction[c] for c in classes}
            if forms == {False}:
                keep = weight_t > thresholds
            elif forms == {True}:
                keep = weight_t <= thresholds
            else:
                flip = torch.cat([plan.correction_mask[c].expand(plan.columns[c].numel()) for c in classes])
                keep = (weight_t > thresholds) != flip[:, None]
            return weight_t.mul_(keep)
        owners = torch.tensor(classes, device=device).repeat_interleave(
            torch.tensor([plan.columns[c].numel() for c in classes], device=device))
        weight_t = self._weight_t.index_select(0, columns)  # (M, K) = W[:, columns]ᵀ
        keep = None
        if use_wp:
            keep = self._abs_contribution[owners, columns][:, None] * weight_t > \
                self.weight_thresholds(p_w)[owners][:, None]
        if use_ap:
            unit = self.activation_mask(p_a)[owners, columns][:, None]
            keep = unit if keep is None else keep & unit
        if keep is not None:  # kept weights, or for a correction class the pruned ones
            weight_t.mul_(keep != plan.correction_mask[owners][:, None])
        return weight_t

    def clip_value(self, values: dict[str, Any]) -> float:
        """δ, or ∞ when activation clipping is switched off."""
        return float(values["delta"]) if values["use_ac"] else float("inf")

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 LINe logits by the fast path (see ``fast_path``)."""
        values = self.resolve(hparams)
        weight, bias = self.head_on(feats.penultimate.device)
        delta = self.clip_value(values)
        clip = lambda x: stages.clip_activations(x, delta)  # noqa: E731
        k, d = weight.shape
        if not values["use_ap"] and not values["use_wp"]:  # no pruning: one dense head (AC only / Energy)
            return stages.chunked_head_logits(feats.penultimate, weight, bias, clip)
        if k * k * d > MAX_MEMOISED_EFFECTIVE_WEIGHT:  # large head: the column subsets, no row memo
            masks = (values["p_a"], values["p_w"], values["use_ap"], values["use_wp"])
            plan = self.column_plan(*masks)
            return class_groups.column_subset_head(feats.penultimate, clip, weight, bias, plan,
                                                   lambda classes: self.plan_weights(classes, plan, *masks))
        h = feats.penultimate.float()
        weight_of = self._weight_of(values["p_a"], values["p_w"], values["use_ap"], values["use_wp"])
        rows = self._by_class.get("rows", lambda: class_groups.class_sorted_rows(h, weight, bias),
                                  tensor=feats.penultimate, reused_only=True,
                                  expected_bytes=h.shape[0] * (h.shape[1] * 4 + 24))
        if rows is None:  # first score of this tensor: group its rows by ĉ directly
            return class_groups.class_head(h, clip, weight_of, weight, bias)
        logits, regrouped = class_groups.class_block_head(rows, clip, weight_of, weight, bias)
        if regrouped is not rows:  # many rows changed ĉ at this δ: the next nearby δ starts from them
            self._by_class.put("rows", regrouped, tensor=feats.penultimate)
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
    weight, bias = scorer.head_on(h.device)
    delta = scorer.clip_value(values)
    clipped = stages.clip_activations(h, delta)
    predicted = int(torch.addmm(bias, clipped, weight.T).argmax(dim=1)[0])  # ĉ with the full head
    if values["use_ap"] or values["use_wp"]:
        classes = torch.tensor([predicted], device=scorer.fitted.head_weight.device)
        effective_row = scorer.effective_weights(classes, values["p_a"], values["p_w"], values["use_ap"],
                                                 values["use_wp"])[0, predicted].to(h.device)
    else:
        effective_row = weight[predicted]
    if values["use_ap"]:
        kept = scorer.activation_mask(values["p_a"])[predicted].nonzero().squeeze(1).to(h.device)
    else:
        kept = torch.arange(h.shape[1], device=h.device)
    logits = scorer.modified_logits(row, **values)
    return {
        "predicted_class": predicted,
        "delta": delta,
        "clipped_neurons": (h[0] > delta).nonzero().squeeze(1).cpu(),
        "kept_neurons": kept.cpu(),
        "contributions": (effective_row * clipped[0])[kept].cpu(),
        "pruned_logit": float(logits[0, predicted]),
        "score": float(stages.energy(logits)[0]),
    }
