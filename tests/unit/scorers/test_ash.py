"""ASH-P / ASH-B / ASH-S on a hand-checkable vector (identity head) and the guards."""
from __future__ import annotations

import math

import pytest
import torch

from ood_core import stages
from ood_core.scorers import create_scorer
from ood_core.scorers.ash import MAX_SCALE_EXPONENT, VARIANTS, ash_features, kept_count
from ood_core.scorers.base import FeatureSet, FitContext

H = torch.arange(10.0, 0.0, -1.0).unsqueeze(0)  # [10, 9, ..., 1], s1 = 55


def identity_head(d: int) -> FitContext:
    return FitContext(torch.eye(d), torch.zeros(d))


def feats(h: torch.Tensor) -> FeatureSet:
    return FeatureSet(logits=h.clone(), penultimate=h, labels=torch.zeros(len(h), dtype=torch.long))


def test_kept_count() -> None:
    assert kept_count(10, 70) == 3
    assert kept_count(342, 95) == 17  # 342 − round(324.9)
    assert kept_count(10, 25) == 8  # round(2.5) = 2: half-to-even, as numpy
    assert kept_count(10, 99.9) == 1  # guarded: never keep nothing
    assert kept_count(10, 0) == 10


def test_variants_by_hand() -> None:
    top3 = torch.tensor([[10.0, 9.0, 8.0] + [0.0] * 7])
    torch.testing.assert_close(ash_features(H, 70, "p"), top3)
    torch.testing.assert_close(ash_features(H, 70, "b"), torch.tensor([[55 / 3] * 3 + [0.0] * 7]))
    torch.testing.assert_close(ash_features(H, 70, "s"), top3 * math.exp(55 / 27))


@pytest.mark.parametrize("name,variant,percentile", [("ash-p", "p", 90.0), ("ash-b", "b", 90.0), ("ash-s", "s", 95.0)])
def test_registered_variants_score_energy_of_shaped_head(name: str, variant: str, percentile: float) -> None:
    scorer = create_scorer(name).fit(identity_head(10))
    assert scorer.name == name and scorer.defaults() == {"variant": variant, "percentile": percentile}
    f = feats(H)
    logits = scorer.modified_logits(f, percentile=70.0)
    torch.testing.assert_close(logits, ash_features(H, 70, variant))  # identity head: logits = h'
    torch.testing.assert_close(scorer.score(f, percentile=70.0), stages.energy(logits))


def test_ash_s_guards() -> None:
    # s2 ≤ 0 (negative ViT-like features): fall back to the unscaled pruned vector
    negative = -H
    torch.testing.assert_close(ash_features(negative, 70, "s"), ash_features(negative, 70, "p"))
    # s1/s2 = D/k = 100 would overflow float32: the exponent is capped
    flat = torch.ones(1, 100)
    shaped = ash_features(flat, 99, "s")
    assert torch.isfinite(shaped).all()
    assert shaped.max().item() == pytest.approx(math.exp(MAX_SCALE_EXPONENT), rel=1e-5)
    assert int((shaped > 0).sum()) == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_sparse_head_matches_the_dense_definition(variant: str) -> None:
    """The sorted-rows CSR product (kept side, or everything minus the dropped side) against
    ``ash_features(h) @ W.T + b`` at percentiles on both sides of D/2, on ReLU features with
    many tied zeros and tied positive values, through one scorer (memoised sort)."""
    gen = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(200, 37, generator=gen)).round(decimals=1)  # ties
    weight, bias = torch.randn(6, 37, generator=gen), torch.randn(6, generator=gen)
    scorer = create_scorer(f"ash-{variant}").fit(FitContext(weight, bias))
    f = feats(h)
    for percentile in (0.0, 10.0, 45.0, 50.0, 55.0, 90.0, 95.0, 99.9):
        expected = ash_features(h, percentile, variant) @ weight.T + bias
        got = scorer.modified_logits(f, percentile=percentile)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3 if variant == "s" else 1e-4)


def test_top_k_mask_breaks_ties_like_the_stable_sort() -> None:
    from ood_core.scorers.ash import descending_ranks, top_k_entries, top_k_mask

    gen = torch.Generator().manual_seed(1)
    h = torch.relu(torch.randn(300, 23, generator=gen)).round()  # mostly 0, 1 and 2: heavy ties
    for k in (1, 3, 11, 22, 23):
        expected = descending_ranks(h) < k
        assert torch.equal(top_k_mask(h, k), expected)
        columns, values, kept = top_k_entries(h, k)  # the (k + 1)-topk path, crowded rows included
        assert torch.equal(torch.zeros_like(expected).scatter_(1, columns, kept), expected)
        assert torch.equal(values, h.gather(1, columns)) and bool((kept.sum(1) == k).all())
