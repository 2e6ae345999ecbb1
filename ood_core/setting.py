"""One hyperparameter setting scored on labelled ID features and some OOD sets: the step the
Sweep page and validation tuning (``ood_core.tuning``) share.

Everything comes from ``scorer.score`` / ``score_with_logits`` on cached features; the
figures are the metrics per OOD set, the accuracy of the head the method scores with and the
reasons the setting is degenerate (:func:`ood_core.metrics.degenerate_reasons`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ood_core import metrics
from ood_core.records import FeatureSet
from ood_core.scorers.base import Scorer


@dataclass(frozen=True)
class SettingFigures:
    """id_scores: (N,) ID scores; per_ood: metrics per OOD set (rates as fractions);
    id_accuracy / base_accuracy: top-1 of the head scored with / of the unmodified head;
    degenerate: why these figures cannot rank the setting (empty when they can)."""

    id_scores: torch.Tensor
    per_ood: dict[str, metrics.OODMetrics]
    id_accuracy: float
    base_accuracy: float
    degenerate: tuple[str, ...]

    @property
    def fpr95(self) -> float:
        """FPR95 averaged over the OOD sets."""
        return float(np.mean([m.fpr95 for m in self.per_ood.values()]))

    @property
    def auroc(self) -> float:
        """AUROC averaged over the OOD sets."""
        return float(np.mean([m.auroc for m in self.per_ood.values()]))


def score_setting(scorer: Scorer, params: Mapping[str, Any], id_feats: FeatureSet,
                  ood_sets: Mapping[str, FeatureSet], *, base_accuracy: float | None = None) -> SettingFigures:
    """Score ``params`` on ``id_feats`` (with labels) and every set of ``ood_sets``.

    base_accuracy: the unmodified head's accuracy on ``id_feats`` when already known.
    Raises :class:`ood_core.metrics.NonFiniteScoresError` when a score is not finite.
    """
    id_scores, modified = scorer.score_with_logits(id_feats, **params)
    base = metrics.accuracy(id_feats.logits, id_feats.labels) if base_accuracy is None else float(base_accuracy)
    accuracy = metrics.accuracy(modified, id_feats.labels) if modified is not None else base
    per_ood = metrics.evaluate_many(id_scores, {name: scorer.score(feats, **params) for name, feats in ood_sets.items()})
    degenerate = metrics.degenerate_reasons(id_scores, id_accuracy=accuracy, base_accuracy=base,
                                            num_classes=int(id_feats.logits.shape[1]))
    return SettingFigures(id_scores, per_ood, accuracy, base, tuple(degenerate))
