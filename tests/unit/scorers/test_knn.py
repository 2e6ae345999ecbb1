"""KNN: k-th nearest normalised neighbour by hand, k clamping, and the similarity memo."""
from __future__ import annotations

import logging

import torch

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet, FitContext


def fitted(bank: torch.Tensor):
    ctx = FitContext(torch.zeros(2, bank.shape[1]), torch.zeros(2), {"knn_bank": bank})
    return create_scorer("knn").fit(ctx)


def feats(h: torch.Tensor) -> FeatureSet:
    return FeatureSet(logits=torch.zeros(len(h), 2), penultimate=h, labels=torch.zeros(len(h), dtype=torch.long))


def test_by_hand(caplog) -> None:
    scorer = fitted(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    f = feats(torch.tensor([[2.0, 0.0]]))  # normalised to (1, 0): cosines 1, 0.6, 0
    assert scorer.score(f, k=1).tolist() == [0.0]  # −(2 − 2·1)
    torch.testing.assert_close(scorer.score(f, k=2), torch.tensor([-0.8]))  # −(2 − 2·0.6)
    torch.testing.assert_close(scorer.score(f, k=3), torch.tensor([-2.0]))
    with caplog.at_level(logging.WARNING, logger="ood_core.scorers.knn"):
        torch.testing.assert_close(scorer.score(f, k=50), torch.tensor([-2.0]))  # clamped to the bank size
    assert "exceeds" in caplog.text


def test_matches_brute_force_squared_distances(toy) -> None:
    scorer = create_scorer("knn").fit(toy.ctx)
    h = toy.ood_feats.penultimate
    bank = toy.ctx.stats["knn_bank"]
    distances = torch.cdist(torch.nn.functional.normalize(h.double(), dim=1), bank.double()) ** 2
    for k in (1, 7, 50):
        torch.testing.assert_close(scorer.score(toy.ood_feats, k=k).double(),
                                   -distances.sort(dim=1).values[:, k - 1], rtol=1e-5, atol=1e-5)


def test_similarities_are_memoised_per_tensor(toy) -> None:
    scorer = create_scorer("knn").fit(toy.ctx)
    first = scorer.similarities(toy.id_feats.penultimate)
    assert scorer.similarities(toy.id_feats.penultimate) is first  # k changes are a lookup
    assert scorer.similarities(toy.ood_feats.penultimate) is not first
    changed = toy.id_feats.penultimate.clone()
    before = scorer.similarities(changed)
    changed.mul_(-1.0)  # an in-place edit bumps the version: the memo must not serve stale rows
    after = scorer.similarities(changed)
    assert after is not before and not torch.equal(after, before)
