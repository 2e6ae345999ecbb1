"""KNN: deep nearest neighbours on normalised features (Sun, Ming, Zhu & Li, ICML 2022), docs/methods.md §2.2.

S(x) = −‖ĥ − b̂_(k)‖² = −(2 − 2·cos_k), the negated squared L2 distance from the normalised
feature ĥ = h/‖h‖ to its k-th nearest normalised training feature (faiss ``IndexFlatL2``
returns squared distances; the official code takes −D[:, k−1]). For unit vectors this is
the k-th largest cosine similarity: a top-k inner-product search.

**The bank** (hyperparameter ``bank``): ``all`` — every cached training feature (``knn_bank``;
the paper's ImageNet default, α = 100 % with k = 1000) — or ``1%``, the paper's α = 1 % (k = 10
on ImageNet): ⌊M/100⌋ rows (at least 1) of a seed-0 random permutation of the M bank rows, kept
in bank order, as the official code's ``np.random.choice(M, int(M·α), replace=False)``
(12,811 of ImageNet's 1,281,167). The subset is drawn from the ``knn_bank`` statistic at
``fit``, so it needs no statistic of its own (no cache change): the same rows for the same
cache on every machine and device (torch's CPU ``randperm``; its stream is fixed per torch version).
A k above the chosen bank's rows is lowered to its size with a warning (on a CIFAR-sized bank
the 1 % subset holds few rows: the paper scales k with α).

**The search** (:mod:`ood_core.fast.similarity`): faiss's exact inner-product search when faiss
is importable, else (or with ``backend="torch"``) one GEMM + top-k per chunk of rows; on CUDA
features, torch on the GPU (faiss's GPU search with ``backend="faiss"`` and a faiss GPU build).
The top-k_max similarities (k_max = min(1000, bank rows)) are computed once per feature tensor
and bank, and memoised, so moving the k slider is a lookup.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.fast import similarity
from ood_core.memo import Memo
from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS, unknown_name
from ood_core.scorers.base import Scorer
from ood_core.statistics import TrainingData, register_statistic

log = logging.getLogger(__name__)

K_MAX = 1000
BANKS = ("all", "1%")
SUBSET_PERCENT = 1  # the paper's α = 1 %
SUBSET_SEED = 0
BACKEND_VARIABLE = "OOD_LENS_KNN_BACKEND"  # auto | torch | faiss (the search, not the numbers)
# A stored bank row whose norm is this far from 1 (and not 0) is renormalised at fit.
UNIT_TOLERANCE = 1e-5


def knn_reference(h: Tensor, bank: Tensor, k: int) -> Tensor:
    """h (N, D), normalised bank (M, D) → (N,) S = −‖ĥ − b̂_(k)‖², ĥ = h/‖h‖, b̂_(k) the k-th nearest."""
    distances = torch.cdist(F.normalize(h.float(), dim=1), bank.float()).square()
    return -distances.topk(k, dim=1, largest=False).values[:, k - 1]


def subset_rows(m: int, percent: int = SUBSET_PERCENT, seed: int = SUBSET_SEED) -> Tensor:
    """(⌊m·percent/100⌋ or 1,) int64 ascending row indices of the α = ``percent`` % bank: the
    first rows of a ``seed`` random permutation of 0..m−1 (CPU generator: the same on every device)."""
    count = max(1, m * percent // 100)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(m, generator=generator)[:count].sort().values


def unit_rows(bank: Tensor) -> Tensor:
    """``bank`` (M, D) as contiguous float32 unit rows: itself when it already is (the stored
    ``knn_bank`` is; copying all 1.28M ImageNet rows would cost 10.5 GB), else normalised."""
    bank = bank.float().contiguous()
    norms = torch.linalg.vector_norm(bank, dim=1)
    off = ((norms - 1.0).abs() > UNIT_TOLERANCE) & (norms > 0)
    return F.normalize(bank, dim=1) if bool(off.any()) else bank


@SCORERS.register("knn")
class KNNScorer(Scorer):
    """S(x) = −(2 − 2·cos_k(x)), cos_k = k-th largest cosine similarity to the training bank
    (all rows, or the paper's seeded 1 % subset)."""

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
        Param("bank", "all", "choice", choices=BANKS, label="bank (α)",
              help="The training features searched: all of them (the paper's α = 100 %, k = 1000 on ImageNet) "
                   "or a fixed random 1 % (α = 1 %, k = 10 on ImageNet; ⌊M/100⌋ rows, seed 0)."),
    )

    fast_path = ("top-k_max similarities per feature tensor and bank, by faiss's exact inner-product search or a "
                 "chunked GEMM + top-k, memoised (a k move is a lookup): −(2 − 2·cos_k)")

    def __init__(self, backend: str | None = None, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        backend = backend or os.environ.get(BACKEND_VARIABLE, "").strip() or "auto"
        if backend not in similarity.BACKENDS:
            raise unknown_name("KNN search backend", backend, similarity.BACKENDS)
        self.backend = backend
        self._similarities = Memo()  # (features, bank) → (N, k_max) similarities
        self._moved_lock = threading.Lock()

    def fit(self, ctx: FitContext) -> "KNNScorer":
        super().fit(ctx)
        stored = ctx.stats["knn_bank"]
        self._banks = {"all": unit_rows(stored),
                       "1%": unit_rows(stored.index_select(0, subset_rows(stored.shape[0]).to(stored.device)))}
        self._moved: dict[tuple[str, torch.device], Tensor] = {}  # a bank on another device, moved once
        return self

    def bank(self, bank: str = "all", device: torch.device | str | None = None) -> Tensor:
        """The fitted bank ``bank`` (M', D) float32 unit rows on ``device`` (default: where it was
        fitted). Features on another device get one copy, kept: never a transfer per search."""
        _ = self.fitted
        if bank not in self._banks:
            raise unknown_name("KNN bank", bank, BANKS)
        rows = self._banks[bank]
        device = rows.device if device is None else torch.device(device)
        if device.index is None and device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        if rows.device == device:
            return rows
        with self._moved_lock:
            if (bank, device) not in self._moved:
                log.info("knn: moving the %r bank (%d rows) from %s to %s once", bank, rows.shape[0], rows.device,
                         device)
                self._moved[(bank, device)] = rows.to(device)
            return self._moved[(bank, device)]

    def k_max(self, bank: str = "all") -> int:
        """How many neighbours are kept per row for ``bank``: min(1000, its rows)."""
        return min(K_MAX, int(self.bank(bank).shape[0]))

    def search_backend(self, device: torch.device | str, bank: str = "all") -> str:
        """``"torch"`` or ``"faiss"``: what searches ``bank`` for features on ``device``."""
        return similarity.choose_backend(self.backend, device, int(self.bank(bank).shape[0]), self.k_max(bank))

    def _k(self, hp: dict[str, Any]) -> int:
        k, k_max = int(hp["k"]), self.k_max(hp["bank"])
        if k > k_max:
            log.warning("knn: k=%d exceeds the %d rows of the %r bank; using k=%d", k, k_max, hp["bank"], k_max)
            return k_max
        return k

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32, by the distance itself."""
        hp = self.resolve(hparams)
        h = feats.penultimate
        return knn_reference(h, self.bank(hp["bank"], h.device), self._k(hp))

    def similarities(self, features: Tensor, bank: str = "all") -> Tensor:
        """(N, k_max) descending cosine similarities of ``features`` (N, D) to ``bank``, memoised
        per tensor and bank."""
        rows = self.bank(bank, features.device)
        return self._similarities.get(
            ("top", bank), lambda: similarity.top_cosine_similarities(features, rows, self.k_max(bank), self.backend),
            tensor=features)

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """feats.penultimate (N, D) → (N,) float32 in [−4, 0]."""
        hp = self.resolve(hparams)
        k = self._k(hp)
        return -(2.0 - 2.0 * self.similarities(feats.penultimate, hp["bank"])[:, k - 1])


# -- the training statistic only this method reads (ood_core.statistics) ---------------------------


@register_statistic("knn_bank", version=1, shape="(M, D)")
def _knn_bank(data: TrainingData) -> Tensor:
    """The L2-normalised training features (the neighbour bank)."""
    return data.gathered("knn.bank", lambda h, z, y, start: F.normalize(h, dim=1))
