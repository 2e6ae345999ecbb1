"""Every scorer's fast path equals its plain reference, on every path the fast code can take.

For each registered method, at its defaults and at every range end of every hyperparameter
(each choice, both booleans), ``score`` is compared with ``reference`` (and, for a modified
head, ``modified_logits`` with ``reference_logits``) along these named paths:

* ``first call``        memos cleared: the direct path of a one-off score;
* ``second call``       the same tensor again: memos built (sorted rows, class groups,
                        suffix tables, masked weights, partner scores);
* ``memo hit``          a third call, served from the memos;
* ``chunks of 5 rows``  the three calls again with ``ood_core.fast.chunks.ROW_CHUNK = 5`` and a
                        tiny element budget, so every chunk boundary (and a last, short chunk
                        of the 200 / 150 rows) is crossed;
* ``memos over budget`` every memo bounded to 64 bytes: nothing can be kept, the direct
                        path runs on every call;
* ``on-the-fly weights`` (LINe) per-class effective weights built per class instead of memoised.

The reference and the fast path may differ by float32 summation order only.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import pytest
import torch

from ood_core.fast import chunks
from ood_core.scorers import create_scorer, list_scorers
from ood_core.scorers.base import Scorer, ShapedHeadScorer

TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def settings(scorer: Scorer) -> Iterator[dict[str, Any]]:
    yield {}
    for param in scorer.declared_params():
        if param.kind == "bool":
            values = (False, True)
        elif param.kind == "choice":
            values = param.choices
        else:
            values = (param.low, param.high)
        for value in values:
            yield {param.name: value}


@contextlib.contextmanager
def small_chunks(monkeypatch: pytest.MonkeyPatch, scorer: Scorer) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.setattr(chunks, "ROW_CHUNK", 5)
        patch.setattr(chunks, "ELEMENT_BUDGET", 64)
        yield


@contextlib.contextmanager
def memos_over_budget(monkeypatch: pytest.MonkeyPatch, scorer: Scorer) -> Iterator[None]:
    with monkeypatch.context() as patch:
        for memo in scorer.memos():
            patch.setattr(memo, "max_bytes", 64)
        yield


@contextlib.contextmanager
def on_the_fly_weights(monkeypatch: pytest.MonkeyPatch, scorer: Scorer) -> Iterator[None]:
    module = sys.modules[type(scorer).__module__]
    with monkeypatch.context() as patch:
        if hasattr(module, "MAX_MEMOISED_EFFECTIVE_WEIGHT"):
            patch.setattr(module, "MAX_MEMOISED_EFFECTIVE_WEIGHT", 0)
        yield


@contextlib.contextmanager
def as_is(monkeypatch: pytest.MonkeyPatch, scorer: Scorer) -> Iterator[None]:
    yield


CONDITIONS = {"as is": as_is, "chunks of 5 rows": small_chunks, "memos over budget": memos_over_budget,
              "on-the-fly weights": on_the_fly_weights}
CALLS = ("first call", "second call", "memo hit")


def has_per_class_weights(name: str) -> bool:
    return hasattr(sys.modules[type(create_scorer(name)).__module__], "MAX_MEMOISED_EFFECTIVE_WEIGHT")


CASES = [(name, condition) for name in list_scorers() for condition in CONDITIONS
         if condition != "on-the-fly weights" or has_per_class_weights(name)]


def test_the_per_class_weight_switch_is_exercised() -> None:
    assert ("line", "on-the-fly weights") in CASES  # renaming LINe's switch must not drop the path


@pytest.mark.parametrize(("name", "condition"), CASES)
def test_fast_path_equals_reference(name: str, condition: str, toy, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = create_scorer(name).fit(toy.ctx)
    checked = 0
    with CONDITIONS[condition](monkeypatch, scorer):
        for hparams in settings(scorer):
            for feats in (toy.id_feats, toy.ood_feats):
                expected = scorer.reference(feats, **hparams)
                expected_logits = (scorer.reference_logits(feats, **hparams)
                                   if isinstance(scorer, ShapedHeadScorer) else None)
                scorer.forget_tensors()
                for call in CALLS:
                    where = f"{name} {hparams} [{condition}, {call}]"
                    scores, logits = scorer.score_with_logits(feats, **hparams)
                    torch.testing.assert_close(scores, expected, **TOLERANCE, msg=lambda m: f"{where}: {m}")
                    torch.testing.assert_close(scorer.score(feats, **hparams), expected, **TOLERANCE,
                                               msg=lambda m: f"{where} (score): {m}")
                    if expected_logits is not None:
                        torch.testing.assert_close(logits, expected_logits, **TOLERANCE,
                                                   msg=lambda m: f"{where} (logits): {m}")
                    checked += 1
    assert checked >= 3


def test_every_scorer_states_its_reference_and_its_fast_path() -> None:
    """The reference is implemented by every method; a method with a faster path says what it is."""
    for name in list_scorers():
        scorer = create_scorer(name)
        implementation = type(scorer).reference if not isinstance(scorer, ShapedHeadScorer) \
            else type(scorer).reference_logits
        assert implementation not in (Scorer.reference, ShapedHeadScorer.reference_logits), name
        overrides_score = type(scorer).score is not Scorer.score and type(scorer).score is not ShapedHeadScorer.score
        overrides_logits = (isinstance(scorer, ShapedHeadScorer)
                            and type(scorer).modified_logits is not ShapedHeadScorer.modified_logits)
        if overrides_score or overrides_logits:
            assert scorer.fast_path, f"{name} has a fast path but does not declare it"
