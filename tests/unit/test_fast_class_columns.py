"""LINe's large-head fast path (ood_core.fast.class_groups.column_subset_head) and the stage
helpers it rests on, held to the plain definition.

The path runs when K·K·D exceeds ``line.MAX_MEMOISED_EFFECTIVE_WEIGHT``; here that bound is
forced to 0 so small random heads take it, with row chunks, class groups and the element
budget forced tiny so every boundary (a class split over several pieces, a group of one
piece, a last short chunk) is crossed, at settings where classes read their kept columns,
their pruned columns, or a mix of both.
"""
from __future__ import annotations

import pytest
import torch

from ood_core import stages
from ood_core.fast import chunks, class_groups
from ood_core.records import FeatureSet, FitContext
from ood_core.scorers import create_scorer
from ood_core.scorers import line as line_module
from ood_core.scorers.line import line_reference_logits

# (p_a, p_w, δ): kept columns fewer (90/90), pruned columns fewer (10/10), mixed, extremes
SETTINGS = [(90.0, 90.0, 1.0), (10.0, 10.0, 0.8), (50.0, 50.0, 2.0), (0.0, 99.0, 0.3), (99.0, 0.0, 5.0)]
SWITCHES = [{}, {"use_ac": False}, {"use_ap": False}, {"use_wp": False}]


def _case(seed: int, n: int = 90, k: int = 7, d: int = 16) -> tuple[FitContext, FeatureSet]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, d, generator=gen)
    bias = 0.1 * torch.randn(k, generator=gen)
    class_means = torch.rand(k, d, generator=gen) * 2
    h = (torch.randn(n, d, generator=gen) * 1.5).relu()
    h[:, 0] = 0.0  # a silent unit: ties in the contribution and zero products
    stats = {"class_contribution": weight * class_means, "val_activations_sorted": h.flatten().sort().values}
    feats = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.zeros(n, dtype=torch.long))
    return FitContext(weight, bias, stats), feats


