"""Parity with pytorch-ood 0.4.0 on identical features (methods.md §0, engineering notes).

pytorch-ood returns *outlier* scores (higher = OOD), so theirs are negated; its percentile
hyperparameters are fractions (ours are percent); its ASH wants 4-D maps (pooled features
go in as (N, D, 1, 1)); its Mahalanobis divides the scatter by nothing (N−1 in older
versions) and adds 1e-6·I. None of these change the ranking, so AUROC(ours) must equal
AUROC(−theirs) within 0.001. Its KNN is a different method (1-NN, unnormalised), so KNN is
checked against a brute-force numpy version of Sun et al.'s definition instead.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr
from torch import Tensor

from ood_core.metrics import auroc
from ood_core.scorers import create_scorer, list_scorers
from ood_core.scorers.base import FeatureSet

detector = pytest.importorskip("pytorch_ood.detector")

AUROC_TOLERANCE = 1e-3


def ours(name: str, data, **hparams: Any) -> tuple[Tensor, Tensor]:
    if name not in list_scorers():
        pytest.fail(f"scorer {name!r} is not registered (known: {list_scorers()}); its parity case cannot run")
    scorer = create_scorer(name).fit(data.ctx)
    return scorer.score(data.id_feats, **hparams), scorer.score(data.ood_feats, **hparams)


def theirs(predict: Callable[[Tensor], Tensor], data) -> tuple[Tensor, Tensor]:
    """pytorch-ood outlier scores, negated to higher = more ID."""
    with torch.no_grad():
        return -predict(data.id_feats.penultimate).float(), -predict(data.ood_feats.penultimate).float()


def assert_parity(our_scores: tuple[Tensor, Tensor], their_scores: tuple[Tensor, Tensor]) -> None:
    ours_auroc, theirs_auroc = auroc(*our_scores), auroc(*their_scores)
    # not saturated: on a perfectly separable set any monotone-ish score would "agree"
    assert 0.02 < theirs_auroc < 0.98
    assert ours_auroc == pytest.approx(theirs_auroc, abs=AUROC_TOLERANCE)
    # same ranking sample by sample, not only the same area
    rho = spearmanr(torch.cat(our_scores).numpy(), torch.cat(their_scores).numpy()).statistic
    assert rho > 0.999


def head(data) -> torch.nn.Linear:
    linear = torch.nn.Linear(data.weight.shape[1], data.weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(data.weight)
        linear.bias.copy_(data.bias)
    return linear


def logits_of(data) -> Callable[[Tensor], Tensor]:
    return lambda h: h @ data.weight.T + data.bias


# -- logit scores --------------------------------------------------------------------

def test_msp(parity_data) -> None:
    reference = theirs(lambda h: detector.MaxSoftmax.score(logits_of(parity_data)(h)), parity_data)
    scores = ours("msp", parity_data)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference)


def test_maxlogit(parity_data) -> None:
    reference = theirs(lambda h: detector.MaxLogit.score(logits_of(parity_data)(h)), parity_data)
    scores = ours("maxlogit", parity_data)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference)


@pytest.mark.parametrize("temperature", [1.0, 10.0])
def test_energy(parity_data, temperature: float) -> None:
    reference = theirs(lambda h: detector.EnergyBased.score(logits_of(parity_data)(h), t=temperature), parity_data)
    scores = ours("energy", parity_data, temperature=temperature)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference)


@pytest.mark.parametrize("epsilon", [0.0, 0.0014, 0.0028])
def test_odin(parity_data, epsilon: float) -> None:
    """With the feature as ODIN's 'input' and the head as the model, their perturbation
    gives the perturbed logits our cache would hold; both then score max softmax(z̃/T)."""
    model = head(parity_data)
    odin = detector.ODIN(model, eps=epsilon, temperature=1000.0)

    def with_odin_logits(feats: FeatureSet) -> FeatureSet:
        x_hat = detector.odin.odin_preprocessing(model, feats.penultimate, eps=epsilon, temperature=1000.0)
        with torch.no_grad():
            odin_logits = model(x_hat).unsqueeze(0)
        return FeatureSet(logits=feats.logits, penultimate=feats.penultimate, labels=feats.labels,
                          odin_logits=odin_logits, odin_eps=(epsilon,), odin_temperature=1000.0)

    scorer = create_scorer("odin")
    scores = tuple(scorer.score(with_odin_logits(f), epsilon=epsilon)
                   for f in (parity_data.id_feats, parity_data.ood_feats))
    reference = theirs(odin.predict, parity_data)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference)


# -- feature-space scores -------------------------------------------------------------

def test_mahalanobis(parity_data) -> None:
    reference_detector = detector.Mahalanobis(None).fit_features(parity_data.train_features, parity_data.train_labels)
    assert_parity(ours("mahalanobis", parity_data), theirs(reference_detector.predict_features, parity_data))


@pytest.mark.parametrize("dim", [8, 32, 50])
def test_vim(parity_data, dim: int) -> None:
    reference_detector = detector.ViM(None, d=dim, w=parity_data.weight, b=parity_data.bias)
    reference_detector.fit_features(parity_data.train_features, parity_data.train_labels)
    scores, reference = ours("vim", parity_data, dim=dim), theirs(reference_detector.predict_features, parity_data)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-3)


def test_gradnorm(parity_data) -> None:
    """Their per-sample vmap'd gradient of the head weight (mean over classes, a constant
    1/K factor) against our closed form."""
    reference_detector = detector.GradNorm(head(parity_data), param_filter=lambda name: name == "weight")
    scores, reference = ours("gradnorm", parity_data), theirs(reference_detector.predict, parity_data)
    assert_parity(scores, reference)
    num_classes = parity_data.weight.shape[0]
    torch.testing.assert_close(tuple(s / num_classes for s in scores), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("percentile", [65.0, 90.0])
def test_ash(parity_data, variant: str, percentile: float) -> None:
    linear = head(parity_data)
    reference_detector = detector.ASH(backbone=lambda x: x, head=lambda maps: linear(maps.flatten(1)),
                                      variant=f"ash-{variant}", percentile=percentile / 100.0)
    to_maps = lambda h: reference_detector.predict_feature_maps(h.view(h.shape[0], h.shape[1], 1, 1))  # noqa: E731
    scores, reference = ours(f"ash-{variant}", parity_data, percentile=percentile), theirs(to_maps, parity_data)
    assert_parity(scores, reference)
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)


# -- the other scorer group's methods (react.py, dice.py) ------------------------------

@pytest.mark.parametrize("percentile", [90.0, 99.0])
def test_react_percentile(parity_data, percentile: float) -> None:
    reference_detector = detector.ReAct(backbone=None, head=head(parity_data), percentile=percentile / 100.0)
    reference_detector.fit_feature_maps(parity_data.val_features, torch.zeros(len(parity_data.val_features)))
    scores = ours("react", parity_data, clip_by="percentile", clip_percentile=percentile)
    assert_parity(scores, theirs(reference_detector.predict_feature_maps, parity_data))


def test_react_value(parity_data) -> None:
    reference_detector = detector.ReAct(backbone=None, head=head(parity_data), threshold=1.0)
    scores = ours("react", parity_data, clip_by="value", clip_value=1.0)
    assert_parity(scores, theirs(reference_detector.predict_feature_maps, parity_data))


@pytest.mark.parametrize("sparsity", [50.0, 90.0])
def test_dice(parity_data, sparsity: float) -> None:
    reference_detector = detector.DICE(None, w=parity_data.weight, b=parity_data.bias, p=sparsity / 100.0)
    reference_detector.fit_features(parity_data.train_features, parity_data.train_labels)
    scores = ours("dice", parity_data, sparsity=sparsity)
    assert_parity(scores, theirs(reference_detector.predict_features, parity_data))


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
