"""The scorer protocol shared by every method.

A scorer declares
  * ``name`` / ``title`` / ``paper``: identity and citation,
  * ``needs``: the :class:`FeatureSet` fields it reads (``"logits"``, ``"penultimate"``,
    ``"prepool_max"``, ``"odin_logits"``),
  * ``stats``: the training statistics it reads from ``FitContext.stats``
    (names defined in :mod:`ood_core.train_stats`),
  * ``params``: its hyperparameters as :class:`Param` declarations (the app builds
    its widgets from these),
and implements
  * ``fit(ctx)``: hyperparameter-free preparation from the head and training statistics,
  * ``score(feats, **hparams)``: a batched ``(N,) float32`` score, **higher = more ID**,
  * optionally ``modified_logits(feats, **hparams)``: the ``(N, K)`` logits of the
    modified head (clipping / pruning) so the app can show the head's ID accuracy;
    methods scored as the energy of such a head subclass :class:`ShapedHeadScorer`, which
    derives ``score`` from it and gives both from one head pass (``score_with_logits``).

Scores are computed on whatever device the feature tensors live on.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import Tensor

from ood_core import stages
from ood_core.registry import OODLensError, did_you_mean

ParamKind = Literal["float", "int", "bool", "choice"]


class MissingStatsError(OODLensError, ValueError):
    """``Scorer.fit`` got a FitContext without a training statistic the scorer declares."""


class HyperparameterError(OODLensError, ValueError):
    """A hyperparameter value that is unknown, malformed, non-finite or out of range (one line)."""


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _parse_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number or a string of one (bools excluded), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Param:
    """One hyperparameter declaration.

    ``low``/``high``/``step`` bound numeric params (inclusive). ``choices`` lists the
    values of a ``"choice"`` param. ``log`` asks the UI for a log-scale widget.
    """

    name: str
    default: Any
    kind: ParamKind = "float"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""
    unit: str = ""
    log: bool = False
    label: str = ""  # display label, e.g. "δ (clip)"; falls back to name

    def validate(self, value: Any) -> Any:
        """``value`` (a Python value or the string a CLI / URL gives) as this param's kind.

        The one validation path of the CLI, the API, the URL and the widgets: numbers must be
        finite and inside [low, high], an ``int`` param takes only integral values, a choice is
        matched by value (``"0.0028"`` is the float choice 0.0028), a bool is ``True``/``False``,
        0/1 or one of true/false/yes/no/on/off. Anything else raises :class:`HyperparameterError`.
        """
        if self.kind == "bool":
            return self._validate_bool(value)
        if self.kind == "choice":
            return self._validate_choice(value)
        number = _parse_number(value)
        if number is None:
            raise self._error(value, f"is not a number (expected {'an integer' if self.kind == 'int' else 'a number'})")
        if not math.isfinite(number):
            raise self._error(value, "is not a finite number")
        if self.kind == "int":
            if number != int(number):
                raise self._error(value, "is not an integer")
            number = int(number)
        if self.low is not None and number < self.low:
            raise self._error(value, f"is below its minimum {self.low:g}")
        if self.high is not None and number > self.high:
            raise self._error(value, f"is above its maximum {self.high:g}")
        return number

    def _validate_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise self._error(value, "is not a boolean (use true/false, yes/no, on/off or 1/0)")

    def _validate_choice(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
        for choice in self.choices:
            if isinstance(choice, bool) or isinstance(value, bool):
                if choice is value or (isinstance(value, str) and value.lower() == str(choice).lower()):
                    return choice
            elif isinstance(choice, numbers.Real):
                number = _parse_number(value)
                if isinstance(value, str) and number is not None and number == choice:
                    return choice
                if isinstance(value, numbers.Real) and value == choice:
                    return choice
            elif value == choice:
                return choice
        raise self._error(value, f"is not one of {', '.join(str(c) for c in self.choices)}")

    def _error(self, value: Any, why: str) -> HyperparameterError:
        return HyperparameterError(f"{self.name}={value!r} {why}")


@dataclass
class FeatureSet:
    """What the cache holds for one (model, dataset, split); every tensor on one device.

    logits:        (N, K) float32, exactly ``penultimate @ W.T + b``
    penultimate:   (N, D) float32, the input of the final Linear
    prepool_max:   (N, C) float32 or None, per-channel spatial max of the last feature
                   maps before global pooling (C == D for GAP networks); for ViT the
                   head-averaged CLS attention row of the last block, (N, T)
    labels:        (N,) int64, -1 where unknown (OOD sets)
    odin_logits:   (E, N, K) float32 or None, raw logits (not divided by T) of the input
                   perturbed by ODIN's step for each ε in ``odin_eps``, the gradient taken
                   at temperature ``odin_temperature``
    """

    logits: Tensor
    penultimate: Tensor
    labels: Tensor
    prepool_max: Tensor | None = None
    odin_logits: Tensor | None = None
    odin_eps: tuple[float, ...] = ()
    odin_temperature: float = 1000.0

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def to(self, device: torch.device | str) -> "FeatureSet":
        """A copy with every tensor moved to ``device``."""
        return dataclasses.replace(self, **{
            name: value.to(device) for name, value in self._tensors().items()
        })

    def subset(self, index: Tensor) -> "FeatureSet":
        """Rows ``index`` (a (M,) int64 or bool tensor) of every per-sample tensor."""
        out = {name: value[index] for name, value in self._tensors().items() if name != "odin_logits"}
        if self.odin_logits is not None:
            out["odin_logits"] = self.odin_logits[:, index]
        return dataclasses.replace(self, **out)

    def _tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    @property
    def predictions(self) -> Tensor:
        """(N,) int64 argmax of the logits."""
        return self.logits.argmax(dim=1)


@dataclass
class FitContext:
    """What ``Scorer.fit`` may use. Tensors share one device.

    head_weight: (K, D) float32, the final Linear's weight W
    head_bias:   (K,) float32, its bias b
    stats:       training statistics by name (see :mod:`ood_core.train_stats`)
    """

    head_weight: Tensor
    head_bias: Tensor
    stats: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.head_weight.device


class Scorer:
    """Base class; subclasses set the class attributes and implement ``score``."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    stats: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **default_overrides: Any) -> None:
        # Registered variants (e.g. "ash-s" vs "ash-p") override declared defaults here.
        self._defaults = {p.name: p.default for p in self.params}
        for key, value in default_overrides.items():
            self._defaults[key] = self.param(key).validate(value)
        self.ctx: FitContext | None = None

    # -- declarations -------------------------------------------------------------
    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        names = [p.name for p in self.params]
        raise HyperparameterError(f"{self.name} has no hyperparameter {name!r}; {did_you_mean(name, names)}it has "
                                  f"{', '.join(names) or 'none'}")

    def declared_params(self) -> tuple[Param, ...]:
        """The params with this instance's (variant's) defaults."""
        return tuple(dataclasses.replace(p, default=self._defaults[p.name]) for p in self.params)

    def defaults(self) -> dict[str, Any]:
        return dict(self._defaults)

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``hparams``, each validated (:meth:`Param.validate`); an unknown
        name or an invalid value raises :class:`HyperparameterError`."""
        values = dict(self._defaults)
        for key, value in (hparams or {}).items():
            values[key] = self.param(key).validate(value)
        return values

    # -- behaviour ----------------------------------------------------------------
    def fit(self, ctx: FitContext) -> "Scorer":
        """Prepare from the head and training statistics (no hyperparameters involved)."""
        missing = [s for s in self.stats if s not in ctx.stats]
        if missing:
            raise MissingStatsError(f"{self.name} needs training statistics {missing}; "
                                    "rebuild the cache's train_stats (python -m precompute)")
        self.ctx = ctx
        self.forget_tensors()  # results memoised under a previous fit are stale
        return self

    def forget_tensors(self) -> None:
        """Drop every per-tensor memo (:class:`PerTensorMemo` attributes), so the next call
        scores its rows from scratch (benchmarks time a cold re-score with it)."""
        for value in vars(self).values():
            if isinstance(value, PerTensorMemo):
                value.clear()

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 scores, higher = more in-distribution."""
        raise NotImplementedError

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor | None:
        """(N, K) logits of the modified head, or None when the method leaves the head alone."""
        return None

    def score_with_logits(self, feats: FeatureSet, **hparams: Any) -> tuple[Tensor, Tensor | None]:
        """(scores (N,), modified logits (N, K) or None) together: the ID set needs both
        (the scores for the metrics, the logits for the modified head's accuracy)."""
        return self.score(feats, **hparams), self.modified_logits(feats, **hparams)

    # -- helpers ------------------------------------------------------------------
    @property
    def fitted(self) -> FitContext:
        if self.ctx is None:
            raise RuntimeError(f"scorer {self.name!r} must be fit() before score()")
        return self.ctx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, defaults={self._defaults})"


