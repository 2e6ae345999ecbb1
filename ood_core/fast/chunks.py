"""Row chunking shared by the fast paths.

Temporaries of a few MB are reused by the allocator, where whole-tensor ones (tens of MB at
CIFAR scale) are fresh pages faulted in on every call. Read ``ROW_CHUNK`` / ``ELEMENT_BUDGET``
at call time (``chunks.ROW_CHUNK``), so a test can force tiny chunks and cross every boundary.
"""
from __future__ import annotations

import os
from typing import Iterator

ROW_CHUNK = 4096  # rows per step of a row-wise fast path


def _declared_budget() -> int:
    """Elements of float32 in ``$OOD_LENS_CHUNK_MB`` megabytes (default 64 MB: a (4096, 4096)
    block; on a large GPU, e.g. ``OOD_LENS_CHUNK_MB=1024`` lets KNN's similarity block and the
    chunked GEMMs take 16× bigger steps)."""
    text = os.environ.get("OOD_LENS_CHUNK_MB", "64")
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes > 0:
        from ood_core.registry import OODLensError

        raise OODLensError(f"OOD_LENS_CHUNK_MB must be a positive number of megabytes, got {text!r}")
    return max(1, int(megabytes * (1 << 20)) // 4)


# Elements of the largest temporary a chunked path may build: the declared memory budget.
ELEMENT_BUDGET = _declared_budget()


def row_ranges(n: int, rows: int | None = None) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges covering 0..n in steps of ``rows`` (default ``ROW_CHUNK``)."""
    step = max(1, int(rows if rows is not None else ROW_CHUNK))
    for start in range(0, n, step):
        yield start, min(start + step, n)


def rows_within_budget(elements_per_row: int) -> int:
    """Rows per chunk so that a (rows, elements_per_row) temporary stays within ``ELEMENT_BUDGET``
    (and within ``ROW_CHUNK``, so tests forcing small chunks reach this path too)."""
    return max(1, min(ROW_CHUNK, ELEMENT_BUDGET // max(1, elements_per_row)))
