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
    # N = 20: accepting ≥ 95 % of ID needs 19 samples, so t = the 19th largest = 2 (accepts 2..20)
    id_scores = torch.arange(1.0, 21.0)
    ood_scores = torch.tensor([0.0, 1.5, 2.0, 2.5, 3.0])
    assert metrics.threshold_at_95_tpr(id_scores) == 2.0
    assert metrics.fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx(3 / 5)  # score ≥ t: 2.0 is accepted
    # OOD-positive convention: roles and signs swapped. 95 % of 5 OOD → all 5 flagged, so the
    # threshold on −score is −3 (flags −score ≥ −3, i.e. score ≤ 3); ID flagged: 1, 2, 3.
    assert metrics.fpr_at_95_tpr_ood_positive(id_scores, ood_scores) == pytest.approx(3 / 20)


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
        threshold = np.sort(id_scores)[id_scores.size - int(np.ceil(0.95 * id_scores.size))]
        assert got.threshold == threshold and got.fpr95 == pytest.approx((scores >= threshold).mean())
        assert got == metrics.evaluate(id_scores, scores)


# -- tie-correct FPR95 (trust issue, found item 1) -------------------------------------------------
def _first_roc_point_at_95(y: np.ndarray, s: np.ndarray) -> float:
    """FPR of the first ROC point (thresholds descending) whose TPR reaches 95 %, from sklearn."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.flatnonzero(tpr >= metrics.TPR_LEVEL - 1e-12)[0]])


def test_all_equal_scores_give_fpr95_of_one() -> None:
    """Found: ``evaluate(np.ones(1000), np.ones(1000))`` returned FPR95 = 0 with AUROC 0.5."""
    result = metrics.evaluate(np.ones(1000), np.ones(1000))
    assert result.fpr95 == 1.0 and result.fpr95_ood_positive == 1.0 and result.auroc == 0.5
    # a clip that flattens every ID score but leaves OOD below still accepts every OOD tie
    result = metrics.evaluate(np.full(500, 3.0), np.r_[np.full(300, 3.0), np.full(200, 1.0)])
    assert result.fpr95 == pytest.approx(300 / 500)


@pytest.mark.parametrize("levels", [None, 40, 6, 2, 1])  # continuous; coarse; binary; all equal
@pytest.mark.parametrize("sizes", [(200, 150), (997, 31), (20, 1), (33, 480)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr95_is_the_first_roc_point_at_95_tpr(levels: int | None, sizes: tuple[int, int], seed: int) -> None:
    """Property: both FPR95 conventions equal sklearn's ROC curve read at the first point whose
    TPR is ≥ 95 %, for continuous and heavily tied scores and unbalanced sets."""
    rng = np.random.default_rng(seed)
    id_scores, ood_scores = rng.normal(1.0, 1.0, sizes[0]), rng.normal(0.0, 1.0, sizes[1])
    if levels is not None:
        id_scores = np.floor(np.clip(id_scores + 2, 0, 5) / 5 * (levels - 1e-9))
        ood_scores = np.floor(np.clip(ood_scores + 2, 0, 5) / 5 * (levels - 1e-9))
    y, s = np.r_[np.ones(sizes[0]), np.zeros(sizes[1])], np.r_[id_scores, ood_scores]
    result = metrics.evaluate(id_scores, ood_scores)
    assert result.fpr95 == pytest.approx(_first_roc_point_at_95(y, s), abs=1e-12)
    assert result.fpr95_ood_positive == pytest.approx(_first_roc_point_at_95(1 - y, -s), abs=1e-12)
    assert metrics.fpr_at_95_tpr(id_scores, ood_scores) == result.fpr95
    assert metrics.fpr_at_95_tpr_ood_positive(id_scores, ood_scores) == result.fpr95_ood_positive
    # the threshold accepts at least 95 % of ID, and any higher score would accept fewer
    assert (id_scores >= result.threshold).mean() >= metrics.TPR_LEVEL
    above = id_scores[id_scores > result.threshold]
    assert above.size < np.ceil(metrics.TPR_LEVEL * sizes[0] - 1e-9)


@pytest.mark.parametrize("n_id", [20, 100, 1000, 9000])
@pytest.mark.parametrize("seed", [0, 1])
def test_fpr95_equals_the_repos_formula_without_ties_at_the_threshold(n_id: int, seed: int) -> None:
    """Property: the official repos' thr = ID_sorted[round(0.05·N)], FPR = mean(OOD > thr) gives
    the same number whenever no OOD score equals that threshold (N a multiple of 20, so both
    definitions pick the same order statistic)."""
    rng = np.random.default_rng(seed)
    id_scores, ood_scores = rng.normal(1.0, 1.0, n_id), rng.normal(0.0, 1.0, 700)
    repos_threshold = np.sort(id_scores)[round(0.05 * n_id)]
    assert not np.any(ood_scores == repos_threshold)
    assert metrics.fpr_at_95_tpr(id_scores, ood_scores) == pytest.approx((ood_scores > repos_threshold).mean())
    assert metrics.threshold_at_95_tpr(id_scores) == repos_threshold


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["id", "ood"])
def test_non_finite_scores_raise(bad: float, where: str) -> None:
    """Found: NaN scores were ranked (FPR95 0.0 / AUROC 0.0 printed with exit 0)."""
    scores = {"id": np.linspace(0, 1, 50), "ood": np.linspace(-1, 0.5, 40)}
    scores[where][7] = bad
    for call in (lambda: metrics.evaluate(scores["id"], scores["ood"]),
                 lambda: metrics.evaluate_many(scores["id"], {"x": scores["ood"]}),
                 lambda: metrics.fpr_at_95_tpr(scores["id"], scores["ood"]),
                 lambda: metrics.roc_points(scores["id"], scores["ood"])):
        with pytest.raises(metrics.NonFiniteScoresError, match="1 non-finite"):
            call()


# -- degenerate settings are named, not ranked -------------------------------------------------------
def test_degenerate_reasons() -> None:
    rng = np.random.default_rng(0)
    continuous = rng.normal(size=1000)
    assert metrics.degenerate_reasons(continuous) == ()
    assert metrics.degenerate_reasons(np.ones(800)) == ("scores collapsed (1 distinct value among 800 ID scores)",)
    assert "collapsed" in metrics.degenerate_reasons(np.round(continuous))[0]  # ~7 levels of 1000
    tied_low = np.r_[np.zeros(100), 1 + rng.random(900)]  # 10 % tied at the bottom: t accepts 100 %
    assert metrics.degenerate_reasons(tied_low) == ("ties at the threshold: it accepts 100.0 % of ID instead of 95 %",)
    assert metrics.degenerate_reasons(np.r_[np.zeros(10), 1 + rng.random(990)]) == ()  # 1 %: below the bar
    small = rng.normal(size=12)  # a 12-row set reaches exactly 95 % only at 100 %: no ties, not flagged
    assert metrics.degenerate_reasons(small) == ()
    chance = metrics.degenerate_reasons(continuous, id_accuracy=0.12, base_accuracy=0.98, num_classes=10)
    assert chance == ("head at chance (ID accuracy 12.0 %, chance 10.0 %)",)
    assert metrics.degenerate_reasons(continuous, id_accuracy=0.45, base_accuracy=0.98, num_classes=10) == ()
    with pytest.raises(metrics.NonFiniteScoresError):
        metrics.degenerate_reasons(np.r_[continuous, np.nan])
