"""Every method at a validated setting: hyperparameters chosen on validation data, from the cache.

Each scorer declares the grid a tuner searches beside each hyperparameter
(:attr:`ood_core.params.Param.search`; explicit values, or :class:`~ood_core.params.Relative`
multiples of the model's default) and which params the paper tunes jointly
(:attr:`Scorer.joint`). :func:`search_blocks` turns that into blocks: a joint group is one
block (the product of its grids), every other searched param is a block of its own, in
declaration order. :func:`tune_scorer` scores every point of a block with the others fixed,
keeps the best, and moves to the next block (coordinate-wise). The method's default is in
every grid and the current values stay unless a point is strictly better, so a tuned
setting is never worse on the selection data than the default.

**Protocols** (:class:`Protocol`), none of which reads a test OOD set unless it says so:

* ``validation``: ID validation split against one or more validation OOD sets that are not
  test sets; by default ``val-outliers:<id>``, synthetic outliers made from the ID
  validation images (:mod:`ood_core.datasets.outliers`).
* ``leave-one-out``: for each test OOD set, tune on the ID validation split against the
  *other* test sets (the set reported is never read by its own selection).
* ``oracle``: tuned on the ID test split against the test OOD sets themselves — optimistic,
  labelled wherever it appears, never a default.

A point is **eligible** when its scores are finite and not degenerate
(:func:`ood_core.metrics.degenerate_reasons`) and, with an ``accuracy_budget``, when its
modified head loses at most that much ID accuracy on the selection's ID data.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from ood_core import metrics
from ood_core.params import Param, Relative
from ood_core.records import FeatureSet
from ood_core.registry import OODLensError
from ood_core.setting import score_setting
from ood_core.scorers.base import Scorer

Objective = Literal["fpr95", "auroc"]
ProtocolKind = Literal["validation", "leave-one-out", "oracle"]
ProgressCallback = Callable[[str, int, int], None]
ORACLE_LABEL = "oracle (tuned on the test sets: optimistic, not a result)"


class TuningError(OODLensError):
    """A tuning run that cannot be done as asked (a validation set among the test sets...)."""


@dataclass(frozen=True)
class Protocol:
    """How hyperparameters are selected.

    kind: ``"validation"``, ``"leave-one-out"`` or ``"oracle"``; val_ood: the validation OOD
    sets (``validation`` only); objective: ``"fpr95"`` (lowest, ties → higher AUROC) or
    ``"auroc"`` (highest, ties → lower FPR95); accuracy_budget: the most ID accuracy (a
    fraction, 0.01 = 1 pt) a modified head may lose on the selection's ID data, or None.
    """

    kind: ProtocolKind = "validation"
    val_ood: tuple[str, ...] = ()
    objective: Objective = "fpr95"
    accuracy_budget: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("validation", "leave-one-out", "oracle"):
            raise TuningError(f"unknown tuning protocol {self.kind!r}")
        if self.objective not in ("fpr95", "auroc"):
            raise TuningError(f"objective must be 'fpr95' or 'auroc', not {self.objective!r}")
        if self.kind == "validation" and not self.val_ood:
            raise TuningError("the validation protocol needs at least one validation OOD set")
        if self.accuracy_budget is not None and not (0.0 <= self.accuracy_budget <= 1.0):
            raise TuningError(f"the accuracy budget must be a fraction in [0, 1], not {self.accuracy_budget}")

    @property
    def is_oracle(self) -> bool:
        return self.kind == "oracle"

    def describe(self, id_dataset: str = "ID") -> str:
        """One sentence saying what the selection read."""
        best = "lowest FPR95 (ties: higher AUROC)" if self.objective == "fpr95" else "highest AUROC (ties: lower FPR95)"
        if self.kind == "validation":
            what = f"{id_dataset} val vs {', '.join(self.val_ood)} (no test set read)"
        elif self.kind == "leave-one-out":
            what = f"{id_dataset} val vs the other test OOD sets, for each test set (the reported set is never read)"
        else:
            what = f"{ORACLE_LABEL}: {id_dataset} test vs the test OOD sets"
        budget = "" if self.accuracy_budget is None else \
            f"; a modified head may lose at most {100 * self.accuracy_budget:g} pt of ID accuracy"
        return f"Hyperparameters tuned on {what}; selection: {best} over each method's declared grid{budget}."

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "val_ood": list(self.val_ood), "objective": self.objective,
                "accuracy_budget": self.accuracy_budget, "oracle": self.is_oracle}


# -- the declared search space -------------------------------------------------------------

def grid_of(param: Param, default: Any) -> tuple[Any, ...]:
    """The values a tuner tries for ``param`` (its declared ``search``), always including
    ``default``, each inside the param's range and valid for it, sorted, without duplicates."""
    if param.search is None:
        return (default,)
    if isinstance(param.search, Relative):
        raw = [default * factor for factor in param.search.factors]
    else:
        raw = list(param.search)
    values = []
    for value in [*raw, default]:
        if param.kind in ("float", "int") and param.low is not None and param.high is not None:
            value = min(max(value, param.low), param.high)
        if param.kind == "int":
            value = int(round(value))
        elif param.kind == "float":
            value = float(f"{value:.4g}") if value != default else float(value)  # 4 significant digits
        try:
            values.append(param.validate(value))
        except ValueError:
            continue  # e.g. a choice not offered by this model's cache
    unique = list(dict.fromkeys(values))
    if param.kind in ("float", "int"):
        unique.sort()
    return tuple(unique)