@pytest.fixture
def large_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(line_module, "MAX_MEMOISED_EFFECTIVE_WEIGHT", 0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p_a,p_w,delta", SETTINGS)
@pytest.mark.parametrize("tiny", [False, True], ids=["default chunks", "tiny chunks and groups"])
def test_column_subsets_equal_the_reference(seed: int, p_a: float, p_w: float, delta: float, tiny: bool,
                                            large_head: None, monkeypatch: pytest.MonkeyPatch) -> None:
    if tiny:
        monkeypatch.setattr(chunks, "ROW_CHUNK", 4)
        monkeypatch.setattr(chunks, "ELEMENT_BUDGET", 40)
        monkeypatch.setattr(class_groups, "GROUP_ELEMENTS", 40)
    ctx, feats = _case(seed)
    scorer = create_scorer("line").fit(ctx)
    for switches in SWITCHES:
        hp = {"delta": delta, "p_a": p_a, "p_w": p_w, **switches}
        v = scorer.resolve(hp)
        expected = line_reference_logits(feats.penultimate, ctx.head_weight, ctx.head_bias,
                                         ctx.stats["class_contribution"], v["delta"], v["p_a"], v["p_w"],
                                         v["use_ac"], v["use_ap"], v["use_wp"])
        for _ in range(2):  # the plan built, then memoised
            torch.testing.assert_close(scorer.modified_logits(feats, **hp), expected, rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"{hp}: {m}")
        assert len(scorer._effective_weights) == 0  # no (K, K, D) stack on this path


def test_plans_use_both_forms_and_their_columns_are_the_masks(large_head: None) -> None:
    """The plan's columns are exactly where W_eff^c keeps a weight (kept form) or prunes one
    (correction form), each class taking the fewer; its thresholds reproduce the mask."""
    ctx, _ = _case(3, k=9, d=24)
    scorer = create_scorer("line").fit(ctx)
    forms = set()
    for p_a, p_w, _ in SETTINGS:
        plan = scorer.column_plan(p_a, p_w, True, True)
        effective = scorer.effective_weights(torch.arange(9), p_a, p_w, True, True)  # (K, K, D)
        weight = ctx.head_weight
        for c in range(9):
            keep_mask = ((scorer._abs_contribution[c][None, :] * weight > scorer.weight_thresholds(p_w)[c])
                         & scorer.activation_mask(p_a)[c][None, :])
            kept_columns = keep_mask.any(dim=0).nonzero().squeeze(1)
            pruned_columns = (~keep_mask).any(dim=0).nonzero().squeeze(1)
            expected = pruned_columns if plan.correction[c] else kept_columns
            assert torch.equal(plan.columns[c], expected), (p_a, p_w, c)
            assert plan.columns[c].numel() == min(kept_columns.numel(), pruned_columns.numel())
            forms.add(plan.correction[c])
            if plan.thresholds is not None:  # w > t on the plan's columns is the official comparison
                rule = weight[:, plan.columns[c]] > plan.thresholds[c][None, :]
                torch.testing.assert_close(rule, keep_mask[:, plan.columns[c]])
            assert torch.equal(effective[c], weight * keep_mask)  # the mask of the effective weight
    assert forms == {True, False}


def test_product_thresholds_match_the_product_comparison() -> None:
    """fl(a·w) > τ ⟺ w > t for every w, including the floats next to t and a = 0."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.rand(5000, generator=gen) * torch.logspace(-6, 2, 5000)
    scale[:20] = 0.0
    threshold = torch.randn(5000, generator=gen) * 1e-3
    t = stages.product_thresholds(scale, threshold)
    assert t is not None
    inf = torch.tensor(float("inf"))
    near = torch.stack([t, torch.nextafter(t, inf), torch.nextafter(t, -inf)], dim=1)
    w = torch.cat([torch.randn(5000, 40, generator=gen) * 0.05, torch.nan_to_num(near, posinf=1.0, neginf=-1.0)], 1)
    assert torch.equal(scale[:, None] * w > threshold[:, None], w > t[:, None])


def test_chunked_head_logits_equal_one_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "ROW_CHUNK", 3)
    gen = torch.Generator().manual_seed(1)
    h, weight, bias = torch.rand(11, 6, generator=gen), torch.randn(4, 6, generator=gen), torch.randn(4, generator=gen)
    clip = lambda x: x.clamp(max=0.5)  # noqa: E731
    torch.testing.assert_close(stages.chunked_head_logits(h, weight, bias, clip), h.clamp(max=0.5) @ weight.T + bias)
    torch.testing.assert_close(stages.chunked_head_logits(h.half(), weight, bias), h.half().float() @ weight.T + bias)


def test_a_stage_with_only_a_transform_is_still_applied() -> None:
    """A HeadStage that overrides ``transform`` alone keeps working on the chunked fast path."""
    from ood_core.scorers.composed import ComposedHeadScorer, HeadStage

    class Halve(HeadStage):
        def transform(self, h, stats, values):
            return h * 0.5

    ctx, feats = _case(4)
    scorer = ComposedHeadScorer("halve", "Halve", "", (Halve(),)).fit(ctx)
    torch.testing.assert_close(scorer.modified_logits(feats), scorer.reference_logits(feats))
    torch.testing.assert_close(scorer.modified_logits(feats), (feats.penultimate * 0.5) @ ctx.head_weight.T + ctx.head_bias)


def test_without_thresholds_the_products_are_compared(large_head: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """When no threshold pins the product comparison down, the plan carries none and the
    masked weights compare |C[c, j]|·W[k, j] with τ_c directly: the same logits."""
    monkeypatch.setattr(stages, "product_thresholds", lambda scale, threshold, steps=8: None)
    monkeypatch.setattr(class_groups, "GROUP_ELEMENTS", 40)
    ctx, feats = _case(5)
    scorer = create_scorer("line").fit(ctx)
    for p_a, p_w, delta in SETTINGS:
        assert scorer.column_plan(p_a, p_w, True, True).thresholds is None
        expected = line_reference_logits(feats.penultimate, ctx.head_weight, ctx.head_bias,
                                         ctx.stats["class_contribution"], delta, p_a, p_w)
        torch.testing.assert_close(scorer.modified_logits(feats, delta=delta, p_a=p_a, p_w=p_w), expected,
                                   rtol=1e-5, atol=1e-5)
