"""ASH-P / ASH-B / ASH-S (docs/methods.md §2.8): the plain definition on a hand-checkable
vector (identity head) and its guards, then the fast path (ood_core.fast.sparse_rows) held to
that definition."""
from __future__ import annotations

import math

import pytest
import torch

from ood_core import stages
from ood_core.fast import chunks
from ood_core.fast.sparse_rows import top_k_entries, top_k_mask
from ood_core.params import HyperparameterError
from ood_core.records import FeatureSet, FitContext
from ood_core.scorers import create_scorer
from ood_core.scorers.ash import MAX_SCALE_EXPONENT, VARIANTS, AshScorer, ash_reference_features, kept_count

H = torch.arange(10.0, 0.0, -1.0).unsqueeze(0)  # [10, 9, ..., 1], s1 = 55
DEFAULTS = {"p": 90.0, "b": 90.0, "s": 95.0}


def identity_head(d: int) -> FitContext:
    return FitContext(torch.eye(d), torch.zeros(d))


def feats(h: torch.Tensor) -> FeatureSet:
    return FeatureSet(logits=h.clone(), penultimate=h, labels=torch.zeros(len(h), dtype=torch.long))


def tied_case(seed: int = 0, n: int = 200, d: int = 37, k: int = 6) -> tuple[torch.Tensor, FitContext]:
    """ReLU features with many tied zeros and tied positive values, and a random head."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.relu(torch.randn(n, d, generator=gen)).round(decimals=1)
    return h, FitContext(torch.randn(k, d, generator=gen), torch.randn(k, generator=gen))


def tolerance(variant: str) -> dict[str, float]:
    # ASH-S multiplies by exp(s1/s2): float32 summation order of s2 shows in the exponent
    return {"rtol": 1e-4, "atol": 1e-3 if variant == "s" else 1e-4}


def test_kept_count() -> None:
    assert kept_count(10, 70) == 3
    assert kept_count(342, 95) == 17  # 342 − round(324.9)
    assert kept_count(10, 25) == 8  # round(2.5) = 2: half-to-even, as numpy
    assert kept_count(10, 99.9) == 1  # guarded: never keep nothing
    assert kept_count(10, 0) == 10


def test_variants_by_hand() -> None:
    top3 = torch.tensor([[10.0, 9.0, 8.0] + [0.0] * 7])
    torch.testing.assert_close(ash_reference_features(H, 70, "p"), top3)
    torch.testing.assert_close(ash_reference_features(H, 70, "b"), torch.tensor([[55 / 3] * 3 + [0.0] * 7]))
    torch.testing.assert_close(ash_reference_features(H, 70, "s"), top3 * math.exp(55 / 27))
    with pytest.raises(ValueError, match="variant"):
        ash_reference_features(H, 70, "q")


def test_ties_at_the_kth_value_go_to_the_lower_index() -> None:
    h = torch.tensor([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0]])  # k = 3: 3 and the first two 2s
    assert torch.equal(ash_reference_features(h, 50, "p"), torch.tensor([[0.0, 3.0, 2.0, 2.0, 0.0, 0.0]]))
    scorer = create_scorer("ash-p").fit(identity_head(6))
    f = feats(h)
    for percentile in (50.0, 51.0, 52.0):  # k = 3 each time: the one-off path, then the memoised sort
        torch.testing.assert_close(scorer.modified_logits(f, percentile=percentile), ash_reference_features(h, 50, "p"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_registered_variants_score_energy_of_the_reference_head(variant: str) -> None:
    name = f"ash-{variant}"
    scorer = create_scorer(name).fit(identity_head(10))
    assert scorer.name == name and scorer.title == name.upper() and scorer.variant == variant
    assert scorer.defaults() == {"percentile": DEFAULTS[variant]} and scorer.fast_path
    f = feats(H)
    logits = scorer.modified_logits(f, percentile=70.0)
    torch.testing.assert_close(logits, ash_reference_features(H, 70, variant))  # identity head: logits = h'
    torch.testing.assert_close(scorer.score(f, percentile=70.0), stages.energy(logits))
    torch.testing.assert_close(scorer.reference(f, percentile=70.0), stages.energy(logits))


def test_the_variant_is_fixed_by_the_registered_name() -> None:
    """No user-facing selector turns ASH-S into another method."""
    for name in ("ash-p", "ash-b", "ash-s"):
        assert [p.name for p in create_scorer(name).declared_params()] == ["percentile"]
        with pytest.raises(HyperparameterError):
            create_scorer(name).resolve({"variant": "p"})
    with pytest.raises(ValueError, match="variant"):
        AshScorer("x")


def test_ash_s_guards_in_both_paths() -> None:
    # s2 ≤ 0 (negative ViT-like features): fall back to the unscaled pruned vector
    negative = -H
    torch.testing.assert_close(ash_reference_features(negative, 70, "s"), ash_reference_features(negative, 70, "p"))
    # s1/s2 = D/k = 100 would overflow float32: the exponent is capped
    flat = torch.ones(1, 100)
    shaped = ash_reference_features(flat, 99, "s")
    assert torch.isfinite(shaped).all()
    assert shaped.max().item() == pytest.approx(math.exp(MAX_SCALE_EXPONENT), rel=1e-5)
    assert int((shaped > 0).sum()) == 1
    for h in (negative, flat):
        scorer = create_scorer("ash-s").fit(identity_head(h.shape[1]))
        for percentile in (70.0, 99.0, 70.0, 99.0):  # one-off path, then the sorted rows
            torch.testing.assert_close(scorer.modified_logits(feats(h), percentile=percentile),
                                       ash_reference_features(h, percentile, "s"), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_path_matches_the_reference(variant: str, monkeypatch) -> None:
    """The one-off top-(k + 1) path (in small row chunks) and the memoised sorted rows (kept
    side, or everything minus the dropped side) against ``ash_reference_features(h) @ W.T + b``
    at percentiles on both sides of D/2, on features with many ties."""
    monkeypatch.setattr(chunks, "ROW_CHUNK", 17)
    h, ctx = tied_case()
    scorer = create_scorer(f"ash-{variant}").fit(ctx)
    f = feats(h)
    for percentile in (0.0, 10.0, 45.0, 50.0, 55.0, 90.0, 95.0, 99.9, 10.0):
        expected = ash_reference_features(h, percentile, variant) @ ctx.head_weight.T + ctx.head_bias
        torch.testing.assert_close(scorer.modified_logits(f, percentile=percentile), expected, **tolerance(variant))
        torch.testing.assert_close(scorer.reference_logits(f, percentile=percentile), expected)
    fresh = create_scorer(f"ash-{variant}").fit(ctx)  # a fresh tensor's first score: the direct path
    for percentile in (0.0, 45.0, 55.0, 99.9):
        expected = ash_reference_features(h, percentile, variant) @ ctx.head_weight.T + ctx.head_bias
        torch.testing.assert_close(fresh.modified_logits(feats(h.clone()), percentile=percentile), expected,
                                   **tolerance(variant))


def test_logits_are_memoised_per_setting_in_separate_entries() -> None:
    h, ctx = tied_case(1)
    scorer = create_scorer("ash-s").fit(ctx)
    f = feats(h)
    first = scorer.modified_logits(f, percentile=90.0)
    assert scorer.modified_logits(f, percentile=90.0) is first
    for percentile in (80.0, 70.0, 60.0):
        scorer.modified_logits(f, percentile=percentile)
    assert len(scorer._logits) == 4 and scorer._logits.nbytes == 4 * first.numel() * 4  # each counted
    assert len(scorer._sorted) == 1  # the sort, built on the second score
    scorer.fit(ctx)
    assert len(scorer._logits) == 0 and len(scorer._sorted) == 0  # refit clears every memo


def test_top_k_mask_breaks_ties_like_the_stable_sort() -> None:
    gen = torch.Generator().manual_seed(1)
    h = torch.relu(torch.randn(300, 23, generator=gen)).round()  # mostly 0, 1 and 2: heavy ties
    order = h.argsort(dim=1, descending=True, stable=True)
    for k in (1, 3, 11, 22, 23):
        expected = torch.zeros_like(h, dtype=torch.bool).scatter_(1, order[:, :k], True)
        assert torch.equal(top_k_mask(h, k), expected)
        columns, values, kept = top_k_entries(h, k)  # the (k + 1)-topk path, crowded rows included
        assert torch.equal(torch.zeros_like(expected).scatter_(1, columns, kept), expected)
        assert torch.equal(values, h.gather(1, columns)) and bool((kept.sum(1) == k).all())
