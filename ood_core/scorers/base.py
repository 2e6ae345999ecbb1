"""The scorer protocol shared by every method.

A scorer declares
  * ``name`` / ``title`` / ``paper``: identity and citation,
  * ``needs``: the :class:`~ood_core.records.FeatureSet` fields it reads (``"logits"``,
    ``"penultimate"``, ``"prepool_max"``, ``"odin_logits"``),
  * ``stats``: the training statistics it reads from ``FitContext.stats`` (each registered
    once, with a version, in :mod:`ood_core.statistics`),
  * ``params``: its hyperparameters as :class:`~ood_core.params.Param` declarations (the app
    builds its widgets from these; :meth:`Scorer.declared_params` gives them for a fitted
    model, e.g. ViM's ``dim`` bounded by the feature width), each with the grid a tuner
    searches (``Param.search``),
  * ``display_order``: the order the app shows the params in (a permutation of their names;
    empty: declaration order with every controller right before the params it controls,
    :func:`ood_core.params.display_order`),
  * ``joint``: groups of params a tuner searches jointly, where the paper tunes them together
    (every other searched param is tuned on its own, in declaration order),
  * ``summary``: one line saying what the score measures, for the dashboard,
and implements
  * ``fit(ctx)``: hyperparameter-free preparation from the head and training statistics,
  * ``reference(feats, **hparams)``: the paper's formula in plain tensor code, a batched
    ``(N,) float32`` score, **higher = more ID**,
  * ``score(feats, **hparams)``: the same numbers, by a faster path where the method has
    one (memos, sparse products; declared in ``fast_path``), else the reference itself;
  * for methods scored as the energy of a modified head (:class:`ShapedHeadScorer`):
    ``reference_logits`` / ``modified_logits``, the ``(N, K)`` logits of that head.

Scores are computed on whatever device the feature tensors live on. Every memo of a scorer
is an :class:`ood_core.memo.Memo`, cleared by ``fit``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from ood_core import stages
from ood_core.memo import Memo
from ood_core.params import HyperparameterError, Param
from ood_core.params import display_order as ordered_for_display
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import OODLensError, did_you_mean

__all__ = ["FeatureSet", "FitContext", "HyperparameterError", "MissingStatsError", "Param", "Scorer",
           "ShapedHeadScorer"]


class MissingStatsError(OODLensError, ValueError):
    """``Scorer.fit`` got a FitContext without a training statistic the scorer declares."""


class Scorer:
    """Base class; subclasses set the class attributes and implement ``reference`` (and
    ``score`` when they have a faster path)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    stats: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[tuple[Param, ...]] = ()
    joint: ClassVar[tuple[tuple[str, ...], ...]] = ()
    display_order: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    fast_path: ClassVar[str] = ""  # what ``score`` does beyond ``reference``; "" = it is the reference

    def __init__(self, name: str | None = None, title: str | None = None, summary: str | None = None,
                 **default_overrides: Any) -> None:
        if summary is not None:
            self.summary = summary
        if name is not None:  # a registered variant reports its own name ("ash-s", "nap-r")
            self.name = name
            self.title = title or name.upper()
        elif title is not None:
            self.title = title
        self._overrides = {key: self.param(key).validate(value) for key, value in default_overrides.items()}
        self._params = self._with_overrides(self.params)
        self.ctx: FitContext | None = None

    def _with_overrides(self, params: tuple[Param, ...]) -> tuple[Param, ...]:
        """``params`` with the variant's defaults, each kept inside its (possibly model-specific) range."""
        out = []
        for p in params:
            if p.name in self._overrides:
                default = self._overrides[p.name]
                if p.kind in ("float", "int") and p.low is not None and p.high is not None:
                    default = min(max(default, p.low), p.high)
                p = dataclasses.replace(p, default=default)
            out.append(p)
        return tuple(out)

    # -- declarations -------------------------------------------------------------
    def param(self, name: str) -> Param:
        for p in getattr(self, "_params", self.params):
            if p.name == name:
                return p
        names = [p.name for p in self.params]
        raise HyperparameterError(f"{self.name} has no hyperparameter {name!r}; {did_you_mean(name, names)}it has "
                                  f"{', '.join(names) or 'none'}")

    def params_for(self, ctx: FitContext) -> tuple[Param, ...]:
        """The declared params for the model of ``ctx`` (a method whose range or default depends
        on the model, like ViM's ``dim``, overrides this); variant defaults applied after."""
        return self.params

    def declared_params(self) -> tuple[Param, ...]:
        """The params with this instance's (variant's) defaults, for the fitted model once fitted."""
        return self._params

    def display_params(self) -> tuple[Param, ...]:
        """:meth:`declared_params` in display order (``display_order``, else controllers first)."""
        return ordered_for_display(self.declared_params(), self.display_order)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self._params}

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``hparams``, each validated (:meth:`Param.validate`); an unknown
        name or an invalid value raises :class:`HyperparameterError`."""
        values = self.defaults()
        for key, value in (hparams or {}).items():
            values[key] = self.param(key).validate(value)
        return values

    # -- behaviour ----------------------------------------------------------------
    def fit(self, ctx: FitContext) -> "Scorer":
        """Prepare from the head and training statistics (no hyperparameters involved)."""
        missing = [s for s in sorted(self.stats) if s not in ctx.stats]
        if missing:
            raise MissingStatsError(f"{self.name} needs training statistics {missing}; "
                                    "rebuild the cache's train_stats (python -m precompute)")
        self.ctx = ctx
        self._params = self._with_overrides(self.params_for(ctx))
        for memo in self.memos():  # everything memoised under a previous fit is stale
            memo.clear()
        return self

    def memos(self) -> list[Memo]:
        """Every :class:`Memo` this scorer holds (attributes, and those of scorers it wraps)."""
        found: list[Memo] = []
        for value in vars(self).values():
            if isinstance(value, Memo):
                found.append(value)
            elif isinstance(value, Scorer) and value is not self:
                found.extend(value.memos())
        return found

    def forget_tensors(self) -> None:
        """Drop what every memo holds for feature tensors, so the next call scores its rows
        from scratch (benchmarks time a cold re-score with it); what is keyed by a
        hyperparameter value alone (masks, masked weights) stays, as a fitted detector keeps
        its fitted state. ``fit`` clears everything."""
        for memo in self.memos():
            memo.clear(tensors_only=True)

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 scores by the paper's formula in plain tensor code, higher = more ID."""
        raise NotImplementedError

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 scores, higher = more in-distribution (the reference unless overridden)."""
        return self.reference(feats, **hparams)

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

    def head_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The fitted head (W (K, D), b (K,)) as float32 on ``device``."""
        return stages.head_on(self.fitted.head_weight, self.fitted.head_bias, device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, defaults={self.defaults()})"


class ShapedHeadScorer(Scorer):
    """A method whose score is the energy of a modified head's logits (ReAct, DICE, LINe,
    OPNP, ASH): subclasses implement ``reference_logits`` (the plain formula) and, when they
    have a faster path, ``modified_logits``; the head then runs once even when both the
    scores and the logits are wanted."""

    def reference_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 logits of the modified head, by the plain formula."""
        raise NotImplementedError

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 logits of the modified head (the reference unless overridden)."""
        return self.reference_logits(feats, **hparams)

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 S = LSE of the reference head's logits."""
        return stages.energy(self.reference_logits(feats, **hparams)).float()

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32 S = LSE of the modified head's logits."""
        return self.score_with_logits(feats, **hparams)[0]

    def score_with_logits(self, feats: FeatureSet, **hparams: Any) -> tuple[Tensor, Tensor]:
        logits = self.modified_logits(feats, **hparams)
        return stages.energy(logits).float(), logits
