"""The contract every registered scorer honours, parametrised over the registry.

Shape (N,) float32, finite at every declared hyperparameter extreme, deterministic,
ID above OOD on a separable toy set, inputs left untouched, any device, and a clear
error from fit() when a declared training statistic is missing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import pytest
import torch

from ood_core.metrics import auroc
from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer, list_scorers
from ood_core.params import Param
from ood_core.records import FitContext
from ood_core.scorers.base import Scorer

NAMES = list_scorers()
KNOWN_NEEDS = {"logits", "penultimate", "prepool_max", "odin_logits"}


def extremes(param: Param) -> Iterator[Any]:
    """Every value the contract scores at: numeric bounds, each choice, both booleans."""
    if param.kind == "bool":
        yield from (False, True)
    elif param.kind == "choice":
        yield from param.choices
    else:
        yield from (param.low, param.high)


def fitted(name: str, toy) -> Scorer:
    return create_scorer(name).fit(toy.ctx)


def test_registry_is_populated() -> None:
    assert {"msp", "maxlogit", "energy", "odin", "mahalanobis", "knn", "vim", "gradnorm",
            "ash-p", "ash-b", "ash-s"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    scorer = create_scorer(name)
    assert scorer.name == name, "a registered variant must report its registered name"
    assert scorer.title and scorer.paper
    assert scorer.needs and set(scorer.needs) <= KNOWN_NEEDS
    for param in scorer.declared_params():
        assert param.help and "\n" not in param.help, f"{param.name} needs a one-line help"
        param.validate(param.default)  # defaults lie inside their own range
        if param.kind in ("float", "int"):
            assert None not in (param.low, param.high, param.step), f"{param.name} needs low/high/step"
            assert param.low <= param.default <= param.high
        if param.kind == "choice":
            assert param.default in param.choices
    with pytest.raises(ValueError):
        scorer.resolve({"no_such_hyperparameter": 1})


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_separation(name: str, toy) -> None:
    scorer = fitted(name, toy)
    id_scores, ood_scores = scorer.score(toy.id_feats), scorer.score(toy.ood_feats)
    assert id_scores.shape == (len(toy.id_feats),) and ood_scores.shape == (len(toy.ood_feats),)
    assert id_scores.dtype == torch.float32 and ood_scores.dtype == torch.float32
    assert torch.isfinite(id_scores).all() and torch.isfinite(ood_scores).all()
    assert auroc(id_scores, ood_scores) > 0.9, "higher must mean more ID on a separable toy set"


@pytest.mark.parametrize("name", NAMES)
def test_finite_at_every_extreme(name: str, toy) -> None:
    scorer = fitted(name, toy)
    for param in scorer.declared_params():
        for value in extremes(param):
            for feats in (toy.id_feats, toy.ood_feats):
                scores = scorer.score(feats, **{param.name: value})
                assert scores.shape == (len(feats),) and scores.dtype == torch.float32
                assert torch.isfinite(scores).all(), f"{name} not finite at {param.name}={value}"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_inputs_untouched(name: str, toy) -> None:
    before = {f: t.clone() for f, t in toy.id_feats._tensors().items()}
    stats_before = {k: v.clone() for k, v in toy.ctx.stats.items()}
    scorer = fitted(name, toy)
    first = scorer.score(toy.id_feats)
    scorer.score(toy.ood_feats)  # a different input in between must not leak into the next call
    # A re-score may take a memoised path (ViM's suffix table, ASH's sorted rows): the same
    # numbers up to float32 summation order; repeated calls on one path are bit-identical.
    again = scorer.score(toy.id_feats)
    torch.testing.assert_close(again, first, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, scorer.score(toy.id_feats))
    assert torch.equal(first, create_scorer(name).fit(toy.ctx).score(toy.id_feats))
    for field, tensor in toy.id_feats._tensors().items():
        assert torch.equal(tensor, before[field]), f"{name} modified feats.{field}"
    for key, value in toy.ctx.stats.items():
        assert torch.equal(value, stats_before[key]), f"{name} modified stats[{key!r}]"


@pytest.mark.parametrize("name", NAMES)
def test_modified_logits_shape(name: str, toy) -> None:
    scorer = fitted(name, toy)
    logits = scorer.modified_logits(toy.id_feats)
    if logits is not None:
        assert logits.shape == toy.id_feats.logits.shape and logits.dtype == torch.float32
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_score_with_logits_is_score_and_modified_logits(name: str, toy) -> None:
    """The one-pass path (the ID set's scores and head accuracy) gives exactly the two calls."""
    scorer = fitted(name, toy)
    params = scorer.declared_params()
    for hparams in ({}, *({p.name: value} for p in params[:1] for value in extremes(p))):
        # Each call from a cold memo, so all three take the same (first-use) path.
        scorer.forget_tensors()
        scores, logits = scorer.score_with_logits(toy.id_feats, **hparams)
        scorer.forget_tensors()
        torch.testing.assert_close(scores, scorer.score(toy.id_feats, **hparams), rtol=0, atol=0)
        scorer.forget_tensors()
        expected = scorer.modified_logits(toy.id_feats, **hparams)
        if expected is None:
            assert logits is None
        else:
            torch.testing.assert_close(logits, expected, rtol=0, atol=0)


# Logit-only scorers (MSP, Energy, ...) read no training statistics: nothing to be missing.
NAMES_WITH_STATS = [name for name in NAMES if create_scorer(name).stats]


@pytest.mark.parametrize("name", NAMES_WITH_STATS)
def test_fit_without_required_stats_raises_clear_error(name: str, toy) -> None:
    scorer = create_scorer(name)
    for missing in sorted(scorer.stats):
        stats = {k: v for k, v in toy.ctx.stats.items() if k != missing}
        with pytest.raises(OODLensError, match=missing):
            create_scorer(name).fit(dataclasses.replace(toy.ctx, stats=stats))
    with pytest.raises(OODLensError):
        scorer.fit(FitContext(head_weight=toy.ctx.head_weight, head_bias=toy.ctx.head_bias, stats={}))


@pytest.mark.parametrize("name", NAMES_WITH_STATS)
def test_score_before_fit_raises(name: str, toy) -> None:
    with pytest.raises((RuntimeError, OODLensError)):
        create_scorer(name).score(toy.id_feats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str, toy, toy_factory) -> None:
    gpu = toy_factory(device="cuda")
    cpu_scores = fitted(name, toy).score(toy.id_feats)
    gpu_scores = fitted(name, gpu).score(gpu.id_feats)
    assert gpu_scores.device.type == "cuda" and gpu_scores.dtype == torch.float32
    # ranks, not bit-equality: GEMMs differ across devices (TF32 etc.)
    assert auroc(gpu_scores, fitted(name, gpu).score(gpu.ood_feats)) > 0.9
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_rescore_makes_no_host_round_trip(name: str, toy_factory) -> None:
    """A slider move on the GPU: with CUDA's sync debug mode at "error", any implicit device →
    host copy (``.item()``, ``.cpu()``, ``bool(tensor)``, a data-dependent shape) in ``score`` raises.
    Fitting and the first scoring (memos filled) may sync; the re-score at another setting may not."""
    gpu = toy_factory(device="cuda")
    scorer = fitted(name, gpu)
    scorer.score(gpu.id_feats)  # warm: memos, lazy CUDA init
    moved = {}
    for p in scorer.params_for(scorer.fitted):  # each number three quarters up its range
        if p.kind in ("int", "float") and p.low is not None and p.high is not None:
            value = p.low + 0.75 * (p.high - p.low)
            moved[p.name] = int(round(value)) if p.kind == "int" else value
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        scores = scorer.score(gpu.id_feats, **moved)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert scores.device.type == "cuda"
