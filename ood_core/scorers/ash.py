"""ASH: activation shaping of the pooled feature (Djurisic, Bozanic, Ashok & Liu, ICLR 2023),
methods.md §2.8.

Per sample on the D-vector h: keep the top k = D − round(D·p/100) entries (I), then
  * ASH-P: h' = h on I, 0 elsewhere;
  * ASH-B: h' = s1/k on I, 0 elsewhere (s1 = Σ_j h_j before pruning);
  * ASH-S: h' = h_p·exp(s1/s2), h_p the pruned vector, s2 = Σ h_p;
and score S = LSE(W h' + b). Each row is sorted once per cached feature tensor (a stable
sort, memoised). A new percentile then touches only the columns it keeps: the head of
the shaped vector is a sparse (CSR) product of the first k sorted entries of each row with
Wᵀ — or, when k > D/2, the full product minus that of the D − k dropped entries — so a
slider move reads N·min(k, D − k) entries instead of building a dense N×D matrix (10× less
work at the default p = 90). Ties at the k-th place go to the lower index (the official
code leaves them to ``topk``'s order; it matters only for ASH-B on rows with fewer than k
positive entries). A tensor's first score takes a top-(k + 1) per row instead of a sort
(:func:`top_k_entries`) and the same kind of sparse product; the sort is made when the
same tensor is scored again. :func:`ash_features` builds the dense shaped vector (the
definition; the tests compare both paths with it).

Guards (documented deviations, inactive on ReLU features at the paper's percentiles):
  * k is at least 1 (``p`` close to 100 on small D would otherwise keep nothing);
  * ASH-S with s2 ≤ 0 (possible on ViT features, which can be negative) leaves the
    pruned vector unscaled instead of multiplying by exp(s1/s2) of the wrong sign;
  * the ASH-S exponent s1/s2 is capped at 40 so scores stay finite in float32
    (s1/s2 ≤ D/k for non-negative features; real networks stay far below the cap).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, Param, PerTensorMemo, ShapedHeadScorer

MAX_SCALE_EXPONENT = 40.0
ROW_CHUNK = 4096  # rows per step of a one-off score
_SETTINGS_KEPT = 8  # shaped-head logits kept per cached feature tensor
VARIANTS = ("p", "b", "s")


def kept_count(feature_dim: int, percentile: float) -> int:
    """k = D − round(D·p/100), at least 1 (numpy's round-half-to-even, as the official code)."""
    return max(1, feature_dim - int(round(feature_dim * percentile / 100.0)))


def descending_ranks(features: Tensor) -> Tensor:
    """(N, D) int16 (int32 for D ≥ 2¹⁵): each entry's place in its row sorted descending
    (ties: lower index first) — the tie rule written plainly, the reference of the tests."""
    order = features.argsort(dim=1, descending=True, stable=True)
    places = torch.arange(features.shape[1], device=features.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, places)
    return ranks.to(torch.int16 if features.shape[1] < 2 ** 15 else torch.int32)


def ash_s_scale(total: Tensor, kept_sum: Tensor) -> Tensor:
    """ASH-S's factor exp(s1/s2) from s1 = ``total`` and s2 = ``kept_sum`` (N, 1), with the
    module's guards: 1 where s2 ≤ 0, the exponent capped at ``MAX_SCALE_EXPONENT``."""
    exponent = torch.where(kept_sum > 0, total / kept_sum.where(kept_sum > 0, torch.ones_like(kept_sum)),
                           torch.zeros_like(kept_sum))
    return exponent.clamp(max=MAX_SCALE_EXPONENT).exp()


def top_k_mask(features: Tensor, k: int) -> Tensor:
    """(N, D) bool: each row's k largest entries, ties at the k-th value to the lower
    indices — the same set as ``descending_ranks(features) < k`` without a full sort (one
    ``topk`` for the k-th value, then a running count of the entries tied with it)."""
    kth = features.topk(k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    kept = features >= kth
    crowded = (kept.sum(dim=1) > k).nonzero().squeeze(1)
    if crowded.numel():  # more entries tied at the k-th value than places left: lowest indices win
        rows, threshold = features[crowded], kth[crowded]
        above, tied = rows > threshold, rows == threshold
        room = k - above.sum(dim=1, keepdim=True)
        kept[crowded] = above | (tied & (tied.cumsum(dim=1) <= room))
    return kept


def top_k_entries(features: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's k largest entries, ties at the k-th value to the lower indices (the set of
    :func:`top_k_mask`), as (columns (N, m) int64, values (N, m), kept (N, m) bool) with
    m = k + 1 and exactly k kept per row: the extra entry is a column outside the set.

    One ``topk`` of k + 1: where the (k + 1)-th value is below the k-th, the top k are
    unambiguous; rows where the two are equal (ties across the boundary) take the stable
    rule."""
    n, d = features.shape
    if k >= d:
        columns = torch.arange(d, device=features.device).expand(n, d)
        return columns, features, torch.ones_like(features, dtype=torch.bool)
    values, columns = features.topk(k + 1, dim=1, sorted=False)
    lowest = values.topk(2, dim=1, largest=False)  # the (k + 1)-th and the k-th values
    kept = torch.ones_like(values, dtype=torch.bool).scatter_(1, lowest.indices[:, :1], False)
    crowded = (lowest.values[:, 0] == lowest.values[:, 1]).nonzero().squeeze(1)
    if crowded.numel():
        rows = features[crowded]
        mask = top_k_mask(rows, k)  # exactly k per row
        outside = (~mask).to(torch.uint8).argmax(dim=1, keepdim=True)  # a column not kept
        columns[crowded] = torch.cat([mask.nonzero()[:, 1].view(-1, k), outside], dim=1)
        values[crowded] = rows.gather(1, columns[crowded])
        kept[crowded] = torch.arange(k + 1, device=features.device) < k
    return columns, values, kept


def _shaped_entries(h: Tensor, percentile: float, variant: str) -> tuple[Tensor, Tensor]:
    """(columns (N, m) int64, values (N, m) float32): the nonzero entries of ASH(h) for
    variant "p" | "b" | "s" — each row's top k, shaped — plus one zero-valued entry per row
    (see :func:`top_k_entries`)."""
    if variant not in VARIANTS:
        raise ValueError(f"ASH variant must be one of {list(VARIANTS)}, got {variant!r}")
    k = kept_count(h.shape[1], percentile)
    columns, values, kept = top_k_entries(h, k)
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    if variant == "p":
        return columns, torch.where(kept, values, zero)
    total = h.sum(dim=1, keepdim=True)  # s1, before pruning
    if variant == "b":
        return columns, torch.where(kept, total / k, zero)
    values = torch.where(kept, values, zero)
    return columns, values * ash_s_scale(total, values.sum(dim=1, keepdim=True))


def ash_features(features: Tensor, percentile: float, variant: str) -> Tensor:
    """Shaped features h' (N, D) float32 from h (N, D) for variant "p" | "b" | "s" (the
    dense definition)."""
    h = features.float()
    columns, values = _shaped_entries(h, percentile, variant)
    return torch.zeros_like(h).scatter_(1, columns, values)


def _csr_times_weight(columns: Tensor, values: Tensor, d: int, weight: Tensor) -> Tensor:
    """(N, K) Σ_j values[n, j] · W[:, columns[n, j]]: a CSR matrix with the same number of
    entries per row, times Wᵀ (reads N·m entries instead of a dense N×D matrix)."""
    n, width = columns.shape
    if width == 0:
        return weight.new_zeros(n, weight.shape[0])
    # contiguous(): a one-column slice reshapes to a strided view, which the kernel misreads
    flat_columns = columns.to(torch.int32).contiguous().view(-1)
    flat_values = values.contiguous().view(-1)
    crow = torch.arange(0, n * width + 1, width, dtype=torch.int32, device=weight.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is exact
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(crow, flat_columns, flat_values, size=(n, d), check_invariants=False)
        return matrix @ weight.T


def ash_logits_direct(features: Tensor, percentile: float, variant: str, weight: Tensor, bias: Tensor) -> Tensor:
    """(N, K) W·ASH(h) + b for a one-off score: each row's shaped top-k entries as a sparse
    product with Wᵀ, in row chunks (temporaries of a few MB are reused by the allocator)."""
    out = torch.empty(features.shape[0], weight.shape[0], dtype=torch.float32, device=features.device)
    for start in range(0, features.shape[0], ROW_CHUNK):
        stop = min(start + ROW_CHUNK, features.shape[0])
        columns, values = _shaped_entries(features[start:stop].float(), percentile, variant)
        out[start:stop] = _csr_times_weight(columns, values, features.shape[1], weight) + bias
    return out


class SortedRows(NamedTuple):
    """Per-tensor, hyperparameter-free data of ASH (memoised).

    values (N, D) float32 each row sorted descending (stable); columns (N, D) int32 their
    original column; total (N, 1) s1 = row sum; product (N, K) h·Wᵀ without bias."""

    values: Tensor
    columns: Tensor
    total: Tensor
    product: Tensor


def sort_rows(features: Tensor, weight: Tensor) -> SortedRows:
    """features (N, D), weight W (K, D) → :class:`SortedRows`."""
    h = features.float()
    values, order = h.sort(dim=1, descending=True, stable=True)
    return SortedRows(values, order.to(torch.int32), h.sum(dim=1, keepdim=True), h @ weight.T)


def _rows_times_weight(rows: SortedRows, start: int, stop: int, weight: Tensor, ones: bool) -> Tensor:
    """(N, K) Σ_{start ≤ r < stop} x_r · W[:, col_r] over each row's sorted places r, with
    x = the sorted values (or 1 when ``ones``)."""
    values = rows.values[:, start:stop]
    return _csr_times_weight(rows.columns[:, start:stop], torch.ones_like(values) if ones else values,
                             rows.values.shape[1], weight)


def ash_head_logits(rows: SortedRows, percentile: float, variant: str, weight: Tensor, bias: Tensor) -> Tensor:
    """(N, K) float32 W·ASH(h) + b from the sorted rows; equal to
    ``ash_features(h, percentile, variant) @ W.T + b`` up to float32 summation order."""
    if variant not in VARIANTS:
        raise ValueError(f"ASH variant must be one of {list(VARIANTS)}, got {variant!r}")
    d = rows.values.shape[1]
    k = kept_count(d, percentile)
    ones = variant == "b"
    if k <= d - k:  # the kept entries are the fewer: sum them
        kept_head = _rows_times_weight(rows, 0, k, weight, ones)
        kept_sum = None if ones else rows.values[:, :k].sum(dim=1, keepdim=True)
    else:  # the dropped ones are: everything minus them
        dropped_head = _rows_times_weight(rows, k, d, weight, ones)
        everything = weight.sum(dim=1).unsqueeze(0) if ones else rows.product
        kept_head = everything - dropped_head
        kept_sum = None if ones else rows.total - rows.values[:, k:].sum(dim=1, keepdim=True)
    if variant == "p":
        return kept_head + bias
    if variant == "b":
        return (rows.total / k) * kept_head + bias
    return ash_s_scale(rows.total, kept_sum) * kept_head + bias


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
        # features → (sorted rows, {(percentile, variant): logits}): the sort is
        # hyperparameter-free, and the last few settings' logits make a combination that
        # reuses ASH (NAP-A's ε slider) cost nothing.
        self._per_tensor = PerTensorMemo()

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) logits W·h' + b of the shaped features."""
        hp = self.resolve(hparams)
        ctx = self.fitted
        features = feats.penultimate
        weight = ctx.head_weight.to(features.device, torch.float32)
        bias = ctx.head_bias.to(features.device, torch.float32)
        key = (float(hp["percentile"]), str(hp["variant"]))
        n, d = features.shape
        memo = self._per_tensor.get(features, lambda f: (sort_rows(f, weight), {}), reused_only=True,
                                    expected_bytes=n * d * 8 + n * weight.shape[0] * 4)
        if memo is None:  # first score of this tensor: a top-(k + 1) per row, no sort
            return ash_logits_direct(features, key[0], key[1], weight, bias)
        rows, logits_by_setting = memo
        logits = logits_by_setting.get(key)
        if logits is None:
            logits = ash_head_logits(rows, key[0], key[1], weight, bias)
            logits_by_setting[key] = logits
            for stale in list(logits_by_setting)[:-_SETTINGS_KEPT]:  # oldest first
                logits_by_setting.pop(stale, None)
        return logits


register_scorer("ash-p")(functools.partial(AshScorer, name="ash-p", variant="p", percentile=90.0))
register_scorer("ash-b")(functools.partial(AshScorer, name="ash-b", variant="b", percentile=90.0))
register_scorer("ash-s")(functools.partial(AshScorer, name="ash-s", variant="s", percentile=95.0))
