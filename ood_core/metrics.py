"""OOD metrics with ID as the positive class (the papers' convention, methods.md §0).

* ``fpr_at_95_tpr``: thr = ID_sorted_ascending[round(0.05·N_id)]; FPR = mean(OOD > thr).
  The OOD-positive variant that pytorch-ood / OpenOOD report is ``fpr_at_95_tpr_ood_positive``.
* ``auroc``: P(ID > OOD) + ½·P(ID = OOD), i.e. the rank-sum with average ranks for ties
  (identical to sklearn's ``roc_auc_score``).
* ``aupr_in`` / ``aupr_out``: average precision with ID / OOD as positive (sklearn's
  ``average_precision_score``, ties grouped as sklearn does).

All functions take 1-D score tensors or arrays (any float dtype, any device; higher = more
ID) and compute on the host in float64 with numpy sorts and ``searchsorted``;
``evaluate_many`` sorts the ID scores once for several OOD sets (the app's slider path).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

TPR_LEVEL = 0.95


def _as_array(scores: Tensor | np.ndarray) -> np.ndarray:
    """A float64 1-D numpy copy on the host (metrics are O(N log N) sorts: numpy's are faster)."""
    if isinstance(scores, Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _threshold_of_sorted(id_sorted: np.ndarray) -> float:
    index = min(int(round((1 - TPR_LEVEL) * id_sorted.size)), id_sorted.size - 1)
    return float(id_sorted[index])


def threshold_at_95_tpr(id_scores: Tensor | np.ndarray) -> float:
    """Score threshold that keeps 95 % of ID samples (those strictly above it)."""
    return _threshold_of_sorted(np.sort(_as_array(id_scores)))


def fpr_at_95_tpr(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """Share of OOD samples scored strictly above the 95 %-TPR threshold (ID positive)."""
    return float((_as_array(ood_scores) > threshold_at_95_tpr(id_scores)).mean())


def fpr_at_95_tpr_ood_positive(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """pytorch-ood / OpenOOD convention: OOD positive (score = −ours); share of ID flagged
    as OOD at the threshold that flags 95 % of OOD samples."""
    return fpr_at_95_tpr(-_as_array(ood_scores), -_as_array(id_scores))


def auroc(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """Area under the ROC curve, ID positive (identical to sklearn's ``roc_auc_score``)."""
    return evaluate(id_scores, ood_scores).auroc


def aupr_in(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """Average precision with ID as positive and the score as is (sklearn's
    ``average_precision_score``: one point per distinct threshold, Σ (R_n − R_{n−1})·P_n)."""
    return evaluate(id_scores, ood_scores).aupr_in


def aupr_out(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """Average precision with OOD as positive and the negated score."""
    return evaluate(id_scores, ood_scores).aupr_out


@dataclass(frozen=True)
class OODMetrics:
    """Metrics of one method on one (ID, OOD) pair; rates as fractions in [0, 1]."""

    fpr95: float
    auroc: float
    aupr_in: float
    aupr_out: float
    threshold: float
    fpr95_ood_positive: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _counts_at_distinct(id_sorted: np.ndarray, ood_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(id_at_or_below, ood_at_or_below), each (m,) int64: how many ID / OOD scores are
    ≤ d_i for every distinct score d_0 < … < d_{m−1} of the two ascending arrays. A stable
    argsort merges the two sorted runs in linear time (timsort); running counts of the
    ID labels, read at the last place of each distinct value, give the rest."""
    values = np.concatenate([id_sorted, ood_sorted])
    order = np.argsort(values, kind="stable")
    merged = values[order]
    last_of_value = np.concatenate([merged[1:] != merged[:-1], [True]])
    id_at_or_below = np.cumsum(order < id_sorted.size)[last_of_value]
    ood_at_or_below = np.flatnonzero(last_of_value) + 1 - id_at_or_below
    return id_at_or_below, ood_at_or_below


def _evaluate_sorted(id_sorted: np.ndarray, ood: np.ndarray) -> "OODMetrics":
    """Every metric from the ascending ID sort and the OOD scores, in one pass over the
    distinct scores (same definitions and tie handling as sklearn)."""
    ood_sorted = np.sort(ood)
    n_id, n_ood = id_sorted.size, ood_sorted.size
    threshold = _threshold_of_sorted(id_sorted)
    id_at_or_below, ood_at_or_below = _counts_at_distinct(id_sorted, ood_sorted)
    id_equal, ood_equal = np.diff(id_at_or_below, prepend=0), np.diff(ood_at_or_below, prepend=0)
    # AUROC: each OOD score at d_i loses to the ID scores above it and ties with those at it.
    auroc_value = float((ood_equal * (n_id - id_at_or_below)).sum()
                        + 0.5 * (ood_equal * id_equal).sum()) / (n_id * n_ood)
    # AP with ID positive: thresholds d_i descending, predicted positive = score ≥ d_i.
    id_at_or_above = (n_id - id_at_or_below + id_equal)[::-1]
    ood_at_or_above = (n_ood - ood_at_or_below + ood_equal)[::-1]
    aupr_in_value = float((np.diff(id_at_or_above / n_id, prepend=0.0)
                           * id_at_or_above / (id_at_or_above + ood_at_or_above)).sum())
    # AP with OOD positive on −score: thresholds d_i ascending, predicted positive = score ≤ d_i.
    aupr_out_value = float((np.diff(ood_at_or_below / n_ood, prepend=0.0)
                            * ood_at_or_below / (ood_at_or_below + id_at_or_below)).sum())
    negated_id, negated_ood = -id_sorted[::-1], -ood_sorted[::-1]  # ascending sorts of −score
    return OODMetrics(
        fpr95=float((ood_sorted > threshold).mean()),
        auroc=auroc_value,
        aupr_in=aupr_in_value,
        aupr_out=aupr_out_value,
        threshold=threshold,
        fpr95_ood_positive=float((negated_id > _threshold_of_sorted(negated_ood)).mean()),
    )


def evaluate(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> "OODMetrics":
    """Every metric for one OOD set."""
    return _evaluate_sorted(np.sort(_as_array(id_scores)), _as_array(ood_scores))


def evaluate_many(id_scores: Tensor | np.ndarray,
                  ood_scores: Mapping[str, Tensor | np.ndarray]) -> dict[str, "OODMetrics"]:
    """Every metric for several OOD sets against one ID set, sorting the ID scores once."""
    id_sorted = np.sort(_as_array(id_scores))
    return {name: _evaluate_sorted(id_sorted, _as_array(scores)) for name, scores in ood_scores.items()}


def average_metrics(results: list[OODMetrics]) -> OODMetrics:
    """Unweighted mean over OOD sets, as the papers' 'average' column."""
    fields = OODMetrics.__dataclass_fields__
    return OODMetrics(**{f: float(np.mean([getattr(r, f) for r in results])) for f in fields})


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy over samples with a known label (label >= 0)."""
    known = labels >= 0
    if not bool(known.any()):
        return float("nan")
    return float((logits[known].argmax(1) == labels[known]).double().mean())


def roc_points(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray,
               max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) float32 arrays of the ROC curve (ID positive), thinned to ≤ ``max_points``,
    always keeping the ends and the point nearest 95 % TPR."""
    id_sorted, ood_sorted = np.sort(_as_array(id_scores)), np.sort(_as_array(ood_scores))
    thresholds = np.unique(np.concatenate([id_sorted, ood_sorted]))[::-1]
    tpr = np.concatenate([[0.0], (id_sorted.size - np.searchsorted(id_sorted, thresholds, "left")) / id_sorted.size])
    fpr = np.concatenate([[0.0], (ood_sorted.size - np.searchsorted(ood_sorted, thresholds, "left")) / ood_sorted.size])
    if tpr.size > max_points:
        keep = np.unique(np.concatenate([
            np.linspace(0, tpr.size - 1, max_points - 1).round().astype(int),
            [int(np.searchsorted(tpr, TPR_LEVEL))],
        ]).clip(0, tpr.size - 1))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr.astype(np.float32), tpr.astype(np.float32)
