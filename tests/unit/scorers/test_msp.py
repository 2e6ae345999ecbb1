"""MSP formula on hand-checkable logits."""
from __future__ import annotations

import math

import pytest
import torch

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet


def feats(logits: list[list[float]]) -> FeatureSet:
    z = torch.tensor(logits)
    return FeatureSet(logits=z, penultimate=torch.zeros(len(z), 2), labels=torch.zeros(len(z), dtype=torch.long))


def test_msp_by_hand() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4]; a uniform row gives 1/K; a shift leaves softmax unchanged
    scores = create_scorer("msp").score(feats([[0.0, math.log(3.0)], [1.0, 1.0], [100.0, 100.0 + math.log(3.0)]]))
    torch.testing.assert_close(scores, torch.tensor([0.75, 0.5, 0.75]))


def test_msp_has_no_hyperparameters() -> None:
    scorer = create_scorer("msp")
    assert scorer.declared_params() == ()
    with pytest.raises(ValueError):
        scorer.score(feats([[0.0, 1.0]]), temperature=2.0)