def search_blocks(scorer: Scorer, values: Mapping[str, Any],
                  hold: Sequence[str] = ()) -> list[dict[str, tuple[Any, ...]]]:
    """The blocks searched one after another: ``[{param: grid}, ...]``.

    Only params with a declared ``search`` that are active under ``values`` (the current
    setting, :meth:`Param.is_active`) and not named in ``hold`` are searched; a ``joint`` group
    is one block, every other searched param one block of its own, in declaration order.
    """
    searched = [p for p in scorer.declared_params()
                if p.search is not None and p.is_active(values) and p.name not in hold]
    names = {p.name for p in searched}
    grouped: dict[str, tuple[str, ...]] = {}
    for group in scorer.joint:
        members = tuple(n for n in group if n in names)
        for name in members:
            grouped[name] = members
    blocks: list[dict[str, tuple[Any, ...]]] = []
    seen: set[str] = set()
    for param in searched:
        if param.name in seen:
            continue
        members = grouped.get(param.name, (param.name,))
        seen.update(members)
        blocks.append({name: grid_of(scorer.param(name), values[name]) for name in members})
    return blocks


def grid_size(scorer: Scorer, values: Mapping[str, Any] | None = None) -> int:
    """How many settings :func:`tune_scorer` scores: the starting point, plus each block's
    product less the point already scored (every block's grid holds the current values)."""
    resolved = scorer.resolve(values)
    return 1 + sum(math.prod(len(g) for g in block.values()) - 1
                   for block in search_blocks(scorer, resolved, hold=tuple(values or ())))


