"""LINe formula tests (methods.md §3.10): masks by hand, switches, and the official per-sample loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_core import stages
from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer
from ood_core.scorers import line as line_module
from ood_core.scorers.base import FeatureSet, FitContext
from ood_core.scorers.line import line_explain

OFF = {"use_ac": False, "use_ap": False, "use_wp": False}


def reference_line(h: np.ndarray, weight: np.ndarray, bias: np.ndarray, contribution: np.ndarray,
                   delta: float, p_a: float, p_w: float) -> np.ndarray:
    """The official algorithm written plainly: one sample at a time, dense K×D masks (float64)."""
    k = weight.shape[0]
    act_masks = [contribution[c] > np.percentile(contribution[c], p_a) for c in range(k)]
    weight_masks = []
    for c in range(k):
        adjusted = np.abs(contribution[c])[None, :] * weight  # A^c[k, j] = |C[c, j]|·W[k, j]
        weight_masks.append(adjusted > np.percentile(adjusted, p_w))
    scores = []
    for x in h:
        clipped = np.minimum(x, delta)
        predicted = int(np.argmax(weight @ clipped + bias))
        pruned = (weight * weight_masks[predicted] * act_masks[predicted][None, :]) @ clipped + bias
        scores.append(np.log(np.exp(pruned - pruned.max()).sum()) + pruned.max())
    return np.array(scores)


def _random_case(seed: int, n: int = 40, k: int = 5, d: int = 12) -> tuple[FitContext, FeatureSet]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, d, generator=gen)
    bias = 0.1 * torch.randn(k, generator=gen)
    class_means = torch.rand(k, d, generator=gen) * 2
    h = (torch.randn(n, d, generator=gen) * 1.5).relu()
    stats = {"class_contribution": weight * class_means, "val_activations_sorted": h.flatten().sort().values}
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.zeros(n, dtype=torch.long))
    return FitContext(weight, bias, stats), feats


def test_activation_mask_by_hand() -> None:
    weight = torch.ones(2, 4)
    contribution = torch.tensor([[4.0, 3.0, -1.0, 0.0], [0.0, 1.0, 2.0, -5.0]])
    ctx = FitContext(weight, torch.zeros(2), {"class_contribution": contribution,
                                              "val_activations_sorted": torch.arange(4.0)})
    scorer = create_scorer("line").fit(ctx)
    # class 0 sorted (-1, 0, 3, 4): p50 = 1.5 → keep {0, 1}; class 1 sorted (-5, 0, 1, 2): p50 = 0.5 → keep {1, 2}
    expected = torch.tensor([[True, True, False, False], [False, True, True, False]])
    assert torch.equal(scorer.activation_mask(50.0), expected)


def test_weight_mask_by_hand() -> None:
    # K = 2, D = 2. Class 0: |C[0]| = (1, 2) → A^0 = [[1·1, 2·(-1)], [1·3, 2·0.5]] = [[1, -2], [3, 1]]
    # sorted (-2, 1, 1, 3), p50 = 1 → strict ">" keeps only W[1, 0].
    weight = torch.tensor([[1.0, -1.0], [3.0, 0.5]])
    contribution = torch.tensor([[1.0, -2.0], [0.0, 1.0]])
    ctx = FitContext(weight, torch.zeros(2), {"class_contribution": contribution,
                                              "val_activations_sorted": torch.arange(4.0)})
    scorer = create_scorer("line").fit(ctx)
    assert float(scorer.weight_thresholds(50.0)[0]) == pytest.approx(1.0)
    eff = scorer.effective_weights(torch.tensor([0]), 50.0, 50.0, use_ap=False, use_wp=True)[0]
    torch.testing.assert_close(eff, torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    # Class 1: |C[1]| = (0, 1) → A^1 = [[0, -1], [0, 0.5]], sorted (-1, 0, 0, 0.5): p50 = 0 → keeps W[1, 1]
    eff = scorer.effective_weights(torch.tensor([1]), 50.0, 50.0, use_ap=False, use_wp=True)[0]
    torch.testing.assert_close(eff, torch.tensor([[0.0, 0.0], [0.0, 0.5]]))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p_a,p_w,delta", [(90.0, 90.0, 1.0), (10.0, 10.0, 0.8), (50.0, 0.0, 2.0), (0.0, 99.0, 0.3)])
def test_matches_the_official_per_sample_loop(seed: int, p_a: float, p_w: float, delta: float) -> None:
    ctx, feats = _random_case(seed)
    scores = create_scorer("line").fit(ctx).score(feats, delta=delta, p_a=p_a, p_w=p_w)
    expected = reference_line(feats.penultimate.double().numpy(), ctx.head_weight.double().numpy(),
                              ctx.head_bias.double().numpy(), ctx.stats["class_contribution"].double().numpy(),
                              delta, p_a, p_w)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_on_the_fly_path_equals_the_memoised_stack(monkeypatch) -> None:
    ctx, feats = _random_case(3)
    memoised = create_scorer("line").fit(ctx).score(feats)
    monkeypatch.setattr(line_module, "MAX_MEMOISED_EFFECTIVE_WEIGHT", 0)
    monkeypatch.setattr(line_module, "TAU_CHUNK_ELEMENTS", 1)  # one class per τ chunk
    scorer = create_scorer("line").fit(ctx)
    torch.testing.assert_close(scorer.score(feats), memoised)
    assert not scorer._effective_weights


def test_all_switches_off_equals_energy(toy) -> None:
    scorer = create_scorer("line").fit(toy.ctx)
    h = toy.id_feats.penultimate
    expected = stages.energy(h @ toy.ctx.head_weight.T + toy.ctx.head_bias)
    torch.testing.assert_close(scorer.score(toy.id_feats, **OFF), expected)
    torch.testing.assert_close(scorer.score(toy.id_feats, **OFF),
                               create_scorer("energy").fit(toy.ctx).score(toy.id_feats))


def test_ac_only_equals_react_at_delta(toy) -> None:
    line = create_scorer("line").fit(toy.ctx)
    react = create_scorer("react").fit(toy.ctx)
    for delta in (0.3, 1.0, 2.5):
        assert torch.equal(line.score(toy.id_feats, **{**OFF, "use_ac": True, "delta": delta}),
                           react.score(toy.id_feats, clip_by="value", clip_value=delta))


def test_switches_select_the_masks() -> None:
    ctx, feats = _random_case(4)
    h, weight, bias = feats.penultimate, ctx.head_weight, ctx.head_bias
    scorer = create_scorer("line").fit(ctx)
    predicted = (h @ weight.T + bias).argmax(1)  # no clip: use_ac off
    act = scorer.activation_mask(70.0)[predicted]  # (N, D) each sample's m_ĉ
    logits = (h * act) @ weight.T + bias
    torch.testing.assert_close(scorer.score(feats, use_ac=False, use_wp=False, p_a=70.0),
                               torch.logsumexp(logits, 1))


def test_delta_slider_reuses_masks_and_order_does_not_matter() -> None:
    ctx, feats = _random_case(5)
    scorer = create_scorer("line").fit(ctx)
    scorer.score(feats, delta=1.0)
    masks = (dict(scorer._activation_masks), dict(scorer._weight_thresholds), dict(scorer._effective_weights))
    scores = scorer.score(feats, delta=0.5)
    assert (scorer._activation_masks, scorer._weight_thresholds, scorer._effective_weights) == masks
    permutation = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scorer.score(feats.subset(permutation), delta=0.5), scores[permutation])


def test_line_explain_is_consistent_with_the_score() -> None:
    ctx, feats = _random_case(6)
    scorer = create_scorer("line").fit(ctx)
    row = feats.subset(torch.tensor([7]))
    info = line_explain(scorer, row, delta=0.9, p_a=50.0, p_w=50.0)
    h = row.penultimate[0]
    assert info["predicted_class"] == int((h.clamp(max=0.9) @ ctx.head_weight.T + ctx.head_bias).argmax())
    assert torch.equal(info["clipped_neurons"], (h > 0.9).nonzero().squeeze(1))
    assert torch.equal(info["kept_neurons"], scorer.activation_mask(50.0)[info["predicted_class"]].nonzero().squeeze(1))
    assert info["contributions"].shape == info["kept_neurons"].shape
    bias = float(ctx.head_bias[info["predicted_class"]])
    assert float(info["contributions"].sum()) + bias == pytest.approx(info["pruned_logit"], abs=1e-5)
    assert info["score"] == pytest.approx(float(scorer.score(row, delta=0.9, p_a=50.0, p_w=50.0)[0]), abs=1e-6)


def test_mismatched_contribution_shape_raises(toy) -> None:
    stats = dict(toy.ctx.stats)
    stats["class_contribution"] = stats["class_contribution"][:, :-1]
    with pytest.raises(OODLensError, match="class_contribution"):
        create_scorer("line").fit(FitContext(toy.ctx.head_weight, toy.ctx.head_bias, stats))


def test_delta_moves_on_one_scorer_match_the_official_loop(monkeypatch) -> None:
    """The memoised class-sorted rows, in small row chunks, for δ values that move many
    samples' ĉ away from the unclipped prediction (the regrouped path) and back."""
    monkeypatch.setattr(line_module, "ROW_CHUNK", 7)
    ctx, feats = _random_case(6)
    h, weight, bias = feats.penultimate, ctx.head_weight, ctx.head_bias
    scorer = create_scorer("line").fit(ctx)
    moved_counts = []
    for delta in (0.2, 1.0, 0.05, 5.0, 0.2):
        clipped_prediction = (h.clamp(max=delta) @ weight.T + bias).argmax(1)
        moved = int((clipped_prediction != (h @ weight.T + bias).argmax(1)).sum())
        expected = reference_line(h.double().numpy(), weight.double().numpy(), bias.double().numpy(),
                                  ctx.stats["class_contribution"].double().numpy(), delta, 90.0, 90.0)
        np.testing.assert_allclose(scorer.score(feats, delta=delta).numpy(), expected, rtol=1e-5, atol=1e-5,
                                   err_msg=f"delta={delta} ({moved} samples change class under clipping)")
        moved_counts.append(moved)
    assert max(moved_counts) > 5  # the regrouped path ran