class ShapedHeadScorer(Scorer):
    """A method whose score is the energy of a modified head's logits (ReAct, DICE, LINe,
    OPNP, ASH): subclasses implement ``modified_logits``; the head then runs once even when
    both the scores and the logits are wanted."""

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        raise NotImplementedError

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 S = LSE of the modified head's logits."""
        return self.score_with_logits(feats, **hparams)[0]

    def score_with_logits(self, feats: FeatureSet, **hparams: Any) -> tuple[Tensor, Tensor]:
        logits = self.modified_logits(feats, **hparams)
        return stages.energy(logits).float(), logits


_SEEN_ONCE = object()  # PerTensorMemo: the tensor was scored once, nothing memoised yet


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(value, Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


class PerTensorMemo:
    """A few results keyed by the identity of an input tensor (a cached feature set).

    Sliders re-score the same cached tensors many times; work that depends on the tensor but
    not on a hyperparameter (KNN's similarity search, ASH's per-row sort, Mahalanobis's
    whitening) is done once per tensor. An entry is used only while the very tensor is
    alive (weakref) and unmodified (in-place version counter; inference tensors have none
    and cannot be modified in place), so a freed tensor's reused id never hits.

    Bounded twice, least recently used first out: ``max_entries`` (one benchmark re-scores
    its ID set and every OOD set on each move, so room for all of them keeps every lookup a
    hit) and ``max_bytes`` of tensors held in the results.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30) -> None:
        import threading
        import weakref
        from collections import OrderedDict

        self._lock = threading.Lock()  # app sessions score from several threads
        self._weakref = weakref.ref
        self._entries: "OrderedDict[int, tuple[Any, int, Any, int]]" = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    @staticmethod
    def _version(tensor: Tensor) -> int:
        return -1 if tensor.is_inference() else tensor._version

    def get(self, tensor: Tensor, compute, reused_only: bool = False, expected_bytes: int = 0) -> Any:
        """``compute(tensor)``, memoised for this tensor.

        ``reused_only``: return None the first time a tensor is seen (remembering only that it
        was), so a one-off score takes the caller's direct path and the memo is built when
        the tensor is scored again (a slider move). ``expected_bytes``: the result's size;
        above half of ``max_bytes`` nothing is computed and None is returned (such results
        would evict each other on every call: the caller's direct path is cheaper)."""
        if reused_only and expected_bytes > self.max_bytes // 2:
            return None
        key, version = id(tensor), self._version(tensor)
        with self._lock:
            hit = self._entries.get(key)
            seen = hit is not None and hit[0]() is tensor and hit[1] == version
            if seen and hit[2] is not _SEEN_ONCE:
                self._entries.move_to_end(key)
                return hit[2]
            if reused_only and not seen:
                self._remember(key, tensor, version, _SEEN_ONCE, 0)
                return None
        result = compute(tensor)  # outside the lock: another tensor's lookup need not wait
        with self._lock:
            self._remember(key, tensor, version, result, tensor_bytes(result))
        return result

    def put(self, tensor: Tensor, result: Any) -> None:
        """Replace what is memoised for ``tensor`` (a result refined by a later call)."""
        with self._lock:
            self._remember(id(tensor), tensor, self._version(tensor), result, tensor_bytes(result))

    def _remember(self, key: int, tensor: Tensor, version: int, result: Any, size: int) -> None:
        """Store an entry and evict the least recently used beyond the bounds (lock held)."""
        self._entries[key] = (self._weakref(tensor), version, result, size)
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or
                                          sum(e[3] for e in self._entries.values()) > self.max_bytes):
            self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
