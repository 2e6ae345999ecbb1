"""OOD metrics against sklearn (with ties) and the documented FPR95 formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_core import metrics


def labelled(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    return y, np.r_[id_scores.numpy(), ood_scores.numpy()]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_aupr_match_sklearn(ties: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    id_scores = torch.randn(300, generator=gen, dtype=torch.float64) + 1.0
    ood_scores = torch.randn(200, generator=gen, dtype=torch.float64)
    if ties:  # coarse scores: many ties within and across the two sets
        id_scores, ood_scores = (id_scores * 2).round(), (ood_scores * 2).round()
    y, s = labelled(id_scores, ood_scores)
    assert metrics.auroc(id_scores, ood_scores) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(id_scores, ood_scores) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.aupr_out(id_scores, ood_scores) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


def test_auroc_extremes() -> None:
    assert metrics.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert metrics.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert metrics.auroc(torch.ones(3), torch.ones(4)) == 0.5
    assert metrics.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0  # numpy input


def test_fpr95_by_hand() -> None:
    id_scores = torch.arange(1.0, 21.0)  # N = 20: thr = sorted[round(0.05·20)] = sorted[1] = 2
    ood_scores = torch.tensor([0.0, 1.5, 2.0, 2.5, 3.0])
    assert metrics.threshold_at_95_tpr(id_scores) == 2.0
    assert metrics.fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx(2 / 5)  # strict ">": 2.0 is rejected
    # OOD-positive convention: flip roles and signs; thr over −OOD = sorted[round(0.25)=0] = −3
    assert metrics.fpr_at_95_tpr_ood_positive(id_scores, ood_scores) == pytest.approx(
        float((-id_scores > -3.0).double().mean()))


def test_roc_points_unthinned_match_sklearn() -> None:
    gen = torch.Generator().manual_seed(3)
    id_scores = (torch.randn(120, generator=gen) + 1).round(decimals=1)
    ood_scores = torch.randn(80, generator=gen).round(decimals=1)
    fpr, tpr = metrics.roc_points(id_scores, ood_scores, max_points=10_000)
    y, s = labelled(id_scores.double(), ood_scores.double())
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-6)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-6)
    assert fpr.dtype == np.float32 and tpr.dtype == np.float32


def test_roc_points_thinning() -> None:
    gen = torch.Generator().manual_seed(4)
    id_scores, ood_scores = torch.randn(5000, generator=gen) + 1, torch.randn(5000, generator=gen)
    fpr, tpr = metrics.roc_points(id_scores, ood_scores, max_points=200)
    assert fpr.shape == tpr.shape and len(fpr) <= 200
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    full_fpr, full_tpr = metrics.roc_points(id_scores, ood_scores, max_points=100_000)
    nearest = full_tpr[np.abs(full_tpr - metrics.TPR_LEVEL).argmin()]
    assert nearest in tpr  # the point at 95 % TPR survives thinning


def test_evaluate_accuracy_and_average() -> None:
    id_scores, ood_scores = torch.arange(1.0, 21.0), torch.tensor([0.0, 1.5, 2.0, 2.5, 3.0])
    result = metrics.evaluate(id_scores, ood_scores)
    assert result.fpr95 == metrics.fpr_at_95_tpr(id_scores, ood_scores)
    assert result.auroc == metrics.auroc(id_scores, ood_scores)
    assert result.threshold == 2.0
    other = metrics.evaluate(id_scores, ood_scores + 100)
    average = metrics.average_metrics([result, other])
    assert average.auroc == pytest.approx((result.auroc + other.auroc) / 2)
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [5.0, 0.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 0, -1])) == 0.5  # the unknown label is ignored
    assert np.isnan(metrics.accuracy(logits, torch.full((3,), -1)))


@pytest.mark.parametrize("levels", [None, 7, 1])  # continuous, a few tied levels, all scores equal
def test_evaluate_many_matches_sklearn_on_every_set(levels: int | None) -> None:
    """The one-pass path the app uses (ID sorted once, every metric from the distinct
    scores) against sklearn on unbalanced sets, with ties across and within the sets."""
    rng = np.random.default_rng(5)
    id_scores = rng.normal(1.0, 1.0, 2_000)
    ood = {"near": rng.normal(0.5, 1.0, 1_500), "far": rng.normal(-1.0, 1.0, 400), "one": np.array([0.3])}
    if levels is not None:
        quantise = (lambda a: np.zeros_like(a)) if levels == 1 else (lambda a: np.clip(np.round(a), -3, levels - 4))
        id_scores, ood = quantise(id_scores), {k: quantise(v) for k, v in ood.items()}
    results = metrics.evaluate_many(torch.from_numpy(id_scores), {k: torch.from_numpy(v) for k, v in ood.items()})
    for name, scores in ood.items():
        y, s = np.r_[np.ones(id_scores.size), np.zeros(scores.size)], np.r_[id_scores, scores]
        got = results[name]
        assert got.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got.aupr_in == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got.aupr_out == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
        threshold = np.sort(id_scores)[round(0.05 * id_scores.size)]
        assert got.threshold == threshold and got.fpr95 == pytest.approx((scores > threshold).mean())
        assert got == metrics.evaluate(id_scores, scores)
