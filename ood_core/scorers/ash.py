"""ASH: activation shaping of the pooled feature (Djurisic, Bozanic, Ashok & Liu, ICLR 2023),
docs/methods.md §2.8.

Per sample on the D-vector h: keep the top k = D − round(D·p/100) entries I (ties at the
k-th value to the lower index), then
  * ASH-P: h' = h on I, 0 elsewhere;
  * ASH-B: h' = s1/k on I, 0 elsewhere (s1 = Σ_j h_j before pruning);
  * ASH-S: h' = h_p·exp(s1/s2), h_p the pruned vector, s2 = Σ h_p;
and score S = LSE(W h' + b). The variant is fixed by the registered name (ash-p / ash-b /
ash-s); the percentile p is the slider.

Guards (documented deviations, inactive on ReLU features at the paper's percentiles):
  * k is at least 1 (``p`` close to 100 on small D would otherwise keep nothing);
  * ASH-S with s2 ≤ 0 (possible on ViT features, which can be negative) leaves the
    pruned vector unscaled instead of multiplying by exp(s1/s2) of the wrong sign;
  * the ASH-S exponent s1/s2 is capped at 40 so scores stay finite in float32
    (s1/s2 ≤ D/k for non-negative features; real networks stay far below the cap).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ood_core.fast import sparse_rows
from ood_core.memo import Memo
from ood_core.params import PRUNE_PERCENTILES, Param
from ood_core.records import FeatureSet
from ood_core.registry import SCORERS
from ood_core.scorers.base import ShapedHeadScorer

MAX_SCALE_EXPONENT = 40.0
VARIANTS = ("p", "b", "s")


def kept_count(feature_dim: int, percentile: float) -> int:
    """k = D − round(D·p/100), at least 1 (numpy's round-half-to-even, as the official code)."""
    return max(1, feature_dim - int(round(feature_dim * percentile / 100.0)))


def ash_reference_features(h: Tensor, percentile: float, variant: str) -> Tensor:
    """The definition: h (N, D) → shaped h' (N, D) float32 for variant "p" | "b" | "s"."""
    if variant not in VARIANTS:
        raise ValueError(f"ASH variant must be one of {list(VARIANTS)}, got {variant!r}")
    h = h.float()
    k = kept_count(h.shape[1], percentile)
    order = h.argsort(dim=1, descending=True, stable=True)  # ties: the lower index first
    kept = torch.zeros_like(h, dtype=torch.bool).scatter_(1, order[:, :k], True)  # rank < k
    pruned = torch.where(kept, h, torch.zeros_like(h))
    s1 = h.sum(dim=1, keepdim=True)
    if variant == "p":
        return pruned
    if variant == "b":
        return kept.float() * (s1 / k)
    s2 = pruned.sum(dim=1, keepdim=True)  # ASH-S
    exponent = torch.where(s2 > 0, s1 / s2, torch.zeros_like(s2))  # guard: s2 ≤ 0 → unscaled
    return pruned * exponent.clamp(max=MAX_SCALE_EXPONENT).exp()  # guard: finite in float32


def shaped_logits(sums: sparse_rows.TopKSums, k: int, variant: str, bias: Tensor) -> Tensor:
    """(N, K) W·h' + b from the top-k sums (fast path): every variant is a per-row factor
    times Σ_{j ∈ I} x_j·W[:, j] (x = h for P and S, 1 for B), with the guards above."""
    if variant == "p":
        return sums.head + bias
    if variant == "b":
        return torch.addcmul(bias, sums.total / k, sums.head)
    s2 = sums.kept_sum
    exponent = torch.where(s2 > 0, sums.total / s2.where(s2 > 0, torch.ones_like(s2)), torch.zeros_like(s2))
    return torch.addcmul(bias, exponent.clamp(max=MAX_SCALE_EXPONENT).exp(), sums.head)


VARIANT_SUMMARIES = {
    "p": "Energy after zeroing each image's smallest activations (prune only).",
    "b": "Energy after keeping each image's largest activations, binarised to one value of the same total.",
    "s": "Energy after keeping each image's largest activations, scaled up by the share that was pruned.",
}

class AshScorer(ShapedHeadScorer):
    """S(x) = LSE(W·ASH(h) + b) for one of the ASH-P / ASH-B / ASH-S variants."""

    name = "ash"
    title = "ASH"
    paper = "Djurisic, Bozanic, Ashok & Liu, Extremely Simple Activation Shaping for OOD Detection, ICLR 2023"
    needs = frozenset({"penultimate"})
    params = (
        Param("percentile", 90.0, "float", low=0.0, high=99.9, step=0.1, unit="%", label="p (pruned %)",
              help="Percent of each sample's pooled activations set to zero (the smallest ones).",
              search=PRUNE_PERCENTILES),
    )
    fast_path = ("rows sorted once per feature tensor (on its second score), then each percentile's top k "
                 "as a CSR product with Wᵀ (ood_core.fast.sparse_rows); logits memoised per setting")

    def __init__(self, variant: str = "s", name: str | None = None, title: str | None = None,
                 **default_overrides: Any) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"ASH variant must be one of {list(VARIANTS)}, got {variant!r}")
        super().__init__(name=name, title=title, summary=VARIANT_SUMMARIES[variant], **default_overrides)
        self.variant = variant
        self._sorted = Memo()  # features → SortedRows (hyperparameter-free)
        # (setting, features) → logits: the last settings cost nothing again (NAP-A's ε slider)
        self._logits = Memo(max_entries=32)

    def reference_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) W·ASH(h) + b with the dense shaped features."""
        weight, bias = self.head_on(feats.penultimate.device)
        shaped = ash_reference_features(feats.penultimate, self.resolve(hparams)["percentile"], self.variant)
        return shaped @ weight.T + bias

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) W·ASH(h) + b by the sparse products (see ``fast_path``)."""
        percentile = float(self.resolve(hparams)["percentile"])
        features = feats.penultimate
        return self._logits.get(("logits", percentile, self.variant), tensor=features,
                                compute=lambda: self._fast_logits(features, percentile))

    def _fast_logits(self, features: Tensor, percentile: float) -> Tensor:
        """(N, K) logits: a tensor's first score by a top-(k + 1) per row, later ones from its sort."""
        weight, bias = self.head_on(features.device)
        n, d = features.shape
        k = kept_count(d, percentile)
        kind = {"ones": self.variant == "b", "with_total": self.variant != "p", "with_kept_sum": self.variant == "s"}
        rows = self._sorted.get("rows", lambda: sparse_rows.sort_rows(features, weight), tensor=features,
                                reused_only=True, expected_bytes=n * d * 8 + n * weight.shape[0] * 4)
        if rows is None:
            top = sparse_rows.top_k_sums(features, k, weight, **kind)
        else:
            top = sparse_rows.sorted_top_k_sums(rows, k, weight, **kind)
        return shaped_logits(top, k, self.variant, bias)


SCORERS.register("ash-p")(functools.partial(AshScorer, "p", name="ash-p", percentile=90.0))
SCORERS.register("ash-b")(functools.partial(AshScorer, "b", name="ash-b", percentile=90.0))
build_ash_s = functools.partial(AshScorer, "s", name="ash-s", percentile=95.0)
SCORERS.register("ash-s")(build_ash_s)
