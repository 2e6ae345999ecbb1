"""ReAct formula tests (docs/methods.md §2.5) and the shared clip-threshold stage."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ood_core import stages
from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet, FitContext


def _hand_case() -> tuple[FitContext, FeatureSet]:
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    bias = torch.tensor([0.5, -0.5])
    h = torch.tensor([[0.5, 3.0, 2.0], [1.5, 0.0, 0.2]])
    # val activations 0, 1, ..., 10: the p90 is exactly 9 and p95 is 9.5
    stats = {"val_activations_sorted": torch.arange(11, dtype=torch.float32)}
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.tensor([0, 1]))
    return FitContext(weight, bias, stats), feats


def test_score_is_energy_of_clipped_features_by_hand() -> None:
    ctx, feats = _hand_case()
    scores = create_scorer("react").fit(ctx).score(feats, clip_by="value", clip_value=1.0)
    # sample 0: min(h, 1) = (0.5, 1, 1) → z = (0.5 + 0 + 2 + 0.5, 0 + 1 - 1 - 0.5) = (3, -0.5)
    # sample 1: min(h, 1) = (1, 0, 0.2)  → z = (1 + 0.4 + 0.5, -0.2 - 0.5)      = (1.9, -0.7)
    expected = torch.tensor([math.log(math.exp(3.0) + math.exp(-0.5)), math.log(math.exp(1.9) + math.exp(-0.7))])
    torch.testing.assert_close(scores, expected)


def test_percentile_threshold_comes_from_validation_activations() -> None:
    ctx, feats = _hand_case()
    scorer = create_scorer("react").fit(ctx)
    assert scorer.threshold(clip_by="percentile", clip_percentile=90) == pytest.approx(9.0)
    assert scorer.threshold(clip_by="percentile", clip_percentile=95) == pytest.approx(9.5)
    assert scorer.threshold(clip_by="value", clip_value=0.3) == pytest.approx(0.3)
    values = np.random.default_rng(0).random(1000).astype(np.float32)
    sorted_values = torch.from_numpy(np.sort(values))
    for q in (50.0, 90.0, 97.3, 99.9):
        assert stages.clip_threshold(sorted_values, "percentile", q, 1.0) == pytest.approx(
            float(np.percentile(values, q)), rel=1e-6)


def test_huge_clip_equals_energy(toy) -> None:
    scorer = create_scorer("react").fit(toy.ctx)
    assert float(toy.id_feats.penultimate.max()) < 20.0
    reference = create_scorer("energy").fit(toy.ctx).score(toy.id_feats)
    torch.testing.assert_close(scorer.score(toy.id_feats, clip_by="value", clip_value=20.0), reference)


def test_clipping_changes_only_large_activations(toy) -> None:
    scorer = create_scorer("react").fit(toy.ctx)
    c = scorer.threshold()
    assert c == pytest.approx(float(stages.sorted_percentile(toy.ctx.stats["val_activations_sorted"], 90)))
    logits = scorer.modified_logits(toy.id_feats)
    h = toy.id_feats.penultimate
    torch.testing.assert_close(logits, h.clamp(max=c) @ toy.ctx.head_weight.T + toy.ctx.head_bias)


def test_invalid_clip_by_raises_clear_error() -> None:
    with pytest.raises(OODLensError, match="clip_by"):
        stages.clip_threshold(torch.arange(3.0), "median", 90.0, 1.0)
    with pytest.raises(ValueError):
        create_scorer("react").resolve({"clip_by": "median"})


def test_parity_with_pytorch_ood(toy) -> None:
    pytest.importorskip("pytorch_ood.detector")
    from ood_core.testing.pytorch_ood import reference

    scorer = create_scorer("react").fit(toy.ctx)
    detector = reference("react", toy.fit_inputs(), clip_by="value", clip_value=scorer.threshold())
    torch.testing.assert_close(scorer.score(toy.id_feats), detector(toy.id_feats))


def test_module_formula_equals_the_composed_reference(toy) -> None:
    """react.py's opening formula is what the composition (clip stage + head) computes."""
    from ood_core.scorers.react import react_reference

    scorer = create_scorer("react").fit(toy.ctx)
    for hparams in ({}, {"clip_by": "value", "clip_value": 0.5}):
        expected = react_reference(toy.id_feats.penultimate, toy.ctx.head_weight, toy.ctx.head_bias,
                                   scorer.threshold(**hparams))
        torch.testing.assert_close(scorer.reference(toy.id_feats, **hparams), expected)
