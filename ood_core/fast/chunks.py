"""Row chunking shared by the fast paths.

Temporaries of a few MB are reused by the allocator, where whole-tensor ones (tens of MB at
CIFAR scale) are fresh pages faulted in on every call. Read ``ROW_CHUNK`` / ``ELEMENT_BUDGET``
at call time (``chunks.ROW_CHUNK``), so a test can force tiny chunks and cross every boundary.
"""
from __future__ import annotations

from typing import Iterator

ROW_CHUNK = 4096  # rows per step of a row-wise fast path
ELEMENT_BUDGET = 1 << 24  # elements of the largest temporary a chunked GEMM may build (64 MB float32)


def row_ranges(n: int, rows: int | None = None) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges covering 0..n in steps of ``rows`` (default ``ROW_CHUNK``)."""
    step = max(1, int(rows if rows is not None else ROW_CHUNK))
    for start in range(0, n, step):
        yield start, min(start + step, n)


def rows_within_budget(elements_per_row: int) -> int:
    """Rows per chunk so that a (rows, elements_per_row) temporary stays within ``ELEMENT_BUDGET``
    (and within ``ROW_CHUNK``, so tests forcing small chunks reach this path too)."""
    return max(1, min(ROW_CHUNK, ELEMENT_BUDGET // max(1, elements_per_row)))
