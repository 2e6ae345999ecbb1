"""Mahalanobis: hand example, singular precision, and sklearn's distances on toy statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet, FitContext
from ood_core.scorers.mahalanobis import whitening_factor


def score(h: torch.Tensor, means: torch.Tensor, precision: torch.Tensor, counts: torch.Tensor | None = None,
          reference: bool = False) -> torch.Tensor:
    k, d = means.shape
    counts = torch.ones(k) if counts is None else counts
    ctx = FitContext(torch.zeros(k, d), torch.zeros(k), {"class_means": means, "class_counts": counts,
                                                         "precision": precision})
    f = FeatureSet(logits=torch.zeros(len(h), k), penultimate=h, labels=torch.zeros(len(h), dtype=torch.long))
    scorer = create_scorer("mahalanobis").fit(ctx)
    return scorer.reference(f) if reference else scorer.score(f)


@pytest.mark.parametrize("reference", [False, True])
def test_a_class_without_training_images_is_no_centre(reference: bool) -> None:
    """A partial training split (ImageNet with --limit) leaves classes empty: their stored mean
    is a zero row, which must not count as the nearest centre of features near the origin."""
    means = torch.tensor([[3.0, 3.0], [0.0, 0.0], [-2.0, 1.0]])  # class 1 had no images
    h = torch.tensor([[0.1, 0.2], [2.5, 3.0], [-1.0, 0.5]])
    precision = torch.eye(2)
    with_empty = score(h, means, precision, counts=torch.tensor([5.0, 0.0, 7.0]), reference=reference)
    present_only = score(h, means[[0, 2]], precision, reference=reference)
    torch.testing.assert_close(with_empty, present_only)
    assert with_empty[0] < -1.0  # the origin (the empty class's zero row) would have given −0.05


def test_by_hand() -> None:
    means = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    precision = torch.diag(torch.tensor([1.0, 4.0]))
    h = torch.tensor([[1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    # h0: d²=(1, 4) → −1; h1: d²=(0.25+1, 0.25+1) → −1.25; h2 sits on μ_1 → 0
    torch.testing.assert_close(score(h, means, precision), torch.tensor([-1.0, -1.25, 0.0]))


def test_singular_precision_uses_eigendecomposition() -> None:
    # P = pinv of a rank-1 covariance: Cholesky fails, the eigh branch must give xᵀPx exactly
    precision = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    factor = whitening_factor(precision)
    torch.testing.assert_close(factor @ factor.T, precision)
    torch.testing.assert_close(score(torch.tensor([[2.0, 5.0]]), torch.zeros(1, 2), precision), torch.tensor([-4.0]))


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_matches_sklearn_on_toy_statistics(toy, rank_deficient: bool) -> None:
    from ood_core.statistics import compute_all_statistics

    h, y = toy.train_features, toy.train_labels
    if rank_deficient:  # dead neurons (as in the CIFAR DenseNet) make the covariance singular
        h = h.clone()
        h[:, :5] = 0.0
    w, b = toy.ctx.head_weight, toy.ctx.head_bias
    stats = compute_all_statistics(h, h @ w.T + b, y, w, b)
    test = toy.id_feats.penultimate[:50].clone()
    if rank_deficient:
        test[:, :5] = 0.0
    ours = score(test, stats["class_means"], stats["precision"])

    h64, y64, t64 = h.double().numpy(), y.numpy(), test.double().numpy()
    means = np.stack([h64[y64 == c].mean(0) for c in range(w.shape[0])])
    cov = EmpiricalCovariance(assume_centered=True).fit(h64 - means[y64])
    reference = -np.min(np.stack([cov.mahalanobis(t64 - m) for m in means], 1), axis=1)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-3, atol=1e-2)
