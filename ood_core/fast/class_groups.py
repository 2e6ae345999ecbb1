"""Rows grouped by predicted class, one GEMM per class (LINe's fast path).

A head that depends on each row's predicted class ĉ = argmax(W·x + b), x = transform(h),
gives row n the logits ``weight_of(ĉ_n)·x_n + b`` (``weight_of(c)``: that class's (K, D)
effective weight). Computed naively that is an (N, K, D) gather; here rows are sorted by ĉ
and each class present gets one GEMM:

* :func:`class_head` (a tensor scored once): ĉ with the full head, then :func:`grouped_head`;
* :func:`column_subset_head` (large heads, where a (K, D) weight per class is costly): the full
  head's logits F (which give ĉ) in row chunks, then per class present a GEMM over only the
  columns its mask touches: the kept columns (z = x_S·W_eff[:, S]ᵀ + b), or, when fewer, the
  columns with a pruned entry (z = F − x_P·(W − W_eff)[:, P]ᵀ). The work beyond F is
  N·min(|S|, |P|)·K instead of N·D·K, and no (K, D) weight is built per class;
* :func:`class_sorted_rows` once per tensor (rows grouped by the ĉ of the untransformed
  head, memoised by the caller), then :func:`class_block_head` per call: each class block
  is contiguous, so its GEMM needs no gather, and the same pass computes ĉ at this call's
  transform (one GEMM against [W_eff^c; W] when small); only the rows whose ĉ moved go
  through :func:`grouped_head` again. When many moved, the result carries the rows grouped
  by the new ĉ (:func:`regroup`), for the caller to memoise: the next nearby setting then
  finds few moved rows.

``transform``: (m, D) float32 → (m, D) float32, row-wise (LINe: the clip min(h, δ)).
All logits (·, K) float32; classes int64; everything on the features' device.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ood_core import stages
from ood_core.fast import chunks

Transform = Callable[[Tensor], Tensor]
WeightOf = Callable[[int], Tensor]


class ColumnPlan(NamedTuple):
    """Which columns of each class's effective weight :func:`column_subset_head` reads.

    columns: per class c (a tuple of K tensors), (m_c,) int64 the columns where W_eff^c keeps
    a weight, or, with correction[c], the columns where it prunes one (then the class's
    logits are the full head's minus the pruned part); correction_mask: the same flags as a
    (K,) bool tensor on the plan's device; thresholds: per class (m_c,) float32 t such that
    column j keeps W[k, j] iff W[k, j] > t[j] (the caller's rule, exactly), or None."""

    columns: tuple[Tensor, ...]
    correction: tuple[bool, ...]
    correction_mask: Tensor
    thresholds: tuple[Tensor, ...] | None = None


# classes (a list of G) → (Σ m_c, K) float32: for each class in turn, its plan columns' rows of
# W_effᵀ (kept form) or of (W − W_eff)ᵀ (correction form).
WeightsOf = Callable[[list[int]], Tensor]

# A move that finds more than this share of rows with a new ĉ returns them regrouped: a
# regroup copies all N rows, a moved row costs a gather and a GEMM row, so small slider
# steps (each moving ~1 % of the rows at CIFAR scale) regroup every few steps, not each one.
REGROUP_FRACTION = 0.05
# Up to this many elements of [W_eff^c; W] (2K·D), the class head and ĉ come from one GEMM
# (small heads: per-call overhead dominates); above, two GEMMs (no (2K, D) copy per class).
FUSED_HEAD_ELEMENTS = 1 << 18
# column_subset_head: elements of a class group's largest temporary (rows, F rows, weights).
GROUP_ELEMENTS = 1 << 21


class ClassSortedRows(NamedTuple):
    """A feature tensor's rows grouped by a predicted class.

    order (N,) int64: each grouped row's index in the tensor (inverse: its inverse
    permutation); features (N, D) float32 = h[order]; group_class (N,) int64: each grouped
    row's class; classes / bounds: the classes present and their [start, stop) ranges."""

    order: Tensor
    inverse: Tensor
    features: Tensor
    group_class: Tensor
    classes: list[int]
    bounds: list[tuple[int, int]]


def class_groups(predicted: Tensor) -> tuple[Tensor, list[int], list[tuple[int, int]]]:
    """predicted (N,) int64 → (order (N,) int64 sorting the rows by class (stable), the
    classes present, and each one's [start, stop) range in that order)."""
    order = torch.argsort(predicted, stable=True)
    classes, counts = torch.unique_consecutive(predicted[order], return_counts=True)
    stops = counts.cumsum(0).tolist()
    return order, classes.tolist(), list(zip([0] + stops[:-1], stops))


def regroup(rows: ClassSortedRows, predicted_sorted: Tensor) -> ClassSortedRows:
    """``rows`` grouped again by ``predicted_sorted`` (N,) int64, a class per grouped row."""
    permutation, classes, bounds = class_groups(predicted_sorted)
    order = rows.order[permutation]
    inverse = torch.empty_like(order).index_put_((order,), torch.arange(order.numel(), device=order.device))
    return ClassSortedRows(order, inverse, rows.features.index_select(0, permutation),
                           predicted_sorted[permutation], classes, bounds)


def class_sorted_rows(h: Tensor, weight: Tensor, bias: Tensor) -> ClassSortedRows:
    """h (N, D) float32 → :class:`ClassSortedRows` grouped by argmax(W·h + b)."""
    predicted = torch.addmm(bias, h, weight.T).argmax(dim=1)
    identity = torch.arange(h.shape[0], device=h.device)
    return regroup(ClassSortedRows(identity, identity, h, predicted, [], []), predicted)


def grouped_head(x: Tensor, predicted: Tensor, weight_of: WeightOf, bias: Tensor) -> Tensor:
    """(M, K) logits of rows x (M, D) through their own class's ``weight_of(ĉ)`` + b:
    a stable sort by ĉ (predicted (M,) int64), then one GEMM per class present."""
    order, classes, bounds = class_groups(predicted)
    logits = torch.empty(x.shape[0], bias.shape[0], dtype=torch.float32, device=x.device)
    for c, (start, stop) in zip(classes, bounds):
        rows = order[start:stop]
        logits[rows] = torch.addmm(bias, x[rows], weight_of(c).to(x.device).T)
    return logits


def class_head(h: Tensor, transform: Transform, weight_of: WeightOf, weight: Tensor, bias: Tensor) -> Tensor:
    """(N, K) logits for a one-off score: x = transform(h), ĉ = argmax(W·x + b), then
    :func:`grouped_head`."""
    x = transform(h)
    return grouped_head(x, torch.addmm(bias, x, weight.T).argmax(dim=1), weight_of, bias)


def class_block_head(rows: ClassSortedRows, transform: Transform, weight_of: WeightOf, weight: Tensor,
                     bias: Tensor) -> tuple[Tensor, ClassSortedRows]:
    """(logits (N, K) in the tensor's own row order, the grouping for the next call): the
    same numbers as :func:`class_head`, from rows already grouped by a nearby ĉ.

    Each class block runs in row chunks (``chunks.ROW_CHUNK``) with no gather; for small
    heads one GEMM against [W_eff^c; W] (2K, D) gives both the block class's head and the
    full head (ĉ), written in place into one (N, 2K) buffer. Rows whose ĉ differs from their
    block's class are recomputed afterwards by :func:`grouped_head`, all together."""
    n, k = rows.features.shape[0], weight.shape[0]
    device = rows.features.device
    fused = 2 * k * weight.shape[1] <= FUSED_HEAD_ELEMENTS
    heads = torch.empty(n, 2 * k if fused else k, dtype=torch.float32, device=device)  # [class head | full head]
    predicted = torch.empty(n, dtype=torch.int64, device=device)
    if fused:
        stacked = torch.cat([weight, weight]).T  # (D, 2K); the first K columns are W_eff^c, set per class
        stacked_bias = torch.cat([bias, bias])
    for c, (start, stop) in zip(rows.classes, rows.bounds):  # contiguous class blocks
        weight_c = weight_of(c).to(device)
        if fused:
            stacked[:, :k].copy_(weight_c.T)
        for first, last in chunks.row_ranges(stop - start):
            block = slice(start + first, start + last)
            x = transform(rows.features[block])
            if fused:
                torch.addmm(stacked_bias, x, stacked, out=heads[block])
            else:
                torch.addmm(bias, x, weight_c.T, out=heads[block])
                torch.argmax(torch.addmm(bias, x, weight.T), dim=1, out=predicted[block])
    out = heads[:, :k]
    if fused:
        torch.argmax(heads[:, k:], dim=1, out=predicted)
    moved = (predicted != rows.group_class).nonzero().squeeze(1)  # the transform changed ĉ
    if moved.numel():  # all of them together: one GEMM per class they moved to
        out[moved] = grouped_head(transform(rows.features[moved]), predicted[moved], weight_of, bias)
    logits = out.index_select(0, rows.inverse)  # back to the tensor's own row order
    regrouped = regroup(rows, predicted) if moved.numel() > REGROUP_FRACTION * n else rows
    return logits, regrouped


def column_subset_head(h: Tensor, transform: Transform, weight: Tensor, bias: Tensor, plan: ColumnPlan,
                       weights_of: WeightsOf) -> Tensor:
    """(N, K) float32 logits ``W_eff^ĉ·x + b`` of every row x = transform(h), ĉ = argmax(W·x + b).

    ``transform`` must be element-wise (it commutes with picking columns). The full head's
    logits F = W·x + b are computed in row chunks into the output (no (N, D) temporary).
    Rows are then sorted by ĉ and taken in groups of consecutive classes, each group's rows,
    F rows and masked weights (``weights_of``) within ``chunks.ELEMENT_BUDGET`` elements: a
    few large gathers and element-wise passes per group, then per class one column gather
    and one GEMM over its ``plan`` columns only: x[:, S]·W_eff[:, S]ᵀ + b, or
    F − x[:, P]·(W − W_eff)[:, P]ᵀ. The work beyond F is N·min(|S|, |P|)·K, not N·D·K, and no
    (K, D) weight is built per class. h (N, D) any float dtype (cast per group); W (K, D),
    b (K,) float32 on h's device; the plan on the head's device.
    """
    n, d = h.shape
    k = weight.shape[0]
    logits = stages.chunked_head_logits(h, weight, bias, transform)
    order, classes, bounds = class_groups(logits.argmax(dim=1))
    # groups of a few MB: their element-wise passes stay in cache and their buffers are reused
    budget = max(min(chunks.ELEMENT_BUDGET, GROUP_ELEMENTS), d, k)
    pieces = [(c, first + start, first + last) for c, (first, stop) in zip(classes, bounds)
              for start, last in chunks.row_ranges(stop - first, chunks.rows_within_budget(max(d, k)))]
    group: list[tuple[int, int, int]] = []
    group_rows = weight_rows = 0
    for c, start, stop in pieces:
        new_class = not group or group[-1][0] != c
        more_weights = plan.columns[c].numel() if new_class else 0
        if group and ((group_rows + stop - start) * max(d, k) > budget or (weight_rows + more_weights) * k > budget):
            _score_group(h, transform, bias, plan, weights_of, logits, order, group)
            group, group_rows, weight_rows, more_weights = [], 0, 0, plan.columns[c].numel()
        group.append((c, start, stop))
        group_rows += stop - start
        weight_rows += more_weights
    if group:
        _score_group(h, transform, bias, plan, weights_of, logits, order, group)
    return logits


def _score_group(h: Tensor, transform: Transform, bias: Tensor, plan: ColumnPlan, weights_of: WeightsOf,
                 logits: Tensor, order: Tensor, group: list[tuple[int, int, int]]) -> None:
    """:func:`column_subset_head` for one group of (class, start, stop) pieces of ``order``,
    consecutive and each within the budget: logits rewritten in place for their rows."""
    first, last = group[0][1], group[-1][2]
    rows = order[first:last]
    x = h.index_select(0, rows)  # full rows (contiguous copies); columns and the transform per class
    corrected = any(plan.correction[c] for c, _, _ in group)
    # F where some class is corrected from it; otherwise every row is overwritten
    out = logits.index_select(0, rows) if corrected else torch.empty_like(logits[:rows.numel()])
    classes = list(dict.fromkeys(c for c, _, _ in group))
    weights = weights_of(classes)
    offsets, at = {}, 0
    for c in classes:
        offsets[c] = at
        at += plan.columns[c].numel()
    for c, start, stop in group:
        columns = plan.columns[c].to(h.device)
        weight_t = weights[offsets[c]:offsets[c] + columns.numel()].to(h.device)
        block = slice(start - first, stop - first)
        xs = transform(x[block].index_select(1, columns).float())
        if plan.correction[c]:
            out[block].addmm_(xs, weight_t, alpha=-1.0)
        else:
            torch.addmm(bias, xs, weight_t, out=out[block])
    logits.index_copy_(0, rows, out)
