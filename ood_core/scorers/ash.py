"""ASH: activation shaping of the pooled feature (Djurisic, Bozanic, Ashok & Liu, ICLR 2023),
methods.md §2.8.

Per sample on the D-vector h: keep the top k = D − round(D·p/100) entries (I), then
  * ASH-P: h' = h on I, 0 elsewhere;
  * ASH-B: h' = s1/k on I, 0 elsewhere (s1 = Σ_j h_j before pruning);
  * ASH-S: h' = h_p·exp(s1/s2), h_p the pruned vector, s2 = Σ h_p;
and score S = LSE(W h' + b). Each row's descending ranks are computed once per cached
feature tensor (a stable sort, memoised), so a new percentile is an element-wise mask and
one GEMM. Ties at the k-th place go to the lower index (the official code leaves them to
``topk``'s order; it matters only for ASH-B on rows with fewer than k positive entries).

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

from ood_core import stages
from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, Param, PerTensorMemo, ShapedHeadScorer

MAX_SCALE_EXPONENT = 40.0
_SETTINGS_KEPT = 8  # shaped-head logits kept per cached feature tensor
VARIANTS = ("p", "b", "s")


def kept_count(feature_dim: int, percentile: float) -> int:
    """k = D − round(D·p/100), at least 1 (numpy's round-half-to-even, as the official code)."""
    return max(1, feature_dim - int(round(feature_dim * percentile / 100.0)))


def descending_ranks(features: Tensor) -> Tensor:
    """(N, D) int16 (int32 for D ≥ 2¹⁵): each entry's place in its row sorted descending
    (ties: lower index first). The narrow type makes the per-percentile mask cheap."""
    order = features.argsort(dim=1, descending=True, stable=True)
    places = torch.arange(features.shape[1], device=features.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, places)
    return ranks.to(torch.int16 if features.shape[1] < 2 ** 15 else torch.int32)


def ash_features(features: Tensor, percentile: float, variant: str, ranks: Tensor | None = None) -> Tensor:
    """Shaped features h' (N, D) float32 from h (N, D) for variant "p" | "b" | "s".

    ``ranks``: :func:`descending_ranks` of ``features`` when already known (memoised)."""
    if variant not in VARIANTS:
        raise ValueError(f"ASH variant must be one of {list(VARIANTS)}, got {variant!r}")
    h = features.float()
    k = kept_count(h.shape[1], percentile)
    kept = (descending_ranks(h) if ranks is None else ranks) < k
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    pruned = torch.where(kept, h, zero)  # where, not h * kept: bool-float products are slow on CPU
    if variant == "p":
        return pruned
    total = h.sum(dim=1, keepdim=True)  # s1, before pruning
    if variant == "b":
        return torch.where(kept, total / k, zero)
    kept_sum = pruned.sum(dim=1, keepdim=True)  # s2
    exponent = torch.where(kept_sum > 0, total / kept_sum.where(kept_sum > 0, torch.ones_like(kept_sum)),
                           torch.zeros_like(kept_sum))
    return pruned * exponent.clamp(max=MAX_SCALE_EXPONENT).exp()


class AshScorer(ShapedHeadScorer):
    """S(x) = LSE(W·ASH(h) + b) for the ASH-P / ASH-B / ASH-S variants."""

    name = "ash"
    title = "ASH"
    paper = "Djurisic, Bozanic, Ashok & Liu, Extremely Simple Activation Shaping for OOD Detection, ICLR 2023"
    needs = frozenset({"penultimate"})
    params = (
        Param("variant", "s", "choice", choices=VARIANTS, label="variant",
              help="p = prune only, b = binarise the kept entries to keep the sum, s = prune and rescale by exp(s1/s2)."),
        Param("percentile", 90.0, "float", low=0.0, high=99.9, step=0.1, unit="%", label="p (pruned %)",
              help="Percent of each sample's pooled activations set to zero (the smallest ones)."),
    )

    def __init__(self, name: str | None = None, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        if name is not None:
            self.name = name  # the registered variant's name, so reports print "ash-s"
            self.title = name.upper()
        # features → (descending ranks, {(percentile, variant): logits}): the ranks are
        # hyperparameter-free, and the last few settings' logits make a combination that
        # reuses ASH (NAP-A's ε slider) cost nothing.
        self._per_tensor = PerTensorMemo()

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) logits W·h' + b of the shaped features."""
        hp = self.resolve(hparams)
        ctx = self.fitted
        features = feats.penultimate
        ranks, logits_by_setting = self._per_tensor.get(features, lambda f: (descending_ranks(f), {}))
        key = (float(hp["percentile"]), str(hp["variant"]))
        logits = logits_by_setting.get(key)
        if logits is None:
            shaped = ash_features(features, key[0], key[1], ranks)
            logits = stages.masked_head_logits(shaped, ctx.head_weight.to(features.device, torch.float32),
                                               ctx.head_bias.to(features.device, torch.float32))
            logits_by_setting[key] = logits
            for stale in list(logits_by_setting)[:-_SETTINGS_KEPT]:  # oldest first
                logits_by_setting.pop(stale, None)
        return logits



register_scorer("ash-p")(functools.partial(AshScorer, name="ash-p", variant="p", percentile=90.0))
register_scorer("ash-b")(functools.partial(AshScorer, name="ash-b", variant="b", percentile=90.0))
register_scorer("ash-s")(functools.partial(AshScorer, name="ash-s", variant="s", percentile=95.0))
