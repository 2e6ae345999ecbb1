"""Shared fast paths of the scorers: the machinery that makes a slider move cheap.

Each method file states its formula plainly (``reference``); when it has a faster path, that
path is assembled from these named modules, and a registry-wide test holds every fast path
to its reference (``tests/unit/scorers/test_fast_equals_reference.py``):

* :mod:`ood_core.fast.chunks`      row chunking (one knob, ``ROW_CHUNK``, that tests force small);
* :mod:`ood_core.fast.similarity`  top-k cosine search against a bank (KNN): chunked GEMM + top-k, or
                                   :mod:`ood_core.fast.faiss_search` (faiss's exact inner-product search);
* :mod:`ood_core.fast.suffix`      suffix sums of squared projections (ViM's ``dim`` slider);
* :mod:`ood_core.fast.sparse_rows` per-row top-k / sorted rows as CSR products with Wᵀ (ASH);
* :mod:`ood_core.fast.class_groups` rows grouped by predicted class, one GEMM per class (LINe).
"""
