"""KNN: deep nearest neighbours on normalised features (Sun, Ming, Zhu & Li, ICML 2022), docs/methods.md §2.2.

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

from ood_core.fast.similarity import top_cosine_similarities
from ood_core.memo import Memo
from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer
from ood_core.statistics import TrainingData, register_statistic

log = logging.getLogger(__name__)

K_MAX = 1000


def knn_reference(h: Tensor, bank: Tensor, k: int) -> Tensor:
    """h (N, D), normalised bank (M, D) → (N,) S = −‖ĥ − b̂_(k)‖², ĥ = h/‖h‖, b̂_(k) the k-th nearest."""
    distances = torch.cdist(F.normalize(h.float(), dim=1), bank.float()).square()
    return -distances.topk(k, dim=1, largest=False).values[:, k - 1]


@SCORERS.register("knn")
class KNNScorer(Scorer):
    """S(x) = −(2 − 2·cos_k(x)), cos_k = k-th largest cosine similarity to the training bank."""

    name = "knn"
    title = "KNN"
    summary = "Cosine distance to the k-th nearest training feature: far from every training image is OOD."
    paper = "Sun, Ming, Zhu & Li, Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022"
    needs = frozenset({"penultimate"})
    stats = frozenset({"knn_bank"})
    params = (
        Param("k", 50, "int", low=1, high=K_MAX, step=1, label="k",
              help="Which nearest training neighbour's distance scores a sample (50 on CIFAR, 1000 on ImageNet).",
              search=(1, 5, 10, 20, 50, 100, 200, 500, 1000)),
    )

    fast_path = "one GEMM + top-k_max per feature tensor, memoised (a k move is a lookup): −(2 − 2·cos_k)"

    def __init__(self, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        self._similarities = Memo()  # features → (N, k_max) similarities

    def fit(self, ctx: FitContext) -> "KNNScorer":
        super().fit(ctx)
        self._bank = F.normalize(ctx.stats["knn_bank"].float(), dim=1)  # already unit; cheap insurance
        self._k_max = min(K_MAX, int(self._bank.shape[0]))
        return self

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32, by the distance itself."""
        k = min(int(self.resolve(hparams)["k"]), self._k_max_fitted())
        return knn_reference(feats.penultimate, self._bank.to(feats.penultimate.device), k)

    def _k_max_fitted(self) -> int:
        _ = self.fitted
        return self._k_max

    def similarities(self, features: Tensor) -> Tensor:
        """(N, k_max) descending cosine similarities of ``features`` (N, D), memoised per tensor."""
        _ = self.fitted
        return self._similarities.get("top", lambda: top_cosine_similarities(features, self._bank, self._k_max),
                                      tensor=features)

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32 in [−4, 0]."""
        hp = self.resolve(hparams)
        similarities = self.similarities(feats.penultimate)
        k = int(hp["k"])
        if k > self._k_max:
            log.warning("knn: k=%d exceeds the %d stored neighbours; using k=%d", k, self._k_max, self._k_max)
            k = self._k_max
        return -(2.0 - 2.0 * similarities[:, k - 1])


# -- the training statistic only this method reads (ood_core.statistics) ---------------------------


@register_statistic("knn_bank", version=1, shape="(M, D)")
def _knn_bank(data: TrainingData) -> Tensor:
    """The L2-normalised training features (the neighbour bank)."""
    return F.normalize(data.h, dim=1)
