"""Parity with pytorch-ood 0.4.0 on identical features (docs/methods.md §0).

pytorch-ood returns *outlier* scores (higher = OOD), so theirs are negated; its percentile
hyperparameters are fractions (ours are percent); its ASH wants 4-D maps (pooled features
go in as (N, D, 1, 1)); its Mahalanobis divides the scatter by nothing (N−1 in older
versions) and adds 1e-6·I. None of these change the ranking, so AUROC(ours) must equal
AUROC(−theirs) within 0.001. Its KNN is a different method (1-NN, unnormalised), so KNN is
checked against a brute-force numpy version of Sun et al.'s definition instead.

pytorch-ood's side comes from ``ood_core.testing.pytorch_ood`` (the adapters the speed
benchmark uses too), on the ``parity`` synthetic benchmark of ``ood_core.synthetic``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr
from torch import Tensor

from ood_core.metrics import auroc
from ood_core.scorers import create_scorer, list_scorers
from ood_core.testing.pytorch_ood import odin_feature_set, reference

pytest.importorskip("pytorch_ood.detector")

AUROC_TOLERANCE = 1e-3


def ours(name: str, data, **hparams: Any) -> tuple[Tensor, Tensor]:
    if name not in list_scorers():
        pytest.fail(f"scorer {name!r} is not registered (known: {list_scorers()}); its parity case cannot run")
    scorer = create_scorer(name).fit(data.ctx)
    return scorer.score(data.id_feats, **hparams), scorer.score(data.ood_feats, **hparams)


def theirs(name: str, data, **hparams: Any) -> tuple[Tensor, Tensor]:
    """pytorch-ood's scores for our method ``name`` (same hyperparameters), higher = more ID."""
    detector = reference(name, data, **hparams)
    return detector(data.id_feats), detector(data.ood_feats)


def assert_parity(our_scores: tuple[Tensor, Tensor], their_scores: tuple[Tensor, Tensor]) -> None:
    ours_auroc, theirs_auroc = auroc(*our_scores), auroc(*their_scores)
    # not saturated: on a perfectly separable set any monotone-ish score would "agree"
    assert 0.02 < theirs_auroc < 0.98
    assert ours_auroc == pytest.approx(theirs_auroc, abs=AUROC_TOLERANCE)
    # same ranking sample by sample, not only the same area
    rho = spearmanr(torch.cat(our_scores).numpy(), torch.cat(their_scores).numpy()).statistic
    assert rho > 0.999


# -- logit scores --------------------------------------------------------------------

def test_msp(parity_data) -> None:
    scores, reference_scores = ours("msp", parity_data), theirs("msp", parity_data)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores)


def test_maxlogit(parity_data) -> None:
    scores, reference_scores = ours("maxlogit", parity_data), theirs("maxlogit", parity_data)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores)


@pytest.mark.parametrize("temperature", [1.0, 10.0])
def test_energy(parity_data, temperature: float) -> None:
    reference_scores = theirs("energy", parity_data, temperature=temperature)
    scores = ours("energy", parity_data, temperature=temperature)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores)


@pytest.mark.parametrize("epsilon", [0.0, 0.0014, 0.0028])
def test_odin(parity_data, epsilon: float) -> None:
    """With the feature as ODIN's 'input' and the head as the model, their perturbation
    gives the perturbed logits our cache would hold; both then score max softmax(z̃/T)."""
    scorer = create_scorer("odin")
    scores = tuple(scorer.score(odin_feature_set(parity_data, f, epsilon), epsilon=epsilon)
                   for f in (parity_data.id_feats, parity_data.ood_feats))
    reference_scores = theirs("odin", parity_data, epsilon=epsilon, temperature=1000.0)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores)


# -- feature-space scores -------------------------------------------------------------

def test_mahalanobis(parity_data) -> None:
    assert_parity(ours("mahalanobis", parity_data), theirs("mahalanobis", parity_data))


@pytest.mark.parametrize("dim", [8, 32, 50])
def test_vim(parity_data, dim: int) -> None:
    scores, reference_scores = ours("vim", parity_data, dim=dim), theirs("vim", parity_data, dim=dim)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores, rtol=1e-4, atol=1e-3)


def test_gradnorm(parity_data) -> None:
    """Their per-sample vmap'd gradient of the head weight (mean over classes, a constant
    1/K factor) against our closed form."""
    scores, reference_scores = ours("gradnorm", parity_data), theirs("gradnorm", parity_data)
    assert_parity(scores, reference_scores)
    num_classes = parity_data.weight.shape[0]
    torch.testing.assert_close(tuple(s / num_classes for s in scores), reference_scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [65.0, 90.0])
def test_ash(parity_data, variant: str, percentile: float) -> None:
    name = f"ash-{variant}"
    scores, reference_scores = ours(name, parity_data, percentile=percentile), theirs(name, parity_data,
                                                                                       percentile=percentile)
    assert_parity(scores, reference_scores)
    torch.testing.assert_close(scores, reference_scores, rtol=1e-4, atol=1e-4)


# -- the other scorer group's methods (react.py, dice.py) ------------------------------

@pytest.mark.parametrize("percentile", [90.0, 99.0])
def test_react_percentile(parity_data, percentile: float) -> None:
    hparams = {"clip_by": "percentile", "clip_percentile": percentile}
    assert_parity(ours("react", parity_data, **hparams), theirs("react", parity_data, **hparams))


def test_react_value(parity_data) -> None:
    hparams = {"clip_by": "value", "clip_value": 1.0}
    assert_parity(ours("react", parity_data, **hparams), theirs("react", parity_data, **hparams))


@pytest.mark.parametrize("sparsity", [50.0, 90.0])
def test_dice(parity_data, sparsity: float) -> None:
    assert_parity(ours("dice", parity_data, sparsity=sparsity), theirs("dice", parity_data, sparsity=sparsity))


# -- KNN: pytorch-ood's KNN is 1-NN on unnormalised features, a different method -------

@pytest.mark.parametrize("k", [1, 10, 50, 200])
def test_knn_matches_brute_force_numpy(parity_data, k: int) -> None:
    """Sun et al.: normalise, squared L2 to every normalised training feature, −(k-th smallest)."""
    bank = parity_data.train_features.double().numpy()
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)

    def brute_force(h: Tensor) -> Tensor:
        x = h.double().numpy()
        squared = cdist(x / np.linalg.norm(x, axis=1, keepdims=True), bank, "sqeuclidean")
        return torch.from_numpy(-np.sort(squared, axis=1)[:, k - 1]).float()

    scores = ours("knn", parity_data, k=k)
    reference = (brute_force(parity_data.id_feats.penultimate), brute_force(parity_data.ood_feats.penultimate))
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)
