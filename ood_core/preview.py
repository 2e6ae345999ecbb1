"""A fixed stratified subsample of a large benchmark: what a slider move scores first on a CPU.

At ImageNet scale (50,000 ID + 40,000 OOD rows, D = 2,048, K = 1,000) one re-score of the
slowest method (LINe, ≈ 4.4 dense GEMMs of the rows) takes seconds on a CPU. The dashboard
then shows a *preview* first: the same method and setting scored on a small subsample chosen
once per benchmark, labelled as such, and replaces it with the exact figures when they are
ready. On a GPU, or at or below :data:`PREVIEW_ABOVE_MACS`, there is no preview (the demo and
CIFAR caches are scored in full on every move, as before).

The subsample (:func:`choose_subsample`) is a pure function of the row counts, the ID
labels, the row budget and the seed:

* the budget :data:`PREVIEW_ROWS` is split half ID, half OOD (whatever one side cannot use
  goes to the other); the OOD half is split evenly across the OOD sets (a small set gives
  its unused share to the others);
* ID test rows are stratified by class: each class gets its share of the ID rows by largest
  remainder (ties in a seeded order), and its rows are a seeded draw within the class;
* each OOD set's rows are spread evenly over it: one row, at a seeded position, in each of
  ``count`` equal consecutive blocks (a folder's order, often by source or class, is covered);
* indices are sorted and unique; the seed :data:`PREVIEW_SEED` is fixed, so every call on
  the same benchmark gives the same rows.

:func:`preview_benchmark` builds the sub-:class:`~ood_core.benchmark.Benchmark` once: its
tensors are index-selects made once (kept alive, so the scorers' per-tensor memos hit on the
next move), and it shares the full benchmark's fitted scorers (fitted once, for both).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor

from ood_core.benchmark import Benchmark

# The row budget of a preview, ID and OOD together, from `python -m bench.bench_preview` (synthetic
# ImageNet scale, D = 2,048, K = 1,000, 2 shared CPU cores): at 1,000 rows every method's median move
# but LINe's is ≤ 80 ms at load 3 and ≤ 175 ms at load 6; LINe's is 0.4-1.2 s (its pruned head per
# predicted class costs ≈ K·D whatever the rows); at 2,000 rows and load 6-10 seven methods took
# 300-800 ms. 1,000 leaves room for the page's own ≈ 130 ms (the demo's rerun) within 300 ms.
PREVIEW_ROWS = 1_000
# A CPU benchmark is previewed when one full re-score costs more than this many head
# multiply-adds (scored rows × D × K). The dense floor took 3.7 s for ImageNet's 1.8e11 here, so
# 4e9 is ≈ 80 ms of GEMM: above it a head-pruning method's full re-score misses 300 ms. The demo
# (≈ 6e6), CIFAR-10 with a DenseNet (29,000 rows × 342 × 10 ≈ 1e8) and CIFAR-100 (≈ 1e9) stay
# below: scored in full, as before. ImageNet with ResNet-50 (1.8e11) or ViT-B/16 (6.9e10): previewed.
PREVIEW_ABOVE_MACS = 4e9
PREVIEW_SEED = 0


@dataclass(frozen=True)
class Subsample:
    """Which rows a preview scores.

    id_rows: (n_id,) int64 sorted, unique indices into the ID test set (on the CPU);
    ood_rows: OOD set name → (n,) int64 sorted, unique indices into that set;
    id_total / ood_totals: the full sets' row counts; budget, seed: what chose them.
    """

    id_rows: Tensor
    ood_rows: dict[str, Tensor]
    id_total: int
    ood_totals: dict[str, int]
    budget: int
    seed: int

    def rows(self, oods: Iterable[str] | None = None) -> int:
        """Rows scored: the ID rows plus those of ``oods`` (every OOD set when None)."""
        names = list(self.ood_rows) if oods is None else list(oods)
        return len(self.id_rows) + sum(len(self.ood_rows[n]) for n in names)


def split_budget(id_total: int, ood_totals: Mapping[str, int], budget: int) -> tuple[int, dict[str, int]]:
    """(ID rows, rows per OOD set) of a ``budget``: half ID, the other half evenly across the OOD
    sets, each side capped at what it has; rows one side (or one set) cannot use go to the rest.

    >>> split_budget(50_000, {"a": 10_000, "b": 10_000, "c": 10_000, "d": 10_000}, 2_000)
    (1000, {'a': 250, 'b': 250, 'c': 250, 'd': 250})
    """
    if budget < 0 or id_total < 0 or any(n < 0 for n in ood_totals.values()):
        raise ValueError("row counts and the budget must be ≥ 0")
    ood_capacity = sum(ood_totals.values())
    id_rows = min(id_total, max(budget // 2, budget - ood_capacity))
    ood_rows = _even_shares(ood_totals, min(budget - id_rows, ood_capacity))
    id_rows = min(id_total, budget - sum(ood_rows.values()))  # what OOD could not use goes to ID
    return id_rows, ood_rows


def _even_shares(capacities: Mapping[str, int], total: int) -> dict[str, int]:
    """``total`` rows spread as evenly as possible over sets of ``capacities`` (water-filling:
    a set smaller than its share takes all it has and the others share the rest; shares of the
    sets that are not full differ by at most one row)."""
    shares = {name: 0 for name in capacities}
    left = min(total, sum(capacities.values()))
    ordered = sorted(capacities, key=lambda name: capacities[name])  # stable: the smallest sets first
    for i, name in enumerate(ordered):
        remaining = len(ordered) - i
        shares[name] = min(capacities[name], left // remaining)
        left -= shares[name]
    for name in ordered:  # the rows a floor left over: one each to the sets with room
        if left == 0:
            break
        if shares[name] < capacities[name]:
            shares[name] += 1
            left -= 1
    return shares


def stratified_rows(labels: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` row indices of ``labels`` (N,) int64, stratified by label: each label (−1, unknown,
    is a stratum too) gets its share by largest remainder, ties broken in a seeded order; rows
    within a label are a seeded draw. Returns (count,) int64, sorted, unique, on the CPU."""
    labels = labels.detach().to("cpu", torch.long)
    n = labels.numel()
    if not 0 <= count <= n:
        raise ValueError(f"cannot take {count} rows of {n}")
    if count == n:
        return torch.arange(n)
    strata = labels - labels.min()
    sizes = torch.bincount(strata)
    exact = sizes.double() * count / n
    quota = exact.floor().long()
    remainder = exact - quota
    # the strata with the largest remainders take the rows left; a seeded order breaks ties
    order = torch.randperm(len(sizes), generator=generator)
    ranked = order[torch.argsort(remainder[order], descending=True, stable=True)]
    quota[ranked[:count - int(quota.sum())]] += 1
    # rank of each row within its stratum in a seeded random order: keep ranks below the quota
    shuffled = torch.randperm(n, generator=generator)
    by_stratum = shuffled[torch.argsort(strata[shuffled], stable=True)]
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(n) - starts[strata[by_stratum]]
    chosen = by_stratum[rank < quota[strata[by_stratum]]]
    return chosen.sort().values


