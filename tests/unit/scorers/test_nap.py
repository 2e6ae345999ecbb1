"""NAP formula tests (docs/methods.md §3.13): max/mean ratio and the log-space geometric mean."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet
from ood_core.scorers.nap import nap_score

# The paper's CIFAR-10 weights (docs/methods.md §3.13 table)
VARIANTS = {"nap-e": ("energy", 0.4), "nap-m": ("msp", 0.5), "nap-r": ("react", 0.4),
            "nap-d": ("dice", 0.5), "nap-a": ("ash-s", 0.5), "nap-k": ("knn", 0.8)}


def _tiny_map_feats() -> FeatureSet:
    # N = 1, C = 2, 2×2 maps. Channel 0: [[0, 2], [2, 0]] (max 2, mean 1); channel 1: [[4, 0], [0, 0]] (max 4, mean 1).
    maps = torch.tensor([[[[0.0, 2.0], [2.0, 0.0]], [[4.0, 0.0], [0.0, 0.0]]]])
    h = maps.mean(dim=(2, 3))
    return FeatureSet(logits=torch.zeros(1, 3), penultimate=h, labels=torch.tensor([-1]),
                      prepool_max=maps.amax(dim=(2, 3)))


def test_formula_on_a_tiny_map() -> None:
    feats = _tiny_map_feats()
    scorer = create_scorer("nap")
    # ε = 1: ((2 / 2)² + (4 / 2)²) / 2 = (1 + 4) / 2 = 2.5
    torch.testing.assert_close(scorer.score(feats, epsilon=1.0), torch.tensor([2.5]))
    # ε = 3: ((2 / 4)² + (4 / 4)²) / 2 = 0.625
    torch.testing.assert_close(scorer.score(feats, epsilon=3.0), torch.tensor([0.625]))
    torch.testing.assert_close(nap_score(feats.prepool_max, feats.penultimate, 1.0), torch.tensor([2.5]))


def test_variant_defaults() -> None:
    assert create_scorer("nap").defaults() == {"epsilon": 1.0}  # NAP alone: no weight to tune
    for name, (partner, weight) in VARIANTS.items():
        scorer = create_scorer(name)
        assert scorer.name == name and scorer.partner.name == partner
        assert scorer.defaults() == {"epsilon": 1.0, "weight": weight}
        assert scorer.stats == create_scorer(partner).stats


def test_nap_e_is_weighted_log_mean(toy) -> None:
    scorer = create_scorer("nap-e").fit(toy.ctx)
    feats = toy.id_feats
    lse = torch.logsumexp(feats.logits, dim=1)
    s_nap = ((feats.prepool_max / (feats.penultimate + 1.0)) ** 2).mean(1)
    assert bool((lse > 0).all())
    torch.testing.assert_close(scorer.score(feats), 0.4 * lse.log() + 0.6 * s_nap.log())
    assert scorer.clamped(feats) == 0
    # w = 1 is S* alone, w = 0 is NAP alone (in log space)
    torch.testing.assert_close(scorer.score(feats, weight=1.0), lse.log())
    torch.testing.assert_close(scorer.score(feats, weight=0.0), s_nap.log())


def test_nap_r_uses_raw_map_for_nap_and_react_for_s_star(toy) -> None:
    scorer = create_scorer("nap-r").fit(toy.ctx)
    react = create_scorer("react").fit(toy.ctx).score(toy.id_feats)
    s_nap = create_scorer("nap").score(toy.id_feats)
    torch.testing.assert_close(scorer.score(toy.id_feats), 0.4 * react.log() + 0.6 * s_nap.log())


def test_nap_k_uses_cosine_similarity(toy) -> None:
    scorer = create_scorer("nap-k").fit(toy.ctx)
    knn_score = create_scorer("knn").fit(toy.ctx).score(toy.id_feats)
    cosine = 1.0 + knn_score / 2.0
    # k-th cosine similarity of ReLU features lies in [0, 1]
    assert bool((cosine >= -1e-5).all() and (cosine <= 1.0 + 1e-5).all())
    s_nap = create_scorer("nap").score(toy.id_feats)
    torch.testing.assert_close(scorer.score(toy.id_feats),
                               0.8 * cosine.clamp(min=1e-12).log() + 0.2 * s_nap.log())


def test_non_positive_s_star_is_clamped_and_counted(toy) -> None:
    scorer = create_scorer("nap-e").fit(toy.ctx)
    shift = torch.zeros_like(toy.id_feats.logits)
    shift[:3] = -100.0  # LSE < 0 for the first three samples
    feats = dataclasses.replace(toy.id_feats, logits=toy.id_feats.logits + shift)
    scores = scorer.score(feats)
    assert scorer.clamped(feats) == 3 and bool(torch.isfinite(scores).all())
    s_nap = create_scorer("nap").score(feats)
    torch.testing.assert_close(scores[:3], 0.4 * torch.log(torch.tensor(1e-12)) + 0.6 * s_nap[:3].log())


def test_partner_score_is_memoised_and_refreshed_on_refit(toy) -> None:
    scorer = create_scorer("nap-m").fit(toy.ctx)
    msp = torch.softmax(toy.id_feats.logits, 1).max(1).values
    s_nap = create_scorer("nap").score(toy.id_feats)
    first = scorer.score(toy.id_feats, weight=0.3)
    torch.testing.assert_close(first, 0.3 * msp.log() + 0.7 * s_nap.log())
    assert len(scorer._partner_scores) == 1  # the ε / w sliders reuse S*
    torch.testing.assert_close(scorer.score(toy.id_feats, weight=0.3, epsilon=2.0),
                               0.3 * msp.log() + 0.7 * create_scorer("nap").score(toy.id_feats, epsilon=2.0).log())
    scorer.fit(toy.ctx)
    assert len(scorer._partner_scores) == 0


def test_transformer_attention_row_uses_its_max() -> None:
    attention = torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    feats = FeatureSet(logits=torch.zeros(2, 2), penultimate=torch.ones(2, 5), labels=torch.tensor([-1, -1]),
                       prepool_max=attention)
    torch.testing.assert_close(create_scorer("nap").score(feats), torch.tensor([0.6, 0.4]))


def test_missing_map_or_stats_raise_clear_errors(toy) -> None:
    feats = dataclasses.replace(toy.id_feats, prepool_max=None)
    with pytest.raises(OODLensError, match="prepool_max"):
        create_scorer("nap").score(feats)
    assert create_scorer("nap-d").stats == create_scorer("dice").stats
    stats = {k: v for k, v in toy.ctx.stats.items() if k != "feature_mean"}
    create_scorer("nap").fit(dataclasses.replace(toy.ctx, stats=stats))  # NAP alone needs none
    with pytest.raises(OODLensError, match="feature_mean"):
        create_scorer("nap-d").fit(dataclasses.replace(toy.ctx, stats=stats))
