"""KNN: deep nearest neighbours on normalised features (Sun, Ming, Zhu & Li, ICML 2022), methods.md §2.2.

S(x) = −‖ĥ − b̂_(k)‖² = −(2 − 2·cos_k), the negated squared L2 distance from the normalised
feature ĥ = h/‖h‖ to its k-th nearest normalised training feature (faiss ``IndexFlatL2``
returns squared distances; the official code takes −D[:, k−1]). For unit vectors this is
the k-th largest cosine similarity: one GEMM and a top-k.

The top-k_max similarities (k_max = min(1000, bank size)) are computed once per feature
tensor and memoised, so moving the k slider is a lookup.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.scorers import register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, Param, PerTensorMemo, Scorer

log = logging.getLogger(__name__)

K_MAX = 1000
# Rows per GEMM chunk: bounds the (chunk, M) similarity block to ~64 MB of float32.
_CHUNK_ELEMENTS = 1 << 24


def top_cosine_similarities(features: Tensor, bank: Tensor, k: int) -> Tensor:
    """features (N, D), bank (M, D) L2-normalised → (N, k) float32, the k largest cosine
    similarities of each normalised feature to the bank, descending. Chunked over N."""
    normalised = F.normalize(features.float(), dim=1)
    bank = bank.to(device=normalised.device, dtype=torch.float32)
    rows = max(1, _CHUNK_ELEMENTS // max(1, bank.shape[0]))
    out = normalised.new_empty(normalised.shape[0], k)
    for start in range(0, normalised.shape[0], rows):  # chunks of rows, not samples: a few GEMMs
        out[start:start + rows] = (normalised[start:start + rows] @ bank.T).topk(k, dim=1).values
    return out


@register_scorer("knn")
class KNNScorer(Scorer):
    """S(x) = −(2 − 2·cos_k(x)), cos_k = k-th largest cosine similarity to the training bank."""

    name = "knn"
    title = "KNN"
    paper = "Sun, Ming, Zhu & Li, Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022"
    needs = frozenset({"penultimate"})
    stats = frozenset({"knn_bank"})
    params = (
        Param("k", 50, "int", low=1, high=K_MAX, step=1, label="k",
              help="Which nearest training neighbour's distance scores a sample (50 on CIFAR, 1000 on ImageNet)."),
    )

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._similarities = PerTensorMemo()  # features → (N, k_max) similarities

    def fit(self, ctx: FitContext) -> "KNNScorer":
        super().fit(ctx)
        self._bank = F.normalize(ctx.stats["knn_bank"].float(), dim=1)  # already unit; cheap insurance
        self._k_max = min(K_MAX, int(self._bank.shape[0]))
        self._similarities.clear()
        return self

    def similarities(self, features: Tensor) -> Tensor:
        """(N, k_max) descending cosine similarities of ``features`` (N, D), memoised per tensor."""
        _ = self.fitted
        return self._similarities.get(features, lambda f: top_cosine_similarities(f, self._bank, self._k_max))

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32 in [−4, 0]."""
        hp = self.resolve(hparams)
        similarities = self.similarities(feats.penultimate)
        k = int(hp["k"])
        if k > self._k_max:
            log.warning("knn: k=%d exceeds the %d stored neighbours; using k=%d", k, self._k_max, self._k_max)
            k = self._k_max
        return -(2.0 - 2.0 * similarities[:, k - 1])
