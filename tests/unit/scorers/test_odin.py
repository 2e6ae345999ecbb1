"""ODIN: the ε → cached-logit selection, the temperature, and the errors for missing data."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet
from ood_core.records import ODIN_EPS_GRID, ODIN_TEMPERATURE


def feats() -> FeatureSet:
    logits = torch.tensor([[0.0, 1000.0 * torch.log(torch.tensor(3.0)).item()]])  # softmax(z/1000) = [1/4, 3/4]
    odin = torch.stack([torch.tensor([[0.0, 0.0]]), torch.tensor([[1000.0 * torch.log(torch.tensor(4.0)).item(), 0.0]])])
    return FeatureSet(logits=logits, penultimate=torch.zeros(1, 3), labels=torch.zeros(1, dtype=torch.long),
                      odin_logits=odin, odin_eps=ODIN_EPS_GRID, odin_temperature=ODIN_TEMPERATURE)


def test_constants() -> None:
    assert ODIN_EPS_GRID == (0.0014, 0.0028) and ODIN_TEMPERATURE == 1000.0
    scorer = create_scorer("odin")
    assert scorer.param("epsilon").choices == (0.0, 0.0014, 0.0028)
    assert scorer.defaults() == {"epsilon": 0.0014, "temperature": 1000.0}


def test_epsilon_selects_the_cached_logits() -> None:
    scorer = create_scorer("odin")
    f = feats()
    # ε = 0: temperature-scaled MSP of the plain logits
    torch.testing.assert_close(scorer.score(f, epsilon=0.0), torch.tensor([0.75]))
    # ε = 0.0014: the first perturbed row, equal logits → 1/2
    torch.testing.assert_close(scorer.score(f, epsilon=0.0014), torch.tensor([0.5]))
    # ε = 0.0028: softmax([1000·ln 4, 0]/1000) = [4/5, 1/5]
    torch.testing.assert_close(scorer.score(f, epsilon=0.0028), torch.tensor([0.8]))


def test_missing_perturbed_logits_raise() -> None:
    scorer = create_scorer("odin")
    bare = dataclasses.replace(feats(), odin_logits=None, odin_eps=())
    torch.testing.assert_close(scorer.score(bare, epsilon=0.0), torch.tensor([0.75]))
    with pytest.raises(OODLensError, match="--odin-eps"):
        scorer.score(bare)
    partial = dataclasses.replace(feats(), odin_logits=feats().odin_logits[:1], odin_eps=(0.0014,))
    assert scorer.score(partial, epsilon=0.0014).tolist() == [0.5]
    with pytest.raises(OODLensError, match="--odin-eps 0.0028"):
        scorer.score(partial, epsilon=0.0028)
    other_t = dataclasses.replace(feats(), odin_temperature=10.0)
    with pytest.raises(OODLensError, match="T=10"):
        scorer.score(other_t)


def test_rejects_values_off_the_grid() -> None:
    with pytest.raises(ValueError):
        create_scorer("odin").score(feats(), epsilon=0.001)
