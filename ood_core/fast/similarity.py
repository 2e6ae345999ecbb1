"""Top-k cosine similarities against a bank (KNN's fast path), by torch or by faiss.

Two backends give the same numbers (float32 summation order aside; the same neighbours except
between exactly tied similarities):

* ``torch``: per chunk of query rows, one GEMM against the bank and a top-k, on the features'
  device (CUDA included). Chunks keep the (rows, bank rows) similarity block within
  ``chunks.ELEMENT_BUDGET``; a bank so large that fewer than ``MIN_QUERY_ROWS`` rows would fit
  is tiled as well (a short GEMM re-reads the whole bank per chunk), each tile's top-k merged
  into the running top-k by a second top-k.
* ``faiss``: faiss's exact inner-product search (:mod:`ood_core.fast.faiss_search`, the search
  of ``IndexFlatIP``), on the CPU, or on the GPU when faiss has a GPU build.

``backend="auto"`` (:func:`choose_backend`): on the CPU, faiss when it is importable, else
torch; on CUDA, torch (always present, and nothing was measured on a GPU here;
``backend="faiss"`` opts in to faiss's GPU search where a faiss GPU build exists). The CPU rule
rests on ``bench/bench_knn.py`` (D = 2,048 ImageNet-like features, 2 shared cores, faiss 1.15.1,
torch 2.14.1; ratios of medians of interleaved calls): faiss / torch 0.68–0.89 against the 1 %
ImageNet bank (12,811 rows; k = 10, 100, 1000), 0.21 for all 90,000 queries against it (one
round), and 0.81–1.16 against 128,117 and 320,292 rows at k = 1000 (equal within the machine's
noise), so faiss is never clearly slower and is faster at the paper's 1 % setting. A request that cannot be served (faiss not
importable, faiss without a GPU build for CUDA features) falls back to torch with a one-time
warning naming why. Nothing ever copies features or the bank between devices: the bank must
already be on the features' device (the KNN scorer moves it there once).
"""
from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.fast import chunks, faiss_search
from ood_core.registry import unknown_name

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "faiss")
# Below this many query rows per chunk the torch backend tiles the bank instead (each chunk's
# GEMM reads the whole bank: 13-row chunks against 1.28M rows would be memory-bound).
MIN_QUERY_ROWS = 512
# What ``auto`` rests on (bench/bench_knn.py, see the module docstring): printed by the bench.
FAISS_MEASURED = ("faiss when importable: faiss/torch 0.68-0.89 at 12,811 bank rows (k = 10, 100, 1000), "
                  "0.81-1.16 (within noise) at 128,117-320,292 rows, k = 1000; 2 shared cores, 2026-12-02")


@functools.cache
def _note_once(message: str) -> None:
    """Log ``message`` as a warning the first time only (a fallback is said once per process)."""
    log.warning(message)


def choose_backend(backend: str, device: torch.device | str, bank_rows: int, k: int) -> str:
    """The backend that runs (``"torch"`` or ``"faiss"``) for ``backend`` ∈ :data:`BACKENDS` on
    ``device`` with a bank of ``bank_rows`` rows and top-``k``; an unknown name raises a one-line
    error, a request that cannot run here falls back to torch with a one-time warning."""
    if backend not in BACKENDS:
        raise unknown_name("KNN search backend", backend, BACKENDS)
    device = torch.device(device)
    if backend == "torch" or device.type not in ("cpu", "cuda"):
        return "torch"
    if not faiss_search.available():
        if backend == "faiss":
            _note_once(f"knn: faiss is not importable ({faiss_search.unavailable_reason()}); searching with torch "
                       "(pip install faiss-cpu)")
        return "torch"
    if device.type == "cuda":
        if backend == "auto":
            return "torch"  # unmeasured on a GPU: torch's GEMM + top-k unless faiss is asked for
        if not faiss_search.gpu_available() or k > faiss_search.GPU_MAX_K:
            _note_once("knn: faiss cannot search CUDA features here (no faiss GPU build, or k > "
                       f"{faiss_search.GPU_MAX_K}); searching with torch on the GPU")
            return "torch"
        return "faiss"
    return "faiss"  # CPU: never clearly slower, faster at the 1 % bank (FAISS_MEASURED)


