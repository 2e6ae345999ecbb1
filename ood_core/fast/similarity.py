"""Top-k cosine similarities against a bank, in row chunks (KNN's fast path)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.fast import chunks


def top_cosine_similarities(features: Tensor, bank: Tensor, k: int) -> Tensor:
    """features (N, D), bank (M, D) L2-normalised → (N, k) float32, the k largest cosine
    similarities of each normalised feature to the bank, descending; chunks of rows bound
    the (rows, M) similarity block."""
    normalised = F.normalize(features.float(), dim=1)
    bank = bank.to(device=normalised.device, dtype=torch.float32)
    out = normalised.new_empty(normalised.shape[0], k)
    for start, stop in chunks.row_ranges(normalised.shape[0], chunks.rows_within_budget(bank.shape[0])):
        out[start:stop] = (normalised[start:stop] @ bank.T).topk(k, dim=1).values
    return out
