"""DICE formula tests (docs/methods.md §2.6): global strict-percentile mask of m̄ ⊙ W."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_core import stages
from ood_core.scorers import create_scorer
from ood_core.scorers.dice import dice_mask
from ood_core.records import FeatureSet, FitContext


def _hand_case() -> tuple[FitContext, FeatureSet]:
    # V = m̄ ⊙ W = [[2, -1, 0, 3], [4, 1, 0, -2], [1, 2, 0, 6]]: the column j=2 is zero (m̄_2 = 0)
    feature_mean = torch.tensor([1.0, 1.0, 0.0, 2.0])
    weight = torch.tensor([[2.0, -1.0, 5.0, 1.5], [4.0, 1.0, -3.0, -1.0], [1.0, 2.0, 0.5, 3.0]])
    bias = torch.tensor([0.1, 0.2, -0.3])
    h = torch.tensor([[1.0, 2.0, 0.0, 0.5], [0.0, 1.0, 0.0, 2.0]])
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.tensor([0, 2]))
    return FitContext(weight, bias, {"feature_mean": feature_mean}), feats


def test_mask_by_hand() -> None:
    ctx, _ = _hand_case()
    scorer = create_scorer("dice").fit(ctx)
    # sorted V: -2 -1 0 0 0 1 1 2 2 3 4 6; 50th percentile = position 5.5 → 1 → keep V > 1
    expected_50 = torch.tensor([[True, False, False, True], [True, False, False, False], [False, True, False, True]])
    assert torch.equal(scorer.weight_mask(sparsity=50.0), expected_50)
    # sparsity 0: the 0th percentile is the minimum (-2); the strict ">" drops exactly that entry
    expected_0 = torch.ones(3, 4, dtype=torch.bool)
    expected_0[1, 3] = False
    assert torch.equal(scorer.weight_mask(sparsity=0.0), expected_0)


def test_mask_matches_numpy_percentile_on_random_tensors() -> None:
    rng = np.random.default_rng(1)
    weight, mean = rng.standard_normal((7, 13)).astype(np.float32), rng.random(13).astype(np.float32)
    contribution = mean[None, :] * weight
    for sparsity in (0.0, 10.0, 70.0, 90.0, 99.9):
        expected = contribution > np.percentile(contribution, sparsity)
        mask = dice_mask(torch.from_numpy(mean), torch.from_numpy(weight), sparsity)
        assert np.array_equal(mask.numpy(), expected), sparsity


def test_score_is_energy_of_masked_head() -> None:
    ctx, feats = _hand_case()
    scorer = create_scorer("dice").fit(ctx)
    mask = scorer.weight_mask(sparsity=50.0)
    expected = torch.logsumexp(feats.penultimate @ (ctx.head_weight * mask).T + ctx.head_bias, dim=1)
    torch.testing.assert_close(scorer.score(feats, sparsity=50.0), expected)


def test_equals_energy_when_the_mask_drops_nothing_that_matters() -> None:
    # With V ≥ 0 everywhere and the minimum only in a column whose feature is zero, sparsity 0
    # drops only weights that multiply h_j = 0: the masked head equals the full head.
    weight = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 2.5]])
    bias = torch.tensor([0.0, 1.0])
    ctx = FitContext(weight, bias, {"feature_mean": torch.tensor([0.0, 1.0, 1.0])})
    h = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 0.5]])
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.tensor([0, 1]))
    scorer = create_scorer("dice").fit(ctx)
    assert not bool(scorer.weight_mask(sparsity=0.0)[:, 0].any()) and bool(scorer.weight_mask(sparsity=0.0)[:, 1:].all())
    torch.testing.assert_close(scorer.score(feats, sparsity=0.0), stages.energy(feats.logits))


def test_masked_weight_is_memoised_per_sparsity(toy) -> None:
    scorer = create_scorer("dice").fit(toy.ctx)
    first = scorer.masked_weight(scorer.resolve({"sparsity": 90.0}), toy.ctx.device)
    assert scorer.masked_weight(scorer.resolve({"sparsity": 90.0}), toy.ctx.device) is first
    assert not torch.equal(scorer.masked_weight(scorer.resolve({"sparsity": 50.0}), toy.ctx.device), first)
    kept = scorer.weight_mask(sparsity=90.0).float().mean()
    assert 0.05 < float(kept) <= 0.11  # ≈ 10 % of K·D weights survive p = 90


def test_parity_with_pytorch_ood(toy) -> None:
    pytest.importorskip("pytorch_ood.detector")
    from ood_core.testing.pytorch_ood import reference

    scorer = create_scorer("dice").fit(toy.ctx)
    detector = reference("dice", toy.fit_inputs(), sparsity=90.0)
    torch.testing.assert_close(scorer.score(toy.id_feats, sparsity=90.0), detector(toy.id_feats), rtol=1e-5, atol=1e-5)


def test_module_formula_equals_the_composed_reference(toy) -> None:
    """dice.py's opening formula is what the composition (DICE mask stage + head) computes."""
    from ood_core.scorers.dice import dice_reference

    scorer = create_scorer("dice").fit(toy.ctx)
    for sparsity in (0.0, 50.0, 90.0):
        expected = dice_reference(toy.id_feats.penultimate, toy.ctx.head_weight, toy.ctx.head_bias,
                                  toy.ctx.stats["feature_mean"], sparsity)
        torch.testing.assert_close(scorer.reference(toy.id_feats, sparsity=sparsity), expected)