def spread_rows(total: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` of ``total`` row indices spread evenly: one at a seeded position in each of
    ``count`` equal consecutive blocks. (count,) int64, sorted, unique."""
    if not 0 <= count <= total:
        raise ValueError(f"cannot take {count} rows of {total}")
    edges = torch.arange(count + 1, dtype=torch.long) * total // count if count else torch.zeros(1, dtype=torch.long)
    widths = edges[1:] - edges[:-1]  # ≥ 1 each, since count ≤ total
    offsets = (torch.rand(count, generator=generator, dtype=torch.float64) * widths).long().clamp(max=widths - 1)
    return edges[:-1] + offsets


def choose_subsample(id_labels: Tensor, ood_totals: Mapping[str, int], budget: int = PREVIEW_ROWS,
                     seed: int = PREVIEW_SEED) -> Subsample:
    """The preview's rows: ID rows stratified by ``id_labels`` (N_id,), each OOD set's rows spread
    evenly over it, sized by :func:`split_budget`. Deterministic for its arguments."""
    id_total = int(id_labels.numel())
    id_count, ood_counts = split_budget(id_total, ood_totals, budget)
    generator = torch.Generator().manual_seed(seed)
    id_rows = stratified_rows(id_labels, id_count, generator)
    ood_rows = {name: spread_rows(int(ood_totals[name]), ood_counts[name], generator) for name in ood_totals}
    return Subsample(id_rows, ood_rows, id_total, {k: int(v) for k, v in ood_totals.items()}, budget, seed)


def benchmark_subsample(bench: Benchmark, budget: int = PREVIEW_ROWS, seed: int = PREVIEW_SEED) -> Subsample:
    """:func:`choose_subsample` of ``bench``'s ID test labels and OOD sets."""
    return choose_subsample(bench.id_test.labels, {name: len(feats) for name, feats in bench.ood.items()},
                            budget, seed)


def rescore_macs(bench: Benchmark, oods: Iterable[str] | None = None) -> float:
    """Head multiply-adds of one full re-score: (ID test rows + OOD rows) × D × K."""
    names = list(bench.ood) if oods is None else list(oods)
    rows = len(bench.id_test) + sum(len(bench.ood[n]) for n in names)
    classes, dim = bench.head_weight.shape
    return float(rows) * float(dim) * float(classes)


def needs_preview(bench: Benchmark, oods: Iterable[str] | None = None, above: float | None = None) -> bool:
    """Whether a slider move on ``bench`` shows a preview first: on a CPU, when one full re-score
    costs more than ``above`` (default :data:`PREVIEW_ABOVE_MACS`) head multiply-adds.
    On a GPU never: every move re-scores the full benchmark."""
    if bench.device.type != "cpu":
        return False
    return rescore_macs(bench, oods) > (PREVIEW_ABOVE_MACS if above is None else above)


def preview_benchmark(bench: Benchmark, subsample: Subsample) -> Benchmark:
    """The sub-benchmark of ``subsample``'s rows: ID test and OOD sets are index-selects of
    ``bench``'s, made once here; everything else (head, statistics, ID validation, validation
    OOD sets) is ``bench``'s own, and so are its fitted scorers (one shared dict: fitted once).

    Its ``fingerprint`` differs from ``bench``'s (a ``preview`` entry names the budget and seed),
    so caches keyed by it never mix the two; ``rows`` counts the subsample's rows.
    """
    device = bench.device
    id_test = bench.id_test.subset(subsample.id_rows.to(device))
    ood = {name: feats.subset(subsample.ood_rows[name].to(device)) for name, feats in bench.ood.items()}
    test_key = f"{bench.id_dataset}/test"
    rows = {test_key: len(id_test), **{f"{name}/test": len(feats) for name, feats in ood.items()}}
    return dataclasses.replace(
        bench, id_test=id_test, ood=ood, rows=rows,
        fingerprints={**bench.fingerprints, "preview": f"rows={subsample.budget},seed={subsample.seed}"},
        _scorers=bench._scorers)


def preview_label(subsample: Subsample, oods: Iterable[str] | None = None) -> str:
    """``Preview on a stratified 2,000-row subsample (1,000 of 50,000 ID, 250 of 10,000 per OOD
    set); exact figures follow`` (the OOD part per set when the sets' shares differ)."""
    names = list(subsample.ood_rows) if oods is None else list(oods)
    parts = [f"{len(subsample.id_rows):,} of {subsample.id_total:,} ID"]
    shares = {(len(subsample.ood_rows[n]), subsample.ood_totals[n]) for n in names}
    if len(names) > 1 and len(shares) == 1:
        taken, total = shares.pop()
        parts.append(f"{taken:,} of {total:,} per OOD set")
    else:
        parts += [f"{len(subsample.ood_rows[n]):,} of {subsample.ood_totals[n]:,} {n}" for n in names]
    return (f"Preview on a stratified {subsample.rows(names):,}-row subsample ({', '.join(parts)}); "
            "exact figures follow")


def exact_label(bench: Benchmark, oods: Iterable[str] | None = None) -> str:
    """``Exact: all 90,000 rows`` (the ID test rows and those of ``oods``)."""
    names = list(bench.ood) if oods is None else list(oods)
    rows = len(bench.id_test) + sum(len(bench.ood[n]) for n in names)
    return f"Exact: all {rows:,} rows"