def top_cosine_similarities(features: Tensor, bank: Tensor, k: int, backend: str = "auto") -> Tensor:
    """features (N, D), bank (M, D) L2-normalised float32 on the features' device → (N, k) float32,
    the k largest cosine similarities of each normalised feature to the bank, descending."""
    return top_cosine_neighbours(features, bank, k, backend, with_indices=False)[0]


def top_cosine_neighbours(features: Tensor, bank: Tensor, k: int, backend: str = "auto",
                          with_indices: bool = True) -> tuple[Tensor, Tensor | None]:
    """features (N, D), bank (M, D) L2-normalised float32 on the features' device → (values (N, k)
    float32 descending cosine similarities, indices (N, k) int64 bank rows, or None without
    ``with_indices``), by the backend :func:`choose_backend` picks; 1 ≤ k ≤ M."""
    if bank.device != features.device:
        raise ValueError(f"the bank is on {bank.device}, the features on {features.device}: move the bank once, "
                         "not on every search")
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k={k} must be in 1..{bank.shape[0]} (the bank's rows)")
    bank = bank.float().contiguous()  # no copy for the float32 contiguous bank the KNN scorer keeps
    if choose_backend(backend, features.device, bank.shape[0], k) == "faiss":
        return faiss_search.top_inner_products(features, bank, k, with_indices)
    return torch_top_cosine(features, bank, k, with_indices)


def tiles(n: int, m: int) -> tuple[int, int]:
    """(query rows, bank rows) per step of the torch search of n queries against m bank rows:
    the whole bank when at least ``MIN_QUERY_ROWS`` query rows (or all n) fit the element
    budget with it, else ``MIN_QUERY_ROWS``-row chunks against bank tiles within the budget."""
    rows = chunks.rows_within_budget(m)
    if rows >= min(n, chunks.ROW_CHUNK, MIN_QUERY_ROWS):
        return rows, m
    rows = min(chunks.ROW_CHUNK, MIN_QUERY_ROWS)
    return rows, max(1, min(m, chunks.ELEMENT_BUDGET // rows))


def torch_top_cosine(features: Tensor, bank: Tensor, k: int, with_indices: bool = False
                     ) -> tuple[Tensor, Tensor | None]:
    """The torch backend: features (N, D), bank (M, D) float32 unit rows on one device →
    (values (N, k) descending, indices (N, k) int64 or None). Per tile: GEMM, unsorted top-k
    (cheaper than a sorted one at k = 1000), merged with the running top-k; one sort at the end."""
    n, m = features.shape[0], bank.shape[0]
    values = torch.empty(n, k, dtype=torch.float32, device=features.device)
    indices = torch.empty(n, k, dtype=torch.int64, device=features.device) if with_indices else None
    query_rows, bank_rows = tiles(n, m)
    for start, stop in chunks.row_ranges(n, query_rows):
        query = F.normalize(features[start:stop].float(), dim=1)
        best: Tensor | None = None
        best_rows: Tensor | None = None
        for first, last in chunks.row_ranges(m, bank_rows):
            top = (query @ bank[first:last].T).topk(min(k, last - first), dim=1, sorted=False)
            found, rows = top.values, (top.indices + first if with_indices else None)
            if best is not None:  # merge this tile's top-k into the running one
                found = torch.cat([best, found], dim=1)
                rows = torch.cat([best_rows, rows], dim=1) if with_indices else None
                top = found.topk(min(k, found.shape[1]), dim=1, sorted=False)
                found, rows = top.values, (rows.gather(1, top.indices) if with_indices else None)
            best, best_rows = found, rows
        ordered = best.sort(dim=1, descending=True)
        values[start:stop] = ordered.values
        if indices is not None:
            indices[start:stop] = best_rows.gather(1, ordered.indices)
    return values, indices
