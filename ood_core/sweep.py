"""Hyperparameter sweeps from the cache, with the selection done on validation data.

A sweep scores a grid over one or two of a method's hyperparameters (the others fixed)
and, at every point, computes

* **validation** FPR95 / AUROC: ``bench.id_val`` (held-out ID images) against one OOD set
  that is *not* among the test OOD sets (docs/methods.md §4: never tune on the test OOD sets),
* **test** FPR95 / AUROC averaged over the test OOD sets (against ``bench.id_test``).

The **best** point is chosen on validation only; its test figures are what a paper may
report. The point that is best on the test sets is also returned, as the **oracle**
(test-tuned, optimistic) point, so the gap between the two is visible. Every point carries
the ID accuracy of the head it scores with; a degenerate point (collapsed or tied scores, a
head at chance: :func:`ood_core.metrics.degenerate_reasons`) is never selected, neither on
validation nor as the oracle.

Nothing here re-runs the model: every score comes from ``scorer.score`` on cached
features.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

import numpy as np
import torch

from ood_core import metrics
from ood_core.registry import OODLensError
from ood_core.params import Param
from ood_core.records import FeatureSet
from ood_core.scorers.base import Scorer
from ood_core.setting import score_setting

Objective = Literal["fpr95", "auroc"]
ProgressCallback = Callable[[str, int, int], None]


class SweepError(OODLensError):
    """A sweep that cannot be run as asked (bad axis, validation set used for testing...)."""


class _BenchmarkLike(Protocol):
    id_val: FeatureSet
    id_test: FeatureSet
    ood: Mapping[str, FeatureSet]

    def scorer(self, name: str) -> Scorer: ...


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its hyperparameters and its figures (rates as fractions).

    val_id_accuracy / test_id_accuracy: top-1 accuracy of the (possibly modified) head on
    ID val / test; val_degenerate / test_degenerate: why the point cannot be ranked on
    validation / test (empty when it can).
    """

    params: dict[str, Any]
    val_fpr95: float
    val_auroc: float
    test_fpr95: float
    test_auroc: float
    test_per_ood: dict[str, metrics.OODMetrics] = field(default_factory=dict)
    val_id_accuracy: float = float("nan")
    test_id_accuracy: float = float("nan")
    val_degenerate: tuple[str, ...] = ()
    test_degenerate: tuple[str, ...] = ()


@dataclass
class SweepResult:
    """A finished sweep.

    axes: ((name, values), ...) — one or two axes, values in grid order.
    val_fpr95, val_auroc, test_fpr95, test_auroc: float64 arrays of shape
    ``(len(values_0),)`` or ``(len(values_0), len(values_1))``; test_id_accuracy and
    degenerate (bool: degenerate on validation or test) have the same shape.
    best: the point chosen on validation; oracle: the point best on the *test* sets; both
    among the points that are not degenerate.
    """

    method: str
    objective: Objective
    val_ood: str
    test_oods: tuple[str, ...]
    fixed: dict[str, Any]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    val_fpr95: np.ndarray
    val_auroc: np.ndarray
    test_fpr95: np.ndarray
    test_auroc: np.ndarray
    points: list[SweepPoint]
    test_id_accuracy: np.ndarray
    degenerate: np.ndarray
    best: SweepPoint
    oracle: SweepPoint
    best_index: tuple[int, ...]
    oracle_index: tuple[int, ...]

    def grid(self, figure: str) -> np.ndarray:
        """One of ``"val_fpr95"``, ``"val_auroc"``, ``"test_fpr95"``, ``"test_auroc"``,
        ``"test_id_accuracy"`` (fractions)."""
        if figure not in {"val_fpr95", "val_auroc", "test_fpr95", "test_auroc", "test_id_accuracy"}:
            raise SweepError(f"unknown sweep figure {figure!r}")
        return getattr(self, figure)


def grid_values(param: Param, count: int = 7) -> tuple[Any, ...]:
    """A default grid for one declared hyperparameter.

    float/int: ``count`` evenly spaced values over [low, high] (log-spaced when
    ``param.log``), rounded to ``step`` and de-duplicated; bool: (False, True);
    choice: every choice.
    """
    if param.kind == "bool":
        return (False, True)
    if param.kind == "choice":
        return tuple(param.choices)
    if param.low is None or param.high is None:
        raise SweepError(f"{param.name} has no declared range to sweep over")
    low, high = float(param.low), float(param.high)
    if param.log and low > 0:
        values = np.geomspace(low, high, count)
    else:
        values = np.linspace(low, high, count)
    if param.step and not param.log:
        values = np.round((values - low) / param.step) * param.step + low
    if param.kind == "int":
        values = np.round(values).astype(int)
        return tuple(dict.fromkeys(int(v) for v in values))
    return tuple(dict.fromkeys(float(np.round(v, 10)) for v in np.clip(values, low, high)))


def _figures(scorer: Scorer, params: Mapping[str, Any], val_ood: FeatureSet, bench: _BenchmarkLike,
             test_sets: Mapping[str, FeatureSet]) -> SweepPoint:
    """Validation and test metrics, head accuracies and degeneracy of one grid point."""
    validation = score_setting(scorer, params, bench.id_val, {"validation": val_ood})
    test = score_setting(scorer, params, bench.id_test, test_sets)
    return SweepPoint(
        params=dict(params),
        val_fpr95=validation.fpr95,
        val_auroc=validation.auroc,
        test_fpr95=test.fpr95,
        test_auroc=test.auroc,
        test_per_ood=test.per_ood,
        val_id_accuracy=validation.id_accuracy,
        test_id_accuracy=test.id_accuracy,
        val_degenerate=validation.degenerate,
        test_degenerate=test.degenerate,
    )


