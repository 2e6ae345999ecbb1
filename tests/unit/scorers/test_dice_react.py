"""DICE + ReAct (docs/methods.md §2.7): clip, then DICE's masked head."""
from __future__ import annotations

import torch

from ood_core import stages
from ood_core.scorers import create_scorer


def test_defaults_follow_the_cifar_analogy() -> None:
    defaults = create_scorer("dice+react").defaults()
    assert defaults["sparsity"] == 90.0 and defaults["clip_by"] == "value" and defaults["clip_value"] == 1.0


def test_score_is_clip_then_masked_head(toy) -> None:
    scorer = create_scorer("dice+react").fit(toy.ctx)
    mask = create_scorer("dice").fit(toy.ctx).weight_mask(sparsity=90.0)
    h = toy.id_feats.penultimate
    c = 0.7
    expected = torch.logsumexp(h.clamp(max=c) @ (toy.ctx.head_weight * mask).T + toy.ctx.head_bias, dim=1)
    torch.testing.assert_close(scorer.score(toy.id_feats, clip_value=c), expected)
    assert scorer.threshold(clip_value=c) == c


def test_no_effective_clip_equals_dice(toy) -> None:
    scorer = create_scorer("dice+react").fit(toy.ctx)
    dice = create_scorer("dice").fit(toy.ctx)
    assert float(toy.id_feats.penultimate.max()) < 20.0
    for sparsity in (0.0, 50.0, 90.0):
        torch.testing.assert_close(scorer.score(toy.id_feats, sparsity=sparsity, clip_value=20.0),
                                   dice.score(toy.id_feats, sparsity=sparsity))


def test_percentile_clip_uses_validation_activations(toy) -> None:
    scorer = create_scorer("dice+react").fit(toy.ctx)
    c = float(stages.sorted_percentile(toy.ctx.stats["val_activations_sorted"], 95.0))
    torch.testing.assert_close(scorer.score(toy.id_feats, clip_by="percentile", clip_percentile=95.0),
                               scorer.score(toy.id_feats, clip_by="value", clip_value=c))


def test_clip_happens_before_the_mask() -> None:
    # One class, two neurons: W = [1, 1], m̄ = [1, 2] → V = [1, 2]; sparsity 0 drops neuron 0.
    from ood_core.records import FeatureSet, FitContext
    weight, bias = torch.tensor([[1.0, 1.0]]), torch.tensor([0.0])
    stats = {"feature_mean": torch.tensor([1.0, 2.0]), "val_activations_sorted": torch.arange(3.0)}
    h = torch.tensor([[5.0, 3.0]])
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.tensor([0]))
    scorer = create_scorer("dice+react").fit(FitContext(weight, bias, stats))
    # LSE of one logit is the logit: min(3, 2) = 2 from neuron 1 only
    torch.testing.assert_close(scorer.score(feats, sparsity=0.0, clip_value=2.0), torch.tensor([2.0]))
