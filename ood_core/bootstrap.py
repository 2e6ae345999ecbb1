"""95 % bootstrap intervals for FPR95 / AUROC and paired bootstrap comparisons, vectorised.

Is 1.4 pt of FPR95 between two methods on 1,000 OOD images real, or resampling noise? This
module answers with a nonparametric bootstrap:

* **Resampling** (:func:`make_resamples`): every replicate b draws the n ID test scores and,
  independently, the m scores of each OOD set with replacement, from ``default_rng(seed)``.
  The ID resample of a replicate is shared by all OOD sets (a set's replicate pairs it with
  that set's own OOD resample), and **the same indices serve every method**, so a difference
  between two methods is computed replicate by replicate (a *paired* bootstrap): the noise
  of which images were drawn cancels, only the methods' disagreement on them remains.
* **Replicate metrics** (:func:`replicate_metrics`, :func:`replicate_metrics_many`): FPR95
  and AUROC of every replicate, equal (to float rounding; in practice bit for bit) to
  ``ood_core.metrics.evaluate`` / sklearn's ``roc_auc_score`` on ``id[id_index[b]]``,
  ``ood[ood_index[b]]``, without B sorts. A replicate is the *multiplicity* of each score
  (one ``bincount`` per chunk of replicates: ID counts (b, n), OOD counts (b, m), shared by
  every method); per method the ID scores are sorted once, with u distinct values
  d_0 < … < d_{u−1}, and each OOD score s gets a slot ``#{d < s} + #{d ≤ s}`` in 0 … 2u
  (two ``searchsorted``, independent of b). Running sums of the ID counts in sorted order,
  cum (b, n + 1), give for every replicate and slot ``below = #{ID draws < s} + #{ID draws ≤ s}``
  and the threshold. Then, exactly, ties included:

  - the 95 %-TPR threshold of replicate b is the element at place n − ⌈0.95·n⌉ of its
    ascending sort: d_q with q the distinct value of sorted place
    k_b = #{k : cum[b, k+1] ≤ n − ⌈0.95·n⌉}; an OOD score is accepted (s ≥ d_q) iff its
    slot > 2q, so FPR95_b = Σ_j count_b(j)·[slot_j > 2q] / m;
  - AUROC_b = Σ_j count_b(j)·(#ID_b > s_j + ½ #ID_b = s_j) / (n·m)
    = (2·n·m − Σ_j count_b(j)·below_b(slot_j)) / (2·n·m), an integer numerator divided once
    (so it rounds as ``metrics.evaluate``).

  Both sums are one gather and one dot product per replicate: the table packs
  below + 2^s·accepted (2^s > 2·n·m) in float64, exact while the sums stay below 2^53
  (otherwise two dot products). Cost O(B·(n + m)) per method and set; B runs in chunks
  whose working arrays stay under ``chunk_bytes`` (default 16 MB: small enough for the CPU
  caches, large enough to amortise Python's per-chunk overhead; far below 200 MB).
* **Intervals**: percentile intervals (``numpy.quantile``, linear interpolation) at ``level``
  of the replicate values; the point estimate is the plain metric on the full data.
* **Paired comparison** (:func:`bootstrap_table`, :func:`paired_difference`): the
  replicate-wise difference method − reference; it is ``significant`` when its interval
  excludes 0. A method compared with itself has a difference of exactly 0 in every replicate
  and is never significant.

Conventions as in :mod:`ood_core.metrics`: 1-D scores, higher = more in-distribution, ID is
the positive class, rates are fractions in [0, 1]. Non-finite scores raise
:class:`~ood_core.metrics.NonFiniteScoresError`; inconsistent sizes raise
:class:`~ood_core.registry.OODLensError`. Every result dataclass has ``as_dict()`` (plain
JSON-serialisable floats, bools and strings).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Mapping

import numpy as np
from torch import Tensor

from ood_core.metrics import _accept_count, _as_array, evaluate_many
from ood_core.registry import OODLensError

DEFAULT_REPLICATES = 1000
DEFAULT_LEVEL = 0.95
# Working memory of one chunk of replicates (indices, multiplicities, running sums, tables):
# 16 MB ran faster than 4 MB (Python overhead per chunk) and than 64–200 MB (cache misses).
CHUNK_BYTES = 16 * 1024 * 1024
# The key of the unweighted mean over OOD sets (the same name as ``ood_core.report.AVERAGE``).
AVERAGE = "average"
METRICS = ("fpr95", "auroc")
# Which way is better, per metric: FPR95 lower, AUROC higher.
LOWER_IS_BETTER = {"fpr95": True, "auroc": False}

Scores = Tensor | np.ndarray
# Sums of products of integers are exact in float64 below this (the packed table's limit).
_PACK_LIMIT = 2.0 ** 53


# ---------------------------------------------------------------------------------------
# Resamples
# ---------------------------------------------------------------------------------------

def _index_dtype(size: int) -> type:
    """The smallest unsigned integer type holding 0 … size − 1 (the CIFAR-scale indices of
    B = 1000 replicates take 60 MB as uint16, 241 MB as int64)."""
    for dtype in (np.uint16, np.uint32):
        if size - 1 <= np.iinfo(dtype).max:
            return dtype
    return np.int64


@dataclass(frozen=True, eq=False)
class Resamples:
    """The bootstrap draws shared by every method (so that comparisons are paired).

    id_index: (B, n) unsigned integer array; row b = the indices into the n ID test scores
        drawn with replacement for replicate b (shared by every OOD set of the replicate).
    ood_index: {OOD set: (B, m_set) unsigned integer array}, each set drawn independently.
    seed: the ``numpy.random.default_rng`` seed they were drawn from (None = fresh entropy).
    The arrays are read-only.
    """

    id_index: np.ndarray
    ood_index: Mapping[str, np.ndarray]
    seed: int | None = None

    def __post_init__(self) -> None:
        arrays = {"id_index": self.id_index, **{f"ood_index[{name!r}]": a for name, a in self.ood_index.items()}}
        for what, index in arrays.items():
            if not isinstance(index, np.ndarray) or index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
                raise OODLensError(f"Resamples.{what} must be a 2-D integer numpy array (B, size)")
            if index.shape[0] != self.id_index.shape[0]:
                raise OODLensError(f"Resamples.{what} has {index.shape[0]} replicates, id_index "
                                   f"{self.id_index.shape[0]}")

    @property
    def n_boot(self) -> int:
        """B, the number of replicates."""
        return int(self.id_index.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_index.shape[1])

    @property
    def ood_sizes(self) -> dict[str, int]:
        return {name: int(index.shape[1]) for name, index in self.ood_index.items()}

    def pair(self, ood_set: str) -> tuple[np.ndarray, np.ndarray]:
        """(id_index (B, n), ood_index (B, m)) of one OOD set, e.g. for :func:`paired_difference`."""
        if ood_set not in self.ood_index:
            raise OODLensError(f"no resamples for OOD set {ood_set!r}; have {', '.join(self.ood_index) or 'none'}")
        return self.id_index, self.ood_index[ood_set]

    def check(self, n_id: int, ood_sizes: Mapping[str, int]) -> None:
        """Raise :class:`OODLensError` unless these resamples fit n ID scores and these OOD set sizes."""
        if n_id != self.n_id:
            raise OODLensError(f"the resamples draw {self.n_id} ID scores, the scores have {n_id}")
        for name, size in ood_sizes.items():
            if name not in self.ood_index:
                raise OODLensError(f"no resamples for OOD set {name!r}; have {', '.join(self.ood_index) or 'none'}")
            if self.ood_index[name].shape[1] != size:
                raise OODLensError(f"the resamples draw {self.ood_index[name].shape[1]} scores of OOD set "
                                   f"{name!r}, the scores have {size}")


def make_resamples(n_id: int, ood_sizes: Mapping[str, int], n_boot: int = DEFAULT_REPLICATES,
                   seed: int | None = 0) -> Resamples:
    """Draw B = ``n_boot`` bootstrap replicates: ``rng = numpy.random.default_rng(seed)``, then
    ``rng.integers(0, n_id, (B, n_id))`` for the ID scores and ``rng.integers(0, m, (B, m))``
    for each OOD set in the mapping's order (dtype: the smallest unsigned type holding the
    indices, see :func:`_index_dtype`)."""
    n_boot = _positive_int(n_boot, "the number of bootstrap replicates")
    n_id = _positive_int(n_id, "the number of ID scores")
    sizes = {name: _positive_int(size, f"the size of OOD set {name!r}") for name, size in ood_sizes.items()}
    rng = np.random.default_rng(seed)

    def draw(size: int) -> np.ndarray:
        index = rng.integers(0, size, (n_boot, size), dtype=_index_dtype(size))
        index.setflags(write=False)
        return index

    id_index = draw(n_id)
    return Resamples(id_index, {name: draw(size) for name, size in sizes.items()}, seed)


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OODLensError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _scores(scores: Scores, what: str) -> np.ndarray:
    """``metrics._as_array`` (float64, 1-D; NonFiniteScoresError on NaN / ±inf), non-empty."""
    array = _as_array(scores, what)
    if array.size == 0:
        raise OODLensError(f"no {what}: a bootstrap needs at least one score")
    return array


def _check_index(index: np.ndarray, size: int, what: str) -> np.ndarray:
    """``index`` as a 2-D integer array of indices into ``size`` scores (OODLensError otherwise)."""
    index = np.asarray(index)
    if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
        raise OODLensError(f"{what} must be a 2-D integer array (B, n), got shape {index.shape} of {index.dtype}")
    if index.shape[1] != size:
        raise OODLensError(f"{what} draws {index.shape[1]} indices per replicate, the scores have {size}")
    if index.size and (int(index.min()) < 0 or int(index.max()) >= size):
        raise OODLensError(f"{what} holds indices outside 0 … {size - 1}")
    return index


# ---------------------------------------------------------------------------------------
# Replicate metrics
# ---------------------------------------------------------------------------------------

class _SortedScores:
    """One method's scores, prepared once for every replicate.

    The ID scores are sorted once (``order``); their u distinct values d_0 < … < d_{u−1} start
    at places ``starts`` (u + 1 entries, the last = n), and ``value_of_place`` (n,) maps a place
    in the sort to its distinct value. An OOD score s gets one *slot* in 0 … 2u:
    ``#{d < s} + #{d ≤ s}``, even when s lies between two distinct ID values, odd when it
    equals one. Nothing here depends on the replicate.
    """

    def __init__(self, id_scores: np.ndarray, ood_scores: Mapping[str, np.ndarray]) -> None:
        self.n = n = id_scores.size
        self.order = np.argsort(id_scores, kind="stable")
        id_sorted = id_scores[self.order]
        new_value = np.concatenate([[True], id_sorted[1:] != id_sorted[:-1]])
        first = np.flatnonzero(new_value)
        self.u = first.size
        self.starts = np.append(first, n)
        self.value_of_place = np.cumsum(new_value) - 1
        self.place = n - _accept_count(n)  # the threshold's place in an ascending sort
        distinct = id_sorted[first]
        self.slots = {name: np.searchsorted(distinct, ood, side="left") + np.searchsorted(distinct, ood, side="right")
                      for name, ood in ood_scores.items()}
        # One float64 table per replicate carries both metrics: below + SHIFT·accepted, SHIFT a power
        # of two above every AUROC numerator (2nm), so a dot product with the OOD multiplicities
        # gives both sums at once, exactly (integers below 2^53), split by one division.
        largest = max((o.size for o in ood_scores.values()), default=1)
        self.shift = 2.0 ** int(np.ceil(np.log2(2 * n * largest + 1)))
        self.packed = self.shift * (largest + 1) <= _PACK_LIMIT

    def replicate_tables(self, id_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """From the multiplicities of the ID scores in a chunk of b replicates, ``id_counts``
        (b, n) in the original order: (table (b, 2u + 1) float64, accepted (b, 2u + 1) or None).

        below[r, slot] = #{ID draws < s} + #{ID draws ≤ s} of replicate r for an OOD score s in
        that slot (running sums cum (b, n + 1) of the multiplicities in sorted order, read at the
        starts of the distinct values); accepted[r, slot] = 1 when s ≥ the replicate's 95 %-TPR
        threshold d_q (the element at place n − ⌈0.95·n⌉ of its ascending sort), i.e.
        slot > 2q. table = below + shift·accepted when packed, else below (accepted returned)."""
        rows, n, u = id_counts.shape[0], self.n, self.u
        cum = np.zeros((rows, n + 1), dtype=id_counts.dtype)
        np.cumsum(id_counts[:, self.order], axis=1, out=cum[:, 1:])
        k = np.count_nonzero(cum[:, 1:] <= self.place, axis=1)  # the threshold's place in the sort
        q = self.value_of_place[k]
        at_starts = cum[:, self.starts] if u < n else cum  # #draws < d_j, j = 0 … u
        table = np.empty((rows, 2 * u + 1))
        np.add(at_starts, at_starts, out=table[:, 0::2])
        np.add(at_starts[:, :-1], at_starts[:, 1:], out=table[:, 1::2])
        accepted = np.arange(2 * u + 1) > 2 * q[:, None]
        if self.packed:
            table += self.shift * accepted
            return table, None
        return table, accepted.astype(np.float64)

    def metrics(self, name: str, table: np.ndarray, accepted: np.ndarray | None,
                ood_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fpr95 (b,), auroc (b,)) float64 of OOD set ``name``, from the tables of
        :meth:`replicate_tables` and the multiplicities ``ood_counts`` (b, m) float64 of the OOD
        scores: accepted draws = Σ_j count_j·accepted[slot_j]; the AUROC counts the ID draws
        above each OOD draw plus half those equal, (2n − below[slot]) / 2, summed and divided
        once by n·m (an integer numerator: it rounds as ``metrics.evaluate``)."""
        slots = self.slots[name]
        m = slots.size
        total = np.einsum("bj,bj->b", table[:, slots], ood_counts)
        if accepted is None:
            count = np.floor(total / self.shift)
            total -= count * self.shift
        else:
            count = np.einsum("bj,bj->b", accepted[:, slots], ood_counts)
        both = 2 * self.n * m
        return count / m, (both - total) / both


