"""Exact inner-product search with faiss (the similarity-search library the KNN paper used).

The search is faiss's exact flat inner-product search, the one ``IndexFlatIP.search`` runs
(``knn_inner_product`` on the CPU, the brute-force ``bfKnn`` on a GPU), called directly on the
bank's memory: an ``IndexFlatIP`` would first copy the whole bank into the index (10.5 GB more
for ImageNet's 1.28M × 2,048 rows). On unit vectors the inner product is the cosine similarity.

* CPU: ``faiss.knn(..., metric=METRIC_INNER_PRODUCT)`` on zero-copy NumPy views of the
  (contiguous, float32, CPU) query chunk and bank; results come back as CPU tensors.
* CUDA: ``faiss.knn_gpu`` on the torch tensors themselves (``faiss.contrib.torch_utils``), on
  torch's current stream: the features, the bank and the results never leave the GPU. Only a
  faiss build with GPU support has it (``pip install faiss-gpu-cu12``; the ``faiss-cpu``
  wheel has none), so :func:`gpu_available` says whether it can run.

faiss is optional: :func:`available` is False when it is not importable (``pip install
faiss-cpu``) and ``ood_core.fast.similarity`` then searches with torch, saying so once.
"""
from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.fast import chunks

log = logging.getLogger(__name__)

# faiss's GPU k-selection handles k ≤ 2,048 (GPU_MAX_SELECTION_K); above it, torch searches.
GPU_MAX_K = 2048
# Scratch memory of the GPU resources: faiss reserves ~18 % of the GPU by default, which would
# compete with torch's caching allocator; its brute-force search tiles itself to what it gets.
GPU_TEMP_BYTES = 512 << 20


@functools.cache
def _import() -> tuple[ModuleType | None, str]:
    """(the faiss module or None, why not): imported once, on first use (it loads OpenMP and BLAS)."""
    try:
        return importlib.import_module("faiss"), ""
    except Exception as error:  # ImportError, or a broken native library (OSError)
        return None, f"{type(error).__name__}: {error}"


def available() -> bool:
    """Whether faiss is importable (its CPU search then works)."""
    return _import()[0] is not None


def unavailable_reason() -> str:
    """Why faiss is not importable ("" when it is)."""
    return _import()[1]


def version() -> str | None:
    """faiss's version string, or None without faiss."""
    faiss = _import()[0]
    return None if faiss is None else str(getattr(faiss, "__version__", "?"))


@functools.cache
def gpu_available() -> bool:
    """Whether faiss has a GPU build, sees a GPU, and torch has CUDA (the GPU search can run)."""
    faiss = _import()[0]
    if faiss is None or not hasattr(faiss, "StandardGpuResources") or not torch.cuda.is_available():
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # a GPU build without a usable driver
        return False


@functools.cache
def _gpu_resources(device_index: int) -> Any:
    """One ``StandardGpuResources`` per GPU and process (it owns cuBLAS handles and scratch memory)."""
    faiss = _import()[0]
    importlib.import_module("faiss.contrib.torch_utils")  # knn_gpu then takes torch tensors
    resources = faiss.StandardGpuResources()
    resources.setTempMemory(GPU_TEMP_BYTES)
    log.info("faiss: GPU resources on cuda:%d (%d MB scratch)", device_index, GPU_TEMP_BYTES >> 20)
    return resources


def top_inner_products(features: Tensor, bank: Tensor, k: int, with_indices: bool = False
                       ) -> tuple[Tensor, Tensor | None]:
    """features (N, D), bank (M, D) float32 L2-normalised, contiguous, on the features' device →
    (values (N, k) float32 descending cosine similarities of each normalised feature, indices
    (N, k) int64 bank rows or None), by faiss's exact inner-product search.

    Query rows are normalised and searched in chunks of ``chunks.ROW_CHUNK`` (faiss blocks its
    own work by 4,096 queries too), so no normalised copy of all N rows is made.
    """
    faiss = _import()[0]
    if faiss is None:
        raise RuntimeError(f"faiss is not importable ({unavailable_reason()})")
    n, m = features.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k={k} must be in 1..{m} (the bank's rows)")
    if bank.dtype != torch.float32 or not bank.is_contiguous() or bank.device != features.device:
        raise ValueError("the bank must be a contiguous float32 tensor on the features' device")
    on_gpu = features.device.type == "cuda"
    if on_gpu and not gpu_available():
        raise RuntimeError("faiss has no GPU build here (faiss-cpu): search CUDA features with torch")
    values = torch.empty(n, k, dtype=torch.float32, device=features.device)
    indices = torch.empty(n, k, dtype=torch.int64, device=features.device) if with_indices else None
    bank_rows = None if on_gpu else bank.detach().numpy()  # a view: no copy of the bank
    for start, stop in chunks.row_ranges(n):
        query = F.normalize(features[start:stop].detach().float(), dim=1).contiguous()
        if on_gpu:
            index = features.device.index if features.device.index is not None else torch.cuda.current_device()
            with torch.cuda.device(index):  # torch_utils runs faiss on the *current* device's stream
                found, rows = faiss.knn_gpu(_gpu_resources(index), query, bank, k,
                                            metric=faiss.METRIC_INNER_PRODUCT, device=index)
        else:
            found_np, rows_np = faiss.knn(query.numpy(), bank_rows, k, metric=faiss.METRIC_INNER_PRODUCT)
            found, rows = torch.from_numpy(found_np), torch.from_numpy(rows_np)
        values[start:stop] = found
        if indices is not None:
            indices[start:stop] = rows
    return values, indices