def _select(values_fpr: np.ndarray, values_auroc: np.ndarray, objective: Objective,
            excluded: np.ndarray) -> tuple[int, ...]:
    """Index of the best point among those not ``excluded`` (bool, same shape): lowest FPR95
    (ties → higher AUROC) or highest AUROC (ties → lower FPR95)."""
    flat_fpr, flat_auroc = values_fpr.reshape(-1), values_auroc.reshape(-1)
    if objective == "fpr95":
        order = np.lexsort((-flat_auroc, flat_fpr))  # last key is primary
    else:
        order = np.lexsort((flat_fpr, -flat_auroc))
    order = order[~excluded.reshape(-1)[order]]
    return tuple(int(i) for i in np.unravel_index(int(order[0]), values_fpr.shape))


def run_sweep(
    bench: _BenchmarkLike,
    method: str,
    axes: Mapping[str, Sequence[Any]],
    *,
    val_ood: FeatureSet,
    val_ood_name: str,
    test_oods: Sequence[str] | None = None,
    fixed: Mapping[str, Any] | None = None,
    objective: Objective = "fpr95",
    on_progress: ProgressCallback | None = None,
    scorer: Scorer | None = None,
) -> SweepResult:
    """Sweep ``method`` over ``axes`` (one or two ``{param name: values}``) from the cache.

    bench: a loaded benchmark (``id_val``, ``id_test``, ``ood``, ``scorer(name)``);
    val_ood: the validation OOD :class:`FeatureSet`, named ``val_ood_name``, which must
    not be one of ``test_oods`` (default: every set in ``bench.ood`` except it);
    fixed: values of the other hyperparameters (defaults otherwise);
    objective: ``"fpr95"`` (lower is better) or ``"auroc"`` (higher is better);
    on_progress(description, done, total): called after every grid point.
    """
    if not 1 <= len(axes) <= 2:
        raise SweepError(f"a sweep takes one or two hyperparameters, got {len(axes)}")
    if objective not in ("fpr95", "auroc"):
        raise SweepError(f"objective must be 'fpr95' or 'auroc', not {objective!r}")
    scorer = scorer if scorer is not None else bench.scorer(method)
    declared = {p.name for p in scorer.declared_params()}
    for name, values in axes.items():
        if name not in declared:
            raise SweepError(f"{method} has no hyperparameter {name!r}; it has {sorted(declared)}")
        if len(values) == 0:
            raise SweepError(f"the grid for {name} is empty")
    test_names = tuple(test_oods) if test_oods is not None else tuple(n for n in bench.ood if n != val_ood_name)
    if val_ood_name in test_names:
        raise SweepError(f"the validation OOD set {val_ood_name!r} is also a test set; pick another one")
    if not test_names:
        raise SweepError("a sweep needs at least one test OOD set besides the validation set")
    missing = [n for n in test_names if n not in bench.ood]
    if missing:
        raise SweepError(f"test OOD sets {missing} are not loaded; loaded: {sorted(bench.ood)}")
    test_sets = {name: bench.ood[name] for name in test_names}

    fixed_values = {k: v for k, v in (fixed or {}).items() if k not in axes}
    names = list(axes)
    grids = [tuple(scorer.param(n).validate(v) for v in axes[n]) for n in names]
    shape = tuple(len(g) for g in grids)
    total = math.prod(shape)
    points: list[SweepPoint] = []
    with torch.inference_mode():
        for done, combo in enumerate(itertools.product(*grids), start=1):
            params = scorer.resolve({**fixed_values, **dict(zip(names, combo))})
            label = ", ".join(f"{n}={v}" for n, v in zip(names, combo))
            try:
                points.append(_figures(scorer, params, val_ood, bench, test_sets))
            except metrics.NonFiniteScoresError as exc:
                raise metrics.NonFiniteScoresError(f"{method} at {label}: {exc}") from None
            if on_progress is not None:
                on_progress(f"{method}: {label}", done, total)

    def grid_of(attribute: str) -> np.ndarray:
        return np.array([getattr(p, attribute) for p in points], dtype=np.float64).reshape(shape)

    val_fpr, val_auroc = grid_of("val_fpr95"), grid_of("val_auroc")
    test_fpr, test_auroc = grid_of("test_fpr95"), grid_of("test_auroc")
    val_degenerate = np.array([bool(p.val_degenerate) for p in points]).reshape(shape)
    test_degenerate = np.array([bool(p.test_degenerate) for p in points]).reshape(shape)
    if val_degenerate.all() or test_degenerate.all():
        example = next(p for p in points if p.val_degenerate or p.test_degenerate)
        raise SweepError(f"every point of this {method} grid is degenerate (e.g. "
                         f"{'; '.join(example.val_degenerate or example.test_degenerate)}); widen the grid")
    best_index = _select(val_fpr, val_auroc, objective, val_degenerate)
    oracle_index = _select(test_fpr, test_auroc, objective, test_degenerate)
    flat = lambda index: int(np.ravel_multi_index(index, shape))  # noqa: E731
    return SweepResult(
        method=method, objective=objective, val_ood=val_ood_name, test_oods=test_names,
        fixed=dict(fixed_values), axes=tuple(zip(names, grids)),
        val_fpr95=val_fpr, val_auroc=val_auroc, test_fpr95=test_fpr, test_auroc=test_auroc,
        points=points, test_id_accuracy=grid_of("test_id_accuracy"),
        degenerate=val_degenerate | test_degenerate,
        best=points[flat(best_index)], oracle=points[flat(oracle_index)],
        best_index=best_index, oracle_index=oracle_index,
    )