def _multiplicities(index: np.ndarray, size: int, dtype: type) -> np.ndarray:
    """(b, size) how often each of ``size`` scores is drawn in each row of ``index`` (b, k)."""
    rows = index.shape[0]
    flat = index.astype(np.intp)
    flat += (np.arange(rows, dtype=np.intp) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * size).reshape(rows, size).astype(dtype, copy=False)


def _chunk_rows(n_id: int, ood_sizes: Collection[int], n_boot: int, chunk_bytes: int) -> int:
    """Replicates per chunk so that its working arrays stay under ``chunk_bytes``: per replicate
    ~ 20 bytes per ID score (indices as intp, multiplicities, running sums), 16 per OOD score
    (indices as intp, multiplicities as float64) and 24 per slot (≤ 2n + 1) and per OOD score
    of the largest set (gathered table)."""
    largest = max(ood_sizes, default=0)
    per_replicate = 20 * n_id + 16 * sum(ood_sizes) + 24 * (2 * n_id + 1) + 8 * largest
    return max(1, min(n_boot, int(chunk_bytes) // per_replicate))


def _replicates(prepared: Mapping[str, _SortedScores], id_index: np.ndarray, ood_index: Mapping[str, np.ndarray],
                chunk_bytes: int) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{method: {OOD set: (fpr95 (B,), auroc (B,))}} for prepared methods on the same resamples.

    Chunks of replicates in the outer loop: a chunk's multiplicities (one ``bincount`` for the
    ID draws, one per OOD set) serve every method; a method's tables serve every OOD set."""
    n_boot, n_id = id_index.shape
    out = {method: {name: (np.empty(n_boot), np.empty(n_boot)) for name in ood_index} for method in prepared}
    step = _chunk_rows(n_id, [i.shape[1] for i in ood_index.values()], n_boot, chunk_bytes)
    count_dtype = np.int32 if 2 * n_id < np.iinfo(np.int32).max else np.int64
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        id_counts = _multiplicities(id_index[start:stop], n_id, count_dtype)
        ood_counts = {name: _multiplicities(index[start:stop], index.shape[1], np.float64)
                      for name, index in ood_index.items()}
        for method, scores in prepared.items():
            table, accepted = scores.replicate_tables(id_counts)
            for name, counts in ood_counts.items():
                fpr, auroc_values = scores.metrics(name, table, accepted, counts)
                out[method][name][0][start:stop] = fpr
                out[method][name][1][start:stop] = auroc_values
    return out


def replicate_metrics(id_scores: Scores, ood_scores: Scores, id_index: np.ndarray, ood_index: np.ndarray, *,
                      chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """FPR95 and AUROC of every bootstrap replicate of one (ID, OOD) pair.

    id_scores: (n,), ood_scores: (m,) finite scores (tensor or array, any float dtype);
    id_index: (B, n), ood_index: (B, m) integer indices (a :class:`Resamples`' arrays).
    Returns (fpr95 (B,), auroc (B,)) float64, row b equal (to float rounding) to
    ``metrics.evaluate(id_scores[id_index[b]], ood_scores[ood_index[b]])``'s fields.
    """
    id_array, ood_array = _scores(id_scores, "ID scores"), _scores(ood_scores, "OOD scores")
    id_index = _check_index(id_index, id_array.size, "id_index")
    ood_index = _check_index(ood_index, ood_array.size, "ood_index")
    if id_index.shape[0] != ood_index.shape[0]:
        raise OODLensError(f"id_index has {id_index.shape[0]} replicates, ood_index {ood_index.shape[0]}")
    return _replicates({"": _SortedScores(id_array, {"ood": ood_array})}, id_index, {"ood": ood_index},
                       chunk_bytes)[""]["ood"]


def replicate_metrics_many(id_scores: Scores, ood_scores: Mapping[str, Scores], resamples: Resamples, *,
                           chunk_bytes: int = CHUNK_BYTES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{OOD set: (fpr95 (B,), auroc (B,)) float64} of one method on several OOD sets, with the
    ID work (sort, multiplicities, running sums) done once per chunk for all sets."""
    id_array = _scores(id_scores, "ID scores")
    ood_arrays = {name: _scores(s, f"OOD scores of {name}") for name, s in ood_scores.items()}
    resamples.check(id_array.size, {name: a.size for name, a in ood_arrays.items()})
    return _replicates({"": _SortedScores(id_array, ood_arrays)}, resamples.id_index,
                       {name: resamples.ood_index[name] for name in ood_arrays}, chunk_bytes)[""]


# ---------------------------------------------------------------------------------------
# Intervals and differences
# ---------------------------------------------------------------------------------------

def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise OODLensError(f"the interval level must lie strictly between 0 and 1, got {level!r}")
    return float(level)


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """(lo, hi): the (1 − level)/2 and (1 + level)/2 quantiles of the (B,) replicate values
    (``numpy.quantile``, linear interpolation)."""
    tail = (1.0 - _check_level(level)) / 2.0
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Interval:
    """A metric (fraction in [0, 1]): ``point`` on the full data and its percentile bootstrap
    interval [lo, hi]."""

    point: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True)
class MetricIntervals:
    """FPR95 and AUROC of one method on one OOD set (or on average), each with its interval."""

    fpr95: Interval
    auroc: Interval

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {"fpr95": self.fpr95.as_dict(), "auroc": self.auroc.as_dict()}


@dataclass(frozen=True)
class Difference:
    """A paired difference ``method − reference`` of one metric (fractions; for FPR95 a
    positive value means the method accepts more OOD, for AUROC a negative one means it ranks
    worse). point: difference of the point estimates; [lo, hi]: percentile interval of the
    replicate-wise difference; significant: the interval excludes 0 (lo > 0 or hi < 0)."""

    point: float
    lo: float
    hi: float
    significant: bool

    @classmethod
    def of(cls, point: float, replicates: np.ndarray, level: float) -> "Difference":
        """From the point difference and the (B,) replicate-wise differences."""
        lo, hi = percentile_interval(replicates, level)
        return cls(float(point), lo, hi, bool(lo > 0.0 or hi < 0.0))

    def as_dict(self) -> dict[str, float | bool]:
        return {"point": self.point, "lo": self.lo, "hi": self.hi, "significant": self.significant}


@dataclass(frozen=True)
class PairedDifference:
    """The paired differences a − b of FPR95 and AUROC on one OOD set."""

    fpr95: Difference
    auroc: Difference

    def as_dict(self) -> dict[str, dict[str, float | bool]]:
        return {"fpr95": self.fpr95.as_dict(), "auroc": self.auroc.as_dict()}


def paired_difference(id_a: Scores, ood_a: Scores, id_b: Scores, ood_b: Scores,
                      id_index: np.ndarray, ood_index: np.ndarray, *, level: float = DEFAULT_LEVEL,
                      chunk_bytes: int = CHUNK_BYTES) -> PairedDifference:
    """Method a − method b on one OOD set, paired: both scored on the same resamples.

    id_a, id_b: (n,) ID scores of the same n images (same order); ood_a, ood_b: (m,) scores of
    the same m OOD images; id_index (B, n), ood_index (B, m): the resamples (e.g.
    ``resamples.pair(ood_set)``). a = b gives differences of exactly 0, never significant.
    """
    level = _check_level(level)
    arrays = [_scores(s, what) for s, what in ((id_a, "ID scores of a"), (ood_a, "OOD scores of a"),
                                                 (id_b, "ID scores of b"), (ood_b, "OOD scores of b"))]
    if arrays[0].size != arrays[2].size or arrays[1].size != arrays[3].size:
        raise OODLensError(f"a paired comparison needs the same images: a has {arrays[0].size} ID / "
                           f"{arrays[1].size} OOD scores, b {arrays[2].size} / {arrays[3].size}")
    fpr_a, auroc_a = replicate_metrics(arrays[0], arrays[1], id_index, ood_index, chunk_bytes=chunk_bytes)
    fpr_b, auroc_b = replicate_metrics(arrays[2], arrays[3], id_index, ood_index, chunk_bytes=chunk_bytes)
    point_a = evaluate_many(arrays[0], {"ood": arrays[1]})["ood"]
    point_b = evaluate_many(arrays[2], {"ood": arrays[3]})["ood"]
    return PairedDifference(fpr95=Difference.of(point_a.fpr95 - point_b.fpr95, fpr_a - fpr_b, level),
                            auroc=Difference.of(point_a.auroc - point_b.auroc, auroc_a - auroc_b, level))


# ---------------------------------------------------------------------------------------
# Table level
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """Every method against the best one, for one metric on one OOD set (or on average).

    best: the method with the best point estimate (lowest FPR95 / highest AUROC; the first in
    table order on a tie) among those not excluded; None when every method is excluded.
    differences: {method: method − best} for every method (the best's own is exactly 0);
    empty when ``best`` is None.
    """

    metric: str
    best: str | None
    differences: Mapping[str, Difference]

    def as_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "best": self.best,
                "differences": {m: d.as_dict() for m, d in self.differences.items()}}


@dataclass(frozen=True)
class BootstrapTable:
    """Bootstrap intervals and paired comparisons of a table of methods × OOD sets.

    methods / ood_sets: in the caller's order; groups = ood_sets + (``"average"``,).
    intervals: {method: {group: MetricIntervals}}; the average's point is the mean of the
        per-set points, its replicates the mean of the per-set replicate values.
    comparisons: {group: {"fpr95" | "auroc": Comparison}}.
    replicates: {method: {group: {"fpr95" | "auroc": (B,) float64}}} (not in ``as_dict``).
    """

    methods: tuple[str, ...]
    ood_sets: tuple[str, ...]
    n_boot: int
    seed: int | None
    level: float
    excluded_from_best: tuple[str, ...]
    intervals: Mapping[str, Mapping[str, MetricIntervals]]
    comparisons: Mapping[str, Mapping[str, Comparison]]
    replicates: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]] = field(repr=False, compare=False)

    @property
    def groups(self) -> tuple[str, ...]:
        return (*self.ood_sets, AVERAGE)

    def as_dict(self) -> dict[str, object]:
        """Everything but the replicate values, as JSON-ready dicts (fractions in [0, 1])."""
        return {
            "n_boot": self.n_boot, "seed": self.seed, "level": self.level,
            "methods": list(self.methods), "ood_sets": list(self.ood_sets),
            "excluded_from_best": list(self.excluded_from_best),
            "intervals": {method: {g: iv.as_dict() for g, iv in groups.items()}
                          for method, groups in self.intervals.items()},
            "comparisons": {g: {metric: c.as_dict() for metric, c in by_metric.items()}
                            for g, by_metric in self.comparisons.items()},
        }


def _table_arrays(scores: Mapping[str, tuple[Scores, Mapping[str, Scores]]]
                  ) -> tuple[dict[str, tuple[np.ndarray, dict[str, np.ndarray]]], tuple[str, ...]]:
    """Every method's scores as float64 arrays, checked to cover the same OOD sets with the
    same sizes (the same images); returns them and the OOD set names (first method's order)."""
    if not scores:
        raise OODLensError("a bootstrap table needs at least one method")
    arrays: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for method, entry in scores.items():
        try:
            id_scores, ood_scores = entry
        except (TypeError, ValueError):
            raise OODLensError(f"method {method!r}: expected (ID scores, {{OOD set: OOD scores}})") from None
        if not isinstance(ood_scores, Mapping) or not ood_scores:
            raise OODLensError(f"method {method!r}: expected a non-empty mapping {{OOD set: OOD scores}}")
        arrays[method] = (_scores(id_scores, f"ID scores of {method}"),
                          {name: _scores(s, f"OOD scores of {method} on {name}") for name, s in ood_scores.items()})
    first = next(iter(arrays))
    sets = tuple(arrays[first][1])
    if AVERAGE in sets:
        raise OODLensError(f"an OOD set may not be named {AVERAGE!r} (the key of the mean over sets)")
    n_id = arrays[first][0].size
    sizes = {name: a.size for name, a in arrays[first][1].items()}
    for method, (id_array, ood_arrays) in arrays.items():
        if set(ood_arrays) != set(sets):
            raise OODLensError(f"method {method!r} has OOD sets {sorted(ood_arrays)}, {first!r} has {sorted(sets)}")
        if id_array.size != n_id:
            raise OODLensError(f"method {method!r} has {id_array.size} ID scores, {first!r} has {n_id}")
        for name, a in ood_arrays.items():
            if a.size != sizes[name]:
                raise OODLensError(f"method {method!r} has {a.size} scores on {name!r}, {first!r} has {sizes[name]}")
    return arrays, sets


def _best(points: Mapping[str, float], eligible: tuple[str, ...], lower_is_better: bool) -> str | None:
    best = None
    for method in eligible:  # strict improvement only: the first in order wins a tie
        if best is None or (points[method] < points[best] if lower_is_better else points[method] > points[best]):
            best = method
    return best


def bootstrap_table(scores: Mapping[str, tuple[Scores, Mapping[str, Scores]]], *,
                    n_boot: int = DEFAULT_REPLICATES, seed: int | None = 0, level: float = DEFAULT_LEVEL,
                    exclude_from_best: Collection[str] = (), resamples: Resamples | None = None,
                    chunk_bytes: int = CHUNK_BYTES) -> BootstrapTable:
    """Intervals for every method × OOD set (and the average over sets) and paired comparisons
    with the best method.

    scores: {method: (id_scores (n,), {OOD set: ood_scores (m_set,)})}, every method scored on
        the same n ID images and the same images of each set, in the same order.
    n_boot / seed: B and the seed of :func:`make_resamples` (ignored when ``resamples`` is given).
    level: the interval's coverage (0.95 → the 2.5 % and 97.5 % quantiles).
    exclude_from_best: methods never chosen as the best (e.g. degenerate settings); they still
        get their difference to the best.
    """
    level = _check_level(level)
    arrays, sets = _table_arrays(scores)
    methods = tuple(arrays)
    excluded = tuple(m for m in methods if m in set(exclude_from_best))
    unknown = sorted(set(exclude_from_best) - set(methods))
    if unknown:
        raise OODLensError(f"exclude_from_best names unknown methods {unknown}; the table has {list(methods)}")
    first_id, first_ood = arrays[methods[0]]
    sizes = {name: first_ood[name].size for name in sets}
    if resamples is None:
        resamples = make_resamples(first_id.size, sizes, n_boot, seed)
    resamples.check(first_id.size, sizes)
    index = {name: resamples.ood_index[name] for name in sets}

    replicates: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    points: dict[str, dict[str, dict[str, float]]] = {}
    computed = _replicates({method: _SortedScores(id_array, {name: ood_arrays[name] for name in sets})
                            for method, (id_array, ood_arrays) in arrays.items()},
                           resamples.id_index, index, chunk_bytes)
    for method, (id_array, ood_arrays) in arrays.items():
        per_set = computed[method]
        full = evaluate_many(id_array, {name: ood_arrays[name] for name in sets})
        replicates[method] = {name: {"fpr95": per_set[name][0], "auroc": per_set[name][1]} for name in sets}
        points[method] = {name: {"fpr95": full[name].fpr95, "auroc": full[name].auroc} for name in sets}
        replicates[method][AVERAGE] = {metric: np.mean([replicates[method][name][metric] for name in sets], axis=0)
                                       for metric in METRICS}
        points[method][AVERAGE] = {metric: float(np.mean([points[method][name][metric] for name in sets]))
                                   for metric in METRICS}

    groups = (*sets, AVERAGE)

    def interval(method: str, group: str, metric: str) -> Interval:
        return Interval(points[method][group][metric], *percentile_interval(replicates[method][group][metric], level))

    intervals = {method: {g: MetricIntervals(**{metric: interval(method, g, metric) for metric in METRICS})
                          for g in groups}
                 for method in methods}
    eligible = tuple(m for m in methods if m not in excluded)
    comparisons: dict[str, dict[str, Comparison]] = {}
    for g in groups:
        comparisons[g] = {}
        for metric in METRICS:
            best = _best({m: points[m][g][metric] for m in methods}, eligible, LOWER_IS_BETTER[metric])
            differences = {} if best is None else {
                m: Difference.of(points[m][g][metric] - points[best][g][metric],
                                 replicates[m][g][metric] - replicates[best][g][metric], level)
                for m in methods}
            comparisons[g][metric] = Comparison(metric, best, differences)
    return BootstrapTable(methods=methods, ood_sets=sets, n_boot=resamples.n_boot, seed=resamples.seed, level=level,
                          excluded_from_best=excluded, intervals=intervals, comparisons=comparisons,
                          replicates=replicates)
