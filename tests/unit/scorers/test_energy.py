"""Energy score T·LSE(z/T) on hand-checkable logits."""
from __future__ import annotations

import math

import pytest
import torch

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet


def feats(z: torch.Tensor) -> FeatureSet:
    return FeatureSet(logits=z, penultimate=torch.zeros(len(z), 2), labels=torch.zeros(len(z), dtype=torch.long))


def test_energy_by_hand() -> None:
    scorer = create_scorer("energy")
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0], [0.0, math.log(3.0)]])
    torch.testing.assert_close(scorer.score(feats(z)), torch.tensor([math.log(2), 2 + math.log(2), math.log(4)]))
    # T = 2 on [2, 2]: 2·log(2·e^{1}) = 2 + 2·log 2
    torch.testing.assert_close(scorer.score(feats(z[1:2]), temperature=2.0), torch.tensor([2 + 2 * math.log(2)]))


def test_energy_temperature_limits() -> None:
    z = torch.tensor([[3.0, 1.0, -1.0]])
    scorer = create_scorer("energy")
    # T → 0: T·LSE(z/T) → max z; finite even though z/T is 300
    torch.testing.assert_close(scorer.score(feats(z), temperature=0.01), torch.tensor([3.0]), atol=1e-3, rtol=0)
    # T → ∞: T·LSE(z/T) ≈ T·log K + mean z
    big = scorer.score(feats(z), temperature=1000.0)
    torch.testing.assert_close(big, torch.tensor([1000 * math.log(3) + 1.0]), atol=1e-2, rtol=0)
    with pytest.raises(ValueError):
        scorer.score(feats(z), temperature=0.0)
