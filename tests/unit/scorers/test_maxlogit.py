"""MaxLogit formula on hand-checkable logits."""
from __future__ import annotations

import torch

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet


def test_maxlogit_by_hand() -> None:
    z = torch.tensor([[1.0, 5.0, -2.0], [-3.0, -1.0, -2.0]])
    f = FeatureSet(logits=z, penultimate=torch.zeros(2, 4), labels=torch.zeros(2, dtype=torch.long))
    scores = create_scorer("maxlogit").score(f)
    assert scores.tolist() == [5.0, -1.0]
    # MaxLogit is not shift-invariant, unlike MSP: adding 1 to every logit adds 1 to the score
    shifted = FeatureSet(logits=z + 1.0, penultimate=f.penultimate, labels=f.labels)
    assert create_scorer("maxlogit").score(shifted).tolist() == [6.0, 0.0]
