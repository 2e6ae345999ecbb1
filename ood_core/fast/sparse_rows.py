"""Each row's top-k entries as sparse (CSR) products with Wᵀ (ASH's fast path).

For h (N, D) and a head W (K, D), the products here compute, per row n, over the set I_n of
its k largest entries (ties at the k-th value to the lower column index, the order of a
stable descending sort):

    head[n]     = Σ_{j ∈ I_n} x_nj · W[:, j]     x = h, or 1 with ``ones=True``   (N, K)
    total[n]    = Σ_j h_nj                        all entries                      (N, 1)
    kept_sum[n] = Σ_{j ∈ I_n} h_nj                                                 (N, 1)

reading N·min(k, D − k) entries instead of a dense N×D matrix. Two ways to get there:

* :func:`top_k_sums` (a tensor scored once): a top-(k + 1) per row, no sort, in row chunks
  (:mod:`ood_core.fast.chunks`);
* :func:`sort_rows` once per tensor, then :func:`sorted_top_k_sums` for any k: the first k
  sorted places, or — when k > D − k — everything minus the last D − k places.

All tensors float32 on the features' device; columns int64 (int32 inside the CSR product).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from ood_core.fast import chunks


class TopKSums(NamedTuple):
    """head (N, K) Σ_{j ∈ I_n} x_nj·W[:, j]; total (N, 1) Σ_j h_nj and kept_sum (N, 1)
    Σ_{j ∈ I_n} h_nj, each None unless asked for (``with_total`` / ``with_kept_sum``)."""

    head: Tensor
    total: Tensor | None
    kept_sum: Tensor | None


def top_k_mask(features: Tensor, k: int) -> Tensor:
    """(N, D) bool: each row's k largest entries, ties at the k-th value to the lower indices,
    without a full sort (one ``topk`` for the k-th value, then a running count of the entries
    tied with it on the rows that have more candidates than places)."""
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
    """Each row's top k (the set of :func:`top_k_mask`) as (columns (N, m) int64, values
    (N, m), kept (N, m) bool), m = k + 1, exactly k kept per row: the extra entry is a column
    outside the set. One ``topk`` of k + 1; rows whose (k + 1)-th value equals the k-th (ties
    across the boundary) take :func:`top_k_mask`'s rule."""
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


def csr_times_weight(columns: Tensor, values: Tensor, d: int, weight: Tensor) -> Tensor:
    """(N, K) Σ_j values[n, j]·W[:, columns[n, j]]: a CSR matrix with m entries per row
    (columns (N, m) int, values (N, m) float32, width ``d``) times Wᵀ (W (K, D))."""
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


def top_k_sums(features: Tensor, k: int, weight: Tensor, ones: bool = False, with_total: bool = False,
               with_kept_sum: bool = False) -> TopKSums:
    """:class:`TopKSums` of features (N, D) for a one-off score: per row chunk, a top-(k + 1)
    (:func:`top_k_entries`) and a CSR product with Wᵀ (W (K, D) float32)."""
    n, d = features.shape
    head = torch.empty(n, weight.shape[0], dtype=torch.float32, device=features.device)
    total = features.new_empty(n, 1, dtype=torch.float32) if with_total else None
    kept_sum = features.new_empty(n, 1, dtype=torch.float32) if with_kept_sum else None
    zero = torch.zeros((), dtype=torch.float32, device=features.device)
    for start, stop in chunks.row_ranges(n):
        h = features[start:stop].float()
        columns, values, kept = top_k_entries(h, min(k, d))
        kept_values = torch.where(kept, values, zero) if with_kept_sum or not ones else None
        head[start:stop] = csr_times_weight(columns, kept.float() if ones else kept_values, d, weight)
        if with_total:
            total[start:stop] = h.sum(dim=1, keepdim=True)
        if with_kept_sum:
            kept_sum[start:stop] = kept_values.sum(dim=1, keepdim=True)
    return TopKSums(head, total, kept_sum)


class SortedRows(NamedTuple):
    """A feature tensor's hyperparameter-free sorted form (memoised per tensor).

    values (N, D) float32 each row sorted descending (stable: ties keep the lower column
    first); columns (N, D) int32 their original column; total (N, 1) the row sums;
    product (N, K) h·Wᵀ without bias."""

    values: Tensor
    columns: Tensor
    total: Tensor
    product: Tensor


def sort_rows(features: Tensor, weight: Tensor) -> SortedRows:
    """features (N, D), W (K, D) float32 → :class:`SortedRows` (one stable sort per row)."""
    h = features.float()
    values, order = h.sort(dim=1, descending=True, stable=True)
    return SortedRows(values, order.to(torch.int32), h.sum(dim=1, keepdim=True), h @ weight.T)


def _places_times_weight(rows: SortedRows, start: int, stop: int, weight: Tensor, ones: bool) -> Tensor:
    """(N, K) Σ_{start ≤ r < stop} x_r·W[:, col_r] over each row's sorted places r."""
    values = rows.values[:, start:stop]
    return csr_times_weight(rows.columns[:, start:stop], torch.ones_like(values) if ones else values,
                            rows.values.shape[1], weight)


def sorted_top_k_sums(rows: SortedRows, k: int, weight: Tensor, ones: bool = False, with_total: bool = False,
                      with_kept_sum: bool = False) -> TopKSums:
    """:class:`TopKSums` from the sorted rows: the first k places when they are the fewer,
    else everything (h·Wᵀ, or ΣW with ``ones``) minus the last D − k places."""
    d = rows.values.shape[1]
    k = min(k, d)
    if k <= d - k:
        head = _places_times_weight(rows, 0, k, weight, ones)
        kept_sum = rows.values[:, :k].sum(dim=1, keepdim=True) if with_kept_sum else None
    else:
        everything = weight.sum(dim=1).unsqueeze(0) if ones else rows.product
        head = everything - _places_times_weight(rows, k, d, weight, ones)
        kept_sum = rows.total - rows.values[:, k:].sum(dim=1, keepdim=True) if with_kept_sum else None
    return TopKSums(head, rows.total if with_total else None, kept_sum)
