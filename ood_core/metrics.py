"""OOD metrics with ID as the positive class (the papers' convention).

* ``fpr_at_95_tpr``: a sample is accepted as ID when its score is ≥ t, t the *highest*
  threshold that accepts at least 95 % of the ID samples; FPR95 = share of OOD samples
  with score ≥ t. With continuous scores this is the official DICE / ReAct / LINe formula
  (thr = ID_sorted[round(0.05·N)], mean(OOD > thr)); unlike it, ties cannot fake a perfect
  score: when every score is equal, every OOD sample is accepted (FPR95 = 100 %).
  The OOD-positive variant that pytorch-ood / OpenOOD report is ``fpr_at_95_tpr_ood_positive``
  (same rule, roles and signs swapped).
* ``auroc``: P(ID > OOD) + ½·P(ID = OOD), i.e. the rank-sum with average ranks for ties
  (identical to sklearn's ``roc_auc_score``).
* ``aupr_in`` / ``aupr_out``: average precision with ID / OOD as positive (sklearn's
  ``average_precision_score``, ties grouped as sklearn does).

All functions take 1-D score tensors or arrays (any float dtype, any device; higher = more
ID) and compute on the host in float64 with numpy sorts and ``searchsorted``;
``evaluate_many`` sorts the ID scores once for several OOD sets (the app's slider path).
Non-finite scores (NaN, ±inf) are never ranked: they raise :class:`NonFiniteScoresError`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from ood_core.registry import OODLensError

TPR_LEVEL = 0.95


class NonFiniteScoresError(OODLensError, ValueError):
    """Scores hold NaN or ±inf: a method at this setting produced no usable ranking."""


def _as_array(scores: Tensor | np.ndarray, what: str = "scores") -> np.ndarray:
    """A float64 1-D numpy copy on the host (metrics are O(N log N) sorts: numpy's are faster);
    :class:`NonFiniteScoresError` when any value is NaN or ±inf."""
    if isinstance(scores, Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise NonFiniteScoresError(f"{bad} non-finite {what} (NaN or ±inf) among {array.size}; "
                                   "they cannot be ranked")
    return array


def _accept_count(n: int) -> int:
    """How many of ``n`` positives a 95 %-TPR threshold must accept: ⌈0.95·n⌉ (at least 1)."""
    return max(1, int(np.ceil(TPR_LEVEL * n - 1e-9)))  # 1e-9: 0.95·20 must give 19, not 20


def _threshold_of_sorted(positives_sorted: np.ndarray) -> float:
    """The highest t with #{positives ≥ t} ≥ ⌈0.95·n⌉, from the ascending sort: the
    ⌈0.95·n⌉-th largest positive (any higher t accepts fewer, ties included)."""
    return float(positives_sorted[positives_sorted.size - _accept_count(positives_sorted.size)])


def threshold_at_95_tpr(id_scores: Tensor | np.ndarray) -> float:
    """The highest score threshold t that accepts (score ≥ t) at least 95 % of ID samples."""
    return _threshold_of_sorted(np.sort(_as_array(id_scores, "ID scores")))


def fpr_at_95_tpr(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """Share of OOD samples accepted (score ≥ t) at the 95 %-TPR threshold t (ID positive)."""
    return evaluate(id_scores, ood_scores).fpr95


def fpr_at_95_tpr_ood_positive(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> float:
    """pytorch-ood / OpenOOD convention: OOD positive (score = −ours); share of ID flagged
    as OOD (−score ≥ t') at the highest t' that flags at least 95 % of OOD samples."""
    return evaluate(id_scores, ood_scores).fpr95_ood_positive


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
    """Metrics of one method on one (ID, OOD) pair; rates as fractions in [0, 1].

    threshold: the 95 %-TPR threshold t on the score (a sample is accepted as ID when
    score ≥ t); fpr95_ood_positive: FPR95 with OOD as the positive class.
    """

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
    # OOD-positive: on −score, t' = the ⌈0.95·N_ood⌉-th largest −OOD score, i.e. flag score ≤ s*
    # with s* the ⌈0.95·N_ood⌉-th smallest OOD score; FPR = share of ID with score ≤ s*.
    ood_cut = ood_sorted[_accept_count(n_ood) - 1]
    id_flagged = np.searchsorted(id_sorted, ood_cut, side="right")
    ood_accepted = n_ood - np.searchsorted(ood_sorted, threshold, side="left")
    return OODMetrics(
        fpr95=float(ood_accepted / n_ood),
        auroc=auroc_value,
        aupr_in=aupr_in_value,
        aupr_out=aupr_out_value,
        threshold=threshold,
        fpr95_ood_positive=float(id_flagged / n_id),
    )


def evaluate(id_scores: Tensor | np.ndarray, ood_scores: Tensor | np.ndarray) -> "OODMetrics":
    """Every metric for one OOD set."""
    return _evaluate_sorted(np.sort(_as_array(id_scores, "ID scores")), _as_array(ood_scores, "OOD scores"))


def evaluate_many(id_scores: Tensor | np.ndarray,
                  ood_scores: Mapping[str, Tensor | np.ndarray]) -> dict[str, "OODMetrics"]:
    """Every metric for several OOD sets against one ID set, sorting the ID scores once."""
    id_sorted = np.sort(_as_array(id_scores, "ID scores"))
    return {name: _evaluate_sorted(id_sorted, _as_array(scores, f"OOD scores of {name}"))
            for name, scores in ood_scores.items()}


# A setting is degenerate (named, never ranked as a win) when its ID scores have collapsed onto
# a few values, when ties at the threshold push the operating point well above 95 % TPR, or
# when the head it scores with has fallen to near chance.
COLLAPSE_SHARE = 0.05   # fewer distinct ID scores than 5 % of N (at least 2)
TIE_EXCESS_SHARE = 0.025  # ties make the threshold accept more than 2.5 % of N beyond the 95 %
CHANCE_MARGIN = 0.1     # head accuracy within 10 % of the way from chance to the model's own


def degenerate_reasons(id_scores: Tensor | np.ndarray, *, id_accuracy: float | None = None,
                       base_accuracy: float | None = None, num_classes: int | None = None) -> tuple[str, ...]:
    """Why a setting's figures cannot be trusted as a ranking, one short phrase each (empty = fine).

    id_scores: (N,) ID scores of the setting; id_accuracy / base_accuracy: top-1 accuracy of
    the head the method scores with and of the unmodified model; num_classes: K (chance = 1/K).
    """
    scores = np.sort(_as_array(id_scores, "ID scores"))
    n = scores.size
    reasons = []
    distinct = int(np.count_nonzero(np.diff(scores))) + 1
    if distinct < max(2, int(np.ceil(COLLAPSE_SHARE * n))):
        reasons.append(f"scores collapsed ({distinct} distinct value{'s' if distinct != 1 else ''} "
                       f"among {n} ID scores)")
    else:
        threshold = _threshold_of_sorted(scores)
        excess = n - int(np.searchsorted(scores, threshold, side="left")) - _accept_count(n)
        if excess > TIE_EXCESS_SHARE * n:
            reasons.append(f"ties at the threshold: it accepts {100 * (excess + _accept_count(n)) / n:.1f} % "
                           "of ID instead of 95 %")
    if id_accuracy is not None and num_classes and base_accuracy is not None and np.isfinite(id_accuracy):
        chance = 1.0 / num_classes
        if base_accuracy > chance and id_accuracy <= chance + CHANCE_MARGIN * (base_accuracy - chance):
            reasons.append(f"head at chance (ID accuracy {100 * id_accuracy:.1f} %, chance {100 * chance:.1f} %)")
    return tuple(reasons)


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
    id_sorted = np.sort(_as_array(id_scores, "ID scores"))
    ood_sorted = np.sort(_as_array(ood_scores, "OOD scores"))
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