# -- one method -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One scored setting on the selection data (rates as fractions).

    fpr95 / auroc: averaged over the selection's OOD sets; id_accuracy: of the head scored with
    on the selection's ID data; excluded: why it cannot be selected (empty when eligible).
    """

    params: dict[str, Any]
    fpr95: float
    auroc: float
    id_accuracy: float
    excluded: tuple[str, ...] = ()

    def key(self, objective: Objective) -> tuple[float, float]:
        """Sort key: smaller is better."""
        return (self.fpr95, -self.auroc) if objective == "fpr95" else (-self.auroc, self.fpr95)


@dataclass(frozen=True)
class Tuned:
    """The setting chosen for one method under one protocol.

    params: the full chosen setting; defaults: the method's defaults (with any fixed values);
    changed: the params whose chosen value differs from the default; selected / default:
    the selection figures at the chosen setting and at the default; evaluated: settings
    scored; excluded: reason → how many settings it excluded; note: what happened when
    nothing could be tuned (empty otherwise).
    """

    method: str
    params: dict[str, Any]
    defaults: dict[str, Any]
    selected: Candidate
    default: Candidate
    evaluated: int
    excluded: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def changed(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if self.defaults.get(k) != v}

    def as_dict(self) -> dict[str, Any]:
        return {"hparams": dict(self.params), "changed": self.changed,
                "selection_fpr95": self.selected.fpr95, "selection_auroc": self.selected.auroc,
                "default_selection_fpr95": self.default.fpr95, "default_selection_auroc": self.default.auroc,
                "evaluated": self.evaluated, "excluded": dict(self.excluded), "note": self.note}


def _candidate(scorer: Scorer, params: Mapping[str, Any], id_feats: FeatureSet, ood_sets: Sequence[FeatureSet],
               base_accuracy: float, budget: float | None) -> Candidate:
    """Score one setting on the selection data; a non-finite score excludes it rather than failing."""
    try:
        figures = score_setting(scorer, params, id_feats, {str(i): s for i, s in enumerate(ood_sets)},
                                base_accuracy=base_accuracy)
    except metrics.NonFiniteScoresError:
        return Candidate(dict(params), math.nan, math.nan, math.nan, ("non-finite scores",))
    excluded = list(figures.degenerate)
    if budget is not None and figures.id_accuracy < base_accuracy - budget - 1e-12:
        excluded.append("over the accuracy budget")
    return Candidate(dict(params), figures.fpr95, figures.auroc, figures.id_accuracy, tuple(excluded))


def tune_scorer(scorer: Scorer, id_feats: FeatureSet, ood_sets: Mapping[str, FeatureSet] | Sequence[FeatureSet], *,
                fixed: Mapping[str, Any] | None = None, objective: Objective = "fpr95",
                accuracy_budget: float | None = None,
                on_point: Callable[[], None] | None = None) -> Tuned:
    """Choose ``scorer``'s hyperparameters on ``id_feats`` (labelled ID data) against
    ``ood_sets`` (the selection's OOD sets; the objective is averaged over them).

    fixed: values held fixed (not searched); the other declared grids are searched block by
    block (:func:`search_blocks`), starting from the defaults. The current values are kept unless an
    eligible point is strictly better, so the result is never worse than the starting point
    when that point is eligible. on_point(): called after each scored setting.
    """
    sets = list(ood_sets.values()) if isinstance(ood_sets, Mapping) else list(ood_sets)
    if not sets:
        raise TuningError(f"tuning {scorer.name} needs at least one OOD set to select on")
    base_accuracy = metrics.accuracy(id_feats.logits, id_feats.labels)
    current = scorer.resolve(fixed)
    defaults = dict(current)
    seen: dict[tuple, Candidate] = {}

    def scored(params: Mapping[str, Any]) -> Candidate:
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in seen:
            seen[key] = _candidate(scorer, params, id_feats, sets, base_accuracy, accuracy_budget)
            if on_point is not None:
                on_point()
        return seen[key]

    with torch.inference_mode():
        default = scored(current)
        chosen = default
        for block in search_blocks(scorer, current, hold=tuple(fixed or ())):
            names = list(block)
            for combo in itertools.product(*block.values()):
                candidate = scored({**current, **dict(zip(names, combo))})
                if candidate.excluded:
                    continue
                if chosen.excluded or candidate.key(objective) < chosen.key(objective):
                    chosen = candidate
            current = dict(chosen.params)
    excluded: dict[str, int] = {}
    for candidate in seen.values():
        for reason in candidate.excluded:
            label = "degenerate" if reason not in ("over the accuracy budget", "non-finite scores") else reason
            excluded[label] = excluded.get(label, 0) + 1
    note = ""
    if len(seen) == 1:
        note = "nothing to tune"
    elif chosen.excluded:
        note = f"every setting was excluded ({'; '.join(chosen.excluded)}); the default is kept"
    return Tuned(method=scorer.name, params=dict(chosen.params), defaults=defaults, selected=chosen, default=default,
                 evaluated=len(seen), excluded=excluded, note=note)


# -- a whole benchmark ------------------------------------------------------------------------

@dataclass
class TunedMethod:
    """One method's test figures at the setting(s) its protocol chose.

    choices: test OOD set → the :class:`Tuned` its figures use (one shared choice, except under
    leave-one-out); result: the test figures (``MethodResult``: metrics per set and average;
    under leave-one-out its id_scores / id_accuracy are those of the first set's choice and
    ``degenerate`` joins every set's reasons).
    """

    method: str
    protocol: Protocol
    choices: dict[str, Tuned]
    result: Any


def _selection_data(bench: Any, protocol: Protocol, test_set: str | None) -> tuple[FeatureSet, dict[str, FeatureSet]]:
    """(ID features, OOD sets) a selection reads; under leave-one-out, for ``test_set``."""
    if protocol.kind == "oracle":
        return bench.id_test, dict(bench.ood)
    if protocol.kind == "leave-one-out":
        others = {name: feats for name, feats in bench.ood.items() if name != test_set}
        if not others:
            raise TuningError("leave-one-out needs at least two test OOD sets")
        return bench.id_val, others
    overlap = [name for name in protocol.val_ood if name in bench.ood]
    if overlap:
        raise TuningError(f"validation OOD set(s) {', '.join(overlap)} are also test sets; "
                          "tune on a set that is not reported")
    missing = [name for name in protocol.val_ood if name not in bench.val_ood]
    if missing:
        raise TuningError(f"validation OOD set(s) {', '.join(missing)} are not loaded "
                          f"(load_benchmark(..., val_ood_datasets=[...]))")
    return bench.id_val, {name: bench.val_ood[name] for name in protocol.val_ood}


def tune_method(bench: Any, method: str, protocol: Protocol, fixed: Mapping[str, Any] | None = None,
                on_point: Callable[[], None] | None = None) -> TunedMethod:
    """Tune ``method`` on ``bench`` under ``protocol`` and score the test sets at the choice."""
    from ood_core.benchmark import MethodResult, evaluate_method
    from ood_core.metrics import average_metrics

    scorer = bench.scorer(method)
    if protocol.kind != "leave-one-out":
        id_feats, sets = _selection_data(bench, protocol, None)
        tuned = tune_scorer(scorer, id_feats, sets, fixed=fixed, objective=protocol.objective,
                            accuracy_budget=protocol.accuracy_budget, on_point=on_point)
        result = evaluate_method(bench, method, tuned.params)
        return TunedMethod(method, protocol, {name: tuned for name in bench.ood}, result)
    choices: dict[str, Tuned] = {}
    per_set = {}
    for name in bench.ood:
        id_feats, sets = _selection_data(bench, protocol, name)
        choices[name] = tune_scorer(scorer, id_feats, sets, fixed=fixed, objective=protocol.objective,
                                    accuracy_budget=protocol.accuracy_budget, on_point=on_point)
        per_set[name] = evaluate_method(bench, method, choices[name].params, ood=[name])
    first = next(iter(per_set.values()))
    found = {name: r.metrics[name] for name, r in per_set.items()}
    reasons = tuple(dict.fromkeys(reason for r in per_set.values() for reason in r.degenerate))
    result = MethodResult(method=method, hparams=dict(first.hparams), id_scores=first.id_scores,
                          ood_scores={name: r.ood_scores[name] for name, r in per_set.items()}, metrics=found,
                          average=average_metrics(list(found.values())), id_accuracy=first.id_accuracy,
                          base_id_accuracy=first.base_id_accuracy, degenerate=reasons)
    return TunedMethod(method, protocol, choices, result)


def tune_benchmark(bench: Any, methods: Sequence[str], protocol: Protocol,
                   fixed: Mapping[str, Mapping[str, Any]] | None = None,
                   on_progress: ProgressCallback | None = None) -> dict[str, TunedMethod]:
    """:func:`tune_method` for each of ``methods``; on_progress(description, done, total) after
    every scored setting (total: the declared grid sizes summed; leave-one-out counts each set)."""
    fixed = fixed or {}
    repeats = len(bench.ood) if protocol.kind == "leave-one-out" else 1
    total = sum(repeats * grid_size(bench.scorer(m), fixed.get(m)) for m in methods)
    done = 0
    out = {}
    for method in methods:
        def point(method: str = method) -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(f"tuning {method}", min(done, total), total)
        out[method] = tune_method(bench, method, protocol, fixed.get(method), on_point=point)
    return out
