"""ASH's one-off path (ood_core.fast.sparse_rows.top_k_sums): a top-(k + 1) per row and a CSR
product give the top-k sums of the definition, across row chunks and with ties at the k-th value."""
from __future__ import annotations

import pytest
import torch

from ood_core.fast import chunks, sparse_rows
from ood_core.scorers.ash import ash_reference_features


def _features(seed: int, n: int = 23, d: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, d, generator=gen)).relu()
    h[::3] = torch.round(h[::3] * 2) / 2  # many ties, some at the k-th value
    return h


@pytest.mark.parametrize("k", [1, 4, 20, 39, 40])
def test_top_k_sums_equal_the_definition(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "ROW_CHUNK", 5)
    h = _features(k)
    weight = torch.randn(7, h.shape[1], generator=torch.Generator().manual_seed(1))
    percentile = 100.0 * (h.shape[1] - k) / h.shape[1]
    pruned = ash_reference_features(h, percentile, "p")  # h on the top k, 0 elsewhere
    order = h.argsort(dim=1, descending=True, stable=True)  # the reference's rule: ties to the lower index
    mask = torch.zeros_like(h, dtype=torch.bool).scatter_(1, order[:, :k], True)
    sums = sparse_rows.top_k_sums(h, k, weight, with_total=True, with_kept_sum=True)
    torch.testing.assert_close(sums.head, pruned @ weight.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sums.total, h.sum(dim=1, keepdim=True))
    torch.testing.assert_close(sums.kept_sum, pruned.sum(dim=1, keepdim=True), rtol=1e-5, atol=1e-5)
    ones = sparse_rows.top_k_sums(h, k, weight, ones=True)  # ASH-B: the kept set itself matters
    torch.testing.assert_close(ones.head, mask.float() @ weight.T, rtol=1e-5, atol=1e-5)
