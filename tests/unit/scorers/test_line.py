"""LINe (docs/methods.md §3.10): the plain definition against the official per-sample loop and
masks by hand, then the fast path (ood_core.fast.class_groups) held to that definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_core import stages
from ood_core.fast import chunks, class_groups
from ood_core.memo import Memo
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer
from ood_core.scorers import line as line_module
from ood_core.scorers.line import line_explain, line_reference_logits

OFF = {"use_ac": False, "use_ap": False, "use_wp": False}
SETTINGS = [(90.0, 90.0, 1.0), (10.0, 10.0, 0.8), (50.0, 0.0, 2.0), (0.0, 99.0, 0.3)]  # (p_a, p_w, δ)
SWITCHES = [{}, {"use_ac": False}, {"use_ap": False}, {"use_wp": False}, {"use_ac": False, "use_wp": False}]


def official_loop(h: np.ndarray, weight: np.ndarray, bias: np.ndarray, contribution: np.ndarray,
                  delta: float, p_a: float, p_w: float) -> np.ndarray:
    """The official algorithm written plainly: one sample at a time, dense K×D masks (float64),
    → (N,) scores."""
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


def reference(ctx: FitContext, feats: FeatureSet, delta: float = 1.0, p_a: float = 90.0, p_w: float = 90.0,
              use_ac: bool = True, use_ap: bool = True, use_wp: bool = True) -> torch.Tensor:
    return line_reference_logits(feats.penultimate, ctx.head_weight, ctx.head_bias, ctx.stats["class_contribution"],
                                 delta, p_a, p_w, use_ac, use_ap, use_wp)


# -- the definition ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p_a,p_w,delta", SETTINGS)
def test_reference_matches_the_official_per_sample_loop(seed: int, p_a: float, p_w: float, delta: float) -> None:
    ctx, feats = _random_case(seed)
    expected = official_loop(feats.penultimate.double().numpy(), ctx.head_weight.double().numpy(),
                             ctx.head_bias.double().numpy(), ctx.stats["class_contribution"].double().numpy(),
                             delta, p_a, p_w)
    scores = torch.logsumexp(reference(ctx, feats, delta, p_a, p_w), dim=1)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_reference_switches_select_the_masks() -> None:
    ctx, feats = _random_case(4)
    h, weight, bias = feats.penultimate, ctx.head_weight, ctx.head_bias
    torch.testing.assert_close(reference(ctx, feats, **OFF), h @ weight.T + bias)
    scorer = create_scorer("line").fit(ctx)
    predicted = (h @ weight.T + bias).argmax(1)  # no clip: use_ac off
    act = scorer.activation_mask(70.0)[predicted]  # (N, D) each sample's m_ĉ
    torch.testing.assert_close(reference(ctx, feats, p_a=70.0, use_ac=False, use_wp=False),
                               (h * act) @ weight.T + bias)


def test_activation_mask_by_hand() -> None:
    weight = torch.ones(2, 4)
    contribution = torch.tensor([[4.0, 3.0, -1.0, 0.0], [0.0, 1.0, 2.0, -5.0]])
    ctx = FitContext(weight, torch.zeros(2), {"class_contribution": contribution,
                                              "val_activations_sorted": torch.arange(4.0)})
    scorer = create_scorer("line").fit(ctx)
    # class 0 sorted (-1, 0, 3, 4): p50 = 1.5 → keep {0, 1}; class 1 sorted (-5, 0, 1, 2): p50 = 0.5 → keep {1, 2}
    expected = torch.tensor([[True, True, False, False], [False, True, True, False]])
    assert torch.equal(scorer.activation_mask(50.0), expected)
    h = torch.ones(1, 4)  # ĉ = 0 (tie → first): z_k = Σ_{j ∈ {0, 1}} 1
    torch.testing.assert_close(line_reference_logits(h, weight, torch.zeros(2), contribution, 5.0, 50.0, 0.0,
                                                     use_wp=False), torch.tensor([[2.0, 2.0]]))


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
    h = torch.tensor([[1.0, 0.0]])  # ĉ = 1 (z = (1, 3)): only W[1, 1] of class 1 kept → z = (0, 0)
    torch.testing.assert_close(line_reference_logits(h, weight, torch.zeros(2), contribution, 5.0, 0.0, 50.0,
                                                     use_ap=False), torch.tensor([[0.0, 0.0]]))


def test_all_switches_off_equals_energy(toy) -> None:
    scorer = create_scorer("line").fit(toy.ctx)
    expected = stages.energy(toy.id_feats.penultimate @ toy.ctx.head_weight.T + toy.ctx.head_bias)
    torch.testing.assert_close(scorer.score(toy.id_feats, **OFF), expected)
    torch.testing.assert_close(scorer.reference(toy.id_feats, **OFF), expected)
    torch.testing.assert_close(scorer.score(toy.id_feats, **OFF),
                               create_scorer("energy").fit(toy.ctx).score(toy.id_feats))


def test_ac_only_equals_react_at_delta(toy) -> None:
    line = create_scorer("line").fit(toy.ctx)
    react = create_scorer("react").fit(toy.ctx)
    for delta in (0.3, 1.0, 2.5):
        assert torch.equal(line.score(toy.id_feats, **{**OFF, "use_ac": True, "delta": delta}),
                           react.score(toy.id_feats, clip_by="value", clip_value=delta))


# -- the fast path, held to the definition ---------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p_a,p_w,delta", SETTINGS)
def test_fast_path_matches_the_reference(seed: int, p_a: float, p_w: float, delta: float) -> None:
    """Each switch combination, on a fresh tensor (the one-off path) and again (class blocks)."""
    ctx, feats = _random_case(seed)
    scorer = create_scorer("line").fit(ctx)
    for switches in SWITCHES:
        hp = {"delta": delta, "p_a": p_a, "p_w": p_w, **switches}
        expected = reference(ctx, feats, **hp)
        fresh = feats.subset(torch.arange(len(feats)))  # a new tensor: the one-off path first
        for _ in range(3):
            torch.testing.assert_close(scorer.modified_logits(fresh, **hp), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_delta_moves_on_one_scorer_match_the_reference(fused: bool, monkeypatch) -> None:
    """The memoised class-sorted rows, in small row chunks, with the fused [W_eff; W] GEMM or
    two GEMMs, for δ values that move many samples' ĉ away from the unclipped prediction (the
    regrouped path) and back."""
    monkeypatch.setattr(chunks, "ROW_CHUNK", 7)
    monkeypatch.setattr(class_groups, "FUSED_HEAD_ELEMENTS", 1 << 30 if fused else 0)
    ctx, feats = _random_case(6)
    h, weight, bias = feats.penultimate, ctx.head_weight, ctx.head_bias
    scorer = create_scorer("line").fit(ctx)
    moved_counts = []
    for delta in (0.2, 1.0, 0.05, 5.0, 0.2, 0.19):
        moved = int(((h.clamp(max=delta) @ weight.T + bias).argmax(1) != (h @ weight.T + bias).argmax(1)).sum())
        torch.testing.assert_close(scorer.modified_logits(feats, delta=delta), reference(ctx, feats, delta),
                                   rtol=1e-5, atol=1e-5, msg=f"delta={delta} ({moved} samples change class)")
        moved_counts.append(moved)
    assert max(moved_counts) > 5  # the regrouped path ran


def test_on_the_fly_weights_equal_the_memoised_stack(monkeypatch) -> None:
    ctx, feats = _random_case(3)
    memoised = create_scorer("line").fit(ctx)
    expected = [memoised.score(feats) for _ in range(2)]
    monkeypatch.setattr(line_module, "MAX_MEMOISED_EFFECTIVE_WEIGHT", 0)
    monkeypatch.setattr(line_module, "TAU_CHUNK_ELEMENTS", 1)  # one class per τ chunk
    scorer = create_scorer("line").fit(ctx)
    for scores in expected:  # the one-off path, then the class blocks
        torch.testing.assert_close(scorer.score(feats), scores)
    assert len(scorer._effective_weights) == 0


def test_masks_are_bounded_memos_reused_across_delta_moves_and_order_does_not_matter() -> None:
    ctx, feats = _random_case(5)
    scorer = create_scorer("line").fit(ctx)
    memos = (scorer._activation_masks, scorer._weight_thresholds, scorer._effective_weights, scorer._by_class)
    assert all(isinstance(memo, Memo) for memo in memos) and set(map(id, scorer.memos())) >= set(map(id, memos))
    scorer.score(feats, delta=1.0)
    masks = (scorer.activation_mask(90.0), scorer.weight_thresholds(90.0))
    sizes = [len(memo) for memo in memos[:3]]
    scores = scorer.score(feats, delta=0.5)
    assert scorer.activation_mask(90.0) is masks[0] and scorer.weight_thresholds(90.0) is masks[1]
    assert [len(memo) for memo in memos[:3]] == sizes  # a δ move builds no mask
    permutation = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scorer.score(feats.subset(permutation), delta=0.5), scores[permutation])
    scorer.fit(ctx)
    assert all(len(memo) == 0 for memo in memos)  # refit clears them


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
    assert info["score"] == pytest.approx(float(scorer.reference(row, delta=0.9, p_a=50.0, p_w=50.0)[0]), abs=1e-5)


def test_mismatched_contribution_shape_raises(toy) -> None:
    stats = dict(toy.ctx.stats)
    stats["class_contribution"] = stats["class_contribution"][:, :-1]
    with pytest.raises(OODLensError, match="class_contribution"):
        create_scorer("line").fit(FitContext(toy.ctx.head_weight, toy.ctx.head_bias, stats))
