"""Training statistics: registered once each, with a version, by the code that owns them.

A *statistic* is a tensor computed once from the ID training split's cached features (no
gradients, docs/methods.md §4), stored in the cache's ``train_stats`` file and read by scorers
through ``FitContext.stats[name]`` (a scorer declares the names it reads in ``Scorer.stats``).
Each is registered with :func:`register_statistic` (name, version, what it is, its shape);
registering a name twice raises. A method with a statistic of its own registers it at the end
of its own file (``precision`` in ``scorers/mahalanobis.py``, ``vim_*`` and
``train_max_logit_mean`` in ``scorers/vim.py``, ``knn_bank`` in ``scorers/knn.py``,
``opnp_*`` in ``scorers/opnp.py``); the statistics several methods or pages share are
registered here:

  feature_mean              (D,)    m̄ = mean_x h(x)                               DICE
  class_means               (K, D)  μ_c = mean_{y=c} h(x)                          Mahalanobis, LINe
  class_counts              (K,)    training images per class
  class_contribution        (K, D)  C[c] = W[c] ⊙ μ_c (LINe's Shapley/Taylor term)   LINe, Neurons page
  val_activations_sorted    (V,)    ascending sample of ID-validation activations  ReAct / δ percentiles
  train_activations_sorted  (V,)    ascending sample of training activations

**Versions.** The cache records each statistic's version; a statistic whose recorded version
differs from the registered one is stale, and the next build recomputes it (and only it) from
the cached training features. Bump ``version`` whenever a change to ``compute`` changes its
numbers.

**Which statistics a cache holds.** :func:`required_statistics` is the union of the
registered methods' ``stats``; ``load_benchmark`` and ``python -m precompute`` hand those to
the cache builder (the cache layer never imports the scorers).

Every statistic is computed in float64 from a :class:`TrainingData`, whose shared
intermediates (float64 copies, class sums and means, and any a method memoises with
:meth:`TrainingData.shared`) are computed once however many statistics use them, and returned
by :func:`compute_statistics` as a contiguous float32 tensor.

**Several processes** (``torchrun``, :mod:`ood_core.distributed`). A statistic reads the
training rows only through :meth:`TrainingData.total` (a float64 sum over rows: each rank sums
its own contiguous rows, then ``all_reduce(SUM)``; divide after) and
:meth:`TrainingData.gathered` (rows or values kept from every rank, joined in row order: the
KNN bank, the activation samples behind percentiles). Nothing is averaged per rank, and no rank
holds a float64 copy of more than its own rows. Every rank computes the same statistics in the
same order (their collectives must match); rank 0 stores them. In one process the local rows
are all rows, and the sums are the plain whole-tensor expressions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch
from torch import Tensor

from ood_core import distributed
from ood_core.distributed import Ranks
from ood_core.registry import OODLensError, unknown_name

# Enough values for percentile look-ups accurate to ~0.01 pt without storing N·D floats.
MAX_SORTED_ACTIVATIONS = 2_000_000

T = TypeVar("T")


class TrainingDataError(OODLensError, ValueError):
    """The training split cannot give statistics (it is empty)."""


class _Copy:
    """A :class:`TrainingData` field in another dtype, made once on first use (``data.shared``)."""

    def __init__(self, field: str, dtype: torch.dtype, doc: str) -> None:
        self.field, self.dtype, self.__doc__ = field, dtype, doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, data: "TrainingData | None", owner: type) -> Tensor:
        if data is None:
            return self  # type: ignore[return-value]
        return data.shared(self.name, lambda: getattr(data, self.field).to(self.dtype))


class TrainingData:
    """The ID training split's cached outputs and the head, with lazily computed intermediates.

    features: (M, D) float; logits: (M, K); labels: (M,) int64 in [0, K); head_weight W (K, D);
    head_bias b (K,); val_features: (V, D) ID-validation features, or None. Every property
    below is computed on first use and kept, so statistics that share work do it once.

    ``ranks``: in a torchrun job, this process's place (default :func:`ood_core.distributed.current`);
    every rank passes the whole split (a memory-mapped entry costs nothing until read) and
    reads only its rows, ``rows = [start, stop)``.
    """

    def __init__(self, features: Tensor, logits: Tensor, labels: Tensor, head_weight: Tensor, head_bias: Tensor,
                 val_features: Tensor | None = None, ranks: Ranks | None = None) -> None:
        if features.shape[0] == 0:
            raise TrainingDataError("cannot compute training statistics from an empty training split")
        self.features, self.logits, self.labels = features, logits, labels
        self.head_weight, self.head_bias, self.val_features = head_weight, head_bias, val_features
        self.ranks = ranks or distributed.current()
        self.rows = distributed.share_bounds(int(features.shape[0]), self.ranks)
        self._memo: dict[str, object] = {}

    # -- this rank's rows, and the two ways a statistic reads them ------------------------------
    def local(self) -> tuple[Tensor, Tensor, Tensor]:
        """(h (m, D) float64, z (m, K) float64, y (m,) int64) of this rank's rows (all rows in one
        process: the same tensors as :attr:`h`, :attr:`z`, :attr:`y`)."""
        if not self.ranks.distributed:
            return self.h, self.z, self.y
        start, stop = self.rows
        return self.shared("local", lambda: (self.features[start:stop].double(), self.logits[start:stop].double(),
                                             self.labels[start:stop].long()))

    def total(self, key: str, partial: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Tensor:
        """Σ over every training row of ``partial(h, z, y)`` (a float64 sum over the rows it is
        given), computed once per ``key``: each rank sums its rows, then ``all_reduce(SUM)``."""
        def compute() -> Tensor:
            value = partial(*self.local())
            if self.ranks.distributed:
                value = distributed.all_reduce_sum(value)
            return value

        return self.shared(key, compute)

    def gathered(self, key: str, keep: Callable[[Tensor, Tensor, Tensor, int], Tensor]) -> Tensor:
        """``keep(h, z, y, start)`` of every rank (``start``: the global index of its first row),
        concatenated in rank order, i.e. in row order; computed once per ``key``."""
        def compute() -> Tensor:
            value = keep(*self.local(), self.rows[0])
            if self.ranks.distributed:
                value = distributed.all_gather_cat(value)
            return value

        return self.shared(key, compute)

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per key: an intermediate several statistics use (e.g. ViM's
        eigendecomposition). Keys are namespaced by convention: ``"<method>.<what>"``."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[return-value]

    # Shapes.
    @property
    def m(self) -> int:
        """Training rows M."""
        return int(self.features.shape[0])

    @property
    def d(self) -> int:
        """Feature width D."""
        return int(self.features.shape[1])

    @property
    def k(self) -> int:
        """Classes K (rows of the head)."""
        return int(self.head_weight.shape[0])

    # float64 copies (int64 labels), each made on first use.
    h = _Copy("features", torch.float64, "(M, D) float64 features.")
    z = _Copy("logits", torch.float64, "(M, K) float64 logits.")
    y = _Copy("labels", torch.int64, "(M,) int64 labels.")
    W = _Copy("head_weight", torch.float64, "(K, D) float64 head weight.")  # noqa: N815 (the paper's name)
    b = _Copy("head_bias", torch.float64, "(K,) float64 head bias.")

    # Class statistics.
    @property
    def class_counts(self) -> Tensor:
        """(K,) float64 training images per class."""
        return self.total("class_counts", lambda h, z, y: torch.bincount(y, minlength=self.k).double())

    @property
    def class_means(self) -> Tensor:
        """(K, D) float64 μ_c (a class without images: zeros)."""
        def compute() -> Tensor:
            sums = self.total("class_sums", lambda h, z, y: torch.zeros(self.k, self.d, dtype=torch.float64,
                                                                        device=h.device).index_add_(0, y, h))
            return sums / self.class_counts.clamp(min=1).unsqueeze(1)

        return self.shared("class_means", compute)


@dataclass(frozen=True)
class Statistic:
    """One registered statistic: ``compute(data)`` gives its tensor (any float dtype; stored
    as float32); ``version`` changes whenever its numbers do; ``doc`` and ``shape`` describe it."""

    name: str
    version: int
    compute: Callable[[TrainingData], Tensor]
    doc: str = ""
    shape: str = ""


STATISTICS: dict[str, Statistic] = {}


def register_statistic(name: str, version: int = 1, *, doc: str = "", shape: str = ""
                       ) -> Callable[[Callable[[TrainingData], Tensor]], Callable[[TrainingData], Tensor]]:
    """Decorator registering ``compute(data: TrainingData) -> Tensor`` as statistic ``name``
    (``doc`` defaults to the function's docstring). A name registered twice raises ``ValueError``."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"statistic {name!r}: version must be an int ≥ 1, got {version!r}")

    def decorator(compute: Callable[[TrainingData], Tensor]) -> Callable[[TrainingData], Tensor]:
        if name in STATISTICS:
            raise ValueError(f"training statistic {name!r} is already registered")
        STATISTICS[name] = Statistic(name, version, compute, doc or (compute.__doc__ or "").strip(), shape)
        return compute

    return decorator


def get_statistic(name: str) -> Statistic:
    """The registered statistic ``name``; an unknown name raises a one-line error listing the known ones."""
    if name not in STATISTICS:
        raise unknown_name("training statistic", name, sorted(STATISTICS))
    return STATISTICS[name]


def list_statistics() -> list[str]:
    """Registered statistic names, sorted (the method ones once ``ood_core.scorers`` is imported)."""
    return sorted(STATISTICS)


def resolve_statistics(statistics: Iterable[str | Statistic]) -> list[Statistic]:
    """Names or :class:`Statistic` objects → the objects, each once, in the given order."""
    out: dict[str, Statistic] = {}
    for item in statistics:
        stat = get_statistic(item) if isinstance(item, str) else item
        out.setdefault(stat.name, stat)
    return list(out.values())


def required_statistics(scorer_names: Iterable[str] | None = None) -> list[str]:
    """Sorted union of ``create_scorer(name).stats`` over ``scorer_names`` (default: every
    registered method). Importing :mod:`ood_core.scorers` registers the methods and their statistics."""
    from ood_core.scorers import create_scorer, list_scorers

    names = list_scorers() if scorer_names is None else list(scorer_names)
    needed: set[str] = set()
    for name in names:
        if not name.endswith("<name>"):  # a prefix entry of the registry, not a method
            needed |= set(create_scorer(name).stats)
    return sorted(needed)


def compute_statistics(statistics: Iterable[str | Statistic], data: TrainingData,
                       on_progress: Callable[[int, int], None] | None = None) -> dict[str, Tensor]:
    """``{name: float32 contiguous tensor}`` for each statistic (a name or a :class:`Statistic`);
    an unknown name raises before any work. ``on_progress(done, total)`` after each statistic."""
    wanted = resolve_statistics(statistics)
    out: dict[str, Tensor] = {}
    for stat in wanted:
        out[stat.name] = stat.compute(data).float().contiguous()
        if on_progress is not None:
            on_progress(len(out), len(wanted))
    return out


def compute_all_statistics(train_features: Tensor, train_logits: Tensor, train_labels: Tensor, head_weight: Tensor,
                           head_bias: Tensor, val_features: Tensor | None = None) -> dict[str, Tensor]:
    """Every registered statistic (the methods' own too: this imports :mod:`ood_core.scorers`) of
    one training split, for tests and benchmarks: features (M, D), logits (M, K), labels (M,),
    head (K, D) / (K,), ID-validation features (V, D) or None."""
    import ood_core.scorers  # noqa: F401 (registers the statistics the methods own)

    data = TrainingData(train_features, train_logits, train_labels, head_weight, head_bias, val_features)
    return compute_statistics(list_statistics(), data)


def _sample_positions(total: int, generator_seed: int = 0) -> Tensor | None:
    """The flat positions of the activations kept for the percentile look-ups: a seeded random
    ``MAX_SORTED_ACTIVATIONS`` of ``total``, the same on every rank; None: keep them all."""
    if total <= MAX_SORTED_ACTIVATIONS:
        return None
    gen = torch.Generator(device="cpu").manual_seed(generator_seed)
    return torch.randperm(total, generator=gen)[:MAX_SORTED_ACTIVATIONS]


def _sorted_sample(features: Tensor, generator_seed: int = 0) -> Tensor:
    flat = features.reshape(-1).float()
    idx = _sample_positions(flat.numel(), generator_seed)
    if idx is not None:
        flat = flat[idx.to(flat.device)]
    return flat.sort().values


def _sorted_training_sample(data: TrainingData) -> Tensor:
    """:func:`_sorted_sample` of all training activations, each rank contributing the sampled
    positions that fall in its rows (the same values as one process: a multiset, then sorted)."""
    positions = _sample_positions(data.m * data.d)

    def keep(h: Tensor, z: Tensor, y: Tensor, start: int) -> Tensor:
        flat = h.reshape(-1).float()
        if positions is None:
            return flat
        first = start * data.d
        mine = positions[(positions >= first) & (positions < first + flat.numel())] - first
        return flat[mine.to(flat.device)]

    return data.gathered("train_activation_sample", keep).sort().values


# -- the statistics several methods or pages share ------------------------------------------------
@register_statistic("feature_mean", shape="(D,)")
def _feature_mean(data: TrainingData) -> Tensor:
    """m̄ = mean_x h(x) (DICE's contribution estimate)."""
    return data.total("feature_sum", lambda h, z, y: h.sum(0)) / data.m


@register_statistic("class_means", shape="(K, D)")
def _class_means(data: TrainingData) -> Tensor:
    """μ_c = mean_{y=c} h(x) (Mahalanobis; LINe through the class contribution)."""
    return data.class_means


@register_statistic("class_counts", shape="(K,)")
def _class_counts(data: TrainingData) -> Tensor:
    """Training images per class."""
    return data.class_counts


@register_statistic("class_contribution", shape="(K, D)")
def _class_contribution(data: TrainingData) -> Tensor:
    """C[c] = W[c] ⊙ μ_c, LINe's Shapley/Taylor contribution term (LINe, the Neurons page)."""
    return data.W * data.class_means


@register_statistic("val_activations_sorted", shape="(≤ 2M,)")
def _val_activations_sorted(data: TrainingData) -> Tensor:
    """Ascending sample of the ID-validation activations (of the training ones without a
    validation split): ReAct's clip percentiles, LINe's δ shown as a percentile."""
    if data.val_features is None:
        return _sorted_training_sample(data)
    return _sorted_sample(data.val_features)


@register_statistic("train_activations_sorted", shape="(≤ 2M,)")
def _train_activations_sorted(data: TrainingData) -> Tensor:
    """Ascending sample of the training activations (ViM's ReAct baseline)."""
    return _sorted_training_sample(data)
