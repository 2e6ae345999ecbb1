"""Deterministic, stratified index splits and subsets.

Both functions work on a plain sequence of integer labels (``-1`` = unlabeled, which is
treated as one more group), return sorted ``list[int]`` indices and depend only on
``(labels, size, seed)``: the same call gives the same indices on every machine, so a
cache built on one host is reproduced on another.

Used by the dataset builders (held-out ``val`` splits) and by the cache builder
(``--limit N`` subsets).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ood_core.registry import OODLensError

__all__ = ["stratified_split", "stratified_subset"]


def _groups(labels: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(classes (G,) int64 sorted, [indices of each class (n_g,) int64 ascending])``."""
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    classes, inverse = np.unique(array, return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # groups indices by class, ascending within
    counts = np.bincount(inverse, minlength=len(classes))
    return classes, np.split(order, np.cumsum(counts)[:-1])


def _draw(groups: list[np.ndarray], quotas: Sequence[int], seed: int) -> np.ndarray:
    """Pick ``quotas[g]`` indices uniformly at random from each group (one seeded RNG)."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(members)[:quota] for members, quota in zip(groups, quotas)]
    if not picked:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(picked))


def stratified_split(labels: Sequence[int], holdout: int | float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into ``(kept, held_out)`` with per-class proportions preserved.

    Args:
        labels: ``(N,)`` integer class labels; ``-1`` (unlabeled) is one more group.
        holdout: number of held-out samples (``int``, ``0 <= holdout <= N``) or a fraction
            of ``N`` (``float`` in ``(0, 1)``).
        seed: RNG seed; the result depends only on ``(labels, holdout, seed)``.

    Returns:
        ``(kept, held_out)``: disjoint, sorted ``list[int]`` whose union is ``range(N)``;
        ``len(held_out) == holdout`` exactly. Each class gives ``holdout * n_c / N``
        samples, rounded by the largest-remainder rule (ties go to the smaller label).
    """
    n = len(labels)
    if isinstance(holdout, float) and not isinstance(holdout, bool):
        if not 0.0 < holdout < 1.0:
            raise OODLensError(f"holdout fraction must be in (0, 1), got {holdout}")
        count = int(round(holdout * n))
    else:
        count = int(holdout)
        if not 0 <= count <= n:
            raise OODLensError(f"holdout count must be between 0 and {n}, got {count}")
    _, groups = _groups(labels)
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    # Largest-remainder apportionment: floors first, then +1 to the biggest fractional parts,
    # so the total is exact and every class is within one sample of its proportional share.
    exact = sizes * count / max(n, 1)
    quotas = np.floor(exact).astype(np.int64)
    short = count - int(quotas.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(sizes)), -(exact - quotas)))
        quotas[order[:short]] += 1
    held = _draw(groups, quotas.tolist(), seed)
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).tolist(), held.tolist()


def stratified_subset(labels: Sequence[int], limit: int, seed: int) -> list[int]:
    """A seeded subset of at most ``limit`` indices, balanced across classes (``--limit N``).

    Classes get equal shares (a class smaller than its share gives all it has and the rest
    is shared among the others); an unlabeled set (all ``-1``) is one group, i.e. a seeded
    uniform random subset.

    Args:
        labels: ``(N,)`` integer labels, ``-1`` for unlabeled.
        limit: maximum subset size, ``>= 1``; ``limit >= N`` returns every index.
        seed: RNG seed.

    Returns:
        sorted ``list[int]`` of ``min(limit, N)`` distinct indices.
    """
    n = len(labels)
    if limit < 1:
        raise OODLensError(f"limit must be a positive number of images, got {limit}")
    if limit >= n:
        return list(range(n))
    _, groups = _groups(labels)
    sizes = [len(g) for g in groups]
    quotas = [0] * len(groups)
    remaining, left = limit, len(groups)
    # Water-filling from the smallest class up: each class takes an equal share of what is
    # left, capped by its size; the last (largest) classes absorb the rounding remainder.
    for g in sorted(range(len(groups)), key=lambda g: (sizes[g], g)):
        quotas[g] = min(sizes[g], remaining // left)
        remaining -= quotas[g]
        left -= 1
    for g in range(len(groups)):  # leftovers from flooring (limit < N guarantees room)
        extra = min(remaining, sizes[g] - quotas[g])
        quotas[g] += extra
        remaining -= extra
    return _draw(groups, quotas, seed).tolist()
